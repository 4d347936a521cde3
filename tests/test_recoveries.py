"""The recovery cap (``engine/_recoveries.py``): an execution whose object dies again and
again with no journal write between is paused with the reason, not driven for ever; a
recovery that finds the journal moved starts the count again; a step that kills its object
stays the step's retry policy's to cap."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from workkit_workflow import RetryPolicy, Workflow, WorkflowContext, workflow
from workkit_workflow.errors import DefinitionError, TransportError
from workkit_workflow.history._timeline import build
from workkit_workflow.local._host import SimulatedCrash
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


def _die(env: WorkflowTestEnv, ctx: Any, deaths: list[str]) -> None:
    """What a CPU limit or an out-of-memory kill does to the object: its memory is gone
    mid-body, with no step running."""
    deaths.append(ctx.execution_id)
    env.ns.evict(ctx.execution_id)
    raise SimulatedCrash("body", {})


async def _written() -> None:
    """Turns enough for the step's deferred completion to be written (``_deferral``)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def _until_parked(env: WorkflowTestEnv, execution_id: str, limit: int = 200) -> dict[str, Any]:
    """Deliver alarms (moving the virtual clock to each) until the execution has none left."""
    handle = env.client.execution(execution_id)
    for _ in range(limit):
        await env.settle()
        alarms = env.ns.backend.alarms()
        if execution_id not in alarms:
            return await handle.describe()
        await env.clock.sleep(max(alarms[execution_id] - env.clock.now(), 0.0))
    raise AssertionError(f"{execution_id} still has an alarm after {limit} deliveries")


async def _started(env: WorkflowTestEnv, flow: Workflow, execution_id: str) -> None:
    with contextlib.suppress(TransportError):  # the object died under the request that drove it
        await env.run(flow, {}, execution_id=execution_id)


async def test_an_object_that_dies_at_the_same_point_every_time_is_paused_with_the_reason(
    env: WorkflowTestEnv,
) -> None:
    deaths: list[str] = []
    poisoned = [True]

    @workflow(unique("poison"), max_recoveries=3)
    async def flow(ctx: WorkflowContext, input: Any) -> str:
        await ctx.step("a", lambda: "a")
        await _written()
        if poisoned[0]:
            _die(env, ctx, deaths)
        return await ctx.step("b", lambda: "b")

    execution_id = unique("poisoned")
    await _started(env, flow, execution_id)
    view = await _until_parked(env, execution_id)
    # The first incarnation and three recoveries died; the fourth recovery is past the cap.
    assert len(deaths) == 4
    assert view["status"] == "paused" and view["paused_at"] is not None
    reason = view["paused_reason"]
    assert reason["code"] == "recovery_limit" and reason["recoveries"] == 4
    assert "max_recoveries=3" in reason["message"]
    handle = env.client.execution(execution_id)
    assert (await handle.meta())["recoveries"] == 4
    assert env.ns.backend.alarms().get(execution_id) is None  # nothing loops

    # A fix is deployed (a new instance); the operator continues it.
    poisoned[0] = False
    env.evict(execution_id)
    assert await handle.unpause()
    result = await env.result(handle)
    assert (result.status, result.value) == ("completed", "b")
    assert len(deaths) == 4
    assert (await handle.describe())["paused_reason"] is None
    # The pause parked it: continuing is no recovery, whichever instance continues it.
    assert (await handle.meta())["recoveries"] == 0


async def test_recoveries_that_find_the_journal_moved_start_the_count_again(env: WorkflowTestEnv) -> None:
    deaths: list[str] = []
    steps = 8
    ran: list[int] = []

    @workflow(unique("progress"), max_recoveries=1)
    async def flow(ctx: WorkflowContext, input: Any) -> int:
        for i in range(steps):
            await ctx.step(f"s{i}", lambda i=i: ran.append(i) or i)
            await _written()
            if len(deaths) == i:  # each incarnation gets one step further, then dies
                _die(env, ctx, deaths)
        return steps

    execution_id = unique("progressing")
    await _started(env, flow, execution_id)
    result = await env.result(env.client.execution(execution_id))
    assert result.ok and result.value == steps
    assert len(deaths) == steps and ran == list(range(steps))


async def test_without_a_cap_recoveries_go_on(env: WorkflowTestEnv) -> None:
    deaths: list[str] = []

    @workflow(unique("uncapped"), max_recoveries=None)
    async def flow(ctx: WorkflowContext, input: Any) -> str:
        await ctx.step("a", lambda: "a")
        await _written()
        if len(deaths) < 15:
            _die(env, ctx, deaths)
        return "done"

    execution_id = unique("uncapped")
    await _started(env, flow, execution_id)
    result = await env.result(env.client.execution(execution_id))
    assert result.ok and len(deaths) == 15


async def test_a_step_that_kills_its_object_is_capped_by_its_retry_policy_not_paused(
    env: WorkflowTestEnv,
) -> None:
    flow = Workflow(unique("killer-step"), max_recoveries=1).step(
        "kill", lambda input, prev, ctx: "never", retry=RetryPolicy(max_lost_attempts=3)
    )
    env.faults.crash_at("before_step", step="kill", times=100)
    execution_id = unique("killer")
    await _started(env, flow, execution_id)
    result = await env.result(env.client.execution(execution_id))
    # Each attempt's start is a journal write: every recovery found the journal moved.
    assert result.status == "failed" and result.error is not None
    assert result.error.code == "attempt_lost"
    assert len(env.faults.crashes) == 3


async def test_an_object_that_keeps_dying_in_compensation_is_paused_there(env: WorkflowTestEnv) -> None:
    deaths: list[str] = []
    poisoned = [True]

    async def compensate(ctx: Any) -> None:
        await ctx.step("undo-a", lambda: "undone")
        await _written()
        if poisoned[0]:
            _die(env, ctx, deaths)

    flow = _failing("comp-poison", compensate, max_recoveries=2)
    execution_id = unique("comp-poisoned")
    await _started(env, flow, execution_id)
    view = await _until_parked(env, execution_id)
    assert len(deaths) == 3
    assert view["status"] == "paused" and view["paused_reason"]["code"] == "recovery_limit"
    poisoned[0] = False
    handle = env.client.execution(execution_id)
    assert await handle.unpause()
    result = await env.result(handle)
    assert result.status == "failed"
    assert (await handle.describe())["compensation"]["status"] == "completed"


async def test_a_compensation_that_gets_further_each_time_is_not_paused(env: WorkflowTestEnv) -> None:
    """The mark is the journal of the phase being run: compensation steps move it."""
    deaths: list[str] = []
    undone: list[int] = []

    async def compensate(ctx: Any) -> None:
        for i in range(4):
            await ctx.step(f"undo-{i}", lambda i=i: undone.append(i) or i)
            await _written()
            if len(deaths) == i:
                _die(env, ctx, deaths)

    flow = _failing("comp-progress", compensate, max_recoveries=1)
    execution_id = unique("comp-progressing")
    await _started(env, flow, execution_id)
    result = await env.result(env.client.execution(execution_id))
    assert result.status == "failed" and len(deaths) == 4 and undone == [0, 1, 2, 3]
    assert (await env.client.execution(execution_id).describe())["compensation"]["status"] == "completed"


def _failing(name: str, compensate: Any, *, max_recoveries: int) -> Workflow:
    """Step ``a``, then ``boom``, which fails for good: ``compensate`` runs."""
    return (
        Workflow(unique(name), max_recoveries=max_recoveries)
        .step("a", lambda input, prev, ctx: "a")
        .step("boom", lambda input, prev, ctx: _raise(), retry=RetryPolicy(max_attempts=1))
        .on_failure(compensate)
    )


def _raise() -> None:
    raise RuntimeError("no")


async def test_evictions_of_a_parked_execution_are_no_recoveries(env: WorkflowTestEnv) -> None:
    @workflow(unique("sleeper"), max_recoveries=1)
    async def flow(ctx: WorkflowContext, input: Any) -> int:
        for i in range(5):
            await ctx.sleep(f"nap-{i}", 60)
        return 5

    handle = await env.run(flow, {})
    for _ in range(5):
        env.evict(handle.execution_id)
        await env.clock.sleep(61)
        await env.settle()
    result = await env.result(handle)
    assert result.value == 5
    assert (await handle.meta())["recoveries"] == 0


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "3", 1001])
def test_an_absurd_max_recoveries_is_a_definition_error(value: Any) -> None:
    with pytest.raises(DefinitionError, match="max_recoveries must be a whole number"):
        Workflow(unique("bad-recoveries"), max_recoveries=value, register=False)


def _always_dying(env: WorkflowTestEnv, name: str, deaths: list[str]) -> Workflow:
    """A workflow whose object dies after its first step, every time (``max_recoveries=1``)."""

    @workflow(unique(name), max_recoveries=1)
    async def flow(ctx: WorkflowContext, input: Any) -> str:
        await ctx.step("a", lambda: "a")
        await _written()
        _die(env, ctx, deaths)
        return "never"

    return flow


async def test_the_timeline_says_why_the_recovery_cap_paused_it() -> None:
    env = WorkflowTestEnv(history=True)
    deaths: list[str] = []
    try:
        flow = _always_dying(env, "poison-history", deaths)
        execution_id = unique("poisoned-history")
        await _started(env, flow, execution_id)
        assert (await _until_parked(env, execution_id))["status"] == "paused"
        timeline = build(await env.client.history.get_execution(execution_id))
        assert timeline.headline.startswith("Paused: the execution's object died 2 times in a row")
        assert timeline.headline.endswith("then unpause.")
        assert await env.client.execution(execution_id).unpause()
        await _until_parked(env, execution_id)  # it dies again: paused once more
        timeline = build(await env.client.history.get_execution(execution_id))
        assert "died 2 times" in timeline.headline
    finally:
        await env.close()


async def test_a_cancel_of_an_execution_past_its_cap_cancels_it_rather_than_pausing_it(
    env: WorkflowTestEnv,
) -> None:
    """A cancel ends a pause of the main phase; the recovery its drive makes, past the cap,
    must not pause it again (paused with a cancel pending, it would be stranded)."""
    deaths: list[str] = []
    compensated: list[str] = []

    async def compensate(ctx: Any) -> None:
        compensated.append(ctx.status)

    flow = _always_dying(env, "poison-cancel", deaths).on_failure(compensate)
    execution_id = unique("poisoned-cancel")
    await _started(env, flow, execution_id)
    alarm = env.ns.backend.alarms()[execution_id]
    await env.clock.sleep(alarm - env.clock.now())  # the first recovery: it dies again
    await env.settle()
    assert len(deaths) == 2
    handle = env.client.execution(execution_id)
    assert await handle.cancel("stuck")  # its drive is the second recovery in a row
    result = await env.result(handle)
    assert result.status == "cancelled" and compensated == ["cancelled"]
    assert len(deaths) == 2


async def test_the_after_incarnation_fault_point_makes_a_crash_loop_a_test_can_drive(
    env: WorkflowTestEnv,
) -> None:
    """``after_incarnation``: the object dies right after each incarnation begins, before its
    replay, as it would in a replay too heavy for the runtime's limits."""
    ran: list[str] = []
    flow = (
        Workflow(unique("replay-crash"), max_recoveries=2)
        .step("a", lambda input, prev, ctx: ran.append("a") or "a")
        .step("b", lambda input, prev, ctx: ran.append("b") or "b")
    )
    env.faults.crash_at("after_incarnation", times=100)
    execution_id = unique("replay-crashing")
    await _started(env, flow, execution_id)
    view = await _until_parked(env, execution_id)
    assert view["status"] == "paused" and view["paused_reason"]["recoveries"] == 3
    assert [info["incarnation"] for _, _, info in env.faults.crashes] == [1, 2, 3]
    assert ran == []
    env.faults.clear()
    handle = env.client.execution(execution_id)
    assert await handle.unpause()
    assert (await env.result(handle)).value == "b" and ran == ["a", "b"]


async def test_an_execution_that_never_died_counts_no_recovery(env: WorkflowTestEnv) -> None:
    """Its compensation begins an incarnation in the same instance, after one that did not
    park (the main phase's end goes straight on): that is no recovery."""
    undone: list[str] = []

    async def compensate(ctx: Any) -> None:
        await ctx.step("undo-a", lambda: undone.append("a"))

    flow = _failing("never-died", compensate, max_recoveries=1)
    handle = await env.run(flow, {})
    result = await env.result(handle)
    assert result.status == "failed" and undone == ["a"]
    meta = await handle.meta()
    assert (meta["incarnations"], meta["recoveries"]) == (2, 0)


async def test_a_pause_while_its_object_is_dead_parks_it_and_continuing_is_no_recovery(
    env: WorkflowTestEnv,
) -> None:
    """The object died mid-run; an operator pauses it before its lease alarm resumes it. The
    paused park clears ``driving``: the drive after ``unpause`` recovers nothing."""
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "a"

    @workflow(unique("paused-dead"), max_recoveries=1)
    async def flow(ctx: WorkflowContext, input: Any) -> str:
        return await ctx.step("a", slow)

    handle = await env.start(flow, {})
    await env.clock.sleep(0)
    await env.settle()
    assert await handle.status() == "running"
    env.evict(handle.execution_id)  # died mid-step
    gate.set()
    assert await handle.pause()
    await _until_parked(env, handle.execution_id)
    env.evict(handle.execution_id)
    assert await handle.unpause()
    result = await env.result(handle)
    assert result.value == "a"
    assert (await handle.meta())["recoveries"] == 0
