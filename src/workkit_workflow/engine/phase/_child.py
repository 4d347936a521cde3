"""The child-workflow operation: start another execution in its own object, park until
it settles, and return its result (or raise its failure as ``StepFailedError``).

The start is mail (``engine._mail``) to the child's object, written in the same
commit as the ``child`` journal entry, so a crash cannot start a child the
journal does not know of, nor journal one that is never started. The child's
id derives from the parent's id and the operation, so a replay (or a repeated
delivery) finds the same child. When the child settles it mails its outcome
back as an event of the reserved type ``child:<child id>`` (``engine._children``);
the parent consumes it like any event, by the signal protocol of ``_runner``.
Nothing polls, nothing waits in memory: the parent parks with ``waiting_for``
naming the child.

A start the parent refuses itself (an id another of its operations gave its child, an
input that cannot be stored) sends nothing: the operation is journaled failed, its child
``not_started``, as one whose object refused the start.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from ...definitions._ids import execution_id_problem
from ...definitions._values import to_data
from ...errors import (
    DefinitionError,
    InvalidOptionError,
    SerializationError,
    StepFailedError,
    WorkflowError,
)
from .. import _journal as jn
from .._children import (
    EVENT_PREFIX,
    ChildOwners,
    child_record,
    child_row,
    id_record,
    not_its_child,
    one_more_child,
    start_message,
)
from ._run import PhaseRun

_PENDING: Any = object()
"""The child has not settled: park."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def child_id(parent_id: str, op: int, name: str) -> str:
    """The id of the child at operation ``op``: ``<parent>.<op>-<name>`` (shortened with
    a hash when longer than an execution id may be)."""
    slug = _UNSAFE.sub("-", name).strip("-")[:40] or "child"
    full = f"{parent_id}.{op}-{slug}"
    if len(full) <= 200:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:16]
    return f"{parent_id[:150]}.{op}-{digest}"


async def run_child(
    run: PhaseRun, op: int, name: str, workflow: str, input: Any, execution_id: str | None
) -> Any:
    run.enter(op, name)
    try:
        entry = await run.replayed(op, "child", name)
        if entry is not None and entry["status"] in ("completed", "failed"):
            run.completed(op, entry)  # nothing reads a finished child's entry again
            if entry["status"] == "completed":
                return entry.get("output")
            raise run.failed(entry)
        if entry is None:
            entry = await _start(run, op, name, workflow, input, execution_id)
        event_type = EVENT_PREFIX + str(entry["child_id"])
        while True:
            run.check_continue(name)
            result = await _try_to_finish(run, op, entry, event_type)
            if result is not _PENDING:
                return result
            await run.park(op, wake_at=run.deadline, event_type=event_type)
    finally:
        run.leave(op)


async def _start(
    run: PhaseRun, op: int, name: str, workflow: str, input: Any, execution_id: str | None
) -> dict[str, Any]:
    run.check_continue(name)
    execution = run.execution
    if run.prefix != jn.MAIN:
        raise DefinitionError(
            f"child workflow {name!r}: children start from the workflow body, not from on_failure "
            "(a compensation phase receives no events)"
        )
    problem = None if execution_id is None else execution_id_problem(execution_id)
    if problem is not None:
        raise InvalidOptionError(f"child workflow {name!r}: {problem}")
    child = execution_id or child_id(execution.execution_id, op, name)
    owners = run.child_owners
    if owners is None:
        owners = run.child_owners = ChildOwners()
    await owners.find(execution, child)
    run.check_continue(name)
    entry = {
        "op": op,
        "kind": "child",
        "name": name,
        "status": "waiting",
        "workflow": workflow,
        "child_id": child,
        # The event the child's outcome arrives as (history shows the link from it).
        "event_type": EVENT_PREFIX + child,
        "started_at": execution.now(),
    }
    # From here to the write, no await: the id is checked and taken at once (``ChildOwners``).
    if child in owners.owners:
        # Another operation's child: its outcome event would end both operations' waits.
        raise await _not_started(run, op, entry, not_its_child(child, execution.execution_id, op))
    try:
        mail = start_message(execution, op=op, child=child, workflow=workflow, input=to_data(input))
    except SerializationError as exc:  # an input that cannot be stored, or sent
        raise await _not_started(run, op, entry, exc) from None
    owners.owners[child] = op
    key, text = run.record(op, entry)
    puts = dict([(key, text), child_record(child_row(entry, "running")), id_record(child, op)])
    await execution.write_state(one_more_child(execution.state), puts={**puts, **mail})
    return entry


async def _not_started(
    run: PhaseRun, op: int, entry: dict[str, Any], cause: WorkflowError
) -> StepFailedError:
    """The failure of a child the parent refuses to start itself (its id is another
    operation's child, its input cannot be sent): journaled, with no message sent, as a
    child whose object refused the start is (``not_started``)."""
    execution = run.execution
    failed = _failed(entry, {"ok": False, "rejected": {"error": cause.to_dict()}}, execution.now())
    row_key, row_text = child_record(child_row(entry, "not_started"))
    await _finish(run, op, failed, one_more_child(execution.state), {row_key: row_text})
    return run.failed(failed)


async def _try_to_finish(run: PhaseRun, op: int, entry: dict[str, Any], event_type: str) -> Any:
    """The child's result, a failure raised, or ``_PENDING``."""
    execution = run.execution
    event = execution.take_event(event_type)
    if event is None:
        return _PENDING
    event_key, event_record = event
    outcome = event_record.get("payload")
    now = execution.now()
    if isinstance(outcome, dict) and outcome.get("ok") is True:
        done = {**entry, "status": "completed", "finished_at": now, "output": outcome.get("value")}
        changes, row = _children_with(execution.state, entry, "completed")
        await _finish(run, op, done, changes, row, deletes=[event_key])
        return done["output"]
    failed = _failed(entry, outcome, now)
    status = str(failed["error"].get("child_status") or "failed")
    changes, row = _children_with(execution.state, entry, status)
    await _finish(run, op, failed, changes, row, deletes=[event_key])
    raise run.failed(failed)


async def _finish(
    run: PhaseRun,
    op: int,
    done: dict[str, Any],
    changes: dict[str, Any],
    puts: dict[str, str],
    deletes: Sequence[str] = (),
) -> None:
    """Journal the child operation's end ``done`` with the state's ``changes`` and the
    child's row in ``puts``, in one write."""
    key, text = run.record(op, done)
    await run.execution.write_state(changes, puts={key: text, **puts}, deletes=deletes)
    run.completed(op, done)


def _failed(entry: dict[str, Any], outcome: Any, now: float) -> dict[str, Any]:
    """The journal entry of the child operation ``entry`` failed with ``outcome``."""
    error = _child_error(entry, outcome, now)
    return {**entry, "status": "failed", "error": error, "finished_at": now, "attempt": 1}


def _children_with(
    state: dict[str, Any] | None, entry: dict[str, Any], status: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The state's changes and the record that list the child of ``entry`` with ``status``."""
    row = child_row(entry, status)
    key, text = child_record(row)
    listed = (state or {}).get("children")
    if not listed:
        return {}, {key: text}
    # A state written before children had records of their own lists them itself.
    return {"children": [row if r.get("op") == entry["op"] else r for r in listed]}, {key: text}


def _child_error(entry: dict[str, Any], outcome: Any, now: float) -> dict[str, Any]:
    """The journaled error of a child that failed, was cancelled, or was refused."""
    child = entry["child_id"]
    if not isinstance(outcome, dict):
        problem = {"code": "malformed_child_outcome", "message": f"unreadable outcome {outcome!r}"[:500]}
        outcome = {"error": problem}
    rejected = outcome.get("rejected")
    cause: dict[str, Any]
    if isinstance(rejected, dict):
        # The child's object refused to start it (unknown workflow, bad input, id taken).
        cause = rejected["error"] if isinstance(rejected.get("error"), dict) else {}
        status = "not_started"
        code = str(cause.get("code") or "child_refused")
        message = (
            f"child workflow {entry['workflow']!r} ({child}) could not start: {cause.get('message', '')}"
        )
    else:
        cause = outcome["error"] if isinstance(outcome.get("error"), dict) else {}
        status = str(outcome.get("status") or "failed")
        code = str(cause.get("code") or "child_failed")
        message = f"child workflow {entry['workflow']!r} ({child}) {status}: {cause.get('message', '')}"
    return {
        "code": jn.storable_text(code),
        "message": jn.storable_text(message[:4000]),
        "type": "ChildWorkflowError",
        "retryable": False,
        "attempt": 1,
        "started_at": entry.get("started_at"),
        "finished_at": now,
        "duration_ms": None,
        "child_id": child,
        "child_status": status,
        "child_error": cause or None,
        "child_failed_step": outcome.get("failed_step"),
    }
