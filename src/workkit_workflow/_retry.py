"""Retry policy: how many attempts a step gets and how long to wait between them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ._durations import Duration, to_seconds


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with a cap and jitter.

    The wait before attempt ``n + 1`` is ``initial_delay * backoff_multiplier ** (n - 1)``,
    capped at ``max_delay``, then spread by ``± jitter`` (a fraction). Waits are
    Durable Object alarms, never in-memory sleeps.
    """

    max_attempts: int = 3
    """Total attempts, the first included. ``1`` means no retries."""
    initial_delay: float = 1.0
    """Seconds before the second attempt."""
    max_delay: float | None = None
    """Upper bound, in seconds, of any single wait (before jitter); ``None``:
    30 s, or ``initial_delay`` if that is longer."""
    backoff_multiplier: float = 2.0
    """Growth factor of the wait from one attempt to the next."""
    jitter: float = 0.1
    """Fraction of the wait added or removed at random, ``0`` for none."""
    non_retryable: tuple[str, ...] = field(default=())
    """Exception class names (or error codes) that are never retried."""

    def __post_init__(self) -> None:
        # Accept durations in any public form, store seconds.
        object.__setattr__(self, "initial_delay", to_seconds(self.initial_delay, what="initial_delay"))
        if self.max_delay is None:
            object.__setattr__(self, "max_delay", max(30.0, self.initial_delay))
        else:
            object.__setattr__(self, "max_delay", to_seconds(self.max_delay, what="max_delay"))
        object.__setattr__(self, "non_retryable", tuple(self.non_retryable))
        self._validate()

    def _validate(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError("max_attempts must be an int")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_multiplier < 1.0:
            raise ValueError("backoff_multiplier must be >= 1.0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        if self.cap < self.initial_delay:
            raise ValueError("max_delay must be >= initial_delay")

    @classmethod
    def create(
        cls,
        *,
        max_attempts: int = 3,
        initial_delay: Duration = 1.0,
        max_delay: Duration | None = None,
        backoff_multiplier: float = 2.0,
        jitter: float = 0.1,
        non_retryable: tuple[str, ...] = (),
    ) -> RetryPolicy:
        """Like the constructor, but typed to accept ``"10s"`` or timedeltas for delays."""
        return cls(
            max_attempts=max_attempts,
            initial_delay=to_seconds(initial_delay),
            max_delay=None if max_delay is None else to_seconds(max_delay),
            backoff_multiplier=backoff_multiplier,
            jitter=jitter,
            non_retryable=non_retryable,
        )

    def base_delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based), before jitter."""
        exponent = max(attempt - 1, 0)
        # Cap the exponent so huge attempt numbers cannot overflow a float.
        delay = self.initial_delay * (self.backoff_multiplier ** min(exponent, 64))
        return min(delay, self.cap)

    @property
    def cap(self) -> float:
        """``max_delay`` as resolved (never None after construction)."""
        return float(self.max_delay if self.max_delay is not None else max(30.0, self.initial_delay))

    def next_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt ``attempt``, jitter applied (never negative)."""
        delay = self.base_delay(attempt)
        if self.jitter and delay:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            delay *= 1.0 + spread
        return max(delay, 0.0)

    def to_dict(self) -> dict[str, object]:
        return {
            "max_attempts": self.max_attempts,
            "initial_delay": self.initial_delay,
            "max_delay": self.max_delay,
            "backoff_multiplier": self.backoff_multiplier,
            "jitter": self.jitter,
            "non_retryable": list(self.non_retryable),
        }


NO_RETRY = RetryPolicy(max_attempts=1, initial_delay=0.0, max_delay=0.0)
