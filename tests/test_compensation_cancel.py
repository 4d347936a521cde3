"""Saga compensation (exactly once, resumable) and cancellation at every stage."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from workkit_workflow import RetryPolicy, Workflow
from workkit_workflow.testing import WorkflowTestEnv, step_names

from conftest import PERMANENT, Effects, make_order_flow, unique


async def test_compensation_runs_once_with_successful_outputs(env: WorkflowTestEnv, effects: Effects) -> None:
    seen: list[Any] = []
    flow = make_order_flow(effects, ship_error=PERMANENT)
    original = flow.compensation
    assert original is not None

    async def undo(ctx: Any) -> None:
        seen.append(
            (ctx.execution_id, ctx.status, ctx.failed_step, ctx.error["code"], ctx.step_outputs, ctx.input)
        )
        await original(ctx)

    flow.on_failure(undo)
    handle = await env.run(flow, {"order_id": "o-1"})
    result = await env.result(handle)
    assert not result.ok and result.error is not None
    assert seen == [
        (
            handle.execution_id,
            "failed",
            "ship",
            "non_retryable",
            {
                "reserve-inventory": {"reservation_id": "res-o-1"},
                "charge-card": {"transaction_id": "tx-o-1", "reservation": "res-o-1"},
            },
            {"order_id": "o-1"},
        )
    ]
    assert effects.calls["refund"] == 1 and effects.calls["release"] == 1
    assert result.error.compensation is not None and result.error.compensation["status"] == "completed"
    journal = await handle.journal()
    assert [(e["phase"], e["name"], e["status"]) for e in journal if e["phase"] == "compensation"] == [
        ("compensation", "refund", "completed"),
        ("compensation", "release", "completed"),
    ]
    # Nothing runs it again: a later alarm or replay finds the execution settled.
    await env.restart()
    await env.clock.sleep(3600)
    assert effects.calls["compensate"] == 1


async def test_crash_during_compensation_resumes_without_repeating_undo_steps(
    env: WorkflowTestEnv, effects: Effects
) -> None:
    flow = make_order_flow(effects, ship_error=PERMANENT)
    env.faults.crash_at("after_journal", step="refund")
    handle = await env.start(flow, {"order_id": "o-2"})
    result = await env.result(handle)
    assert not result.ok and env.faults.crashes
    assert effects.calls["refund"] == 1  # journaled before the crash: not repeated
    assert effects.calls["release"] == 1
    assert effects.calls["compensate"] == 2  # the handler resumed, its finished step replayed


async def test_crash_entering_compensation(env: WorkflowTestEnv, effects: Effects) -> None:
    flow = make_order_flow(effects, ship_error=PERMANENT)
    env.faults.crash_at("in_compensation")
    handle = await env.start(flow, {"order_id": "o-3"})
    result = await env.result(handle)
    assert result.error is not None and result.error.compensation is not None
    assert result.error.compensation["status"] == "completed"
    assert effects.calls["refund"] == 1 and effects.calls["release"] == 1


async def test_compensation_failure_is_recorded_not_retried(env: WorkflowTestEnv, effects: Effects) -> None:
    calls = 0

    def broken(ctx: Any) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("refund API down")

    flow = make_order_flow(effects, ship_error=PERMANENT).on_failure(broken)
    result = await env.result(await env.run(flow, {"order_id": "o-4"}))
    assert result.error is not None and result.error.compensation is not None
    assert result.error.compensation["status"] == "failed"
    assert result.error.compensation["error"]["message"] == "refund API down"
    assert result.error.code == "non_retryable"  # the original failure stays the reported one
    assert calls == 1


async def test_no_compensation_handler(env: WorkflowTestEnv, effects: Effects) -> None:
    flow = make_order_flow(effects, ship_error=PERMANENT, compensate=False)
    result = await env.result(await env.run(flow, {"order_id": "o-5"}))
    assert result.status == "failed" and result.error is not None and result.error.compensation is None


# -- cancel ------------------------------------------------------------------------


async def test_cancel_before_start(env: WorkflowTestEnv, effects: Effects) -> None:
    env.ns.deliver_alarms = False
    flow = make_order_flow(effects)
    handle = await env.start(flow, {"order_id": "c-1"})
    assert await handle.status() == "pending"
    assert await handle.cancel("changed my mind")
    env.ns.deliver_alarms = True
    env.ns._alarm_loop = None
    await env.ns.start()
    result = await env.result(handle)
    assert result.status == "cancelled" and result.error is not None
    assert result.error.code == "cancelled" and "changed my mind" in result.error.message
    assert effects.calls["reserve"] == 0 and effects.calls["compensate"] == 1


async def test_cancel_while_a_step_runs_lets_it_finish_then_compensates(env: WorkflowTestEnv) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()
    done: list[str] = []

    async def slow(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        entered.set()
        await gate.wait()
        done.append("slow")
        return {"charged": 10}

    undo: list[dict[str, Any]] = []
    flow = (
        Workflow(unique("cancel-mid"))
        .step("charge", slow)
        .step("ship", lambda i, p, c: done.append("ship"))
        .on_failure(lambda ctx: undo.append(ctx.step_outputs))
    )
    handle = await env.start(flow, {})
    await entered.wait()
    # /status and /cancel are answered while the step awaits I/O.
    assert (await handle.describe())["running"] == ["charge"]
    assert await handle.cancel()
    assert await handle.status() == "cancelled"
    gate.set()
    result = await env.result(handle)
    assert result.status == "cancelled"
    assert done == ["slow"]  # no further step started
    assert undo == [{"charge": {"charged": 10}}]  # the finished step is compensated


async def test_cancel_abandons_a_retry_wait(env: WorkflowTestEnv) -> None:
    calls = 0

    def flaky(input: Any, prev: Any, ctx: Any) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("no")

    flow = Workflow(
        unique("cancel-retry"), retry=RetryPolicy(max_attempts=5, initial_delay=86400.0, max_delay=86400.0)
    ).step("s", flaky)
    handle = await env.run(flow, {})
    assert await handle.status() == "sleeping"
    assert await handle.cancel()
    result = await env.result(handle)
    assert result.status == "cancelled" and calls == 1
    assert env.clock.now() - (await handle.meta())["created_at"] < 60


async def test_cancel_after_completion_is_a_no_op(env: WorkflowTestEnv, effects: Effects) -> None:
    handle = await env.run(make_order_flow(effects), {"order_id": "c-4"})
    assert (await env.result(handle)).ok
    assert await handle.cancel() is False
    assert await handle.status() == "completed"
    assert effects.calls["compensate"] == 0


async def test_cancel_twice(env: WorkflowTestEnv) -> None:
    flow = Workflow(unique("twice")).sleep("nap", "1d").step("s", lambda i, p, c: 1)
    handle = await env.run(flow, {})
    assert await handle.cancel() is True
    assert await handle.cancel() is False
    assert (await env.result(handle)).status == "cancelled"
    assert step_names(await handle.journal(), status="completed") == []


async def test_cancel_unknown_execution(env: WorkflowTestEnv) -> None:
    from workkit_workflow.errors import ExecutionNotFoundError

    with pytest.raises(ExecutionNotFoundError):
        await env.client.execution("nope").cancel()


async def test_cancel_during_the_last_step_wins(env: WorkflowTestEnv) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()

    async def last(input: Any, prev: Any, ctx: Any) -> str:
        entered.set()
        await gate.wait()
        return "shipped"

    undone: list[dict[str, Any]] = []
    flow = (
        Workflow(unique("last-cancel"))
        .step("ship", last)
        .on_failure(lambda ctx: undone.append(ctx.step_outputs))
    )
    handle = await env.start(flow, {})
    await entered.wait()
    assert await handle.cancel()
    gate.set()
    result = await env.result(handle)
    assert result.status == "cancelled"
    assert undone == [{"ship": "shipped"}]


async def test_a_cancel_acknowledged_before_the_running_step_fails_still_wins(env: WorkflowTestEnv) -> None:
    """The step's retryable failure arrives after the acknowledged cancel: the
    execution ends cancelled (not failed), and compensation runs once."""
    gate, entered = asyncio.Event(), asyncio.Event()

    async def flaky(input: Any, prev: Any, ctx: Any) -> str:
        entered.set()
        await gate.wait()
        raise ConnectionError("transient")

    undone: list[str] = []
    flow = (
        Workflow(unique("cancel-then-fail"))
        .step("call", flaky)
        .on_failure(lambda ctx: undone.append(ctx.status))
    )
    handle = await env.start(flow, {})
    await entered.wait()
    assert await handle.cancel()
    gate.set()
    result = await env.result(handle)
    assert result.status == "cancelled"
    assert undone == ["cancelled"]
