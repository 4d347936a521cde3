"""Reading the history projection: one interface over D1 and the local SQLite."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, get_args

from ..engine._journal import Status
from ..errors import ExecutionNotFoundError, InvalidRequestError
from ._d1 import D1Port

MAX_PAGE = 200
STATUSES: tuple[str, ...] = get_args(Status)


def check_list_options(
    workflow: object, status: object, since: object, until: object, limit: object
) -> list[str] | None:
    """Refuse what ``list_executions`` cannot filter by, as the CLI does, with
    InvalidRequestError naming the field; the statuses asked for (None: any)."""
    if workflow is not None and not isinstance(workflow, str):
        raise InvalidRequestError(f"workflow must be a name, got {workflow!r}", field="workflow")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_PAGE}", limit=repr(limit), field="limit")
    for name, instant in (("since", since), ("until", until)):
        if instant is not None and (
            isinstance(instant, bool) or not isinstance(instant, (int, float)) or not math.isfinite(instant)
        ):
            raise InvalidRequestError(f"{name} must be epoch seconds, got {instant!r}", field=name)
    if status is None:
        return None
    statuses = [status] if isinstance(status, str) else status
    if not isinstance(statuses, Sequence) or not statuses:
        raise InvalidRequestError("status must name at least one status", field="status")
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise InvalidRequestError(
            f"unknown status {unknown[0]!r}: one of {', '.join(STATUSES)}", field="status"
        )
    return [str(s) for s in statuses]


def _load(text: Any) -> Any:
    return None if text is None else json.loads(text)


def elapsed_ms(started_at: float | None, finished_at: float | None) -> float | None:
    """Milliseconds from start to finish, or None while either is unknown."""
    if started_at is None or finished_at is None:
        return None
    return (finished_at - started_at) * 1000.0


@dataclass(frozen=True)
class ExecutionRecord:
    """One execution as projected: its latest known state."""

    execution_id: str
    workflow: str
    status: str
    phase: str
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    wake_at: float | None = None
    waiting_for: list[str] = field(default_factory=list)
    """The event types it waits for: the first 32 when it waits for more (``waiting_for_count``)."""
    error: dict[str, Any] | None = None
    failed_step: str | None = None
    step_attempt: int | None = None
    compensation: dict[str, Any] | None = None
    cancel_reason: str | None = None
    input: Any = None
    restarted_from: dict[str, Any] | None = None
    version: str | None = None
    """The workflow version it runs (None: not known to this projection)."""
    waiting_for_count: int | None = None
    """How many event types it waits for, when ``waiting_for`` lists only the first (None:
    it lists them all)."""

    @property
    def duration_ms(self) -> float | None:
        return elapsed_ms(self.started_at, self.finished_at)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ExecutionRecord:
        return cls(
            execution_id=row["execution_id"],
            workflow=row["workflow"],
            status=row["status"],
            phase=row["phase"],
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            started_at=row.get("started_at"),
            finished_at=row.get("finished_at"),
            wake_at=row.get("wake_at"),
            waiting_for=_load(row.get("waiting_for")) or [],
            waiting_for_count=row.get("waiting_for_count"),
            error=_load(row.get("error")),
            failed_step=row.get("failed_step"),
            step_attempt=row.get("step_attempt"),
            compensation=_load(row.get("compensation")),
            cancel_reason=row.get("cancel_reason"),
            input=_load(row.get("input")),
            restarted_from=_load(row.get("restarted_from")),
            version=row.get("version"),
        )


@dataclass(frozen=True)
class StepRecord:
    """One operation (step, sleep or wait) of the main or compensation phase."""

    phase: str
    op: int
    name: str
    kind: str
    status: str
    attempt: int
    started_at: float | None = None
    attempt_started_at: float | None = None
    finished_at: float | None = None
    retry_at: float | None = None
    wake_at: float | None = None
    event_type: str | None = None
    error: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    """Every failed attempt: code, message, attempt, started_at, finished_at, duration_ms."""
    restored_from: str | None = None

    @property
    def duration_ms(self) -> float | None:
        return elapsed_ms(self.started_at, self.finished_at)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StepRecord:
        return cls(
            phase=row["phase"],
            op=int(row["op"]),
            name=row["name"],
            kind=row["kind"],
            status=row["status"],
            attempt=int(row["attempt"]),
            started_at=row.get("started_at"),
            attempt_started_at=row.get("attempt_started_at"),
            finished_at=row.get("finished_at"),
            retry_at=row.get("retry_at"),
            wake_at=row.get("wake_at"),
            event_type=row.get("event_type"),
            error=_load(row.get("error")),
            errors=_load(row.get("errors")) or [],
            restored_from=row.get("restored_from"),
        )


@dataclass(frozen=True)
class EventRecord:
    """One transition, in the order it was committed."""

    seq: int
    at: float
    kind: str
    status: str
    phase: str | None = None
    op: int | None = None
    name: str | None = None
    attempt: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EventRecord:
        """From a row of :data:`TRANSITIONS` (a step row's start may lack its time: 0.0)."""
        detail = row.get("detail")
        return cls(
            seq=int(row["seq"]),
            at=float(row["at"] or 0.0),
            kind=row["kind"],
            status=row["status"],
            phase=row.get("phase"),
            op=row.get("op"),
            name=row.get("name"),
            attempt=row.get("attempt"),
            detail=json.loads(detail) if detail else {},
        )


TRANSITIONS = (
    "SELECT seq, at, kind, status, phase, op, name, attempt, detail FROM {} "
    "WHERE execution_id = ? ORDER BY seq"
)
"""One execution's transitions, in order, from ``wf_transitions`` (or, in a file no release
since the first has opened, ``wf_events``)."""


@dataclass(frozen=True)
class ExecutionHistory:
    """One execution's full history: its state, its operations and every transition."""

    execution: ExecutionRecord
    steps: list[StepRecord]
    events: list[EventRecord]

    @property
    def main_steps(self) -> list[StepRecord]:
        return [s for s in self.steps if s.phase == "main"]

    @property
    def compensation_steps(self) -> list[StepRecord]:
        return [s for s in self.steps if s.phase == "compensation"]


@dataclass(frozen=True)
class ExecutionPage:
    executions: list[ExecutionRecord]
    cursor: str | None
    """Pass back as ``cursor=`` for the next page; None on the last page."""


def _encode_cursor(created_at: float, execution_id: str) -> str:
    raw = json.dumps([created_at, execution_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_CURSOR = 2048
"""Longer than any cursor this API returns (an execution id is at most a few hundred bytes)."""


def _decode_cursor(cursor: str) -> tuple[float, str]:
    # Deeply nested JSON raises RecursionError, not ValueError: a bad cursor
    # must be a 400 like any other, not a crash of the page or the CLI.
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("cursor too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, execution_id = json.loads(raw)
        return float(created_at), str(execution_id)
    except (ValueError, TypeError, RecursionError):
        shown = cursor if len(cursor) <= 80 else cursor[:80] + "..."
        raise InvalidRequestError("cursor is not one this API returned", cursor=shown) from None


class ExecutionReader(Protocol):
    """What the timeline page reads: :class:`HistoryQuery`, or a runtime file's journals."""

    async def list_executions(
        self,
        *,
        workflow: str | None = None,
        status: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ExecutionPage: ...

    async def get_execution(self, execution_id: str) -> ExecutionHistory: ...


class HistoryQuery:
    """Query the history projection in D1 (``env.HISTORY_DB``) or a local :class:`LocalD1`."""

    def __init__(self, database: Any) -> None:
        self.db = database if isinstance(database, D1Port) else D1Port(database)

    async def list_executions(
        self,
        *,
        workflow: str | None = None,
        status: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ExecutionPage:
        """Executions, newest first, filtered by workflow, status and creation time
        (``since <= created_at < until``, epoch seconds)."""
        statuses = check_list_options(workflow, status, since, until, limit)
        where: list[str] = []
        args: list[Any] = []
        if workflow is not None:
            where.append("workflow = ?")
            args.append(workflow)
        if statuses is not None:
            where.append("status IN (" + ", ".join("?" for _ in statuses) + ")")
            args.extend(statuses)
        if since is not None:
            where.append("created_at >= ?")
            args.append(float(since))
        if until is not None:
            where.append("created_at < ?")
            args.append(float(until))
        if cursor is not None:
            created_at, execution_id = _decode_cursor(cursor)
            where.append("(created_at < ? OR (created_at = ? AND execution_id < ?))")
            args.extend([created_at, created_at, execution_id])
        sql = "SELECT * FROM wf_executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, execution_id DESC LIMIT ?"
        rows = await self.db.query(sql, [*args, limit + 1])
        records = [ExecutionRecord.from_row(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit and records:
            last = records[-1]
            next_cursor = _encode_cursor(last.created_at, last.execution_id)
        return ExecutionPage(records, next_cursor)

    async def get_execution(self, execution_id: str) -> ExecutionHistory:
        """One execution's full history; ExecutionNotFoundError if it was never projected."""
        rows = await self.db.query("SELECT * FROM wf_executions WHERE execution_id = ?", [execution_id])
        if not rows:
            raise ExecutionNotFoundError(
                f"no history for execution {execution_id!r}", execution_id=execution_id
            )
        steps = await self.db.query(
            "SELECT * FROM wf_steps WHERE execution_id = ? ORDER BY phase = 'compensation', op",
            [execution_id],
        )
        rows_of_events = await self.db.query(TRANSITIONS.format("wf_transitions"), [execution_id])
        events = [EventRecord.from_row(e) for e in rows_of_events]
        # versions: the D1 table has no version column; execution events carry it.
        version = next((str(e.detail["version"]) for e in reversed(events) if e.detail.get("version")), None)
        return ExecutionHistory(
            execution=replace(ExecutionRecord.from_row(rows[0]), version=version),
            steps=[StepRecord.from_row(r) for r in steps],
            events=events,
        )
