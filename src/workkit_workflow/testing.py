"""Test your workflows the way workkit_workflow tests its engine.

A pytest plugin (registered through the ``pytest11`` entry point, needs
``pytest-asyncio``) giving:

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

Fault points: ``before_step`` (journaled as running, handler not called),
``after_side_effect`` (handler returned, output not yet journaled),
``after_journal`` (a write carrying a step's output committed),
``in_compensation`` (compensation about to run), ``in_alarm`` (alarm
handler entered), ``in_history`` (history delivery about to send).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._client import DurableWorkflows, ExecutionHandle, WorkflowResult, create_durable_workflow
from ._definition import Workflow
from .errors import ExecutionNotFinishedError
from .local import LocalNamespace, VirtualClock

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

    async def close(self) -> None:
        await self.ns.close()


def step_names(journal: list[dict[str, Any]], *, status: str | None = None) -> list[str]:
    """Names of the journal's operations, optionally only those with ``status``."""
    return [e["name"] for e in journal if status is None or e.get("status") == status]


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the plugin needs pytest and pytest-asyncio
    pass
else:

    @pytest_asyncio.fixture
    async def workflow_env() -> AsyncIterator[WorkflowTestEnv]:
        """A WorkflowTestEnv with in-memory storage on a virtual clock."""
        env = WorkflowTestEnv()
        try:
            yield env
        finally:
            await env.close()

    @pytest_asyncio.fixture
    async def workflow_env_factory() -> AsyncIterator[Callable[..., WorkflowTestEnv]]:
        """Build WorkflowTestEnvs with options; all are closed after the test."""
        made: list[WorkflowTestEnv] = []

        def make(**options: Any) -> WorkflowTestEnv:
            env = WorkflowTestEnv(**options)
            made.append(env)
            return env

        try:
            yield make
        finally:
            for env in made:
                await env.close()


__all__ = ["FAULT_POINTS", "FaultPlan", "WorkflowTestEnv", "step_names"]
