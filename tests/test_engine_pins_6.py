"""Engine behaviours pinned by mutation testing (docs/mutation.md), part 6: survivors of the
samples taken on main `b023813`, after the fourth round of issue #16 changed the phase
runner and the request path. Through the public API on the local runtime's virtual clock."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from workkit_workflow import NonRetryableError, RetryPolicy, Workflow, workflow
from workkit_workflow.engine._phases import Phases
from workkit_workflow.local import LocalNamespace, VirtualClock
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


async def test_a_workflow_timeout_names_its_deadline(workflow_env: WorkflowTestEnv) -> None:
    flow = (
        Workflow(unique("deadline"), timeout="10s")
        .step("a", lambda i, p, c: 1)
        .sleep("nap", "30s")
        .step("b", lambda i, p, c: 2)
    )
    started = workflow_env.clock.now()
    handle = await workflow_env.run(flow, {})
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    error = (await handle.describe())["error"]
    assert error["code"] == "workflow_timeout"
    # The error says when the time ran out, not only that it did.
    assert abs(error["deadline"] - (started + 10.0)) < 0.01


async def test_an_event_sent_while_paused_waits_for_the_execution_to_continue(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("paused-event"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("approval", "approved")

    handle = await workflow_env.run(flow, {})
    assert await handle.status() == "waiting"
    assert await handle.pause() is True
    await handle.send_event("approved", {"by": "ops"})
    await workflow_env.ns.idle()
    # Kept in the inbox: the wait is not taken while the execution is paused.
    [wait] = [e for e in await handle.journal() if e["name"] == "approval"]
    assert wait["status"] != "completed"
    assert await handle.status() == "paused"
    assert await handle.unpause() is True
    result = await workflow_env.result(handle)
    assert result.ok and result.value == {"by": "ops"}


async def test_a_branch_parked_when_the_body_returns_is_ended(workflow_env: WorkflowTestEnv) -> None:
    ended: list[str] = []
    branches: list[Any] = []  # held here, so only the phase can end the branch

    @workflow(unique("abandoned-branch"))
    async def flow(ctx: Any, input: Any) -> Any:
        async def slow() -> None:
            try:
                await ctx.sleep("long-nap", "1h")
            finally:
                ended.append("slow")

        branch = asyncio.ensure_future(slow())
        branches.append(branch)
        value = await ctx.step("quick", lambda: "done")
        await asyncio.sleep(0)  # the branch parks in its sleep
        return {"value": value, "branch_done": branch.done()}

    handle = await workflow_env.run(flow, {})
    # The phase ends what is still parked when the body is done: the branch unwinds
    # before the execution settles (not when its hour-long timer would ring).
    assert ended == ["slow"] and branches[0].done()
    result = await workflow_env.result(handle)
    assert result.ok and result.value == {"value": "done", "branch_done": False}


async def test_a_failed_steps_entry_says_when_it_failed(workflow_env: WorkflowTestEnv) -> None:
    def refuse(input: Any, prev: Any, ctx: Any) -> None:
        raise NonRetryableError("declined")

    flow = Workflow(unique("failed-at")).sleep("nap", "5s").step("charge", refuse)
    started = workflow_env.clock.now()
    handle = await workflow_env.run(flow, {})
    assert (await workflow_env.result(handle)).status == "failed"
    [entry] = [e for e in await handle.journal() if e["name"] == "charge"]
    assert entry["status"] == "failed"
    assert abs(entry["finished_at"] - (started + 5.0)) < 0.01


async def test_a_sibling_that_parks_after_a_failed_branch_lets_the_phase_settle(
    workflow_env: WorkflowTestEnv,
) -> None:
    failed = asyncio.Event()

    def refuse() -> None:
        failed.set()
        raise NonRetryableError("declined")

    async def flaky() -> None:
        await failed.wait()
        for _ in range(50):  # loop turns: the failure ends the body meanwhile
            await asyncio.sleep(0)
        raise ConnectionError("upstream 503")

    @workflow(unique("sibling-parks"))
    async def flow(ctx: Any, input: Any) -> Any:
        async def failing() -> None:
            await ctx.step("fail", refuse)

        async def sibling() -> None:
            # Still running when the other branch's failure ends the body; then it
            # parks for its retry, the last operation in flight to stop.
            await ctx.step("flaky", flaky, retry=RetryPolicy(max_attempts=3, initial_delay=3600.0))

        await asyncio.gather(failing(), sibling())

    handle = await workflow_env.client.start(flow, {})
    # Settles (failed) instead of waiting for ever for the parked sibling to leave.
    for _ in range(400):
        if await handle.status() in ("failed", "completed"):
            break
        await asyncio.sleep(0)
    assert await handle.status() == "failed"
    [entry] = [e for e in await handle.journal() if e["name"] == "flaky"]
    assert entry["status"] != "completed"


async def test_two_steps_held_by_a_pause_both_run_once_it_ends(workflow_env: WorkflowTestEnv) -> None:
    gates = {name: asyncio.Event() for name in ("a", "b", "c")}

    async def blocked(name: str) -> str:
        await gates[name].wait()
        return name

    @workflow(unique("held-pair"))
    async def flow(ctx: Any, input: Any) -> Any:
        async def later(name: str) -> str:
            await gates[name].wait()  # not an operation: the step starts once the gate opens
            return str(await ctx.step(name, _done, name))

        return await asyncio.gather(ctx.step("c", blocked, "c"), later("a"), later("b"))

    handle = await workflow_env.client.start(flow, {})
    for _ in range(20):
        await asyncio.sleep(0)
    assert await handle.pause() is True  # step c runs on; a step that starts now is held
    gates["a"].set()
    gates["b"].set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert await handle.unpause() is True
    for _ in range(20):
        await asyncio.sleep(0)
    gates["c"].set()
    result = await asyncio.wait_for(workflow_env.result(handle), timeout=20)
    assert result.ok and result.value == ["c", "a", "b"]


def _done(name: str) -> str:
    return name


async def test_an_unreadable_meta_record_is_named_in_the_retry_warning(
    workflow_env: WorkflowTestEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workkit_workflow")

    @workflow(unique("bad-meta"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("go", "go")

    handle = await workflow_env.run(flow, {})
    assert await handle.status() == "waiting"
    ns = workflow_env.ns
    ns.evict(handle.execution_id)  # the next run reads the record again
    now = workflow_env.clock.now()
    ns.backend.commit(handle.execution_id, {"meta": "{not json"}, [], now)
    ns._alarm_recorded(handle.execution_id, now)  # as a commit through the object's storage does
    await workflow_env.settle()
    warnings = [r.getMessage() for r in caplog.records if "alarm failed" in r.getMessage()]
    # The runner's failure (a WorkflowError: the journal cannot be read) is the warning's cause.
    assert warnings and "JournalFormatError" in warnings[0] and "'meta'" in warnings[0], warnings


async def test_an_alarm_of_an_object_with_no_execution_ends_its_run() -> None:
    async def stray_alarm() -> dict[str, float]:
        clock = VirtualClock()
        async with LocalNamespace(clock=clock) as ns:
            # A stray alarm: the object has no execution.
            ns.backend.commit("nobody-here", {}, [], clock.now())
            ns._alarm_recorded("nobody-here", clock.now())  # as a commit through the object's storage does
            await clock.sleep(5)
            await ns.idle(timeout=5)
            return ns.backend.alarms()

    # Nothing to run: the alarm is cleared and the run ends (it does not read again and
    # again, which would never let the virtual clock move on).
    assert await asyncio.wait_for(stray_alarm(), timeout=15) == {}


async def test_an_unexpected_error_in_the_runner_is_logged_and_retried_by_alarm(
    workflow_env: WorkflowTestEnv, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the engine (not a workflow's error, not storage's) is logged with its
    traceback; the retry warning names it, and the alarm runs the execution again."""
    caplog.set_level(logging.WARNING, logger="workkit_workflow")
    real = Phases.main_ended
    left = {"failures": 1}

    async def main_ended_once_broken(self: Phases, *args: Any) -> Any:
        if left["failures"]:
            left["failures"] -= 1
            raise RuntimeError("a bug in the engine")
        return await real(self, *args)

    monkeypatch.setattr(Phases, "main_ended", main_ended_once_broken)

    @workflow(unique("engine-bug"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("a", lambda: "a")

    handle = await workflow_env.start(flow, {})
    await workflow_env.settle()
    assert left["failures"] == 0
    assert (await workflow_env.result(handle)).value == "a"
    [failed] = [r for r in caplog.records if r.getMessage() == "workkit_workflow: the runner failed"]
    assert failed.exc_info is not None and "a bug in the engine" in str(failed.exc_info[1])
    [warning] = [r.getMessage() for r in caplog.records if "alarm failed" in r.getMessage()]
    assert "RuntimeError('a bug in the engine')" in warning, warning
