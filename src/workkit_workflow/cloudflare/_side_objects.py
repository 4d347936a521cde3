"""The routes of objects that are not executions, served by the same class: a
schedule's record (``schedule:<name>``, ``/schedule``) and a concurrency key's
coordinator (``limit:<workflow>:<key>``, ``/limit``); and ``/wake``, by which a
coordinator tells a queued execution that its slot is free."""

from __future__ import annotations

import logging

from ..definitions._ids import LIMIT_PREFIX, SCHEDULE_PREFIX
from ..engine._execution import ExecutionCore
from ..engine._limit_coordinator import KEY as LIMIT_KEY
from ..engine._limit_coordinator import LimitCoordinator
from ..engine._limits import wake
from ..engine._ports import Host, WireRequest, WireResponse
from ..engine._schedule_record import ScheduleRecord
from ..errors import ExecutionConflictError

log = logging.getLogger("workkit_workflow")

_PREFIX_OF = {"/schedule": SCHEDULE_PREFIX, "/limit": LIMIT_PREFIX}
"""The start of the names of the objects that serve each route."""

SIDE_ROUTES = {
    "/schedule": ("GET", "POST"),
    "/limit": ("GET", "POST"),
    "/wake": ("POST",),
}


class SideObjects:
    """What one object serves besides its execution."""

    def __init__(self, host: Host, core: ExecutionCore) -> None:
        self.host = host
        self.core = core
        self._schedule: ScheduleRecord | None = None
        self._coordinator: LimitCoordinator | None = None
        self._checked: set[str] = set()
        """The side routes this object was found to serve (``_check_kind``)."""

    async def handle(self, path: str, request: WireRequest) -> WireResponse:
        if path != "/wake" and path not in self._checked:
            await self._check_kind(path)
            self._checked.add(path)  # no execution is made here later: its id can't be this name
        if path == "/schedule":
            return await self._schedule_route(request)
        if path == "/limit":
            coordinator = self.coordinator()
            if request.method.upper() == "GET":
                return WireResponse(200, {"limit": await coordinator.read()})
            return WireResponse(200, {"limit": await coordinator.request(request.body)})
        return WireResponse(200, {"woken": await wake(self.core.execution)})

    async def _check_kind(self, path: str) -> None:
        """Refuse ``/schedule`` or ``/limit`` to an object that is not a schedule's record or
        a coordinator: one holding an execution (its alarm would be cleared by the record's
        writes, and the execution never woken again), or whose name says it is another
        kind of object (where the runtime gives objects their names)."""
        prefix = _PREFIX_OF[path]
        name = self.host.object_name
        if name is not None and not name.startswith(prefix):
            raise ExecutionConflictError(
                f"{path} is served by the objects named {prefix}..., not by {name!r}", path=path
            )
        execution = self.core.execution
        await execution.ensure_loaded()
        if execution.meta is not None:
            raise ExecutionConflictError(
                f"this object holds execution {execution.execution_id!r}: {path} is served by "
                f"the objects named {prefix}...",
                path=path,
            )

    async def _schedule_route(self, request: WireRequest) -> WireResponse:
        if self._schedule is None:
            self._schedule = ScheduleRecord(self.host.storage)
        if request.method.upper() == "GET":
            return WireResponse(200, {"schedule": await self._schedule.read()})
        record, moved = await self._schedule.advance(request.body, self.host.clock.now())
        return WireResponse(200, {"schedule": record, "advanced": moved})

    def coordinator(self) -> LimitCoordinator:
        if self._coordinator is None:
            host = self.host
            self._coordinator = LimitCoordinator(
                host.storage, host.clock, getattr(host, "peers", None), host.spawn
            )
        return self._coordinator

    async def alarm(self) -> bool:
        """Serve the alarm if this object is a coordinator; False if it is an execution's."""
        if self._coordinator is None:
            execution = self.core.execution
            try:
                await execution.ensure_loaded()
                # Only an object without an execution can be a coordinator: one more
                # read, and only there.
                if execution.meta is not None or await self.host.storage.get(LIMIT_KEY) is None:
                    return False
            except Exception:
                return False  # the execution's alarm handler deals with storage trouble
        await self.coordinator().alarm()
        return True
