"""Request bodies of the execution object's routes, validated with pydantic at the edge.

pydantic is imported here only, when a request arrives, so the engine stays
importable (and testable) where pydantic cannot be loaded.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ..definitions._ids import EXECUTION_ID_PATTERN, reserved_problem
from ..definitions._json import is_unicode, loads
from ..definitions._versions import VERSION_PATTERN
from ..errors import InvalidRequestError

MAX_BODY_BYTES = 2_500_000
_ID_PATTERN = EXECUTION_ID_PATTERN


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RestoredEntry(BaseModel):
    """A finished journal entry carried over by ``restart`` (other fields kept as given)."""

    model_config = ConfigDict(extra="allow", strict=True)
    v: Literal[1, 2]  # the journal format of operation entries (engine._journal)
    op: int = Field(ge=0, lt=100_000_000)
    kind: Literal["step", "sleep", "wait", "state", "child"]  # state: live state (ctx.set_state)
    name: str = Field(min_length=1, max_length=256)
    status: Literal["completed"]
    output: JsonValue = None


class RecordedResult(_Body):
    idempotency_hash: str = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, max_length=256)
    output: JsonValue = None


class RestartSpec(_Body):
    execution_id: str = Field(pattern=_ID_PATTERN)
    from_step: str = Field(min_length=1, max_length=256)
    kind: Literal["step", "sleep", "wait"] = "step"
    occurrence: int = Field(default=1, ge=1, le=100_000_000)
    entries: list[RestoredEntry] = Field(default_factory=list, max_length=100_000)
    idempotent: list[RecordedResult] = Field(default_factory=list, max_length=100_000)


class ParentSpec(_Body):
    """The parent of a child execution: which execution, which of its operations."""

    execution_id: str = Field(pattern=_ID_PATTERN)
    workflow: str = Field(min_length=1, max_length=256)
    op: int = Field(ge=0, lt=100_000_000)


class ExecuteBody(_Body):
    workflow: str = Field(min_length=1, max_length=256)
    input: JsonValue = None
    execution_id: str = Field(pattern=_ID_PATTERN)
    wait: bool = True
    restart: RestartSpec | None = None
    parent: ParentSpec | None = None
    version: str | None = Field(default=None, pattern=VERSION_PATTERN)


class VersionBody(_Body):
    version: str = Field(pattern=VERSION_PATTERN)


class CancelBody(_Body):
    reason: str | None = Field(default=None, max_length=1000)
    compensate: bool = True


class EventBody(_Body):
    type: str = Field(min_length=1, max_length=256)
    payload: JsonValue = None
    id: str | None = Field(default=None, min_length=1, max_length=200)


def parse(model: type[_Body], body: bytes) -> Any:
    """Decode and validate a JSON body, or raise InvalidRequestError naming the problem."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidRequestError(
            f"request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}", status=413
        )
    try:
        data = _decoded(body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    _refuse_lone_surrogates(body, data)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "problem": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ][:20]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise InvalidRequestError(f"invalid request body: {summary}", problems=problems) from None
    if isinstance(parsed, ExecuteBody):
        _refuse_reserved_ids(parsed)
    return parsed


def _refuse_reserved_ids(body: ExecuteBody) -> None:
    """Refuse an execution id that names one of the library's own objects
    (``definitions._ids``), as an invalid field is refused. Checked after parsing:
    pydantic's regex (Rust) has no look-ahead to say it in the field's pattern."""
    ids = [("execution_id", body.execution_id)]
    if body.restart is not None:
        ids.append(("restart.execution_id", body.restart.execution_id))
    if body.parent is not None:
        ids.append(("parent.execution_id", body.parent.execution_id))
    for field, execution_id in ids:
        problem = reserved_problem(execution_id)
        if problem is not None:
            raise InvalidRequestError(
                f"invalid request body: {field}: {problem}", problems=[{"field": field, "problem": problem}]
            )


def _decoded(body: bytes) -> Any:
    """``json.loads(body)``. A body that opens an object with a byte no UTF-16 or UTF-32
    text has there is UTF-8 to ``json`` (``json.detect_encoding``): decoded here as
    ``json.loads`` decodes it, then read with the package's decoder, without the Python of
    ``json.loads`` around the same scanner."""
    if body[:1] == b"{" and body[1:2] != b"\x00":
        return loads(body.decode("utf-8", "surrogatepass"))
    return json.loads(body)


def _refuse_lone_surrogates(body: bytes, data: dict[str, Any]) -> None:
    """A JSON escape such as ``"\\ud800"`` decodes to a lone surrogate: a Python
    string that is not valid Unicode and cannot be stored as UTF-8. Refuse it
    here, naming where it is, rather than failing when it is written."""
    # Only an escape or raw surrogate bytes (lead byte 0xED) can make one, so
    # most bodies skip the walk.
    if b"\\u" not in body and b"\xed" not in body:
        return
    where = _lone_surrogate_at(data)
    if where is not None:
        problem = "holds a lone surrogate (such as \\ud800), which is not valid Unicode"
        raise InvalidRequestError(
            f"invalid request body: {where}: {problem}", problems=[{"field": where, "problem": problem}]
        )


def _lone_surrogate_at(data: Any) -> str | None:
    """The dotted path of the first string (value or key) that is not valid Unicode."""
    pending: list[tuple[str, Any]] = [("", data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if not is_unicode(value):
                return path or "(body)"
        elif isinstance(value, dict):
            for key, item in value.items():
                inner = f"{path}.{key}" if path else str(key)
                if not is_unicode(key):
                    return f"{path}.(key)" if path else "(key)"
                pending.append((inner, item))
        elif isinstance(value, list):
            pending.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value))
    return None
