"""Engine behaviours pinned by mutation testing (docs/mutation.md), part 3: what the
operations of a phase (steps, sleeps, waits, compensation) journal and report. Through the
public API on the local runtime's virtual clock."""

from __future__ import annotations

import asyncio
from typing import Any

from workkit_workflow import RetryPolicy, Workflow, workflow
from workkit_workflow.definitions._json import MAX_VALUE_BYTES
from workkit_workflow.testing import WorkflowTestEnv

from conftest import gated, unique


async def test_a_compensation_step_is_tried_once_unless_it_asks_for_retries(
    workflow_env: WorkflowTestEnv,
) -> None:
    refunds: list[int] = []

    def refund() -> None:
        refunds.append(1)
        raise ConnectionError("refund service down")

    async def undo(ctx: Any) -> None:
        await ctx.step("refund", refund)

    def boom(input: Any, prev: Any, ctx: Any) -> None:
        raise ValueError("card declined")

    flow = (
        Workflow(unique("comp-once"), retry=RetryPolicy(max_attempts=1)).step("charge", boom).on_failure(undo)
    )
    handle = await workflow_env.run(flow, {})
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    compensation = (await handle.describe())["compensation"]
    assert compensation["status"] == "failed"
    assert compensation["error"]["code"] == "ConnectionError"
    assert refunds == [1]


async def test_a_journal_longer_than_the_code_now_reaches_is_a_replay_mismatch(
    workflow_env: WorkflowTestEnv,
) -> None:
    shortened = False

    @workflow(unique("shortened"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.step("a", lambda: 1)
        if shortened:
            return "done early"  # a deploy dropped the rest of the workflow
        await ctx.step("b", lambda: 2)
        await ctx.sleep("pause", "1h")
        return "done"

    handle = await workflow_env.run(flow, {})
    assert await handle.status() == "sleeping"
    shortened = True
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    view = await handle.describe()
    assert (view["error"]["code"], view["error"]["position"]) == ("replay_mismatch", 1)
    assert "'b'" in view["error"]["message"] and "no longer reaches" in view["error"]["message"]
    assert view["failed_step"] == "b"


async def test_a_cancelled_execution_reports_a_cancelled_error_with_its_reason(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("cancel-error"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("go", "go")

    handle = await workflow_env.run(flow, {})
    assert await handle.cancel("customer changed their mind")
    result = await workflow_env.result(handle)
    assert result.status == "cancelled"
    assert result.error is not None
    assert result.error.code == "cancelled" and "customer changed their mind" in result.error.message
    error = (await handle.describe())["error"]
    assert (error["code"], error["message"]) == ("cancelled", "customer changed their mind")


async def test_a_step_that_finishes_beside_a_running_one_is_journaled_at_once(
    workflow_env: WorkflowTestEnv,
) -> None:
    gate, long_call = gated("long")

    @workflow(unique("flushed"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await asyncio.gather(ctx.step("quick", lambda: "quick"), ctx.step("long", long_call))

    # No later write carries the quick step's completion: it is written on its own.
    await quick_journaled_while_long_runs(workflow_env, flow, gate)


async def quick_journaled_while_long_runs(env: WorkflowTestEnv, flow: Any, gate: asyncio.Event) -> None:
    """Start ``flow``, whose body gathers a step "quick" and a step "long" waiting for
    ``gate``: the quick one is journaled completed while the long one runs; then both end."""
    handle = await env.start(flow, {})
    await env.settle()
    journal = {e["name"]: e["status"] for e in await handle.journal()}
    assert journal == {"quick": "completed", "long": "running"}
    gate.set()
    assert (await env.result(handle)).value == ["quick", "long"]


async def test_a_sleep_that_starts_at_the_deadline_fails_the_workflow_there_and_compensates(
    workflow_env: WorkflowTestEnv,
) -> None:
    compensated: list[str] = []

    @workflow(unique("sleep-at-deadline"), timeout="10s")
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.sleep("first", "10s")
        await ctx.sleep("second", "1s")
        return "unreachable"

    flow.on_failure(lambda ctx: compensated.append(ctx.status))
    handle = await workflow_env.run(flow, {})
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    view = await handle.describe()
    assert view["error"]["code"] == "workflow_timeout"
    assert view["failed_step"] == "second"
    assert compensated == ["failed"]


async def test_a_step_knows_its_execution_workflow_and_name(workflow_env: WorkflowTestEnv) -> None:
    seen: list[tuple[str, str, str, int]] = []

    def probe(input: Any, prev: Any, ctx: Any) -> None:
        seen.append((ctx.execution_id, ctx.workflow, ctx.step, ctx.attempt))

    flow = Workflow(unique("knows")).step("probe", probe)
    handle = await workflow_env.run(flow, {}, execution_id="knows-1")
    assert (await workflow_env.result(handle)).ok
    assert seen == [("knows-1", flow.name, "probe", 1)]


async def test_an_output_too_big_to_journal_fails_the_step_for_good(workflow_env: WorkflowTestEnv) -> None:
    calls: list[int] = []

    def huge(input: Any, prev: Any, ctx: Any) -> str:
        calls.append(ctx.attempt)
        return "x" * (MAX_VALUE_BYTES + 1)

    flow = Workflow(unique("huge"), retry=RetryPolicy(max_attempts=3, initial_delay=1.0)).step("huge", huge)
    handle = await workflow_env.run(flow, {})
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    error = (await handle.describe())["error"]
    assert (error["code"], error["retryable"]) == ("serialization_error", False)
    assert calls == [1]  # not retried: the same output would not fit again


async def test_a_wait_that_times_out_without_a_default_fails_with_when_it_waited(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("wait-timeout"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("approval", "approved", timeout="5s")

    t0 = workflow_env.clock.now()
    handle = await workflow_env.start(flow, {})
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    view = await handle.describe()
    assert (view["error"]["code"], view["failed_step"], view["step_attempt"]) == (
        "wait_timeout",
        "approval",
        1,
    )
    [wait] = await handle.journal()
    assert wait["status"] == "failed"
    error = wait["error"]
    assert (error["code"], error["attempt"], error["started_at"], error["finished_at"]) == (
        "wait_timeout",
        1,
        t0,
        t0 + 5.0,
    )


async def test_a_step_reusing_a_recorded_key_is_journaled_as_a_step_under_that_key(
    workflow_env: WorkflowTestEnv,
) -> None:
    charges: list[str] = []

    def charge(label: str) -> str:
        charges.append(label)
        return f"charged-{label}"

    @workflow(unique("reused-key"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step("charge", charge, "first", idempotency_key="order-7")
        again = await ctx.step("charge-again", charge, "again", idempotency_key="order-7")
        await ctx.sleep("settle", "1s")  # the result must survive a replay too
        return [first, again]

    handle = await workflow_env.run(flow, {})
    assert (await workflow_env.result(handle)).value == ["charged-first", "charged-first"]
    assert charges == ["first"]
    first, again, _ = await handle.journal()
    assert {k: again.get(k) for k in ("kind", "name", "status", "attempt", "output")} == {
        "kind": "step",
        "name": "charge-again",
        "status": "completed",
        "attempt": 0,
        "output": "charged-first",
    }
    assert again["idempotency_hash"] == first["idempotency_hash"] is not None


async def test_a_sleep_already_due_costs_no_write_of_its_own(workflow_env: WorkflowTestEnv) -> None:
    async def run(with_sleep: bool) -> int:
        @workflow(unique("due-sleep"))
        async def flow(ctx: Any, input: Any) -> Any:
            await ctx.step("a", lambda: 1)
            if with_sleep:
                await ctx.sleep("no-wait", 0)
            return await ctx.step("b", lambda: 2)

        before = workflow_env.ns.stats.writes
        assert (await workflow_env.result(await workflow_env.run(flow, {}))).value == 2
        return workflow_env.ns.stats.writes - before

    # Its completed entry rides on the next write (step b's start).
    assert await run(with_sleep=True) == await run(with_sleep=False)
