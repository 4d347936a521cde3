"""Engine behaviours pinned by mutation testing (docs/mutation.md), part 2: the runner's
signals and alarms, storage failures, plug-ins and what an object keeps in memory. Through
the public API and the local runtime (its write hook and backend stand in for a failing
disk and a dying object); no sleeps, virtual time only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from workkit_workflow import REGISTRY, workflow
from workkit_workflow.engine._plugins import make_observer, register_observer
from workkit_workflow.errors import ExecutionConflictError, InvalidOptionError, WorkflowError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import gated, unique


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.parametrize("second", ["event", "cancel"])
async def test_a_second_signal_at_any_turn_of_the_wake_up_the_first_caused_is_seen(
    workflow_env: WorkflowTestEnv, second: str
) -> None:
    @workflow(unique("two-signals"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.wait_for_event("first", "a")
        second = await ctx.wait_for_event("second", "b")
        return [first, second]

    for k in range(120):
        handle = await workflow_env.run(flow, {})
        assert await handle.status() == "waiting"
        sent = asyncio.ensure_future(handle.send_event("a", k))
        await _turns(k)
        # The runner the first event started counts signals: a second one while it
        # drives must make it look again before it parks.
        if second == "event":
            assert await handle.send_event("b", -k)
        else:
            assert await handle.cancel("second signal")
        if second == "event":
            assert await sent
        else:
            # A cancel that overtakes the first event refuses it: either order is fine.
            with contextlib.suppress(ExecutionConflictError):
                await sent
        result = await workflow_env.result(handle, timeout=60.0)
        if second == "event":
            assert result.ok and result.value == [k, -k], k
        else:
            assert result.status == "cancelled", k


async def test_a_request_whose_write_fails_is_refused_as_retryable_and_names_the_cause(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("write-fails"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("go", "go")

    handle = await workflow_env.run(flow, {})

    def fail(obj: str, puts: Any, deletes: Any) -> None:
        raise OSError("disk I/O error (injected)")

    workflow_env.ns.write_hook = fail
    with pytest.raises(WorkflowError) as caught:
        await handle.cancel("changed my mind")
    workflow_env.ns.write_hook = None
    assert caught.value.code == "storage_unavailable"
    assert "disk I/O error (injected)" in caught.value.message
    # Nothing was written: the same request, sent again, is what takes effect.
    assert await handle.status() == "waiting"
    assert await handle.cancel("changed my mind")
    assert (await workflow_env.result(handle)).status == "cancelled"


def test_an_execution_option_no_plug_in_serves_is_a_clear_error() -> None:
    with pytest.raises(InvalidOptionError) as caught:
        make_observer("no-such-plug-in", object(), None)  # type: ignore[arg-type]
    assert "'no-such-plug-in'" in str(caught.value)


def test_a_registered_plug_in_builds_the_observer_of_an_execution() -> None:
    built: list[tuple[Any, Any]] = []

    def factory(execution: Any, value: Any) -> Any:
        built.append((execution, value))
        return "observer"

    register_observer("pins-plug-in", factory)
    execution = object()
    assert make_observer("pins-plug-in", execution, 7) == "observer"  # type: ignore[arg-type]
    assert built == [(execution, 7)]


async def test_an_object_that_dies_right_after_storing_an_event_still_wakes_for_it(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("store-then-die"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.wait_for_event("first", "a")
        return [first, await ctx.wait_for_event("second", "b")]

    loop = asyncio.get_running_loop()
    for k in range(60):
        handle = await workflow_env.run(flow, {})
        # The runner this event starts runs outside any alarm handler: nothing
        # retries on its behalf if the object dies.
        sent = asyncio.ensure_future(handle.send_event("a", k))

        def die_after_event(obj: str, puts: Any, deletes: Any, id: str = handle.execution_id) -> None:
            # Right after the write that stores the second event (after the first), before
            # its answer.
            if '"b"' in puts.get("e:000000000002", ""):
                loop.call_soon(workflow_env.evict, id)

        workflow_env.ns.write_hook = die_after_event
        await _turns(k)
        # Whatever the runner is doing (driving, parking, gone), the event's own write
        # leaves a wake-up behind: the object dies before any runner looks again, and
        # before the event is acknowledged, but the event is stored.
        with contextlib.suppress(WorkflowError):
            await handle.send_event("b", -k)
        workflow_env.ns.write_hook = None
        with contextlib.suppress(WorkflowError):
            await sent
        result = await workflow_env.result(handle, timeout=60.0)
        assert result.ok and result.value == [k, -k], k


async def test_an_event_stored_while_an_alarm_handler_drives_survives_an_eviction_right_after(
    workflow_env: WorkflowTestEnv,
) -> None:
    # The first run happens in the alarm handler; an event stored meanwhile sets an
    # alarm due at the same virtual instant as the one being handled, which the
    # local runtime must keep (as Cloudflare keeps an alarm set during the handler).
    @workflow(unique("alarm-store-then-die"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.step("a", lambda: "a")
        return await ctx.wait_for_event("go", "go")

    loop = asyncio.get_running_loop()
    for k in range(40):
        handle = await workflow_env.start(flow, {})

        def die_after_event(obj: str, puts: Any, deletes: Any, id: str = handle.execution_id) -> None:
            if any(key.startswith("e:") for key in puts):
                loop.call_soon(workflow_env.evict, id)

        workflow_env.ns.write_hook = die_after_event
        await _turns(k)
        with contextlib.suppress(WorkflowError):
            await handle.send_event("go", k)
        workflow_env.ns.write_hook = None
        # The eviction comes right after the event's write: it is stored, answered or not.
        result = await workflow_env.result(handle, timeout=60.0)
        assert result.ok and result.value == k, k


async def test_a_signal_while_the_runner_drives_leaves_its_lease_alarm_alone(
    workflow_env: WorkflowTestEnv,
) -> None:
    gate, long_call = gated("done")

    @workflow(unique("signal-while-driving"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("long", long_call)

    handle = await workflow_env.start(flow, {})
    await workflow_env.settle()
    assert (await handle.describe())["running"] == ["long"]
    [lease] = workflow_env.ns.backend.alarms().values()
    assert lease > workflow_env.clock.now()
    assert await handle.cancel("stop")
    await workflow_env.settle()
    # The runner sees the cancel itself: the request must not bring the alarm forward.
    assert list(workflow_env.ns.backend.alarms().values()) == [lease]
    gate.set()
    assert (await workflow_env.result(handle)).status == "cancelled"


async def test_each_drive_of_an_execution_counts_as_an_incarnation(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("incarnations"))
    async def flow(ctx: Any, input: Any) -> int:
        await ctx.sleep("nap", "1h")
        return 1

    handle = await workflow_env.run(flow, {})
    assert (await handle.meta())["incarnations"] == 1
    assert (await workflow_env.result(handle)).ok
    assert (await handle.meta())["incarnations"] == 2  # the wake-up after the sleep


async def test_an_execution_whose_workflow_a_deploy_dropped_is_kept_until_it_is_back(
    workflow_env: WorkflowTestEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workkit_workflow")

    @workflow(unique("dropped"))
    async def flow(ctx: Any, input: Any) -> int:
        await ctx.sleep("nap", "1h")
        return 1

    handle = await workflow_env.run(flow, {})
    backend = workflow_env.ns.backend
    [obj] = backend.objects()
    REGISTRY.unregister(flow.name)
    try:
        await workflow_env.clock.sleep(backend.alarms()[obj] - workflow_env.clock.now())
        await workflow_env.settle()
        # Not failed: the execution is kept, with an alarm to look again. A deploy
        # without the workflow is an expected state, not a failure of the runner.
        assert await handle.status() not in ("completed", "failed", "cancelled")
        assert obj in backend.alarms()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    finally:
        REGISTRY.register(flow)
    assert (await workflow_env.result(handle)).value == 1


async def test_one_failed_write_costs_one_retry_in_the_same_object(
    workflow_env: WorkflowTestEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workkit_workflow")
    effects: list[str] = []

    @workflow(unique("write-once-fails"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.step("a", lambda: effects.append("a"))
        await ctx.step("b", lambda: effects.append("b"))
        return "done"

    failures = {"left": 1}

    def fail_once_after_a(obj: str, puts: Any, deletes: Any) -> None:
        if failures["left"] and any('"b"' in text for text in puts.values()):
            failures["left"] -= 1
            raise OSError("disk I/O error (injected)")

    workflow_env.ns.write_hook = fail_once_after_a
    handle = await workflow_env.start(flow, {})
    result = await workflow_env.result(handle)
    assert result.ok and failures["left"] == 0
    # The runner drops its cached state after the failure and the next alarm resumes
    # in the same object: one warning, not one per alarm until the object is evicted.
    warnings = [r for r in caplog.records if "alarm failed" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    # That write carried step a's completion: a runs again (at least once inside).
    assert effects == ["a", "a", "b"]


async def test_a_live_object_answers_status_from_its_cache(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("cached"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("go", "go")

    handle = await workflow_env.run(flow, {})
    workflow_env.evict(handle.execution_id)
    assert await handle.status() == "waiting"  # a new instance reads meta and state
    stats = workflow_env.ns.stats
    reads, lists = stats.reads, stats.lists
    for _ in range(3):
        assert await handle.status() == "waiting"
    # meta and state are read once per object instance, not once per request.
    assert (stats.reads, stats.lists) == (reads, lists)
