"""The JSON codec every stored or wired value goes through.

Compact, deterministic JSON text, refused when it could not be stored: NaN and
infinities, values that are not JSON, lone surrogates (not valid UTF-8) and
values over the per-value storage limit. Definitions check user values with
it; the engine's journal and the adapters encode with it.
"""

from __future__ import annotations

import json
from typing import Any, Final

from ..errors import SerializationError
from ._values import JSON_TYPES

MAX_VALUE_BYTES: Final = 2_000_000
"""Largest serialized value (key included) written to storage.

Cloudflare rejects values over about 2 MB (measured: 2.2 MB serialized); a
batch put that meets one is not atomic, so sizes are checked before writing.
"""

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# The C encoder ``JSONEncoder.encode`` builds anew on every call, built once: the
# same text, at about half the cost for the small records a step writes. Without
# circular-reference markers a cycle ends in RecursionError, which callers catch.
_MAKE_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
C_ENCODE: Final[Any] = (
    None
    if _MAKE_C_ENCODER is None
    else _MAKE_C_ENCODER(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)
"""The C encoder's call (None without it): ``"".join(C_ENCODE(value, 0))`` is ``dumps(value)``
for a value that is not a string (the step's hot path calls it so for a dict output)."""


def dumps(value: Any) -> str:
    """Compact, deterministic JSON; NaN and infinities are refused."""
    if C_ENCODE is None:
        return _ENCODER.encode(value)
    if isinstance(value, str):
        return json.encoder.encode_basestring(value)
    return "".join(C_ENCODE(value, 0))


_LAST_NUMBER: tuple[float, str] = (-1.0, "-1.0")
"""The last positive float :func:`number_text` wrote, and its text (one tuple, so a
reader never pairs a value with another's text)."""


def number_text(value: float) -> str:
    """``dumps`` of a number: a finite float's JSON text is its ``repr`` (the
    timestamps every journal entry carries), without the encoder's call.

    Consecutive instants are often the same millisecond (Cloudflare's clock does not
    move while code runs, and a step can take less than one), and a float's ``repr``
    costs a microsecond under Pyodide: the last one is kept. Only positive values
    are, since ``-0.0 == 0.0`` while their texts differ."""
    global _LAST_NUMBER
    last = _LAST_NUMBER
    if value == last[0] and type(value) is float:
        return last[1]
    if type(value) is float and value - value == 0.0:
        text = repr(value)
        if value > 0.0:
            _LAST_NUMBER = (value, text)
        return text
    return dumps(value)


_SCAN: Any = getattr(json.JSONDecoder(), "scan_once")  # noqa: B009  (untyped in typeshed)
"""The decoder's scanner, called directly: ``json.loads`` wraps it in three Python
calls and two whitespace matches, most of the cost of decoding a small record."""

scan_once: Any = _SCAN
"""``scan_once(text, start)``: the JSON value starting at ``start`` and the index just
past it; StopIteration or ValueError when there is none. For a reader that decodes one
field of a record whose layout it checked (``engine._journal.completed_step_output``)."""


def loads(text: str) -> Any:
    """``json.loads(text)``, faster for the compact text this library writes."""
    try:
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError, TypeError):
        end = -1
    if end != len(text):
        # Not one compact value (whitespace around it, or not JSON): json.loads
        # decodes it, or raises the error it always did.
        return json.loads(text)
    return value


_READ_BACK_AS_IS: Final = JSON_TYPES - {dict, list}
"""The types whose values read back from their JSON text as themselves (exact types: a
subclass, an enum's member say, reads back as its base type)."""


def decoded(value: Any, text: str) -> Any:
    """``loads(text)``, where ``text`` is ``dumps(value)``: the value as it reads back (a
    fresh copy, tuples as lists, keys as strings). A scalar, or a dict of at most 16
    scalars under string keys, reads back as itself: it is returned (the dict copied)
    without decoding. These are the most usual step outputs, and under Pyodide the
    decoder costs two to three times the copy (``tests/test_journal_codec.py`` holds it to
    ``loads``)."""
    kind = type(value)
    if kind is dict and len(value) <= 16:
        for key, item in value.items():
            if type(key) is not str or type(item) not in _READ_BACK_AS_IS:
                return loads(text)
        return dict(value)
    if kind in _READ_BACK_AS_IS:
        return value
    return loads(text)


def encode_value(value: Any, *, what: str) -> str:
    """Serialize a user value (step output, input, payload) or fail with SerializationError.

    The text must also be storable as UTF-8: a lone surrogate (``"\\ud800"``,
    which Python strings can hold and JSON escapes can carry) is refused here,
    where callers expect a SerializationError, not later when it is encoded.
    """
    try:
        text = dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(
            f"{what} is not JSON-serializable: {exc}", what=what, type=type(value).__name__
        ) from None
    if not text.isascii():
        utf8_size(text, what=what)
    return text


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate), so storable as UTF-8."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def utf8_size(text: str, *, what: str) -> int:
    """The UTF-8 size of ``text``, or SerializationError if it holds a lone surrogate."""
    if text.isascii():  # the common case, without building the bytes
        return len(text)
    try:
        return len(text.encode())
    except UnicodeEncodeError as exc:
        raise SerializationError(
            f"{what} holds a lone surrogate ({text[exc.start : exc.end]!a} at character {exc.start}), "
            "which is not valid Unicode and cannot be stored; encode binary data as base64",
            what=what,
            reason="lone_surrogate",
        ) from None


def check_size(key: str, text: str, *, what: str, limit: int = MAX_VALUE_BYTES) -> None:
    """SerializationError unless ``key`` and ``text`` fit one stored value as UTF-8."""
    if key.isascii() and text.isascii():  # the common case, without a call per string
        size = len(key) + len(text)
    else:
        size = utf8_size(key, what=f"the key of {what}") + utf8_size(text, what=what)
    if size > limit:
        raise SerializationError(
            f"{what} is {size} bytes serialized; the limit per stored value is {limit} bytes",
            what=what,
            size=size,
            limit=limit,
        )
