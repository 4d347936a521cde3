"""Engine behaviours pinned by mutation testing (docs/mutation.md), part 5: survivors of the
samples of the phase runner, the execution state and the driver, taken on main `dfe2d03`.
Through the public API on the local runtime's virtual clock."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest

from workkit_workflow import NonRetryableError, workflow
from workkit_workflow.definitions._json import MAX_VALUE_BYTES
from workkit_workflow.engine._ports import WireResponse
from workkit_workflow.errors import StepFailedError, TransportError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import gated, unique


async def test_the_records_a_drive_read_serve_the_next_request(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("drive-cache"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("go", "go")

    handle = await workflow_env.run(flow, {})  # the drive reads meta and state with the journal
    stats = workflow_env.ns.stats
    reads, lists = stats.reads, stats.lists
    for _ in range(2):
        assert await handle.status() == "waiting"
    # The object keeps what the drive read: no request reads meta and state again.
    assert (stats.reads, stats.lists) == (reads, lists)


async def test_a_failed_step_error_carries_the_step_error_message_also_on_replay(
    workflow_env: WorkflowTestEnv,
) -> None:
    def declined() -> None:
        raise NonRetryableError("card declined")

    @workflow(unique("failed-message"))
    async def flow(ctx: Any, input: Any) -> Any:
        try:
            await ctx.step("charge", declined)
        except StepFailedError as exc:
            message = exc.message
        await ctx.wait_for_event("go", "go")  # the object is evicted; the next drive replays
        return message

    handle = await workflow_env.run(flow, {})
    workflow_env.evict(handle.execution_id)
    assert await handle.send_event("go", 1)
    result = await workflow_env.result(handle)
    assert result.ok and result.value == "step 'charge' failed: card declined"


async def test_a_sleep_ends_in_memory_while_a_sibling_runs_and_leaves_no_wake_up_behind(
    workflow_env: WorkflowTestEnv,
) -> None:
    gate = asyncio.Event()
    order: list[str] = []

    async def long_call() -> str:
        await gate.wait()
        return "long"

    @workflow(unique("ring"))
    async def flow(ctx: Any, input: Any) -> Any:
        async def napper() -> Any:
            await ctx.sleep("nap", "1s")
            return await ctx.step("after", lambda: order.append("after") or "napped")

        values = await asyncio.gather(ctx.step("long", long_call), napper())
        await ctx.wait_for_event("go", "go")
        return values

    handle = await workflow_env.start(flow, {})
    await workflow_env.settle()
    assert (await handle.describe())["running"] == ["long", "nap"]
    workflow_env.clock.advance(1.0)
    await workflow_env.settle()
    # The long step holds the phase: the sleep's own timer wakes its branch.
    assert order == ["after"]
    assert (await handle.describe())["running"] == ["long"]
    gate.set()
    await workflow_env.settle()
    # Parked on the event alone: the sleep that ended is no wake-up of the execution.
    view = await handle.describe()
    assert (view["status"], view["waiting_for"], view["wake_at"]) == ("waiting", ["go"], None)
    assert (await handle.meta())["incarnations"] == 1
    assert await handle.send_event("go", 1)
    assert (await workflow_env.result(handle)).value == ["long", "napped"]


async def test_a_branch_moving_from_one_operation_to_the_next_is_not_taken_for_idle(
    workflow_env: WorkflowTestEnv,
) -> None:
    order: list[str] = []

    @workflow(unique("busy-branch"))
    async def flow(ctx: Any, input: Any) -> Any:
        async def chain() -> int:
            for i in range(10):
                # Between two gathers the branch runs no operation for a few loop turns.
                await asyncio.gather(
                    ctx.step(f"x{i}", order.append, f"x{i}"), ctx.step(f"y{i}", order.append, f"y{i}")
                )
            return len(order)

        _, done = await asyncio.gather(ctx.sleep("nap", "1h"), chain())
        return done

    handle = await workflow_env.start(flow, {})
    for _ in range(10):
        await workflow_env.settle()
    # The sleep parked at once, but the other branch kept moving: the phase
    # suspends only once it is parked too, so all twenty steps ran before the sleep ends.
    assert len(order) == 20
    assert (await handle.describe())["status"] == "sleeping"
    result = await workflow_env.result(handle)
    assert result.ok and result.value == 20


async def test_an_alarm_that_only_delivered_mail_keeps_the_sleep_s_wake_up(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("mail-receiver"))
    async def receiver(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("ping", "ping")

    @workflow(unique("mail-sleeper"))
    async def sleeper(ctx: Any, input: Any) -> Any:
        await ctx.sleep("nap", "1h")
        return "woke"

    recv = await workflow_env.run(receiver, None, execution_id="recv-5")
    sleeping = await workflow_env.run(sleeper, None, execution_id="sleep-5")
    wake_at = (await sleeping.describe())["wake_at"]
    assert await sleeping.status() == "sleeping" and wake_at is not None
    attempts = await _mail_a_ping_the_receiver_refuses_once(workflow_env, "sleep-5", "recv-5")
    await workflow_env.settle()
    assert attempts == ["/event"]
    # An alarm brought forward delivers it (the sleeper is not driven)...
    assert (await workflow_env.result(recv)).value == "hello"
    await workflow_env.settle()
    assert attempts == ["/event", "/event"]
    # ...and sets the sleep's own wake-up again, not none.
    assert workflow_env.ns.backend.alarms().get("sleep-5") == wake_at
    assert (await workflow_env.result(sleeping)).value == "woke"


async def test_every_step_that_finishes_beside_a_running_one_is_journaled_at_once(
    workflow_env: WorkflowTestEnv,
) -> None:
    gate, long_call = gated("long")

    @workflow(unique("flushed-again"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step("first", lambda: "first")
        return [first, *await asyncio.gather(ctx.step("quick", lambda: "quick"), ctx.step("long", long_call))]

    handle = await workflow_env.start(flow, {})
    await workflow_env.settle()
    # Not only the first completion of the run is written on its own: the quick
    # step's is too, while the long step holds every later write back.
    journal = {e["name"]: e["status"] for e in await handle.journal()}
    assert journal == {"first": "completed", "quick": "completed", "long": "running"}
    gate.set()
    assert (await workflow_env.result(handle)).value == ["first", "quick", "long"]


async def test_the_object_counts_the_writes_it_made(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("counted"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("a", lambda: 1)

    stats = workflow_env.ns.stats
    before = stats.writes
    handle = await workflow_env.run(flow, {})
    assert (await handle.status()) == "completed"
    core = workflow_env.ns._instance(handle.execution_id).instance._object.core
    assert core.writes == stats.writes - before > 0


async def test_a_step_whose_object_dies_as_it_starts_leaves_no_coroutine_unawaited(
    workflow_env: WorkflowTestEnv,
) -> None:
    started: list[Any] = []

    async def work() -> str:
        return "done"

    def call() -> Any:
        coroutine = work()
        started.append(coroutine)
        if len(started) == 1:
            workflow_env.evict("dies-5")  # the object dies between the call and its first await
        return coroutine

    @workflow(unique("dies"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("s", call, timeout="1m")

    handle = await workflow_env.start(flow, {}, execution_id="dies-5")
    result = await workflow_env.result(handle)
    assert result.ok and result.value == "done"
    # The first attempt's coroutine never ran: it is closed, not left to warn when collected.
    assert inspect.getcoroutinestate(started[0]) == inspect.CORO_CLOSED
    assert len(started) == 2


async def test_a_step_reusing_a_recorded_key_is_a_crash_point_after_its_journal_write(
    workflow_env: WorkflowTestEnv,
) -> None:
    charges: list[str] = []

    def charge(label: str) -> str:
        charges.append(label)
        return f"charged-{label}"

    @workflow(unique("reused-crash"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step("charge", charge, "first", idempotency_key="order-9")
        again = await ctx.step("charge-again", charge, "again", idempotency_key="order-9")
        return [first, again]

    workflow_env.faults.crash_at("after_journal", step="charge-again")
    handle = await workflow_env.start(flow, {})
    result = await workflow_env.result(handle)
    assert result.ok and result.value == ["charged-first", "charged-first"]
    # The fault point named the reused step, and the crash there lost nothing.
    assert [(point, info.get("step")) for _, point, info in workflow_env.faults.crashes] == [
        ("after_journal", "charge-again")
    ]
    assert charges == ["first"]


async def test_an_output_too_big_to_journal_is_named_in_the_step_error(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("huge-named"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("huge", lambda: "x" * (MAX_VALUE_BYTES + 1))

    handle = await workflow_env.run(flow, {})
    assert (await workflow_env.result(handle)).status == "failed"
    error = (await handle.describe())["error"]
    assert error["code"] == "serialization_error"
    assert error["message"].startswith("output of step 'huge' is "), error["message"]
    # The step's own record of that failure says which attempt it was.
    [entry] = [e for e in await handle.journal() if e["name"] == "huge"]
    assert [(e["code"], e["attempt"]) for e in entry["errors"]] == [("serialization_error", 1)]


async def test_a_failed_run_sets_its_retry_alarm_and_warns_naming_what_failed(
    workflow_env: WorkflowTestEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workkit_workflow")

    @workflow(unique("warned"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("a", lambda: "a")

    failures = {"left": 1}

    def fail_once(obj: str, puts: Any, deletes: Any) -> None:
        if failures["left"] and any('"a"' in text for text in puts.values()):
            failures["left"] -= 1
            raise OSError("disk I/O error (injected)")

    workflow_env.ns.write_hook = fail_once
    handle = await workflow_env.start(flow, {})
    await workflow_env.settle()
    assert failures["left"] == 0
    # The runner sets the retry alarm itself, after the first backoff (2 s).
    retry_at = workflow_env.ns.backend.alarms().get(handle.execution_id)
    assert retry_at == workflow_env.clock.now() + 2.0
    assert (await workflow_env.result(handle)).value == "a"
    # A storage failure is logged nowhere else: the retry warning carries its cause.
    [warning] = [r.getMessage() for r in caplog.records if "alarm failed" in r.getMessage()]
    assert "disk I/O error (injected)" in warning, warning


async def test_an_alarm_that_only_delivers_a_paused_execution_s_mail_leaves_its_state_alone(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("mail-receiver"))
    async def receiver(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("ping", "ping")

    @workflow(unique("mail-paused"))
    async def paused(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("never", "never")

    recv = await workflow_env.run(receiver, None, execution_id="recv-6")
    sender = await workflow_env.run(paused, None, execution_id="paused-6")
    assert await sender.pause()
    await workflow_env.settle()
    before = await sender.describe()
    assert before["status"] == "paused"
    await _mail_a_ping_the_receiver_refuses_once(workflow_env, "paused-6", "recv-6")
    # The retry alarm delivers it without driving the paused execution: no state write.
    assert (await workflow_env.result(recv)).value == "hello"
    await workflow_env.settle()
    after = await sender.describe()
    assert (after["status"], after["updated_at"]) == ("paused", before["updated_at"])


async def test_an_exception_in_the_alarm_handler_is_handled_by_the_engine_not_the_runtime(
    workflow_env: WorkflowTestEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    raised: list[str] = []

    def boom(info: Any) -> bool:
        if not raised:
            raised.append("once")
            raise RuntimeError("alarm hook raised (injected)")
        return False

    @workflow(unique("alarm-raises"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.sleep("nap", "1s")
        return "woke"

    workflow_env.faults.crash_at("in_alarm", when=boom)
    handle = await workflow_env.start(flow, {})
    assert (await workflow_env.result(handle)).value == "woke"
    assert raised == ["once"]
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    # The engine logs the exception and sets its retry alarm; the handler itself ends
    # normally, so the runtime sees no failed alarm to retry.
    [warning] = [m for _, m in messages if "alarm failed" in m]
    assert "alarm hook raised (injected)" in warning, warning
    assert not [m for name, m in messages if name == "workkit_workflow.local" and "raised" in m]


async def _mail_a_ping_the_receiver_refuses_once(
    workflow_env: WorkflowTestEnv, sender: str, receiver: str
) -> list[str]:
    """Mail a ping event from ``sender`` to ``receiver``, written the way the engine writes
    it, with the receiver's object reset at the first delivery; the delivery attempts."""
    real = workflow_env.ns.request
    attempts: list[str] = []

    async def flaky(name: str, method: str, path: str, body: Any = None, query: Any = None) -> WireResponse:
        if name == receiver and path == "/event":
            attempts.append(path)
            if len(attempts) == 1:
                raise TransportError("the receiver's object was reset")
        return await real(name, method, path, body, query)

    workflow_env.ns.request = flaky  # type: ignore[method-assign]
    core = workflow_env.ns._instance(sender).instance._object.core
    await core.execution.ensure_loaded()
    ping = {"type": "ping", "payload": "hello", "id": f"{sender}-ping"}
    await core.execution.write(core.mail.message(receiver, "POST", "/event", ping, id=f"{sender}-ping"))
    return attempts


async def test_updated_at_is_the_time_of_the_last_state_change(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("updated-at"))
    async def napping(ctx: Any, input: Any) -> Any:
        await ctx.sleep("nap", 3600)
        return await ctx.step("after", lambda: "done")

    handle = await workflow_env.start(napping, None)
    await workflow_env.settle()
    asleep = await handle.describe()
    assert asleep["status"] == "sleeping" and asleep["updated_at"] >= asleep["created_at"]
    assert (await workflow_env.result(handle)).ok
    done = await handle.describe()
    assert done["updated_at"] == done["finished_at"] >= asleep["updated_at"] + 3600
