"""The projection: outbox records into idempotent SQL for the D1 tables.

Upserts are guarded by the record's sequence number and events are keyed by
execution id + sequence, so re-sending a batch (after a crash between sending
and deleting it) changes nothing.
"""

from __future__ import annotations

from typing import Any

from ..engine import _journal as jn
from ._d1 import Statement

_UPSERT_EXECUTION = (
    "INSERT INTO wf_executions (execution_id, workflow, status, phase, created_at, started_at, "
    "finished_at, updated_at, wake_at, waiting_for, error, failed_step, step_attempt, "
    "compensation_status, compensation, cancel_reason, input, restarted_from, seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (execution_id) DO UPDATE SET workflow = excluded.workflow, status = excluded.status, "
    "phase = excluded.phase, started_at = excluded.started_at, finished_at = excluded.finished_at, "
    "updated_at = excluded.updated_at, wake_at = excluded.wake_at, waiting_for = excluded.waiting_for, "
    "error = excluded.error, failed_step = excluded.failed_step, step_attempt = excluded.step_attempt, "
    "compensation_status = excluded.compensation_status, compensation = excluded.compensation, "
    "cancel_reason = excluded.cancel_reason, input = COALESCE(excluded.input, wf_executions.input), "
    "restarted_from = COALESCE(excluded.restarted_from, wf_executions.restarted_from), seq = excluded.seq "
    "WHERE excluded.seq > wf_executions.seq"
)

_UPSERT_STEP = (
    "INSERT INTO wf_steps (execution_id, phase, op, name, kind, status, attempt, started_at, "
    "attempt_started_at, finished_at, retry_at, wake_at, event_type, error, errors, restored_from, seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (execution_id, phase, op) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
    "status = excluded.status, attempt = excluded.attempt, started_at = excluded.started_at, "
    "attempt_started_at = excluded.attempt_started_at, finished_at = excluded.finished_at, "
    "retry_at = excluded.retry_at, wake_at = excluded.wake_at, event_type = excluded.event_type, "
    "error = excluded.error, errors = excluded.errors, restored_from = excluded.restored_from, "
    "seq = excluded.seq WHERE excluded.seq > wf_steps.seq"
)

_INSERT_EVENT = (
    "INSERT INTO wf_events (execution_id, seq, at, kind, phase, op, name, status, attempt, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (execution_id, seq) DO NOTHING"
)


def _json(value: Any) -> str | None:
    return None if value is None else jn.dumps(value)


def projection(records: list[dict[str, Any]]) -> list[Statement]:
    """The idempotent statements that project ``records`` into the D1 tables."""
    out: list[Statement] = []
    for record in records:
        if record["kind"] == "execution":
            out.extend(_execution_statements(record))
        else:
            out.extend(_step_statements(record))
    return out


def _execution_statements(record: dict[str, Any]) -> list[Statement]:
    eid, seq, at = record["execution_id"], int(record["seq"]), float(record["at"])
    row = record["execution"]
    compensation = row.get("compensation") or None
    upsert = (
        eid,
        row.get("workflow") or "",
        row.get("status") or "pending",
        row.get("phase") or "main",
        float(row.get("created_at") or at),
        row.get("started_at"),
        row.get("finished_at"),
        float(row.get("updated_at") or at),
        row.get("wake_at"),
        _json(row.get("waiting_for") or []),
        _json(row.get("error")),
        row.get("failed_step"),
        row.get("step_attempt"),
        compensation.get("status") if compensation else None,
        _json(compensation),
        row.get("cancel_reason"),
        _json(row["input"]) if "input" in row else None,
        _json(row.get("restarted_from")),
        seq,
    )
    event = (eid, seq, at, "execution", row.get("phase"), None, None, row.get("status"), None, jn.dumps(row))
    return [(_UPSERT_EXECUTION, upsert), (_INSERT_EVENT, event)]


def _step_statements(record: dict[str, Any]) -> list[Statement]:
    eid, seq, at = record["execution_id"], int(record["seq"]), float(record["at"])
    entry = record["entry"]
    phase = record["phase"]
    upsert = (
        eid,
        phase,
        int(entry["op"]),
        entry.get("name") or "",
        entry.get("kind") or "step",
        entry.get("status") or "running",
        int(entry.get("attempt") or 0),
        entry.get("started_at"),
        entry.get("attempt_started_at"),
        entry.get("finished_at"),
        entry.get("retry_at"),
        entry.get("wake_at"),
        entry.get("event_type"),
        _json(entry.get("error")),
        _json(entry.get("errors") or []),
        entry.get("restored_from"),
        seq,
    )
    event = (
        eid,
        seq,
        at,
        "step",
        phase,
        int(entry["op"]),
        entry.get("name"),
        entry.get("status") or "running",
        int(entry.get("attempt") or 0),
        jn.dumps(entry),
    )
    return [(_UPSERT_STEP, upsert), (_INSERT_EVENT, event)]
