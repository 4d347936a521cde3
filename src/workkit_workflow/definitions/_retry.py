"""Retry policy: how many attempts a step gets and how long to wait between them."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from ..errors import InvalidOptionError
from ._durations import Duration, to_seconds

MAX_ATTEMPTS: Final = 1000
"""Most attempts a policy may allow. Each failed attempt costs a journal write
and an alarm; a step that needs more is better as a loop of waits."""
MAX_MULTIPLIER: Final = 1e6
"""Largest ``backoff_multiplier``: beyond it the first retry already waits ``max_delay``."""
DEFAULT_LOST_ATTEMPTS: Final = 5
"""``max_lost_attempts`` when none is given."""
DEFAULT_CAP: Final = 30.0
"""``max_delay`` when none is given (or ``initial_delay``, if that is longer)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with a cap and jitter.

    The wait before attempt ``n + 1`` is ``initial_delay * backoff_multiplier ** (n - 1)``,
    capped at ``max_delay``, then spread by ``± jitter`` (a fraction). Waits are
    Durable Object alarms, never in-memory sleeps.

    Every knob is checked at construction; a bad one raises
    :class:`~workkit_workflow.errors.InvalidOptionError` (also a ``ValueError``).
    """

    max_attempts: int = 3
    """Total attempts, the first included: ``1`` (no retries) to :data:`MAX_ATTEMPTS`."""
    initial_delay: float = 1.0
    """Seconds before the second attempt (any duration: ``"500ms"``, a timedelta...), at most 365 days."""
    max_delay: float | None = None
    """Upper bound, in seconds, of any single wait (before jitter), at least
    ``initial_delay`` and at most 365 days; ``None``: 30 s, or ``initial_delay``
    if that is longer."""
    backoff_multiplier: float = 2.0
    """Growth factor of the wait from one attempt to the next: finite, from 1 to :data:`MAX_MULTIPLIER`."""
    jitter: float = 0.1
    """Fraction of the wait added or removed at random, from ``0`` (none) to ``1``."""
    non_retryable: tuple[str, ...] = field(default=())
    """Exception class names (or error codes) that are never retried."""
    max_lost_attempts: int = DEFAULT_LOST_ATTEMPTS
    """Attempts lost in a row to the object dying mid-step (a deploy, a CPU or memory
    limit, a crash) before the step fails with ``attempt_lost``: ``1`` to
    :data:`MAX_ATTEMPTS`. A lost attempt may not have run, so it runs again without
    using up ``max_attempts``; this cap stops a step that kills its object every time
    from looping forever. Raise it for long steps on a Worker that is deployed often."""

    def __post_init__(self) -> None:
        # Accept durations in any public form, store seconds.
        initial = to_seconds(self.initial_delay, what="RetryPolicy initial_delay")
        object.__setattr__(self, "initial_delay", initial)
        if self.max_delay is None:
            object.__setattr__(self, "max_delay", max(DEFAULT_CAP, initial))
        else:
            object.__setattr__(self, "max_delay", to_seconds(self.max_delay, what="RetryPolicy max_delay"))
        object.__setattr__(self, "non_retryable", _names(self.non_retryable))
        self._validate()

    def _validate(self) -> None:
        _attempts(self.max_attempts, "max_attempts")
        _attempts(self.max_lost_attempts, "max_lost_attempts")
        multiplier = _number(self.backoff_multiplier, "backoff_multiplier")
        if not 1.0 <= multiplier <= MAX_MULTIPLIER:
            raise InvalidOptionError(
                f"RetryPolicy backoff_multiplier must be from 1 to {MAX_MULTIPLIER:g}, got {multiplier!r}"
            )
        jitter = _number(self.jitter, "jitter")
        if not 0.0 <= jitter <= 1.0:
            raise InvalidOptionError(f"RetryPolicy jitter must be from 0 to 1, got {jitter!r}")
        if self.cap < self.initial_delay:
            raise InvalidOptionError(
                f"RetryPolicy max_delay ({self.cap:g} s) must be >= initial_delay ({self.initial_delay:g} s)"
            )

    @classmethod
    def create(
        cls,
        *,
        max_attempts: int = 3,
        initial_delay: Duration = 1.0,
        max_delay: Duration | None = None,
        backoff_multiplier: float = 2.0,
        jitter: float = 0.1,
        non_retryable: Iterable[str] = (),
        max_lost_attempts: int = DEFAULT_LOST_ATTEMPTS,
    ) -> RetryPolicy:
        """Like the constructor, but typed to accept ``"10s"`` or timedeltas for delays."""
        return cls(
            max_attempts=max_attempts,
            initial_delay=to_seconds(initial_delay, what="RetryPolicy initial_delay"),
            max_delay=None if max_delay is None else to_seconds(max_delay, what="RetryPolicy max_delay"),
            backoff_multiplier=backoff_multiplier,
            jitter=jitter,
            non_retryable=_names(non_retryable),
            max_lost_attempts=max_lost_attempts,
        )

    def base_delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based), before jitter.

        Computed so that no multiplier or attempt number overflows a float:
        the growth is compared with the cap in log space before it is applied.
        """
        cap = self.cap
        exponent = max(attempt - 1, 0)
        if exponent == 0 or self.initial_delay == 0.0 or self.backoff_multiplier == 1.0:
            return min(self.initial_delay, cap)
        # ``min`` keeps a huge int exponent convertible to float; any exponent
        # that large reaches the cap whatever the multiplier (> 1).
        growth = float(min(exponent, 10**300)) * math.log(self.backoff_multiplier)
        if math.log(self.initial_delay) + growth >= math.log(cap):
            return cap
        # Here initial * multiplier ** exponent < cap: no overflow. The direct
        # form keeps exact results (1, 2, 4, 8...) where the power is small.
        if growth < 700.0:
            delay = self.initial_delay * self.backoff_multiplier**exponent
        else:
            delay = math.exp(math.log(self.initial_delay) + growth)
        return min(delay, cap)

    @property
    def cap(self) -> float:
        """``max_delay`` as resolved (never None after construction)."""
        return float(self.max_delay if self.max_delay is not None else max(DEFAULT_CAP, self.initial_delay))

    def next_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt ``attempt``, jitter applied (never negative)."""
        delay = self.base_delay(attempt)
        if self.jitter and delay:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            delay *= 1.0 + spread
        return max(delay, 0.0)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "max_attempts": self.max_attempts,
            "initial_delay": self.initial_delay,
            "max_delay": self.max_delay,
            "backoff_multiplier": self.backoff_multiplier,
            "jitter": self.jitter,
            "non_retryable": list(self.non_retryable),
        }
        if self.max_lost_attempts != DEFAULT_LOST_ATTEMPTS:  # journals written before it stay as they were
            data["max_lost_attempts"] = self.max_lost_attempts
        return data


def _attempts(value: object, knob: str) -> None:
    """Check a count of attempts: an int from 1 to :data:`MAX_ATTEMPTS`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOptionError(f"RetryPolicy {knob} must be an int, got {value!r}")
    if not 1 <= value <= MAX_ATTEMPTS:
        raise InvalidOptionError(f"RetryPolicy {knob} must be from 1 to {MAX_ATTEMPTS}, got {value}")


DEFAULT_MAX_RECOVERIES: Final = 10
"""A workflow's recoveries in a row, with no journal write between them, before its
execution is paused (``engine._recoveries``)."""


def check_max_recoveries(value: object, name: str) -> int | None:
    """A workflow's ``max_recoveries``: an int from 1 to :data:`MAX_ATTEMPTS`, or None (no cap)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS:
        raise InvalidOptionError(
            f"workflow {name!r}: max_recoveries must be a whole number from 1 to {MAX_ATTEMPTS}, "
            f"or None for no cap (got {value!r})"
        )
    return value


def _number(value: object, knob: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptionError(f"RetryPolicy {knob} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidOptionError(f"RetryPolicy {knob} must be finite, got {value!r}")
    return number


def _names(value: object) -> tuple[str, ...]:
    # A bare string would otherwise become a tuple of its letters.
    if isinstance(value, str):
        raise InvalidOptionError(
            f"RetryPolicy non_retryable must be a list of names, not the string {value!r}; write ({value!r},)"
        )
    if not isinstance(value, Iterable):
        raise InvalidOptionError(f"RetryPolicy non_retryable must be a list of names, got {value!r}")
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidOptionError(
                f"RetryPolicy non_retryable holds {name!r}; each must be a non-empty name"
            )
    return names


NO_RETRY = RetryPolicy(max_attempts=1, initial_delay=0.0, max_delay=0.0)
