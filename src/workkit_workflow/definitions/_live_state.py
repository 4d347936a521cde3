"""Live state values as the workflow body hands them to ``ctx.set_state``: checked
here, at the call, so a bad value is an error where it was written."""

from __future__ import annotations

from typing import Any, Final

from ..errors import SerializationError
from ._json import encode_value
from ._values import to_data

MAX_STATE_BYTES: Final = 131_072
"""Largest live state value, serialized: it is read by callers polling progress
and shown on the page, so it is meant for progress and small results."""


def state_text(key: str, value: Any) -> str:
    """``value`` as checked JSON text, or SerializationError."""
    what = f"state {key!r}"
    text = encode_value(to_data(value, what=what), what=what)
    size = len(text.encode("utf-8"))
    if size > MAX_STATE_BYTES:
        raise SerializationError(
            f"{what} is {size} bytes serialized; the limit is {MAX_STATE_BYTES}",
            what=what,
            size=size,
            limit=MAX_STATE_BYTES,
        )
    return text
