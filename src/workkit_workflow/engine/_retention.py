"""Retention: a finished execution deletes its storage after a retention period.

The settle write (the last write of an execution, ``Phases.settle``) stores
``delete_at`` in the state and sets the object's alarm to it, in the same
commit. When that alarm fires, the runner finds the execution done; once the
history projection (if any) has delivered every record, every key and the
alarm go in one commit. The object then holds nothing: a status request
answers 404 ``execution_not_found``, and a later ``run`` with the same id
starts a new execution. The history rows in D1 stay.

The period comes from the definition (``Workflow(..., retention="30d")``), else
from the execution object's default (``WorkflowExecutionDO.retention``); with
neither, the storage is kept (``delete_at`` is None, no alarm is left).

A schedule's tick (an id of the form ``<schedule>:<minute>``) is deleted
only once its schedule's record has passed it and does not owe it: a firing
whose record of the tick failed is repeated by the next one, and an owed tick is
tried again, either of which would start a deleted tick again.
"""

from __future__ import annotations

from typing import Any

from ..definitions._schedule import schedule_object, tick_of
from ._state import ExecutionState

TICK_HOLD = 600.0
"""Seconds a tick's execution waits before asking again whether its schedule recorded it."""

TICK_HOLD_LIMIT = 7 * 86400.0
"""How long after it finished a tick's execution is kept for its schedule at most."""


def delete_at(period: float | None, default: float | None, now: float) -> float | None:
    """When a settling execution's storage is deleted (None: kept)."""
    chosen = default if period is None else period
    return None if chosen is None else now + chosen


class Retention:
    """What happens to a settled execution's storage."""

    def __init__(self, execution: ExecutionState, default: float | None) -> None:
        self.execution = execution
        self.default = default

    def delete_at(self, period: float | None, since: float | None = None) -> float | None:
        """Counted from ``since`` (the execution's ``finished_at``), else from now."""
        return delete_at(period, self.default, self.execution.now() if since is None else since)

    async def on_done(self) -> None:
        """The runner found the execution settled (its alarm fired, or a request woke it)."""
        execution = self.execution
        assert execution.state is not None
        when = execution.state.get("delete_at")
        due = when is not None and when <= execution.now()
        execution.announce_settled()
        # The history and the mail (a child's outcome to its parent) must be delivered
        # before the storage that holds them goes; an observer that could not deliver
        # keeps its retry alarm, which comes back here.
        if due and await execution.settle_observers():
            held = await self._held_for_schedule()
            if held is None:
                await self.erase()
                return
            await execution.write_state({"delete_at": held}, alarm=held)
            return
        await execution.write({}, alarm=None if due else when)
        if not due:
            await execution.settle_observers()

    async def _held_for_schedule(self) -> float | None:
        """When to try again, if this is a schedule's tick its schedule has not recorded yet
        (its firing's advance failed) or still owes (its start's answer was lost): deleted now,
        the next firing would start it again. Kept until the record passes it without owing it,
        for at most ``TICK_HOLD_LIMIT`` after it finished."""
        execution = self.execution
        tick = tick_of(execution.execution_id)
        peers = execution.host.peers
        state = execution.state or {}
        now = execution.now()
        if tick is None or peers is None:
            return None
        if now - float(state.get("finished_at") or now) >= TICK_HOLD_LIMIT:
            return None
        try:
            answer = await peers.request(schedule_object(tick[0]), "GET", "/schedule")
            record: dict[str, Any] = answer.body["schedule"] if answer.status == 200 else {"last_tick": 0.0}
            last = record["last_tick"]
            # No record: no schedule of that name fired (an id of the same form; a new
            # schedule records where it starts from before starting its first tick). An owed
            # tick (its start's answer was lost) is tried again: it is not recorded either.
            owed = [float(t) for t in record.get("owed") or []]
            recorded = last is None or (float(last) >= tick[1] and tick[1] not in owed)
        except Exception:
            recorded = False  # not known now: ask again later
        return None if recorded else now + TICK_HOLD

    async def outbound_delivered(self) -> bool:
        return await self.execution.settle_observers()

    async def erase(self) -> None:
        """Delete every key and the alarm in one commit, and forget the cached records.

        Not through ``ExecutionState.write``: no observer may add records to it.
        """
        execution = self.execution
        keys = list(await execution.storage.list())
        await execution.storage.commit({}, keys, None)
        execution.forget()
