"""Per-step undo handlers in the compensation phase.

A step with an undo journals, when its attempt starts, an ``undo`` record in
its entry: the handler's qualified name (code-first; a builder step's undo is
in the definition), its arguments (code-first), its idempotency key and, for
code-first, the undo's retry policy and timeout. So the compensation phase,
which never re-runs the body, has all it needs from the journal and the code.

Order and combination with ``on_failure`` (the README's "Undo handlers"):

* the undo of every main-phase step that completed or is in doubt runs once,
  last started first (``started_at`` of the step's first attempt, ties by
  position), each as the compensation step ``undo:<step>`` with its own retries;
* an undo that fails for good does not stop the others: the steps after it
  are still undone, since leaving more effects in place helps no one;
* then ``on_failure`` runs, with every undo's outcome in ``ctx.undos``;
* the compensation's status is ``failed`` if an undo or ``on_failure`` failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..definitions._retry import RetryPolicy
from ..definitions._steps import StepContext, StepOptions
from ..definitions._undo import StepUndo, UndoHandler, UndoNotFoundError, resolve_undo
from ..definitions._workflow import Workflow
from ..errors import StepFailedError, WorkflowError
from ._state import ExecutionState
from .phase._operations import Phase

PREFIX = "undo:"
"""Compensation steps running an undo are named ``undo:<step>``."""

UNDOABLE = ("completed", "in_doubt", "running")
"""Step statuses that are undone: ``running`` is an attempt lost with the object
that becomes ``in_doubt`` when the main phase ends."""


class UndoFailedError(WorkflowError):
    """One or more undo handlers failed for good (their errors are in ``compensation.undos``)."""

    code = "undo_failed"
    retryable = False


def hide_undo_key(entry: dict[str, Any]) -> None:
    """Leave the undo's idempotency key out of a journal view, as the step's own
    key is (a secret to some APIs)."""
    record = entry.get("undo")
    if isinstance(record, dict) and "key" in record:
        entry["undo"] = {k: v for k, v in record.items() if k != "key"}


def pending(entries: Mapping[int, Mapping[str, Any]]) -> bool:
    """Whether any step of the main phase has an undo to run."""
    return any(_undoable(e) for e in entries.values())


def _undoable(entry: Mapping[str, Any]) -> bool:
    return entry.get("kind") == "step" and entry.get("status") in UNDOABLE and bool(entry.get("undo"))


def undo_order(entries: Mapping[int, Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """The steps to undo, last started first."""
    found = [(op, e) for op, e in entries.items() if _undoable(e)]
    return sorted(found, key=lambda item: (float(item[1].get("started_at") or 0.0), item[0]), reverse=True)


def planned(entries: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The undos' view before any ran (``describe()``'s ``compensation.undos``)."""
    return [_view(e, "pending", 0, None) for _, e in undo_order(entries)]


def outcomes(
    main: Mapping[int, Mapping[str, Any]], comp: Mapping[int, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each undo's status, attempts and error, read off the compensation journal.

    Undos take the first compensation positions in ``undo_order``, so the i-th
    undo is at position i."""
    views = []
    for position, (_, entry) in enumerate(undo_order(main)):
        ran = comp.get(position)
        if ran is None or ran.get("name") != PREFIX + str(entry.get("name")):
            views.append(_view(entry, "pending", 0, None))
            continue
        status = str(ran.get("status"))
        views.append(_view(entry, status, int(ran.get("attempt", 0)), ran.get("error")))
    return views


def _view(entry: Mapping[str, Any], status: str, attempts: int, error: Any) -> dict[str, Any]:
    return {
        "step": entry.get("name"),
        "step_status": "completed" if entry.get("status") == "completed" else "in_doubt",
        "status": status,
        "attempts": attempts,
        "error": error,
    }


async def run_undos(
    run: Phase, definition: Workflow, main: Mapping[int, Mapping[str, Any]], execution: ExecutionState
) -> list[dict[str, Any]]:
    """Run every undo in order; returns their outcomes (a failed undo does not stop the rest)."""
    for _, entry in undo_order(main):
        name = str(entry["name"])
        call, options = _prepared(definition, entry, execution)
        try:
            await run.step(PREFIX + name, call, None, options)
        except StepFailedError:
            continue  # journaled as failed; reported in the outcomes
    return outcomes(main, run.entries)


def failed_error(views: list[dict[str, Any]]) -> UndoFailedError | None:
    failed = [v["step"] for v in views if v["status"] == "failed"]
    if not failed:
        return None
    return UndoFailedError(f"the undo of {', '.join(map(repr, failed))} failed", steps=failed)


def _prepared(
    definition: Workflow, entry: Mapping[str, Any], execution: ExecutionState
) -> tuple[Any, StepOptions]:
    """The undo's call and options; a handler missing from the code fails the undo."""
    record = entry["undo"]
    name = str(entry["name"])
    try:
        handler, retry, timeout = _find(definition, name, record)
    except UndoNotFoundError as exc:
        missing = exc

        def fail(_ctx: StepContext) -> Any:
            raise missing

        return fail, StepOptions(retry=RetryPolicy(max_attempts=1))
    info = _info(entry, record, execution)
    return (lambda _ctx: handler(info)), StepOptions(retry=retry or definition.retry, timeout=timeout)


def _find(
    definition: Workflow, name: str, record: Mapping[str, Any]
) -> tuple[UndoHandler, RetryPolicy | None, float | None]:
    ref = record.get("ref")
    if isinstance(ref, str):
        retry = record.get("retry")
        policy = (
            None
            if retry is None
            else RetryPolicy(**{**retry, "non_retryable": tuple(retry["non_retryable"])})
        )
        return resolve_undo(ref), policy, record.get("timeout")
    spec = definition.undo_for(name)
    if spec is None:
        raise UndoNotFoundError(
            f"step {name!r} was journaled with an undo, but workflow {definition.name!r} "
            "no longer declares one",
            step=name,
        )
    return spec.handler, spec.retry, spec.timeout


def _info(entry: Mapping[str, Any], record: Mapping[str, Any], execution: ExecutionState) -> StepUndo:
    state = execution.state or {}
    completed = entry.get("status") == "completed"
    return StepUndo(
        step=str(entry["name"]),
        status="completed" if completed else "in_doubt",
        output=entry.get("output") if completed else None,
        input=record.get("args") if isinstance(record.get("ref"), str) else execution.input,
        idempotency_key=record.get("key"),
        error=state.get("error"),
        reason="cancelled" if state.get("status") == "cancelled" else "failed",
        attempt=int(entry.get("attempt", 0)),
        execution_id=execution.execution_id,
        workflow=execution.workflow_name,
    )
