"""The journal's storage layout and its versioned JSON codec.

One Durable Object holds one execution. Its keys:

``meta``            the execution's immutable facts: workflow, version, input, creation, deadline
``state``           the small mutable record: status, failure, compensation, wake-up
``result``          the final output, once completed
``j:<op>``          one entry per operation of the workflow (step, sleep, wait, child)
``c:<op>``          one entry per operation of the compensation handler
``e:<seq>``         an external event waiting in the inbox
``eid:<id>``        a delivered event id, so a duplicate delivery is ignored
``o:<seq>``         a history record waiting for delivery to D1 (the outbox)
``i:<hash>``        a recorded idempotent result carried over by ``restart``
``children:<op>``   the child started at operation ``op``: its id, workflow and status
``child-id:<id>``   the operation that started the child ``id`` (a start looks its id up)
``mail:<seq>``      a request to another object waiting for delivery (``_mail``)
``mailx:<seq>``     a request the other object refused for good (a dead letter)

Every value is JSON text carrying its format version ``"v"``: the same bytes on
CPython and Pyodide, readable from D1 and by people. An operation's entry is
rewritten as it moves through ``running``, ``retrying`` and a final status, so a
step costs one write whatever the journal's length.

Operation entries (``j:``/``c:``) are written in version 2 (:data:`OP_VERSION`):
a field at its default is left out (the position, which the key holds; zero
failure counters; no errors; a null error; an attempt start equal to the step's
start; the idempotency key and its hash when the key is the derived default,
which is never looked up) and :func:`decode_record` puts it back, so every reader
sees the version 1 shape. Version 1 entries still decode as they are; every
other record is version 1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any, Final, Literal, TypedDict

from ..definitions._json import (
    MAX_VALUE_BYTES as MAX_VALUE_BYTES,
)
from ..definitions._json import check_size as check_size
from ..definitions._json import dumps as dumps
from ..definitions._json import encode_value as encode_value
from ..definitions._json import is_unicode as is_unicode
from ..definitions._json import loads as loads
from ..definitions._json import number_text as number_text
from ..definitions._json import scan_once
from ..definitions._steps import derived_idempotency_key
from ..errors import WorkflowError

VERSION: Final = 1
OP_VERSION: Final = 2
"""The version operation entries are written in (see the module docstring)."""
META: Final = "meta"
STATE: Final = "state"
RESULT: Final = "result"
MAIN: Final = "j:"
COMPENSATION: Final = "c:"
OP_PREFIXES: Final = (MAIN, COMPENSATION)
"""The prefixes of operation entries' keys, the main phase's and the compensation's."""
INBOX: Final = "e:"
EVENT_ID: Final = "eid:"
OUTBOX: Final = "o:"
IDEMPOTENT: Final = "i:"
CHILDREN: Final = "children:"
CHILD_IDS: Final = "child-id:"

Status = Literal[
    "queued",
    "pending",
    "running",
    "completed",
    "failed",
    "cancelled",
    "waiting",
    "sleeping",
    "blocked",
    "paused",
]
TERMINAL: Final = frozenset({"completed", "failed", "cancelled"})

WAITING_LISTED: Final = 32
"""Event types the state lists in ``waiting_for`` at most (the first, in order); past that,
``waiting_for_count`` says how many there are. A parent waiting for a thousand children
rewrites a small state at each child's outcome, not one that lists them all (its children
are listed in records of their own, ``CHILDREN``)."""


def waiting_fields(state: Mapping[str, Any], types: Sequence[str]) -> dict[str, Any]:
    """The state's changes for an execution now waiting for ``types`` (none, an empty
    tuple as in ``_state.decode_state``: it waits for nothing, or has finished)."""
    if len(types) > WAITING_LISTED:
        return {"waiting_for": list(types[:WAITING_LISTED]), "waiting_for_count": len(types)}
    if state.get("waiting_for_count") is not None:
        return {"waiting_for": list(types) or (), "waiting_for_count": None}
    return {"waiting_for": list(types) or ()}


OpKind = Literal["step", "sleep", "wait", "state", "child"]
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


default_idempotency_key = derived_idempotency_key
"""A step's idempotency key when its options give none (defined beside the step's context)."""


def op_key(prefix: str, op: int) -> str:
    # Zero-padded so storage lists entries in operation order (``:08d``'s text, no format spec to parse).
    return prefix + str(op).zfill(8)


def phase_of(key: str) -> str:
    """The phase of an operation's journal key, or of its prefix: ``main`` or ``compensation``."""
    return "main" if key.startswith(MAIN) else "compensation"


def prefix_of(phase: str) -> str:
    """The journal prefix of a phase's operations (``phase_of``'s reverse)."""
    return MAIN if phase == "main" else COMPENSATION


def op_of(key: str) -> int:
    return int(key.split(":", 1)[1])


def seq_key(prefix: str, seq: int) -> str:
    return prefix + str(seq).zfill(12)


def is_op_key(key: str) -> bool:
    return key.startswith(OP_PREFIXES)


def encode_record(key: str, record: dict[str, Any], *, what: str) -> str:
    """Serialize a journal record (already made of JSON values) and check its size."""
    if "v" not in record:
        record = {"v": OP_VERSION if is_op_key(key) else VERSION, **record}
    text = encode_value(record, what=what)
    check_size(key, text, what=what)
    return text


def encode_entry(key: str, record: dict[str, Any]) -> str:
    """:func:`encode_record` for the step's hot path: the same text and the same
    errors, but the checks' messages are only built when one fails (a record of
    ASCII text within the size limit needs none)."""
    try:
        text = dumps(record)
    except (TypeError, ValueError, RecursionError):
        text = ""
    if text and text.isascii() and len(key) + len(text) <= MAX_VALUE_BYTES:
        return text
    return encode_record(key, record, what=f"journal entry of {record.get('name')!r}")


# Step entry texts' constant parts, made once (under Pyodide each field of an f-string counts).
STEP_TEXT_HEAD: Final = f'{{"v":{OP_VERSION},"kind":"step","name":'
FIRST_RUNNING_TEXT_MIDDLE: Final = ',"status":"running","attempt":1,"started_at":'
FIRST_COMPLETED_TEXT_MIDDLE: Final = ',"status":"completed","attempt":1,"started_at":'


def running_step_text(name: str, attempt: int, started_at: float) -> str:
    """``encode_entry``'s text for a running step entry of six fields (``v``, ``kind``, ``name``,
    ``status``, ``attempt``, ``started_at``), written out (``tests/test_step_envelope.py``)."""
    return (
        f'{STEP_TEXT_HEAD}{encode_basestring(name)},"status":"running",'
        f'"attempt":{int(attempt)},"started_at":{number_text(started_at)}}}'
    )


class JournalFormatError(WorkflowError):
    """A stored record cannot be decoded by this version of the library."""

    code = "journal_format"
    retryable = False


def decode_record(key: str, text: Any) -> dict[str, Any]:
    """Decode one stored record, refusing unknown versions and non-objects."""
    if not isinstance(text, str):
        raise JournalFormatError(f"record {key!r} is not JSON text", key=key)
    try:
        record = loads(text)
    except (ValueError, RecursionError) as exc:
        raise JournalFormatError(f"record {key!r} is not valid JSON: {exc}", key=key) from None
    if not isinstance(record, dict):
        raise JournalFormatError(f"record {key!r} is not a JSON object", key=key)
    version = record.get("v")
    if version == OP_VERSION and is_op_key(key):
        return _expand_op(key, record)
    if version != VERSION:
        raise JournalFormatError(
            f"record {key!r} has journal version {version!r}; this library reads version {VERSION}"
            f" (and {OP_VERSION} for operation entries)",
            key=key,
            version=version,
        )
    return record


def _expand_op(key: str, record: dict[str, Any]) -> dict[str, Any]:
    """A version 2 operation entry with the fields left out at their defaults put back."""
    if "op" not in record:
        record["op"] = op_of(key)
    if record.get("kind") == "step":
        record.setdefault("failures", 0)
        record.setdefault("lost", 0)
        record.setdefault("errors", [])
        record.setdefault("error", None)
        if "started_at" in record:
            record.setdefault("attempt_started_at", record["started_at"])
    return record


NOT_PLAIN: Final[Any] = object()
"""What a reader of one field of an entry (:func:`finished_op_output`) returns for a text it
does not read."""

_INSTANT: Final = r"[1-9][0-9]*+\.[0-9]++"
"""A positive JSON number with a fraction and no exponent: a clock's time as ``number_text``
writes it (any other is read by ``decode_record``)."""
_PLAIN_CHARS: Final = r'[^"\\\x00-\x1f]*+'
_PLAIN_STRING: Final = f'"{_PLAIN_CHARS}"'
"""A JSON string with no escape and no control character (any other is read by ``decode_record``)."""
_COMPLETED_STEP: Final = re.compile(
    f'\\{{"v":{OP_VERSION},"kind":"step","name":"({_PLAIN_CHARS})","status":"completed","attempt":1,'
    f'"started_at":{_INSTANT},(?:"idempotency_hash":"(sha256:[0-9a-f]{{32}})",)?"finished_at":{_INSTANT},"output":'
)
"""A completed first attempt's entry up to its output, its name and key's hash (if any) as groups."""


def completed_step_output(text: Any, name: str) -> tuple[str | None, Any] | None:
    """The output journaled in ``text`` if it is the entry of step ``name`` completed by
    its first attempt with no other field, as the step writes it, and the hash of its
    idempotency key if it has one (written between the two times), else None::

        {"v":2,"kind":"step","name":…,"status":"completed","attempt":1,"started_at":…,"finished_at":…,"output":…}
        {…,"started_at":…,"idempotency_hash":"sha256:…","finished_at":…,"output":…}

    A replay's hot path: ``(key_hash or None, output)``, both layouts told apart in one
    match. Only the output is decoded (a replay reads nothing else of a completed step;
    decoding the rest is most of a replayed step's cost), but the rest is checked against
    the layout: a text this reads is valid JSON, and :func:`decode_record` would give the
    same output and hash. Any other text (another name or shape, a name written with an
    escape, a damaged record) is None, for ``decode_record`` to read or refuse."""
    try:
        head = _COMPLETED_STEP.match(text)
    except TypeError:  # not text: decode_record refuses it
        return None
    if head is None or head[1] != name:
        return None
    # ``_last_field``, inlined: a call less for every step a replay reads.
    try:
        output, end = scan_once(text, head.end())
    except (StopIteration, ValueError, RecursionError):
        return None
    return (head[2], output) if text[end:] == "}" else None


def _last_field(text: str, start: int) -> Any:
    """The JSON value at ``start`` if the entry ends right after it (its closing brace),
    else :data:`NOT_PLAIN`."""
    try:
        value, end = scan_once(text, start)
    except (StopIteration, ValueError, RecursionError):
        return NOT_PLAIN
    return value if text[end:] == "}" else NOT_PLAIN


_FINISHED_TAILS: Final = {
    "wait": (
        f'"event_type":{_PLAIN_STRING},"started_at":{_INSTANT},"wake_at":(?:null|{_INSTANT}),'
        f'"finished_at":{_INSTANT},"event_id":(?:null|{_PLAIN_STRING}),"output":'
    ),
    "child": (
        f'"workflow":{_PLAIN_STRING},"child_id":{_PLAIN_STRING},"event_type":{_PLAIN_STRING},'
        f'"started_at":{_INSTANT},"finished_at":{_INSTANT},"output":'
    ),
    "sleep": f'"started_at":{_INSTANT},"wake_at":{_INSTANT},"finished_at":{_INSTANT}}}\\Z',
}
_FINISHED: Final = {
    kind: re.compile(
        f'\\{{"v":{OP_VERSION},"op":([0-9]++),"kind":"{kind}","name":"({_PLAIN_CHARS})","status":"completed",{tail}'
    )
    for kind, tail in _FINISHED_TAILS.items()
}
"""A finished wait's, child's or sleep's entry up to its output (a sleep's whole entry):
its operation's number and name (a string with no escape) as groups."""


def finished_op_output(text: Any, op: int, kind: str, name: str) -> Any:
    """What the completed wait, child or sleep ``name`` at ``op`` returned, if ``text`` is
    its entry as the operation writes it (the event's payload, the child's result, None
    for a sleep)::

        {"v":2,"op":…,"kind":"wait","name":…,"status":"completed","event_type":…,"started_at":…,"wake_at":…,"finished_at":…,"event_id":…,"output":…}
        {"v":2,"op":…,"kind":"child","name":…,"status":"completed","workflow":…,"child_id":…,"event_type":…,"started_at":…,"finished_at":…,"output":…}
        {"v":2,"op":…,"kind":"sleep","name":…,"status":"completed","started_at":…,"wake_at":…,"finished_at":…}

    else :data:`NOT_PLAIN`. As :func:`completed_step_output`: only the output is decoded, the
    rest is checked against the layout, so a text this reads is valid JSON and
    :func:`decode_record` would give the same output; any other text (a name written with
    an escape too) is NOT_PLAIN."""
    try:
        head = _FINISHED[kind].match(text)
    except TypeError:  # not text: decode_record refuses it
        return NOT_PLAIN
    if head is None or head[2] != name or head[1] != str(op):
        return NOT_PLAIN
    if kind == "sleep":
        return None
    return _last_field(text, head.end())


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
