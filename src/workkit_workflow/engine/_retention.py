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
"""

from __future__ import annotations

from ._state import ExecutionState


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
            await self.erase()
            return
        await execution.write({}, alarm=None if due else when)
        if not due:
            await execution.settle_observers()

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
