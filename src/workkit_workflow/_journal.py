"""The journal's storage layout and its versioned JSON codec.

One Durable Object holds one execution. Its keys:

``meta``            the execution's immutable facts: workflow, input, creation, deadline
``state``           the small mutable record: status, failure, compensation, wake-up
``result``          the final output, once completed
``j:<op>``          one entry per operation of the workflow (step, sleep, wait)
``c:<op>``          one entry per operation of the compensation handler
``e:<seq>``         an external event waiting in the inbox
``eid:<id>``        a delivered event id, so a duplicate delivery is ignored
``o:<seq>``         a history record waiting for delivery to D1 (the outbox)
``i:<hash>``        a recorded idempotent result carried over by ``restart``

Every value is JSON text carrying ``"v": 1``: the same bytes on CPython and
Pyodide, readable from D1 and by people. An operation's entry is rewritten as
it moves through ``running``, ``retrying`` and a final status, so a step costs
one write whatever the journal's length.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal, TypedDict

from .errors import SerializationError, WorkflowError

VERSION: Final = 1
MAX_VALUE_BYTES: Final = 2_000_000
"""Largest serialized value (key included) written to storage.

Cloudflare rejects values over about 2 MB (measured: 2.2 MB serialized); a
batch put that meets one is not atomic, so sizes are checked before writing.
"""

META: Final = "meta"
STATE: Final = "state"
RESULT: Final = "result"
MAIN: Final = "j:"
COMPENSATION: Final = "c:"
INBOX: Final = "e:"
EVENT_ID: Final = "eid:"
OUTBOX: Final = "o:"
IDEMPOTENT: Final = "i:"

Status = Literal["pending", "running", "completed", "failed", "cancelled", "waiting", "sleeping"]
TERMINAL: Final = frozenset({"completed", "failed", "cancelled"})

OpKind = Literal["step", "sleep", "wait"]
OpStatus = Literal["running", "retrying", "sleeping", "waiting", "completed", "failed"]


class SerializedStepError(TypedDict, total=False):
    """A step error as journaled: code, message, retryable, attempt, timing."""

    code: str
    message: str
    type: str
    retryable: bool
    attempt: int
    started_at: float | None
    finished_at: float | None
    duration_ms: float | None


class JournalEntry(TypedDict, total=False):
    v: int
    op: int
    kind: OpKind
    name: str
    status: OpStatus
    attempt: int
    started_at: float
    finished_at: float | None
    output: Any
    error: SerializedStepError | None
    errors: list[SerializedStepError]
    idempotency_key: str | None
    idempotency_hash: str | None
    retry_at: float | None
    wake_at: float | None
    event_type: str | None
    event_id: str | None
    restored_from: str | None


def op_key(prefix: str, op: int) -> str:
    # Zero-padded so storage lists entries in operation order.
    return f"{prefix}{op:08d}"


def op_of(key: str) -> int:
    return int(key.split(":", 1)[1])


def seq_key(prefix: str, seq: int) -> str:
    return f"{prefix}{seq:012d}"


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact, deterministic JSON; NaN and infinities are refused."""
    return _ENCODER.encode(value)


def loads(text: str) -> Any:
    return json.loads(text)


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
    utf8_size(text, what=what)
    return text


EXECUTION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,199}$"
"""What an execution id may be: it names a Durable Object and goes into storage keys."""


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
    size = utf8_size(key, what=f"the key of {what}") + utf8_size(text, what=what)
    if size > limit:
        raise SerializationError(
            f"{what} is {size} bytes serialized; the limit per stored value is {limit} bytes",
            what=what,
            size=size,
            limit=limit,
        )


def encode_record(key: str, record: dict[str, Any], *, what: str) -> str:
    """Serialize a journal record (already made of JSON values) and check its size."""
    text = encode_value({"v": VERSION, **record} if "v" not in record else record, what=what)
    check_size(key, text, what=what)
    return text


class JournalFormatError(WorkflowError):
    """A stored record cannot be decoded by this version of the library."""

    code = "journal_format"
    retryable = False


def decode_record(key: str, text: Any) -> dict[str, Any]:
    """Decode one stored record, refusing unknown versions and non-objects."""
    if not isinstance(text, str):
        raise JournalFormatError(f"record {key!r} is not JSON text", key=key)
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise JournalFormatError(f"record {key!r} is not valid JSON: {exc}", key=key) from None
    if not isinstance(record, dict):
        raise JournalFormatError(f"record {key!r} is not a JSON object", key=key)
    version = record.get("v")
    if version != VERSION:
        raise JournalFormatError(
            f"record {key!r} has journal version {version!r}; this library reads version {VERSION}",
            key=key,
            version=version,
        )
    return record


def storable_text(text: str) -> str:
    """``text`` with any lone surrogate written as its escape, so an error
    message (which the step's code does not control) can always be journaled."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def serialize_error(
    exc: BaseException,
    *,
    attempt: int,
    started_at: float | None,
    finished_at: float | None,
    retryable: bool,
) -> SerializedStepError:
    code = getattr(exc, "code", None)
    if not isinstance(code, str) or not code:
        code = type(exc).__name__
    message = exc.message if isinstance(exc, WorkflowError) else str(exc)
    duration = None
    if started_at is not None and finished_at is not None:
        duration = round((finished_at - started_at) * 1000.0, 3)
    return {
        "code": storable_text(code),
        "message": storable_text(message[:4000]) or type(exc).__name__,
        "type": type(exc).__name__,
        "retryable": retryable,
        "attempt": attempt,
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_ms": duration,
    }


def is_retryable(exc: BaseException, non_retryable: tuple[str, ...] = ()) -> bool:
    """Whether a step error allows another attempt.

    ``NonRetryableError`` (or any WorkflowError with ``retryable = False``), an
    exception carrying ``retryable = False``, or one whose class name or code is
    listed in the policy's ``non_retryable`` is final.
    """
    if getattr(exc, "retryable", True) is False:
        return False
    if non_retryable:
        names = {cls.__name__ for cls in type(exc).__mro__}
        code = getattr(exc, "code", None)
        if names.intersection(non_retryable) or (isinstance(code, str) and code in non_retryable):
            return False
    return True
