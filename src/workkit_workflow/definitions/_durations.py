"""Durations and instants as the public API accepts them.

A duration is seconds (``int``/``float``), a :class:`datetime.timedelta`, or a
string of one or more ``<number><unit>`` parts such as ``"500ms"``, ``"10s"``,
``"5m"``, ``"1h30m"`` (parts add up), ``"7d"`` or ``"10 seconds"``. Internally
everything is float seconds; an instant is float seconds since the Unix epoch.

Bounds, checked where the value is given (``InvalidOptionError``, also a
``ValueError``): a duration is finite, not negative and at most
:data:`MAX_DURATION` (365 days, the longest sleep Cloudflare Workflows
allows); an instant lies between the epoch and the end of year 9999, so every
stored time can be shown as a date.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ..errors import InvalidOptionError

Duration = float | int | timedelta | str
"""Anything :func:`to_seconds` accepts."""

MAX_DURATION: Final = 365 * 86400.0
"""The longest duration accepted anywhere (sleeps, timeouts, retry delays): 365 days."""
MAX_INSTANT: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
"""The latest instant accepted (the end of year 9999, the last a ``datetime`` holds)."""
_MAX_TEXT = 100

_SYMBOLS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_WORDS = {
    "millisecond": 0.001,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 604800.0,
}
# Words take one plural "s" ("mins"); symbols do not ("mss" is nothing).
_UNITS = {**_SYMBOLS, **_WORDS, **{word + "s": factor for word, factor in _WORDS.items()}}
# ASCII digits only: ``\d`` would also take other scripts' digits.
_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]+)\s*")
_HINT = "use e.g. '500ms', '10s', '5m', '1h30m', '7d'"


def to_seconds(value: Duration, *, what: str = "duration") -> float:
    """Convert a duration to float seconds, rejecting negatives, non-finite and over-long ones."""
    if isinstance(value, bool):
        raise InvalidOptionError(f"{what} must be a number of seconds, timedelta or string, not bool")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = _as_float(value, what)
    elif isinstance(value, str):
        seconds = _parse(value, what)
    else:
        raise InvalidOptionError(f"{what} must be seconds, a timedelta or a string like '10s', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidOptionError(f"{what} must be a finite, non-negative duration, got {value!r}")
    if seconds > MAX_DURATION:
        raise InvalidOptionError(
            f"{what} is {seconds:g} s; the longest duration allowed is 365 days ({MAX_DURATION:g} s)"
        )
    return seconds


def plain_seconds(value: Any) -> float | None:
    """``to_seconds(value)`` for a number of seconds it accepts (an int or float from 0 to
    365 days), else None: checked without the message ``to_seconds`` is given for a refusal."""
    if (type(value) is float or type(value) is int) and 0 <= value <= MAX_DURATION:
        return float(value)
    return None


def _as_float(value: int | float, what: str) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond a float's range
        raise InvalidOptionError(f"{what} is far too large: {value}") from None


def _parse(text: str, what: str) -> float:
    if len(text) > _MAX_TEXT:
        raise InvalidOptionError(f"{what}: {text[:20]!r}... is longer than {_MAX_TEXT} characters; {_HINT}")
    pos, total, matched = 0, 0.0, False
    stripped = text.strip()
    while pos < len(stripped):
        m = _PART.match(stripped, pos)
        if m is None:
            break
        total += float(m.group(1)) * _unit(m.group(2), text, what)
        pos, matched = m.end(), True
    if not matched or pos != len(stripped):
        raise InvalidOptionError(f"{what}: cannot parse {text!r}; {_HINT}")
    return total


def _unit(name: str, text: str, what: str) -> float:
    factor = _UNITS.get(name.lower())
    if factor is None:
        raise InvalidOptionError(f"{what}: unknown unit {name!r} in {text!r}; {_HINT}")
    return factor


def to_instant(value: datetime | float | int, *, what: str = "time") -> float:
    """Convert an aware datetime (or epoch seconds) to epoch seconds, within the epoch and year 9999."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidOptionError(f"{what} must be timezone-aware (e.g. datetime.now(timezone.utc))")
        instant = value.timestamp()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptionError(f"{what} must be a datetime or epoch seconds, got {value!r}")
    else:
        instant = _as_float(value, what)
    if not math.isfinite(instant) or not 0.0 <= instant <= MAX_INSTANT:
        raise InvalidOptionError(
            f"{what} must be between the Unix epoch and the end of year 9999, got {value!r}"
        )
    return instant


def iso(instant: float | None) -> str | None:
    """Render epoch seconds as an ISO-8601 UTC string (for people, not for storage).

    Never raises: an instant no date can show (a corrupt or foreign record)
    is rendered as a plain description instead."""
    if instant is None:
        return None
    try:
        return datetime.fromtimestamp(instant, tz=UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError, TypeError):
        return out_of_range(instant)


def out_of_range(instant: object) -> str:
    """How an instant that no date can show is rendered."""
    return f"(out of range: {instant!r} s since 1970)"
