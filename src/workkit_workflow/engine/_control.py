"""Operator control of one execution: pause, continue, delete.

Pause and continue are *signals* (see ``_runner``): each counts itself with
:meth:`Runner.signal` in the same step as its write, writes the alarm that
returns, and wakes the runner. A paused execution starts no operation (the gate
is ``PhaseRun.hold``): a step already running finishes and is journaled, timers
that come due and events that arrive while paused stay where they are, and the
runner parks it with no alarm, since nothing is due until it continues.
Continuing restores the status it had and makes the alarm due now; the
workflow's deadline is not moved, so one that passed while paused fails the
execution (``workflow_timeout``, compensation runs) as soon as it continues.

Delete removes a settled execution's storage at once (see ``_retention``); a
running execution is refused (cancel it first).

The continue operation is ``unpause`` on the wire and the client, so it is not
confused with ``resume(event, payload)``, which delivers an event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ExecutionConflictError
from ._pause import PAUSED, is_paused
from ._retention import Retention
from ._runner import Runner
from ._state import ExecutionState


@dataclass
class Control:
    """Pause, continue and delete requests of one execution."""

    execution: ExecutionState
    runner: Runner
    retention: Retention
    view: Callable[[], Awaitable[dict[str, Any]]]

    async def pause(self) -> tuple[dict[str, Any], bool]:
        """Pause; returns ``(view, changed)`` (False: it was paused already)."""
        execution = self.execution
        await execution.ensure_loaded()
        _, state = execution.require()
        if state["phase"] == "done":
            raise ExecutionConflictError(
                f"the execution is {state['status']}; a finished execution cannot be paused",
                status=state["status"],
            )
        if state.get("cancel_requested_at") is not None and state["phase"] == "main":
            raise ExecutionConflictError(
                "the execution is being cancelled; it cannot be paused", status=state["status"]
            )
        if is_paused(state):
            return await self.view(), False
        now = execution.now()
        changes = {"status": PAUSED, "paused": {"at": now, "status": state["status"]}}
        await execution.write_state(changes, alarm=self.runner.signal(now))
        self.runner.wake()
        return await self.view(), True

    async def unpause(self) -> tuple[dict[str, Any], bool]:
        """Continue a paused execution; returns ``(view, changed)``. False when it was not
        paused, or has finished meanwhile (its last step ended while it was paused)."""
        execution = self.execution
        await execution.ensure_loaded()
        _, state = execution.require()
        if not is_paused(state):
            return await self.view(), False
        now = execution.now()
        changes = {"status": state["paused"]["status"], "paused": None, "recoveries": None}
        await execution.write_state(changes, alarm=self.runner.signal(now))
        if execution.run is not None:
            execution.run.wake_parked()
        self.runner.wake()
        return await self.view(), True

    async def delete(self) -> dict[str, Any]:
        """Delete a settled execution's storage now (its history rows stay)."""
        execution = self.execution
        await execution.ensure_loaded()
        meta, state = execution.require()
        if state["phase"] != "done":
            raise ExecutionConflictError(
                f"the execution is {state['status']}; only a finished execution can be deleted "
                "(cancel it first, then delete it once it has settled)",
                status=state["status"],
            )
        ended = self.runner.ended()
        if ended is not None:
            # A runner finishing the settled execution (delivering its history, or deleting
            # it after its retention period): let it end, then look again.
            await ended
            await execution.ensure_loaded()
            execution.require()
        if not await self.retention.outbound_delivered():
            raise ExecutionConflictError(
                "this execution still has records to deliver (its history, or mail to another "
                "execution); try again later",
                status=state["status"],
                retryable=True,
            )
        await self.retention.erase()
        return {"deleted": True, "execution_id": meta["execution_id"]}
