"""The test environment: a local runtime on a virtual clock, with crash and event injection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from ..client._client import (
    DURABLE_OBJECT,
    DurableWorkflows,
    ExecutionHandle,
    WorkflowResult,
    create_durable_workflow,
)
from ..definitions._steps import MISSING
from ..definitions._workflow import Workflow
from ..engine._ports import WireResponse
from ..errors import ExecutionNotFinishedError
from ..local import LocalNamespace, VirtualClock
from ._faults import FaultPlan
from ._mocks import StepMocks

T = TypeVar("T")


class _CurrentNamespace:
    """The namespace of the env's client: each request goes to the env's namespace of the
    moment, so the client and its handles outlive :meth:`WorkflowTestEnv.restart` (on
    SQLite, a new namespace on the same file; the old one is closed)."""

    def __init__(self, env: WorkflowTestEnv) -> None:
        self._env = env

    async def request(
        self, name: str, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None
    ) -> WireResponse:
        return await self._env.ns.request(name, method, path, body, query)


class WorkflowTestEnv:
    """A local runtime on a virtual clock, with crash and event injection."""

    def __init__(
        self,
        *,
        path: str | None = None,
        clock: VirtualClock | None = None,
        interleave: str = "storage",
        seed: int | None = 0,
        history: bool = False,
    ) -> None:
        self.clock = clock or VirtualClock()
        self.history: Any = None
        """With ``history=True``, the local D1 (``LocalD1``) the executions project into."""
        if history:
            from ..history import LocalD1

            self.history = LocalD1()
        self.faults = FaultPlan()
        self.path = path
        self._interleave = interleave
        self._seed = seed
        self.ns = self._open()
        self.client: DurableWorkflows = create_durable_workflow(
            _CurrentNamespace(self), history=self.history, backend=DURABLE_OBJECT
        )
        self.mocks = StepMocks()
        """Steps replaced for this environment's lifetime (see :meth:`mock_step`)."""
        self.closed = False
        self._runner: asyncio.Runner | None = None

    def _open(self) -> LocalNamespace:
        env = {"HISTORY_DB": self.history} if self.history is not None else None
        return LocalNamespace(
            self.path, self.clock, env=env, interleave=self._interleave, seed=self._seed, faults=self.faults
        )

    async def run(self, workflow: Workflow | str, input: Any = None, **options: Any) -> ExecutionHandle:
        """Start an execution and drive it until it finishes or parks."""
        return await self.client.run(workflow, input, **options)

    async def start(self, workflow: Workflow | str, input: Any = None, **options: Any) -> ExecutionHandle:
        """Start an execution without driving it: its alarm does. A crash at a
        fault point does not reach the caller this way."""
        return await self.client.start(workflow, input, **options)

    async def result(self, handle: ExecutionHandle, timeout: float = 365 * 86400.0) -> WorkflowResult[Any]:
        """Wait (in virtual time) for the execution to settle, surviving crashes.

        Instead of long-polling, jump the clock straight to the next alarm of
        the namespace: a week of sleeps and backoffs settles in a few turns.
        """
        from ..errors import TransportError

        give_up = self.clock.now() + timeout
        while True:
            await self.settle()
            try:
                return await handle.result(timeout=0)
            except ExecutionNotFinishedError:
                pass
            except TransportError:
                continue  # the object was reset under the request: ask again
            alarms = self.ns.backend.alarms()
            if not alarms:
                status = await handle.status()
                raise AssertionError(
                    f"execution {handle.execution_id} is {status} with no alarm set: nothing will resume it"
                )
            now = self.clock.now()
            ahead = [at for at in alarms.values() if at > now]
            if len(ahead) < len(alarms):
                # An alarm is due but its object is still busy in its previous
                # alarm handler (a long step): the runtime delivers it once that
                # handler returns, so let time move on to whatever that waits for.
                pending = self.clock._next_deadline()
                if pending is not None:
                    ahead.append(pending)
                else:
                    await asyncio.sleep(0.001)
                    continue
            target = min(ahead)
            if target > give_up:
                raise AssertionError(f"execution {handle.execution_id} did not settle within {timeout}s")
            await self.clock.sleep(max(target - now, 0.0))

    async def settle(self) -> None:
        """Give requests and alarm handlers in flight many loop turns (no time passes)."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def send_event(
        self, execution_id: str, event_type: str, payload: Any = None, *, event_id: str | None = None
    ) -> bool:
        return await self.client.execution(execution_id).send_event(event_type, payload, event_id=event_id)

    def evict(self, execution_id: str) -> None:
        """Evict one object: its memory is gone, its storage stays."""
        self.ns.evict(execution_id)

    async def restart(self) -> None:
        """Simulate a process restart: every object dies; SQLite storage is reopened (a new
        ``ns`` on the file). The client and the handles obtained before carry on."""
        if self.path is None:
            self.ns.evict_all()
            return
        await self.ns.close()
        self.ns = self._open()
        self.ns._start()

    async def journal(self, handle: ExecutionHandle | str) -> list[dict[str, Any]]:
        if isinstance(handle, str):
            handle = self.client.execution(handle)
        return await handle.journal()

    def mock_step(
        self,
        workflow: Workflow,
        step: str,
        *,
        output: Any = MISSING,
        handler: Callable[..., Any] | None = None,
    ) -> None:
        """Replace ``workflow``'s step ``step`` until this environment closes:
        with a constant ``output``, or with ``handler`` (called as the real one
        would be: ``(input, prev, ctx)`` for a builder step, the step's own
        arguments for ``ctx.step(name, fn, *args)``). The engine journals,
        retries and replays the replacement like the real step: a handler that
        raises fails the attempt."""
        self.mocks.replace(workflow, step, output=output, handler=handler)

    def sync(self, awaitable: Awaitable[T]) -> T:
        """Run one awaitable to completion from a plain ``def`` test, on an event
        loop this environment keeps for its lifetime::

            def test_order(workflow_env):
                handle = workflow_env.sync(workflow_env.run(order_flow, {"order_id": "o-1"}))
                assert workflow_env.sync(workflow_env.result(handle)).ok
        """
        if self._runner is None:
            self._runner = asyncio.Runner()

        async def wrapped() -> T:
            return await awaitable

        return self._runner.run(wrapped())

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.ns.close()
        finally:
            self.mocks.restore()

    def close_from_sync(self) -> None:
        """Close from outside any running loop (a fixture's teardown): on the loop
        the environment ran on while it is still open, else by releasing storage
        (the loop's tasks died with it)."""
        if self.closed:
            return
        if self._runner is not None:
            try:
                self._runner.run(self.close())
            finally:
                self._runner.close()
            return
        background = getattr(self.ns, "_alarm_loop", None)
        loop = background.get_loop() if background is not None else None
        if loop is None:
            asyncio.run(self.close())
        elif not loop.is_closed() and not loop.is_running():
            loop.run_until_complete(self.close())
        else:
            self.closed = True
            self.mocks.restore()
            self.ns.backend.close()
            self.ns._release()
