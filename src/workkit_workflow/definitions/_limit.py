"""Per-key concurrency limits: at most ``max`` executions of a workflow per key run at once.

``Workflow(..., concurrency=Limit(key=lambda input: input["account"], max=1))``.
The engine side is ``engine._limits`` (an execution waits ``queued`` for a slot)
and ``engine._limit_coordinator`` (one object per key hands out the slots).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidOptionError, InvalidRequestError

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Limit:
    """At most ``max`` executions with the same ``key`` run at once; the others wait,
    in the order they asked, in the status ``queued``.

    ``key`` is a function of the workflow input that returns a string (or an int),
    or the name of a field of a dict input: ``Limit(key="account", max=1)``.
    """

    key: Callable[[Any], Any] | str
    max: int = 1

    def __post_init__(self) -> None:
        if not callable(self.key) and not (isinstance(self.key, str) and self.key):
            raise InvalidOptionError("Limit key must be a function of the input or a field name")
        if isinstance(self.max, bool) or not isinstance(self.max, int) or not 1 <= self.max <= 10_000:
            raise InvalidOptionError(f"Limit max must be an integer from 1 to 10000, got {self.max!r}")

    def key_of(self, input: Any) -> str:
        """The key of one execution's input, or InvalidRequestError saying why there is none."""
        try:
            value = self.key(input) if callable(self.key) else input[self.key]
        except Exception as exc:
            raise InvalidRequestError(
                f"the concurrency key could not be computed from the input: {type(exc).__name__}: {exc}"
            ) from None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InvalidRequestError(f"the concurrency key must be a string or an integer, got {value!r}")
        key = str(value)
        if not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidRequestError(
                f"the concurrency key must be 1-{MAX_KEY_LENGTH} characters, got {key!r}"
            )
        return key
