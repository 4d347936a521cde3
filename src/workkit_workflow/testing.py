"""Test your workflows the way workkit_workflow tests its engine.

A pytest plugin (registered through the ``pytest11`` entry point; it needs
only pytest, and no configuration) giving:

* ``workflow_env``: a :class:`WorkflowTestEnv` over an in-memory
  :class:`~workkit_workflow.local.LocalNamespace` on a :class:`VirtualClock`
  that skips time: a workflow that sleeps a week, or backs off between
  retries, finishes at once.
* ``workflow_env_factory``: the same with options (SQLite storage, chaos
  interleaving, a start time).

Crash injection at the engine's named fault points::

    async def test_charge_survives_a_crash(workflow_env):
        workflow_env.faults.crash_at("after_side_effect", step="charge-card")
        handle = await workflow_env.start(order_flow, {"order_id": "o-1"})
        result = await workflow_env.result(handle)
        assert result.ok

An ``async def`` test that uses these fixtures runs on an event loop of the
plugin's own when nothing else runs it (no pytest-asyncio, or its strict mode
without a marker); under pytest-asyncio (auto mode, or ``@pytest.mark.asyncio``)
it runs on pytest-asyncio's loop. A plain ``def`` test drives the environment
with :meth:`WorkflowTestEnv.sync`. :meth:`WorkflowTestEnv.mock_step` replaces a
step's handler or output for one test.

Fault points: ``before_step`` (journaled as running, handler not called),
``after_side_effect`` (handler returned, output not yet journaled),
``after_journal`` (a write carrying a step's output committed),
``in_compensation`` (compensation about to run), ``in_alarm`` (alarm
handler entered), ``in_history`` (history delivery about to send).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from .client._client import DurableWorkflows, ExecutionHandle, WorkflowResult, create_durable_workflow
from .definitions._contexts import WorkflowContext
from .definitions._steps import MISSING
from .definitions._workflow import Workflow
from .errors import ExecutionNotFinishedError
from .local import LocalNamespace, VirtualClock

T = TypeVar("T")

FAULT_POINTS = (
    "before_step",
    "after_side_effect",
    "after_journal",
    "in_compensation",
    "in_alarm",
    "in_history",
)


@dataclass
class _Rule:
    point: str
    step: str | None
    attempt: int | None
    execution_id: str | None
    remaining: int
    when: Callable[[Mapping[str, Any]], bool] | None


@dataclass
class FaultPlan:
    """Which fault points crash the object, and a record of every crash."""

    rules: list[_Rule] = field(default_factory=list)
    crashes: list[tuple[str | None, str, dict[str, Any]]] = field(default_factory=list)

    def crash_at(
        self,
        point: str,
        *,
        step: str | None = None,
        attempt: int | None = None,
        execution_id: str | None = None,
        times: int = 1,
        when: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> FaultPlan:
        """Crash (evict the object, kill its tasks) the next ``times`` times ``point`` is hit."""
        if point not in FAULT_POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {', '.join(FAULT_POINTS)}")
        self.rules.append(_Rule(point, step, attempt, execution_id, times, when))
        return self

    def clear(self) -> None:
        self.rules.clear()

    def __call__(self, obj: str | None, point: str, info: Mapping[str, Any]) -> bool:
        for rule in self.rules:
            if rule.remaining <= 0 or rule.point != point:
                continue
            if rule.step is not None and info.get("step") != rule.step:
                continue
            if rule.attempt is not None and info.get("attempt") != rule.attempt:
                continue
            if rule.execution_id is not None and obj != rule.execution_id:
                continue
            if rule.when is not None and not rule.when(info):
                continue
            rule.remaining -= 1
            self.crashes.append((obj, point, dict(info)))
            return True
        return False


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
            from .history import LocalD1

            self.history = LocalD1()
        self.faults = FaultPlan()
        self.path = path
        self._interleave = interleave
        self._seed = seed
        self.ns = self._open()
        self.client: DurableWorkflows = create_durable_workflow(self.ns, history=self.history)
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
        from .errors import TransportError

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
        """Simulate a process restart: every object dies; SQLite storage is reopened."""
        if self.path is None:
            self.ns.evict_all()
            return
        await self.ns.close()
        self.ns = self._open()
        self.client = create_durable_workflow(self.ns, history=self.history)
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


class StepMocks:
    """Steps of workflow definitions replaced for a test, and how to put them back.

    Definitions are module-level objects the engine finds by name, so a
    replacement is made on the definition itself and undone by :meth:`restore`.
    """

    def __init__(self) -> None:
        self._by_workflow: dict[int, tuple[Workflow, dict[str, Callable[..., Any]]]] = {}
        self._undo: list[Callable[[], None]] = []

    def replace(
        self,
        workflow: Workflow,
        step: str,
        *,
        output: Any = MISSING,
        handler: Callable[..., Any] | None = None,
    ) -> None:
        if (output is MISSING) == (handler is None):
            raise ValueError("mock_step takes exactly one of output= or handler=")
        if handler is not None and not callable(handler):
            raise ValueError("mock_step's handler must be callable")
        replacement = handler if handler is not None else _constant(output)
        if workflow._fn is None:
            self._replace_builder_step(workflow, step, replacement)
            return
        entry = self._by_workflow.get(id(workflow))
        if entry is None:
            entry = (workflow, {})
            self._by_workflow[id(workflow)] = entry
            self._wrap_function(workflow, entry[1])
        entry[1][step] = replacement

    def _replace_builder_step(self, workflow: Workflow, step: str, replacement: Callable[..., Any]) -> None:
        index = next((i for i, op in enumerate(workflow._ops) if op.name == step), None)
        if index is None or workflow._ops[index].kind != "step":
            known = ", ".join(repr(op.name) for op in workflow._ops if op.kind == "step")
            raise ValueError(f"workflow {workflow.name!r} has no step {step!r} (its steps: {known})")
        original = workflow._ops[index]
        workflow._ops[index] = dataclasses.replace(original, handler=replacement)

        def undo() -> None:
            workflow._ops[index] = original

        self._undo.append(undo)

    def _wrap_function(self, workflow: Workflow, mocks: dict[str, Callable[..., Any]]) -> None:
        original = workflow._fn
        assert original is not None

        async def mocked(ctx: Any, input: Any) -> Any:
            return await original(cast(WorkflowContext, _MockedContext(ctx, mocks)), input)

        workflow._fn = mocked

        def undo() -> None:
            workflow._fn = original
            self._by_workflow.pop(id(workflow), None)

        self._undo.append(undo)

    def restore(self) -> None:
        """Put every replaced step back, newest first."""
        while self._undo:
            self._undo.pop()()


def _constant(output: Any) -> Callable[..., Any]:
    def handler(*_args: Any) -> Any:
        return output

    return handler


class _MockedContext:
    """A code-first workflow's context whose ``step`` calls a replacement for mocked names."""

    def __init__(self, ctx: WorkflowContext, mocks: Mapping[str, Callable[..., Any]]) -> None:
        self._ctx = ctx
        self._mocks = mocks

    def step(self, name: str, fn: Callable[..., Any], *args: Any, **options: Any) -> Awaitable[Any]:
        return self._ctx.step(name, self._mocks.get(name, fn), *args, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def step_names(journal: list[dict[str, Any]], *, status: str | None = None) -> list[str]:
    """Names of the journal's operations, optionally only those with ``status``."""
    return [e["name"] for e in journal if status is None or e.get("status") == status]


FIXTURES = ("workflow_env", "workflow_env_factory")

try:
    import pytest
except ImportError:  # pragma: no cover - the plugin part needs pytest; the classes do not
    pass
else:
    _ENVS = pytest.StashKey[list[WorkflowTestEnv]]()

    def _track(request: pytest.FixtureRequest, env: WorkflowTestEnv) -> WorkflowTestEnv:
        request.node.stash.setdefault(_ENVS, []).append(env)
        return env

    @pytest.fixture
    def workflow_env(request: pytest.FixtureRequest) -> Iterator[WorkflowTestEnv]:
        """A WorkflowTestEnv with in-memory storage on a virtual clock."""
        env = _track(request, WorkflowTestEnv())
        try:
            yield env
        finally:
            env.close_from_sync()

    @pytest.fixture
    def workflow_env_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., WorkflowTestEnv]]:
        """Build WorkflowTestEnvs with options; all are closed after the test."""
        made: list[WorkflowTestEnv] = []

        def make(**options: Any) -> WorkflowTestEnv:
            env = _track(request, WorkflowTestEnv(**options))
            made.append(env)
            return env

        try:
            yield make
        finally:
            for env in made:
                env.close_from_sync()

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
        """Run an ``async def`` test using these fixtures when nothing else would:
        pytest-asyncio hands its own tests over as plain functions, so a
        coroutine function here is one no plugin took."""
        test = pyfuncitem.obj
        if not inspect.iscoroutinefunction(test) or not set(FIXTURES) & set(pyfuncitem.fixturenames):
            return None
        arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

        async def run() -> None:
            try:
                await test(**arguments)
            finally:
                # Close on this loop, where the environments' tasks live.
                for env in pyfuncitem.stash.get(_ENVS, []):
                    await env.close()

        asyncio.run(run())
        return True


__all__ = ["FAULT_POINTS", "FaultPlan", "StepMocks", "WorkflowTestEnv", "step_names"]
