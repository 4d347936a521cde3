"""The two phases of an execution: the workflow body, then (after a failure or a
cancel) its compensation; how each ends (done, handing over, or parked)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..definitions._contexts import CompensationContext, InDoubtStep, WorkflowContext
from ..definitions._retry import NO_RETRY
from ..definitions._values import to_data, validate
from ..definitions._workflow import Workflow
from ..errors import SerializationError
from . import _journal as jn
from . import _undo as undo
from ._children import cancel_children
from ._pages import JournalWindow
from ._pause import is_paused
from ._retention import Retention
from ._runner import Runner
from ._state import ExecutionState
from .phase._operations import Phase
from .phase._outcome import Outcome

ABANDONED = {"running": "in_doubt", "retrying": "abandoned", "sleeping": "abandoned", "waiting": "abandoned"}
"""What an unfinished journal entry becomes when its phase ends without it: a
step attempt that may have run is ``in_doubt`` (compensation is told), a
retry wait, sleep or event wait is ``abandoned``."""

Entries = dict[int, dict[str, Any]]


@dataclass
class Phases:
    """Runs the phase an execution is in, and writes how it ended."""

    execution: ExecutionState
    runner: Runner
    retention: Retention

    # -- the main phase --------------------------------------------------------

    def main_run(self, definition: Workflow, entries: Entries) -> Phase | None:
        """The main phase's run, for the runner to execute with :meth:`main_body` (it
        awaits ``run.execute`` itself: no frame of this class is held while the body runs),
        then to end with :meth:`main_ended`. None when a cancel came first: then
        :meth:`main_stopped` ends the phase."""
        execution = self.execution
        assert execution.meta is not None and execution.state is not None
        if execution.cancel_requested:
            return None
        run = Phase(
            execution,
            prefix=jn.MAIN,
            entries=entries,
            retry=definition.retry,
            deadline=execution.meta.get("deadline"),
        )
        execution.run = run
        execution.input = execution.meta.get("input")
        return run

    def main_body(self, definition: Workflow, run: Phase) -> Coroutine[Any, Any, Any]:
        """The body of the main phase's ``run``, with its context."""
        execution = self.execution
        ctx = WorkflowContext(run, execution.execution_id, definition.name, execution.input)
        if definition.input_type is None:
            # The workflow's own coroutine, with no frame around it for as long as it runs.
            try:
                body = definition.run(ctx, ctx.input)
            except Exception as exc:  # a function that refuses the call (its signature)
                return _raising(exc)
            if inspect.iscoroutine(body):
                return body
            return _awaiting(body)
        return _main_body(definition, ctx)

    async def main_stopped(self, definition: Workflow, entries: Entries) -> None:
        """End the main phase that a cancel stopped before its body ran (the drive goes on)."""
        if isinstance(entries, JournalWindow):
            # The drive chose pages before the cancel came: no page was read yet, and the
            # end settles (and undoes) every entry of the journal.
            await entries.finish()
        await self._end_main(definition, Outcome("stopped"), entries)

    async def main_ended(self, definition: Workflow, run: Phase, outcome: Outcome) -> Outcome | None:
        """Write how the main phase's ``run`` ended; the outcome if the drive is over, None to go on."""
        execution = self.execution
        execution.run = None
        if outcome.kind == "parked":
            await self._park(outcome)
            return outcome
        if outcome.kind in ("completed", "failed") and execution.cancel_requested:
            # Cancel arrived while the last step ran, which then finished or failed:
            # the cancel was acknowledged first, so it wins (compensation undoes a
            # finished step too; a replay mismatch still does not compensate).
            outcome = Outcome("stopped", compensate=outcome.compensate)
        await self._end_main(definition, outcome, run.entries)
        return None if execution.state and execution.state["phase"] == "compensation" else outcome

    def _end_main(
        self, definition: Workflow, outcome: Outcome, entries: Mapping[int, dict[str, Any]]
    ) -> Awaitable[None]:
        """The write that ends the main phase (returned to await: no frame of its own
        is held while it is made)."""
        execution = self.execution
        now = execution.now()
        settled = self._settle_entries(jn.MAIN, entries)
        state = execution.state or {}
        # Children still running when the body ends are cancelled: compensated, unless the
        # parent was terminated (hook(control): cancel(compensate=False) covers the tree).
        ending = {"completed": "completed", "stopped": "cancelled"}.get(outcome.kind, "failed")
        if ending == "cancelled" and state.get("cancel_compensate") is False:
            ending = "terminated"
        settled.update(cancel_children(execution, entries, ending))
        if outcome.kind == "completed":
            try:
                text = jn.encode_record(jn.RESULT, {"value": to_data(outcome.value)}, what="workflow result")
            except SerializationError as exc:
                outcome = Outcome("failed", error=exc.to_dict(), failed_step=None)
            else:
                return self._settle(
                    definition,
                    {"status": "completed", "finished_at": now, **jn.waiting_fields(state, [])},
                    puts={**settled, jn.RESULT: text},
                )
        if outcome.kind == "stopped" and state.get("cancel_compensate") is False:
            outcome = replace(outcome, compensate=False)  # hook(control): cancel(compensate=False)
        changes = self._ended_changes(outcome, now)
        # undo: per-step undo handlers also need the compensation phase.
        if (definition.compensation is not None or undo.pending(entries)) and outcome.compensate:
            changes.update(
                phase="compensation",
                compensation={"status": "pending", "started_at": None, "finished_at": None, "error": None},
            )
            return execution.write_state(changes, puts=settled, alarm=now)
        changes.update(compensation=None)
        return self._settle(definition, changes, puts=settled)

    def _ended_changes(self, outcome: Outcome, now: float) -> dict[str, Any]:
        """The state of a main phase that failed or was cancelled."""
        state = self.execution.state
        status = "cancelled" if outcome.kind == "stopped" else "failed"
        changes: dict[str, Any] = {"status": status, "finished_at": now, **jn.waiting_fields(state or {}, [])}
        if outcome.kind == "failed":
            changes.update(error=outcome.error, failed_step=outcome.failed_step, step_attempt=outcome.attempt)
        else:
            code = "terminated" if state and state.get("cancel_compensate") is False else "cancelled"
            changes["error"] = (
                {"code": code, "message": state.get("cancel_reason") or code} if state else None
            )
        return changes

    # -- the compensation phase ------------------------------------------------

    async def compensation(
        self, definition: Workflow, main_entries: Entries, entries: Entries
    ) -> Outcome | None:
        execution = self.execution
        assert execution.meta is not None and execution.state is not None
        handler = definition.compensation
        compensation = dict(execution.state.get("compensation") or {})
        if handler is None and not undo.pending(main_entries):
            await self._settle(definition, {})
            return Outcome("completed")
        if compensation.get("status") != "running":
            compensation.update(status="running", started_at=execution.now())
            if undo.pending(main_entries):
                compensation["undos"] = undo.planned(main_entries)
            await execution.write_state({"compensation": compensation})
        run = Phase(execution, prefix=jn.COMPENSATION, entries=entries, retry=NO_RETRY, deadline=None)
        execution.run = run
        execution.input = execution.meta.get("input")
        ctx = self._compensation_context(run, definition, main_entries)

        async def body() -> Any:
            execution.fault("in_compensation")
            # Undo handlers first, last started first; then on_failure, told their outcomes.
            ctx.undos = await undo.run_undos(run, definition, main_entries, execution)
            if handler is not None:
                result = handler(ctx)
                if inspect.isawaitable(result):
                    result = await result
            failed = undo.failed_error(ctx.undos)
            if failed is not None:
                raise failed
            return None

        outcome = await run.execute(body())
        execution.run = None
        if outcome.kind == "parked":
            await self._park(outcome)
            return outcome
        compensation.update(
            status="completed" if outcome.kind == "completed" else "failed",
            finished_at=execution.now(),
            error=outcome.error if outcome.kind == "failed" else None,
        )
        if "undos" in compensation:
            compensation["undos"] = undo.outcomes(main_entries, run.entries)
        settled = self._settle_entries(jn.COMPENSATION, run.entries)
        await self._settle(definition, {"compensation": compensation}, puts=settled)
        return outcome

    def _compensation_context(
        self, run: Phase, definition: Workflow, main_entries: Entries
    ) -> CompensationContext:
        """What the handler is told: the failure, the outputs to undo, the in-doubt steps."""
        execution = self.execution
        assert execution.state is not None
        state = execution.state
        outputs = {
            e["name"]: e.get("output")
            for _, e in sorted(main_entries.items())
            # A completed child's result too: the parent's handler may have to undo it.
            if e.get("kind") in ("step", "child") and e.get("status") == "completed"
        }
        in_doubt = [
            InDoubtStep(
                name=str(e["name"]),
                op=op,
                attempt=int(e.get("attempt", 0)),
                idempotency_key=e.get("idempotency_key"),
                started_at=e.get("attempt_started_at"),
            )
            for op, e in sorted(main_entries.items())
            if e.get("status") == "in_doubt"
        ]
        return CompensationContext(
            run,
            execution.execution_id,
            definition.name,
            execution.input,
            status=state["status"],
            failed_step=state.get("failed_step"),
            error=state.get("error"),
            step_outputs=outputs,
            in_doubt_steps=in_doubt,
        )

    # -- ending a drive --------------------------------------------------------

    def _settle(
        self, definition: Workflow, changes: dict[str, Any], puts: Mapping[str, str] | None = None
    ) -> Awaitable[None]:
        """The execution's last write: phase ``done``, and (hook: control) the alarm
        that deletes its storage after the retention period (``_retention``). The write
        is returned to await, with no coroutine of this method's (the state's write tells
        the requests waiting for the execution once it is made)."""
        finished_at = changes.get("finished_at")
        delete_at = self.retention.delete_at(
            definition.retention, finished_at if isinstance(finished_at, float | int) else None
        )
        return self.execution.write_state(
            {**changes, "phase": "done", "delete_at": delete_at}, puts=puts, alarm=delete_at
        )

    async def _park(self, outcome: Outcome) -> None:
        execution = self.execution
        assert execution.state is not None and execution.meta is not None
        wakes = [
            t
            for t in (
                outcome.wake_at,
                execution.meta.get("deadline") if execution.state["phase"] == "main" else None,
            )
            if t is not None
        ]
        if any(execution.inbox_has(t) for t in outcome.waiting_for):
            wakes.append(execution.now())
        wake_at = min(wakes) if wakes else None
        if is_paused(execution.state):
            wake_at = None  # hook(control): nothing is due until it continues (_control)
        waiting = jn.waiting_fields(execution.state, outcome.waiting_for)
        changes: dict[str, Any] = {"wake_at": wake_at, **waiting, "driving": None}
        if execution.state.get("recoveries"):
            changes["recoveries"] = None  # it parked: no longer recoveries in a row (_recoveries)
        if execution.state["status"] == "running":
            changes["status"] = "waiting" if outcome.waiting_for else "sleeping"
        await execution.write_state(changes, alarm=self.runner.park_alarm(wake_at, execution.now()))

    def _settle_entries(self, prefix: str, entries: Mapping[int, dict[str, Any]]) -> dict[str, str]:
        """The writes that close the phase's unfinished entries (see ``ABANDONED``)."""
        puts: dict[str, str] = {}
        now = self.execution.now()
        for op, entry in entries.items():
            status = ABANDONED.get(str(entry.get("status")))
            if status is None:
                continue
            key = jn.op_key(prefix, op)
            settled = {**entry, "status": status, "settled_at": now}
            if status == "in_doubt":
                # Kept for compensation: the key lets an undo find the effect.
                settled["idempotency_key"] = entry.get("idempotency_key") or jn.default_idempotency_key(
                    self.execution.execution_id, prefix, op, str(entry.get("name"))
                )
            puts[key] = jn.encode_record(key, settled, what=f"journal entry of {entry.get('name')!r}")
        return puts


async def _raising(exc: Exception) -> Any:
    """A body that fails as its call did (then as if raised by the body)."""
    raise exc


async def _awaiting(awaitable: Awaitable[Any]) -> Any:
    """A body that awaits what a workflow function returned that is not a coroutine."""
    return await awaitable


async def _main_body(definition: Workflow, ctx: WorkflowContext) -> Any:
    """The body of a workflow with an input type, its input validated first (a module
    function: a closure's cells would be held for as long as the body runs); one without
    runs as its own coroutine (:meth:`Phases.main_body`)."""
    ctx.input = validate(definition.input_type, ctx.input, what="workflow input")
    return await definition.run(ctx, ctx.input)
