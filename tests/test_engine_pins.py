"""Engine behaviours no other test pinned (found by mutation testing), through the public API:
timeouts that are not reached, an event arriving while a phase runs, default idempotency
keys, the retry-at-the-deadline boundary, a cancel during the last step, and compensation
that resumes after a sleep."""

from __future__ import annotations

import asyncio
from typing import Any

from workkit_workflow import RetryPolicy, Workflow, workflow
from workkit_workflow.testing import WorkflowTestEnv, step_names

from conftest import unique


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_step_that_awaits_within_its_timeout_succeeds_first_time(
    workflow_env: WorkflowTestEnv,
) -> None:
    async def call(input: Any, prev: Any, ctx: Any) -> str:
        await _turns(10)  # I/O that takes a few loop turns, well inside the limit
        return f"ok-{ctx.attempt}"

    flow = Workflow(unique("in-time")).step("call", call, timeout="30s")
    result = await workflow_env.result(await workflow_env.run(flow, {}))
    assert result.ok and result.value == "ok-1"


async def test_a_step_that_awaits_before_the_workflow_deadline_succeeds(
    workflow_env: WorkflowTestEnv,
) -> None:
    async def call(input: Any, prev: Any, ctx: Any) -> str:
        await _turns(10)
        return "ok"

    flow = Workflow(unique("before-deadline"), timeout="1h").step("call", call)
    result = await workflow_env.result(await workflow_env.run(flow, {}))
    assert result.ok and result.value == "ok"


async def test_an_event_arriving_while_a_sibling_step_runs_wakes_its_wait_at_once(
    workflow_env: WorkflowTestEnv,
) -> None:
    gate = asyncio.Event()
    order: list[str] = []

    async def long_call() -> str:
        await gate.wait()
        order.append("long done")
        return "long"

    def after(payload: Any) -> Any:
        order.append(f"after {payload}")
        return payload

    @workflow(unique("deliver"))
    async def flow(ctx: Any, input: Any) -> Any:
        async def waiter() -> Any:
            payload = await ctx.wait_for_event("approval", "approved")
            return await ctx.step("after", after, payload)

        return await asyncio.gather(ctx.step("long", long_call), waiter())

    handle = await workflow_env.start(flow, {})
    await workflow_env.settle()
    assert (await handle.describe())["running"] == ["approval", "long"]
    assert order == []
    assert await handle.send_event("approved", "yes")
    await workflow_env.settle()
    # The phase is still running (the long step holds it): the event is handed to
    # the parked wait directly, and its branch goes on before the long step ends.
    assert order == ["after yes"]
    assert (await handle.describe())["running"] == ["long"]  # the wait is over
    gate.set()
    result = await workflow_env.result(handle)
    assert result.value == ["long", "yes"]
    assert order == ["after yes", "long done"]


async def test_default_idempotency_keys_differ_per_position_and_hold_across_attempts(
    workflow_env: WorkflowTestEnv,
) -> None:
    keys: list[tuple[int, str]] = []
    failed_once: set[int] = set()

    def charge(i: int) -> int:
        from workkit_workflow import current_step

        info = current_step()
        assert info is not None
        keys.append((info.attempt, info.idempotency_key))
        if i == 1 and i not in failed_once:
            failed_once.add(i)
            raise ConnectionError("flaky")
        return i

    @workflow(unique("keys"), retry=RetryPolicy(max_attempts=2, initial_delay=1.0, jitter=0.0))
    async def flow(ctx: Any, input: Any) -> Any:
        return [await ctx.step("charge", charge, i) for i in range(3)]

    handle = await workflow_env.start(flow, {}, execution_id="order-1")
    assert (await workflow_env.result(handle)).value == [0, 1, 2]
    assert keys == [
        (1, "order-1:j:0:charge"),
        (1, "order-1:j:1:charge"),
        (2, "order-1:j:1:charge"),  # the retry reuses its attempt's key
        (1, "order-1:j:2:charge"),
    ]


async def test_a_retry_due_exactly_at_the_deadline_is_not_scheduled(workflow_env: WorkflowTestEnv) -> None:
    calls: list[float] = []

    def flaky(input: Any, prev: Any, ctx: Any) -> None:
        calls.append(workflow_env.clock.now())
        raise ConnectionError("upstream 503")

    policy = RetryPolicy(max_attempts=5, initial_delay=10.0, jitter=0.0)
    flow = Workflow(unique("at-deadline"), timeout="10s", retry=policy).step("call", flaky)
    result = await workflow_env.result(await workflow_env.run(flow, {}))
    # The retry would start at the deadline itself: the step fails with its own
    # error at once, instead of parking until the workflow times out.
    assert len(calls) == 1
    assert result.status == "failed"
    assert result.error is not None and result.error.code == "ConnectionError"
    assert result.error.failed_step == "call"


async def test_a_retry_due_just_before_the_deadline_is_scheduled(workflow_env: WorkflowTestEnv) -> None:
    calls: list[float] = []

    def flaky(input: Any, prev: Any, ctx: Any) -> str:
        calls.append(workflow_env.clock.now())
        if len(calls) == 1:
            raise ConnectionError("upstream 503")
        return "ok"

    policy = RetryPolicy(max_attempts=5, initial_delay=10.0, jitter=0.0)
    flow = Workflow(unique("before-deadline"), timeout="10.5s", retry=policy).step("call", flaky)
    result = await workflow_env.result(await workflow_env.run(flow, {}))
    assert result.ok and result.value == "ok"
    assert [round(b - calls[0], 6) for b in calls] == [0.0, 10.0]


async def test_a_cancel_while_the_last_step_runs_cancels_and_compensates_it(
    workflow_env: WorkflowTestEnv,
) -> None:
    gate = asyncio.Event()
    undone: list[dict[str, Any]] = []

    async def last(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        await gate.wait()
        return {"shipped": True}

    flow = (
        Workflow(unique("cancel-last"))
        .step("reserve", lambda i, p, c: {"reserved": 1})
        .step("ship", last)
        .on_failure(lambda ctx: undone.append(dict(ctx.step_outputs)))
    )
    handle = await workflow_env.start(flow, {})
    await workflow_env.settle()
    assert (await handle.describe())["running"] == ["ship"]
    assert await handle.cancel("changed my mind")
    gate.set()
    result = await workflow_env.result(handle)
    # The last step finished and is journaled, yet the execution was cancelled:
    # it does not complete, and compensation sees both outputs.
    assert result.status == "cancelled"
    assert undone == [{"reserve": {"reserved": 1}, "ship": {"shipped": True}}]
    assert step_names(await handle.journal(), status="completed") == ["reserve", "ship"]


async def test_compensation_keeps_its_start_time_when_it_resumes_after_a_sleep(
    workflow_env: WorkflowTestEnv,
) -> None:
    async def undo(ctx: Any) -> None:
        await ctx.sleep("cool-off", "1h")
        await ctx.step("refund", lambda: "refunded")

    def boom(input: Any, prev: Any, ctx: Any) -> None:
        raise ConnectionError("no")

    flow = (
        Workflow(unique("comp-resume"), retry=RetryPolicy(max_attempts=1))
        .step("charge", boom)
        .on_failure(undo)
    )
    handle = await workflow_env.run(flow, {})
    await workflow_env.settle()
    parked = await handle.describe()
    assert parked["compensation"]["status"] == "running"
    started = parked["compensation"]["started_at"]
    assert started is not None
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    compensation = (await handle.describe())["compensation"]
    assert compensation["status"] == "completed"
    assert compensation["started_at"] == started
    assert compensation["finished_at"] >= started + 3600.0


async def test_an_alarm_that_keeps_failing_backs_off_longer_each_time(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("alarm-backoff"))
    async def flow(ctx: Any, input: Any) -> int:
        await ctx.sleep("nap", "1h")
        return 1

    handle = await workflow_env.run(flow, {}, execution_id="backoff-1")
    backend = workflow_env.ns.backend
    [obj] = backend.objects()
    good = backend.get_many(obj, ["j:00000000"])
    # A record this version cannot read: every alarm fails until it is repaired.
    backend.commit(obj, {"j:00000000": "not json"}, [], backend.get_alarm(obj))
    gaps = []
    for _ in range(4):
        await workflow_env.clock.sleep(backend.alarms()[obj] - workflow_env.clock.now())
        await workflow_env.settle()
        gaps.append(backend.alarms()[obj] - workflow_env.clock.now())
    # Only four: the count of failures lives in the object's memory, and a wait
    # longer than the idle eviction (10 s) starts it again from 2 s.
    assert gaps == [2.0, 4.0, 8.0, 16.0]
    backend.commit(obj, good, [], backend.get_alarm(obj))
    result = await workflow_env.result(handle)
    assert result.ok and result.value == 1


_JOURNALED = ("op", "kind", "name", "status", "attempt", "started_at", "finished_at", "wake_at")


async def test_the_journal_records_each_kind_of_operation(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("journal-kinds"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step("charge", lambda: 1)
        await ctx.sleep("cool-off", "10s")
        answer = await ctx.wait_for_event("approval", "approved", timeout="5s", default="no answer")
        return [first, answer]

    t0 = workflow_env.clock.now()
    handle = await workflow_env.start(flow, {})
    assert (await workflow_env.result(handle)).value == [1, "no answer"]
    step, sleep, wait = await handle.journal()
    assert {k: step.get(k) for k in (*_JOURNALED, "output", "error", "errors")} == {
        "op": 0,
        "kind": "step",
        "name": "charge",
        "status": "completed",
        "attempt": 1,
        "started_at": t0,
        "finished_at": t0,
        "wake_at": None,
        "output": 1,
        "error": None,
        "errors": [],
    }
    assert {k: sleep.get(k) for k in _JOURNALED} == {
        "op": 1,
        "kind": "sleep",
        "name": "cool-off",
        "status": "completed",
        "attempt": None,
        "started_at": t0,
        "finished_at": t0 + 10.0,
        "wake_at": t0 + 10.0,
    }
    assert {k: wait.get(k) for k in (*_JOURNALED, "event_type", "output", "timed_out")} == {
        "op": 2,
        "kind": "wait",
        "name": "approval",
        "status": "completed",
        "attempt": None,
        "started_at": t0 + 10.0,
        "finished_at": t0 + 15.0,
        "wake_at": t0 + 15.0,
        "event_type": "approved",
        "output": "no answer",
        "timed_out": True,
    }
    assert [e["phase"] for e in (step, sleep, wait)] == ["main"] * 3


async def test_a_failing_idempotency_key_fails_the_step_on_its_first_attempt_and_compensates(
    workflow_env: WorkflowTestEnv,
) -> None:
    undone: list[dict[str, Any]] = []

    def no_key(info: Any) -> str:
        raise KeyError("order_id")

    async def compensate(ctx: Any) -> None:
        undone.append(dict(ctx.step_outputs))

    @workflow(unique("bad-key"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.step("reserve", lambda: "r-1")
        await ctx.step("empty", lambda: 1, idempotency_key=lambda info: "")
        return "unreachable"

    @workflow(unique("raising-key"))
    async def raising(ctx: Any, input: Any) -> Any:
        await ctx.step("reserve", lambda: "r-2")
        return await ctx.step("charge", lambda: 1, idempotency_key=no_key)

    flow.on_failure(compensate)
    raising.on_failure(compensate)

    for wf, step, reserved in ((flow, "empty", "r-1"), (raising, "charge", "r-2")):
        handle = await workflow_env.start(wf, {})
        result = await workflow_env.result(handle)
        assert result.status == "failed"
        assert result.error is not None and result.error.code == "serialization_error"
        view = await handle.describe()
        assert (view["failed_step"], view["step_attempt"]) == (step, 1)
        assert view["compensation"]["status"] == "completed"
        assert undone.pop() == {"reserve": reserved}


async def test_a_replay_mismatch_reports_both_operations_and_does_not_compensate(
    workflow_env: WorkflowTestEnv,
) -> None:
    order = ["a", "b"]
    compensated: list[str] = []

    @workflow(unique("reordered"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.step(order[0], lambda: 1)
        await ctx.sleep("pause", "1h")
        return await ctx.step(order[1], lambda: 2)

    flow.on_failure(lambda ctx: compensated.append(ctx.status))
    handle = await workflow_env.run(flow, {})
    assert await handle.status() == "sleeping"
    order.reverse()  # a deploy swaps the steps under the parked execution
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    view = await handle.describe()
    error = view["error"]
    assert (error["code"], error["position"]) == ("replay_mismatch", 0)
    assert error["expected"] == {"kind": "step", "name": "a"}
    assert error["found"] == {"kind": "step", "name": "b"}
    assert (view["failed_step"], view["step_attempt"]) == ("b", 1)
    assert compensated == []


async def test_steps_running_side_by_side_are_all_reported(workflow_env: WorkflowTestEnv) -> None:
    gate = asyncio.Event()

    async def blocked(label: str) -> str:
        await gate.wait()
        return label

    @workflow(unique("side-by-side"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await asyncio.gather(ctx.step("left", blocked, "l"), ctx.step("right", blocked, "r"))

    handle = await workflow_env.start(flow, {})
    await workflow_env.settle()
    assert (await handle.describe())["running"] == ["left", "right"]
    gate.set()
    assert (await workflow_env.result(handle)).value == ["l", "r"]


async def test_a_body_that_raises_outside_any_step_fails_with_no_step_and_attempt_zero(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("body-raises"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.step("ok", lambda: 1)
        raise LookupError("no such plan")

    handle = await workflow_env.start(flow, {})
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    view = await handle.describe()
    assert (view["failed_step"], view["step_attempt"]) == (None, 0)
    assert (view["error"]["code"], view["error"]["message"]) == ("LookupError", "no such plan")


async def test_a_wait_resumed_by_an_event_journals_when_and_which_event(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("resumed-wait"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("approval", "approved")

    t0 = workflow_env.clock.now()
    handle = await workflow_env.run(flow, {})
    assert await handle.status() == "waiting"
    await workflow_env.clock.sleep(30.0)
    assert await handle.send_event("approved", {"by": "ops"}, event_id="evt-1")
    assert (await workflow_env.result(handle)).value == {"by": "ops"}
    [wait] = await handle.journal()
    assert {k: wait.get(k) for k in ("status", "started_at", "finished_at", "event_id", "output")} == {
        "status": "completed",
        "started_at": t0,
        "finished_at": t0 + 30.0,
        "event_id": "evt-1",
        "output": {"by": "ops"},
    }
