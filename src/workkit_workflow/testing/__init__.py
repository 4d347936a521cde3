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
handler entered), ``in_history`` (history delivery about to send), ``in_mail``
(a message to another object about to be sent: a child's start, its outcome).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from ..engine._replay_check import ReplayReport
from ._env import WorkflowTestEnv
from ._faults import FAULT_POINTS, FaultPlan
from ._mocks import StepMocks
from ._replay import check_replay, check_replay_async, load_journal


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


__all__ = [
    "FAULT_POINTS",
    "FaultPlan",
    "ReplayReport",
    "StepMocks",
    "WorkflowTestEnv",
    "check_replay",
    "check_replay_async",
    "load_journal",
    "step_names",
]
