"""Executions read straight from a local runtime file's journals, read-only.

The history tables (``wf_*``) exist only when the app bound ``HISTORY_DB``;
the journals always exist: every execution is one object in the local
backend's ``kv`` table (``meta``, ``state``, ``result``, ``j:<op>``,
``c:<op>``, see ``_journal``). So the CLI reads them here, giving the same
records as the history projection (:class:`ExecutionRecord`,
:class:`StepRecord`) without a history database.

The file is opened read-only (``mode=ro``): another process may own it (the
local runtime's one-owner lock), and reading must neither wait for that owner
nor change the file. SQLite's WAL lets a reader see every committed write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..definitions._versions import version_of
from ..engine import _journal as jn
from ..engine._live_state import PREFIX as LIVE_PREFIX
from ..engine._undo import hide_undo_key
from ..errors import ExecutionNotFoundError
from ._query import (
    TRANSITIONS,
    EventRecord,
    ExecutionHistory,
    ExecutionPage,
    ExecutionRecord,
    StepRecord,
    _decode_cursor,
    _encode_cursor,
    check_list_options,
)

_PHASES = ((jn.MAIN, "main"), (jn.COMPENSATION, "compensation"))
_ENTRY_HIDDEN = ("v", "idempotency_key")
"""Not shown: the format version, and the key (a secret to some APIs; its hash stays)."""


@dataclass(frozen=True)
class StoredExecution:
    """One execution's records as stored: ``meta``, ``state`` and ``result`` decoded."""

    meta: dict[str, Any]
    state: dict[str, Any]
    result: dict[str, Any] | None

    def record(self) -> ExecutionRecord:
        meta, state = self.meta, self.state
        created = float(state.get("created_at") or meta.get("created_at") or 0.0)
        return ExecutionRecord(
            execution_id=str(meta["execution_id"]),
            workflow=str(meta["workflow"]),
            status=str(state.get("status", "pending")),
            phase=str(state.get("phase", "main")),
            created_at=created,
            updated_at=float(state.get("updated_at") or created),
            started_at=state.get("started_at"),
            finished_at=state.get("finished_at"),
            wake_at=state.get("wake_at"),
            waiting_for=list(state.get("waiting_for") or []),
            waiting_for_count=state.get("waiting_for_count"),
            error=state.get("error"),
            failed_step=state.get("failed_step"),
            step_attempt=state.get("step_attempt") or None,
            compensation=state.get("compensation"),
            cancel_reason=state.get("cancel_reason"),
            input=meta.get("input"),
            restarted_from=meta.get("restarted_from"),
            version=version_of(meta),
        )


DAMAGED = "damaged"
"""The status ``list_executions`` gives an execution whose ``meta`` or ``state`` record cannot
be read (not JSON, not an object, another journal version): listed, not fatal to the list."""


def _damaged(execution_id: str, records: dict[str, str], problem: Exception) -> ExecutionRecord:
    """A row for an execution whose records cannot be read, with what can be (its meta)."""
    try:
        meta = jn.decode_record(jn.META, records[jn.META])
        workflow, created = str(meta.get("workflow", "?")), float(meta.get("created_at") or 0.0)
    except (jn.JournalFormatError, TypeError, ValueError):
        workflow, created = "?", 0.0
    message = problem.message if isinstance(problem, jn.JournalFormatError) else repr(problem)
    return ExecutionRecord(
        execution_id=execution_id,
        workflow=workflow,
        status=DAMAGED,
        phase="main",
        created_at=created,
        updated_at=created,
        error={"code": "damaged_record", "message": f"its records cannot be read: {message}"},
    )


def step_record(phase: str, op: int, entry: dict[str, Any]) -> StepRecord:
    return StepRecord(
        phase=phase,
        op=op,
        name=str(entry.get("name", f"op {op}")),
        kind=str(entry.get("kind", "step")),
        status=str(entry.get("status", "running")),
        attempt=int(entry.get("attempt") or 0),
        started_at=entry.get("started_at"),
        attempt_started_at=entry.get("attempt_started_at"),
        finished_at=entry.get("finished_at"),
        retry_at=entry.get("retry_at"),
        wake_at=entry.get("wake_at"),
        event_type=entry.get("event_type"),
        error=entry.get("error"),
        errors=list(entry.get("errors") or []),
        restored_from=entry.get("restored_from"),
    )


class JournalFile:
    """A local runtime SQLite file, read-only; :meth:`open` it, then :meth:`close`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    @classmethod
    def open(cls, path: str) -> JournalFile:
        """Open ``path`` read-only; FileNotFoundError if it does not exist."""
        if not Path(path).is_file():
            raise FileNotFoundError(path)
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        return cls(sqlite3.connect(uri, uri=True))

    def close(self) -> None:
        self._db.close()

    def _tables(self) -> set[str]:
        """The file's tables and views."""
        rows = self._db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
        return {row[0] for row in rows}

    def has_journals(self) -> bool:
        """Whether this is a local runtime file (it has the backend's ``kv`` table)."""
        return "kv" in self._tables()

    def has_history(self) -> bool:
        return "wf_executions" in self._tables()

    # -- executions ----------------------------------------------------------------

    def stored(self) -> list[StoredExecution]:
        """Every execution in the file (objects with no ``meta`` were never created)."""
        return [self._decode(records) for records in self._by_object().values()]

    def _by_object(self) -> dict[str, dict[str, str]]:
        """The ``meta``, ``state`` and ``result`` records of every execution, undecoded."""
        keys = [k.encode() for k in (jn.META, jn.STATE, jn.RESULT)]
        rows = self._db.execute("SELECT obj, key, value FROM kv WHERE key IN (?, ?, ?)", keys)
        by_object: dict[str, dict[str, str]] = {}
        for obj, key, value in rows:
            by_object.setdefault(obj, {})[bytes(key).decode()] = value
        return {obj: records for obj, records in by_object.items() if jn.META in records}

    def records(self) -> list[ExecutionRecord]:
        """Every execution's record; one whose records cannot be read is :data:`DAMAGED`."""
        found = []
        for obj, records in self._by_object().items():
            try:
                found.append(self._decode(records).record())
            except (jn.JournalFormatError, KeyError, TypeError, ValueError) as exc:
                found.append(_damaged(obj, records, exc))
        return found

    @staticmethod
    def _decode(records: dict[str, str]) -> StoredExecution:
        meta = jn.decode_record(jn.META, records[jn.META])
        state = jn.decode_record(jn.STATE, records[jn.STATE]) if jn.STATE in records else {}
        result = jn.decode_record(jn.RESULT, records[jn.RESULT]) if jn.RESULT in records else None
        return StoredExecution(meta, state, result)

    def execution(self, execution_id: str) -> StoredExecution:
        keys = [k.encode() for k in (jn.META, jn.STATE, jn.RESULT)]
        rows = self._db.execute(
            "SELECT key, value FROM kv WHERE obj = ? AND key IN (?, ?, ?)", [execution_id, *keys]
        )
        records = {bytes(key).decode(): value for key, value in rows}
        if jn.META not in records:
            raise ExecutionNotFoundError(
                f"no execution {execution_id!r} in this file", execution_id=execution_id
            )
        return self._decode(records)

    def list_executions(
        self,
        *,
        workflow: str | None = None,
        status: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ExecutionPage:
        """Executions newest first, filtered and paged as ``HistoryQuery.list_executions``."""
        status = check_list_options(workflow, status, since, until, limit)
        after = _decode_cursor(cursor) if cursor is not None else None
        records = []
        for record in self.records():
            if workflow is not None and record.workflow != workflow:
                continue
            if status and record.status not in status:
                continue
            if since is not None and record.created_at < since:
                continue
            if until is not None and record.created_at >= until:
                continue
            if after is not None and (record.created_at, record.execution_id) >= after:
                continue
            records.append(record)
        records.sort(key=lambda r: (r.created_at, r.execution_id), reverse=True)
        page = records[:limit]
        more = len(records) > limit
        next_cursor = _encode_cursor(page[-1].created_at, page[-1].execution_id) if more else None
        return ExecutionPage(page, next_cursor)

    # -- one execution's journal ----------------------------------------------------

    def journal(self, execution_id: str) -> list[dict[str, Any]]:
        """Every journal entry of both phases, in order, with ``phase`` and ``op``
        (outputs included, idempotency keys left out)."""
        self.execution(execution_id)  # not found is an error, not an empty journal
        entries = []
        for prefix, phase in _PHASES:
            low = prefix.encode()
            rows = self._db.execute(
                "SELECT key, value FROM kv WHERE obj = ? AND key >= ? AND key < ? ORDER BY key",
                [execution_id, low, low + b"\xff"],
            )
            for key, value in rows:
                name = bytes(key).decode()
                entry = jn.decode_record(name, value)
                for hidden in _ENTRY_HIDDEN:
                    entry.pop(hidden, None)
                hide_undo_key(entry)
                entries.append({"phase": phase, "op": jn.op_of(name), **entry})
        return entries

    def live_state(self, execution_id: str) -> dict[str, Any]:
        """The execution's live state (``ctx.set_state``), by key."""
        low = LIVE_PREFIX.encode()
        rows = self._db.execute(
            "SELECT key, value FROM kv WHERE obj = ? AND key >= ? AND key < ? ORDER BY key",
            [execution_id, low, low + b"\xff"],
        )
        state = {}
        for key, value in rows:
            name = bytes(key).decode()
            state[name[len(LIVE_PREFIX) :]] = jn.decode_record(name, value).get("value")
        return state

    def history(self, execution_id: str) -> ExecutionHistory:
        """The execution as the history projection would hold it (events from the
        history tables when the file has them, else none)."""
        stored = self.execution(execution_id)
        steps = [
            step_record(e["phase"], int(e["op"]), e)
            for e in self.journal(execution_id)
            if e["phase"] in ("main", "compensation")
        ]
        return ExecutionHistory(stored.record(), steps, self._events(execution_id))

    def _events(self, execution_id: str) -> list[EventRecord]:
        tables = self._tables()
        if "wf_executions" not in tables:
            return []
        # A file no release since the first has opened has no view: its events are all.
        source = "wf_transitions" if "wf_transitions" in tables else "wf_events"
        cursor = self._db.execute(TRANSITIONS.format(source), [execution_id])
        columns = [column[0] for column in cursor.description]
        return [EventRecord.from_row(dict(zip(columns, row, strict=True))) for row in cursor]


class JournalQuery:
    """A runtime file's executions read as :class:`HistoryQuery` reads the history tables
    (the timeline page of a plain ``serve``, which reads what ``list`` and ``show`` read)."""

    def __init__(self, journals: JournalFile) -> None:
        self.journals = journals

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
        return self.journals.list_executions(
            workflow=workflow, status=status, since=since, until=until, limit=limit, cursor=cursor
        )

    async def get_execution(self, execution_id: str) -> ExecutionHistory:
        return self.journals.history(execution_id)
