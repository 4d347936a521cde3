"""Durations and instants as the public API accepts them.

A duration is seconds (``int``/``float``), a :class:`datetime.timedelta`, or a
string such as ``"500ms"``, ``"10s"``, ``"5m"``, ``"1h30m"``, ``"7d"`` or
``"10 seconds"``. Internally everything is float seconds; an instant is float
seconds since the Unix epoch.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

Duration = float | int | timedelta | str
"""Anything :func:`to_seconds` accepts."""

_UNITS = {
    "ms": 0.001,
    "millisecond": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*")


def to_seconds(value: Duration, *, what: str = "duration") -> float:
    """Convert a duration to float seconds, rejecting negatives and nonsense."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of seconds, timedelta or string, not bool")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse(value, what)
    else:
        raise ValueError(f"{what} must be seconds, a timedelta or a string like '10s', got {value!r}")
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError(f"{what} must be a finite, non-negative duration, got {value!r}")
    return seconds


def _parse(text: str, what: str) -> float:
    pos, total, matched = 0, 0.0, False
    stripped = text.strip()
    while pos < len(stripped):
        m = _PART.match(stripped, pos)
        if m is None:
            break
        unit = m.group(2).lower()
        factor = _UNITS.get(unit) or _UNITS.get(unit.rstrip("s"))
        if factor is None:
            raise ValueError(f"{what}: unknown unit {m.group(2)!r} in {text!r}")
        total += float(m.group(1)) * factor
        pos, matched = m.end(), True
    if not matched or pos != len(stripped):
        raise ValueError(f"{what}: cannot parse {text!r}; use e.g. '500ms', '10s', '5m', '2h', '7d'")
    return total


def to_instant(value: datetime | float | int, *, what: str = "time") -> float:
    """Convert an aware datetime (or epoch seconds) to epoch seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{what} must be timezone-aware (e.g. datetime.now(timezone.utc))")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a datetime or epoch seconds, got {value!r}")
    return float(value)


def iso(instant: float | None) -> str | None:
    """Render epoch seconds as an ISO-8601 UTC string (for people, not for storage)."""
    if instant is None:
        return None
    return datetime.fromtimestamp(instant, tz=UTC).isoformat(timespec="milliseconds")
