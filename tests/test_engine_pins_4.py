"""Engine behaviours pinned by mutation testing (docs/mutation.md), part 4: survivors of the
larger samples taken on the engine after versions, pause, children, undo, limits and paged
replay. Through the public API on the local runtime's virtual clock."""

from __future__ import annotations

from typing import Any

from workkit_workflow import RetryPolicy, workflow
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


async def test_a_lost_attempt_is_journaled_as_an_attempt_lost_error(workflow_env: WorkflowTestEnv) -> None:
    calls: list[int] = []

    @workflow(unique("lost-type"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("charge", lambda: calls.append(1) or len(calls))

    workflow_env.faults.crash_at("after_side_effect", step="charge")
    handle = await workflow_env.start(flow, {})
    result = await workflow_env.result(handle)
    assert result.ok and result.value == 2
    [entry] = await handle.journal()
    [lost] = entry["errors"]
    assert (lost["code"], lost["type"], lost["retryable"]) == ("attempt_lost", "AttemptLost", True)
    assert lost["attempt"] == 1 and lost["finished_at"] is None


async def test_each_failed_attempt_is_journaled_with_its_own_start(workflow_env: WorkflowTestEnv) -> None:
    def flaky() -> None:
        raise ConnectionError("try again")

    @workflow(unique("attempt-start"), retry=RetryPolicy(max_attempts=2, initial_delay=60, jitter=0))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("call", flaky)

    handle = await workflow_env.start(flow, {})
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    [entry] = await handle.journal()
    first, second = entry["errors"]
    # The second attempt started after the first one's retry wait, not when the step first did.
    assert second["started_at"] >= first["finished_at"] + 60
    assert second["started_at"] > entry["started_at"]
