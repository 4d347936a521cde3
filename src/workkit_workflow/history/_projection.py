"""The projection: outbox records into idempotent SQL for the D1 tables.

Upserts are guarded by the record's sequence number and events are keyed by
execution id + sequence, so re-sending a batch (after a crash between sending
and deleting it) changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..engine import _journal as jn
from ._bundle import Record
from ._d1 import Statement, inserts
from ._pages import Pages, page_inserts, page_step

_EXECUTION_COLUMNS = (
    "execution_id, workflow, status, phase, created_at, started_at, finished_at, updated_at, "
    "wake_at, waiting_for, error, failed_step, step_attempt, compensation_status, compensation, "
    "cancel_reason, input, restarted_from, seq, waiting_for_count"
)
_EXECUTION_CONFLICT = (
    "ON CONFLICT (execution_id) DO UPDATE SET workflow = excluded.workflow, status = excluded.status, "
    "phase = excluded.phase, started_at = excluded.started_at, finished_at = excluded.finished_at, "
    "updated_at = excluded.updated_at, wake_at = excluded.wake_at, waiting_for = excluded.waiting_for, "
    "error = excluded.error, failed_step = excluded.failed_step, step_attempt = excluded.step_attempt, "
    "compensation_status = excluded.compensation_status, compensation = excluded.compensation, "
    "cancel_reason = excluded.cancel_reason, input = COALESCE(excluded.input, wf_executions.input), "
    "restarted_from = COALESCE(excluded.restarted_from, wf_executions.restarted_from), seq = excluded.seq, "
    "waiting_for_count = excluded.waiting_for_count "
    "WHERE excluded.seq > wf_executions.seq"
)
_STEP_COLUMNS = (
    "execution_id, phase, op, name, kind, status, attempt, started_at, attempt_started_at, "
    "finished_at, retry_at, wake_at, event_type, error, errors, restored_from, seq, started_seq, finished_seq"
)
_STEP_CONFLICT = (
    "ON CONFLICT (execution_id, phase, op) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
    "status = excluded.status, attempt = excluded.attempt, started_at = excluded.started_at, "
    "attempt_started_at = excluded.attempt_started_at, finished_at = excluded.finished_at, "
    "retry_at = excluded.retry_at, wake_at = excluded.wake_at, event_type = excluded.event_type, "
    "error = excluded.error, errors = excluded.errors, restored_from = excluded.restored_from, "
    "seq = excluded.seq, started_seq = COALESCE(wf_step_rows.started_seq, excluded.started_seq), "
    "finished_seq = COALESCE(wf_step_rows.finished_seq, excluded.finished_seq) "
    "WHERE excluded.seq > wf_step_rows.seq"
)
_PLAIN_COLUMNS = (
    "execution_id, phase, op, name, kind, status, attempt, started_at, attempt_started_at, "
    "finished_at, errors, seq, started_seq, finished_seq"
)
"""A step row without a retry, a wake-up, an event, an error or a restored origin (most
rows): 7 rows to a statement rather than 5, fewer statements (D1 bills and limits
queries; a Worker invocation's may count each) and no NULL to bind."""
_PLAIN_CONFLICT = _STEP_CONFLICT.replace(
    "retry_at = excluded.retry_at, wake_at = excluded.wake_at, event_type = excluded.event_type, "
    "error = excluded.error, errors = excluded.errors, restored_from = excluded.restored_from, ",
    "retry_at = NULL, wake_at = NULL, event_type = NULL, error = NULL, errors = excluded.errors, "
    "restored_from = NULL, ",
)
_EVENT_COLUMNS = "execution_id, seq, at, kind, phase, op, name, status, attempt, detail"
_EVENT_CONFLICT = "ON CONFLICT (execution_id, seq) DO NOTHING"


def _json(value: Any) -> str | None:
    return None if value is None else jn.dumps(value)


def projection(records: list[Record], quiet: frozenset[int] = frozenset()) -> list[Statement]:
    """The idempotent statements that project ``records`` into the D1 tables.

    A row is written once per batch, from the newest record of its execution or step
    (a step's start and its completion often travel together); every record is a
    transition: an event, or, for a step's plain first start and its completion, its
    row's ``started_seq`` or ``finished_seq`` (``_schema``). Only an execution's first
    record holds its input: a newer one in the same batch takes it over, as a later
    batch keeps it (``COALESCE`` in the upsert). The records whose sequence is in
    ``quiet`` are no transition (recovered ones D1 holds already, ``_recovery``).
    """
    states: list[Record] = []
    steps: dict[tuple[str, str], Record] = {}
    started: dict[tuple[str, str], int] = {}
    finished: dict[tuple[str, str], int] = {}
    events: list[tuple[Any, ...]] = []
    for record in records:
        if record.key == jn.STATE:
            events.append(_execution_event(record))
            states.append(record)
            continue
        step = record.execution_id, record.key
        if not quiet or record.seq not in quiet:
            held = _held_by_row(record.value)
            if held is None:
                events.append(step_event(record))
            elif held:
                finished[step] = record.seq
            else:
                started[step] = record.seq
        latest = steps.get(step)
        if latest is None or latest.seq < record.seq:
            steps[step] = record
    rows = []
    pages: dict[str, Pages] = {}
    for k, r in steps.items():
        done = finished.get(k)
        if (
            done == r.seq
            and r.value.get("restored_from") is None
            and page_step(pages.setdefault(r.execution_id, {}), r.key, r.value, r.seq, started.get(k))
        ):
            continue
        rows.append(_step_row(r.execution_id, r.key, r.value, r.seq, started.get(k), done))
    return (
        execution_inserts(states)
        + _step_inserts(rows)
        + [statement for eid, of_eid in pages.items() for statement in page_inserts(eid, of_eid)]
        + inserts("wf_events", _EVENT_COLUMNS, _EVENT_CONFLICT, events)
    )


def execution_inserts(records: list[Record]) -> list[Statement]:
    """The upserts of the rows of the executions whose ``state`` records these are: each
    from its execution's newest record, with the input of the last one that holds it (a
    newer record in the batch takes it over, as a later batch keeps it: ``COALESCE``)."""
    executions: dict[str, Record] = {}
    created: dict[str, Mapping[str, Any]] = {}
    for record in records:
        if "input" in record.value:
            created[record.execution_id] = record.value
        latest = executions.get(record.execution_id)
        if latest is None or latest.seq < record.seq:
            executions[record.execution_id] = record
    rows = [_execution_row(r, created.get(r.execution_id)) for r in executions.values()]
    return inserts("wf_executions", _EXECUTION_COLUMNS, _EXECUTION_CONFLICT, rows)


def execution_events(records: list[Record]) -> list[Statement]:
    """The inserts of the events of these ``state`` records (a page whose other records
    are all held by their steps' rows, ``plain_projection``'s)."""
    return inserts("wf_events", _EVENT_COLUMNS, _EVENT_CONFLICT, [_execution_event(r) for r in records])


_RARE = ("retry_at", "wake_at", "event_type", "error", "restored_from")
"""The fields of a step row that ``_PLAIN_COLUMNS`` leaves out, in ``_STEP_COLUMNS``' order."""

_NOT_PLAIN = frozenset(_RARE)
"""An entry with any of these is no plain step: its row, or its transition's event, needs them."""


def _step_inserts(rows: list[tuple[Any, ...]]) -> list[Statement]:
    """The statements writing step ``rows``, plain ones (``_PLAIN_COLUMNS``) apart."""
    plain = [row for row in rows if len(row) == _PLAIN_WIDTH]
    if len(plain) == len(rows):
        return inserts("wf_step_rows", _PLAIN_COLUMNS, _PLAIN_CONFLICT, rows)
    full = [row for row in rows if len(row) != _PLAIN_WIDTH]
    return inserts("wf_step_rows", _PLAIN_COLUMNS, _PLAIN_CONFLICT, plain) + inserts(
        "wf_step_rows", _STEP_COLUMNS, _STEP_CONFLICT, full
    )


def _held_by_row(entry: Mapping[str, Any]) -> bool | None:
    """Whether a step's row holds this transition instead of an event: False for its
    first attempt's start, True for its completion, None when it is an event (another
    kind of operation, another transition, one with a detail of its own, or a completion
    without its time: the view shows it at the row's ``finished_at``). A start's time is the
    row's ``started_at``, which every entry of a step carries (a superseded start's record
    holds only what tells it apart, ``Bundle.records``)."""
    if (entry.get("kind") or "step") != "step" or not entry.keys().isdisjoint(_EVENT_DETAIL):
        return None
    status = entry.get("status") or "running"
    if status == "completed" and entry.get("finished_at") is not None:
        return True
    if status == "running" and int(entry.get("attempt") or 0) == 1:
        return False
    return None


def _execution_row(record: Record, created: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
    """The row from ``record``; ``created`` is the batch's record with the input, if any."""
    row, at = record.value, record.at
    first = created if created is not None and "input" not in row else row
    compensation = row.get("compensation") or None
    return (
        record.execution_id,
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
        _json(first["input"]) if "input" in first else None,
        _json(first.get("restarted_from")),
        record.seq,
        row.get("waiting_for_count"),
    )


def _execution_event(record: Record) -> tuple[Any, ...]:
    row = record.value
    return (
        record.execution_id,
        record.seq,
        record.at,
        "execution",
        row.get("phase"),
        None,
        None,
        row.get("status"),
        None,
        jn.dumps(row),
    )


_PLAIN_WIDTH = _PLAIN_COLUMNS.count(",") + 1


def _step_row(
    execution_id: str,
    key: str,
    entry: Mapping[str, Any],
    seq: int,
    started: int | None = None,
    finished: int | None = None,
) -> tuple[Any, ...]:
    """The step's row from its newest record, ``entry`` with sequence ``seq``
    (``_PLAIN_COLUMNS`` when it is plain, else ``_STEP_COLUMNS``); ``started`` and
    ``finished``: the sequences of its plain first start and completion, when the batch
    holds them (``_held_by_row``)."""
    errors = entry.get("errors")
    kind = entry.get("kind") or "step"
    attempt_started_at = entry.get("attempt_started_at")
    if attempt_started_at is None and kind == "step":
        attempt_started_at = entry.get("started_at")  # a compact entry leaves it out when equal
    head = (
        execution_id,
        jn.phase_of(key),
        int(key[2:]),
        entry.get("name") or "",
        kind,
        entry.get("status") or "running",
        int(entry.get("attempt") or 0),
        entry.get("started_at"),
        attempt_started_at,
        entry.get("finished_at"),
    )
    errors_text = jn.dumps(errors) if errors else "[]"
    # _RARE, spelt out: a literal tuple of gets costs half what tuple(map(entry.get, _RARE)) does.
    rare = (
        entry.get("retry_at"),
        entry.get("wake_at"),
        entry.get("event_type"),
        entry.get("error"),
        entry.get("restored_from"),
    )
    if rare == _NONE_OF_THEM:
        return (*head, errors_text, seq, started, finished)
    retry_at, wake_at, event_type, error, restored_from = rare
    return (
        *head,
        retry_at,
        wake_at,
        event_type,
        _json(error),
        errors_text,
        restored_from,
        seq,
        started,
        finished,
    )


_NONE_OF_THEM = (None,) * len(_RARE)


_EVENT_DETAIL = ("error", "retry_at", "wake_at", "event_type")
"""What a step's event holds besides its columns: what this transition adds (the
step's whole state, every failed attempt included, is its ``wf_steps`` row)."""


def _detail(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in _EVENT_DETAIL if entry.get(k) is not None}


def step_event(record: Record) -> tuple[Any, ...]:
    entry = record.value
    # Most transitions (a step that runs, a step that completed) add nothing to it.
    detail = {} if entry.keys().isdisjoint(_EVENT_DETAIL) else _detail(entry)
    return (
        record.execution_id,
        record.seq,
        record.at,
        "step",
        jn.phase_of(record.key),
        int(record.key[2:]),
        entry.get("name"),
        entry.get("status") or "running",
        int(entry.get("attempt") or 0),
        jn.dumps(detail) if detail else "{}",
    )
