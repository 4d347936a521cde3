"""Engine behaviours pinned by mutation testing (docs/mutation.md), part 4: survivors of the
larger samples taken on the engine after versions, pause, children, undo, limits and paged
replay. Through the public API on the local runtime's virtual clock."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from pydantic import BaseModel

from workkit_workflow import NonRetryableError, RetryPolicy, workflow
from workkit_workflow.errors import ExecutionConflictError, SerializationError
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


async def test_compensation_is_told_the_position_of_an_in_doubt_step(workflow_env: WorkflowTestEnv) -> None:
    told: list[tuple[str, int, int]] = []

    async def undo(ctx: Any) -> None:
        told.extend((s.name, s.op, s.attempt) for s in ctx.in_doubt_steps)

    @workflow(unique("in-doubt-op"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.step("reserve", lambda: "r-1")
        return await ctx.step("charge", lambda: "c-1")

    workflow_env.faults.crash_at("after_side_effect", step="charge")
    handle = await workflow_env.start(flow.on_failure(undo), {})
    await workflow_env.settle()
    assert await handle.cancel("changed my mind")
    assert (await workflow_env.result(handle)).status == "cancelled"
    assert told == [("charge", 1, 1)]


def _sleepy_child(nap: float) -> Any:
    @workflow(unique("kid"))
    async def kid(ctx: Any, input: Any) -> Any:
        await ctx.sleep("nap", nap)
        return input

    return kid


async def test_a_child_left_running_is_told_how_its_parent_ended(workflow_env: WorkflowTestEnv) -> None:
    quick, slow = _sleepy_child(1.0), _sleepy_child(3600.0)

    @workflow(unique("race-parent"))
    async def parent(ctx: Any, input: Any) -> Any:
        tasks = [
            asyncio.ensure_future(ctx.child(quick, 1, name="a")),
            asyncio.ensure_future(ctx.child(slow, 2, name="b")),
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return [t.result() for t in done]

    handle = await workflow_env.run(parent, None, execution_id="race-1")
    result = await workflow_env.result(handle)
    assert result.ok and result.value == [1]
    left = workflow_env.client.execution("race-1.1-b")
    assert (await workflow_env.result(left)).status == "cancelled"
    assert (await left.describe())["error"]["message"] == "parent race-1 completed"


async def test_an_operation_a_finished_body_left_in_its_own_task_ends_cancelled(
    workflow_env: WorkflowTestEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """A task the body made and never awaited, parked when the body returns, ends as
    asyncio ends abandoned work: cancelled, so nothing is logged when it is collected (a
    ``Suspend`` no one awaited was logged as a task exception never retrieved)."""
    slow = _sleepy_child(3600.0)
    left: list[asyncio.Future[Any]] = []

    @workflow(unique("abandoning-parent"))
    async def parent(ctx: Any, input: Any) -> Any:
        left.append(asyncio.ensure_future(ctx.child(slow, 1, name="b")))
        await ctx.sleep("a moment", 1.0)  # the child is started and parked by then
        return "done"

    with caplog.at_level(logging.ERROR):
        handle = await workflow_env.run(parent, None, execution_id="abandon-1")
        assert (await workflow_env.result(handle)).value == "done"
        # One task per run of the body that reached the child (the first parked at the sleep).
        assert left and [t.done() for t in left] == [True] * len(left), left
        assert all(t.cancelled() for t in left), left
        left.clear()
        gc.collect()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_cancelled_parent_tells_its_child_why(workflow_env: WorkflowTestEnv) -> None:
    slow = _sleepy_child(3600.0)

    @workflow(unique("cancel-parent"))
    async def parent(ctx: Any, input: Any) -> Any:
        return await ctx.child(slow, 1, name="a")

    handle = await workflow_env.run(parent, None, execution_id="cancel-1")
    assert await handle.cancel("no longer needed")
    kid = workflow_env.client.execution("cancel-1.0-a")
    assert (await workflow_env.result(kid)).status == "cancelled"
    assert (await kid.describe())["error"]["message"] == "parent cancel-1 cancelled"


async def test_meta_counts_the_main_phase_operations_not_the_compensation_ones(
    workflow_env: WorkflowTestEnv,
) -> None:
    def decline() -> None:
        raise NonRetryableError("card declined")

    async def undo(ctx: Any) -> None:
        await ctx.step("release", lambda: "released")

    @workflow(unique("meta-steps"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.step("reserve", lambda: "r-1")
        await ctx.sleep("pause", 1.0)
        return await ctx.step("charge", decline)

    handle = await workflow_env.run(flow.on_failure(undo), {})
    assert (await workflow_env.result(handle)).status == "failed"
    meta = await handle.meta()
    assert (meta["steps"], meta["attempts"]) == (3, 3)


async def test_an_execution_started_without_waiting_starts_at_once(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("start-now"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("a", lambda: 1)

    handle = await workflow_env.start(flow, {})
    assert (await workflow_env.result(handle)).ok
    view = await handle.describe()
    # Its alarm is due when it is created, not a runner's lease later.
    assert view["started_at"] == view["created_at"]


class _Quote(BaseModel):
    amount: int


async def test_an_input_refused_in_the_object_is_named_as_the_workflow_input(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("typed-by-name"), input_type=_Quote)
    async def flow(ctx: Any, input: _Quote) -> Any:
        return input.amount

    with pytest.raises(SerializationError, match=r"^workflow input does not match _Quote"):
        await workflow_env.client.run(flow.name, {"amount": "lots"})  # by name: validated in the object


async def test_an_id_taken_by_another_workflow_is_a_conflict_naming_the_id(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("first"))
    async def first(ctx: Any, input: Any) -> Any:
        return 1

    @workflow(unique("second"))
    async def second(ctx: Any, input: Any) -> Any:
        return 2

    await workflow_env.run(first, None, execution_id="taken-1")
    with pytest.raises(ExecutionConflictError) as caught:
        await workflow_env.run(second, None, execution_id="taken-1")
    assert caught.value.details["execution_id"] == "taken-1"
    # The message names both workflows: the one the id runs and the one asked for.
    assert caught.value.message == (
        f"execution 'taken-1' already runs workflow {first.name!r}, not {second.name!r}"
    )


async def test_a_recorded_key_is_found_again_after_the_object_reloads(workflow_env: WorkflowTestEnv) -> None:
    calls: list[str] = []

    def charge(label: str) -> str:
        calls.append(label)
        return f"tx-{label}"

    @workflow(unique("key-reload"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step("charge", lambda: charge("a"), idempotency_key="order-1")
        await ctx.sleep("pause", "1h")  # the object is evicted; the next drive reloads the journal
        again = await ctx.step("charge-again", lambda: charge("b"), idempotency_key="order-1")
        return [first, again]

    handle = await workflow_env.run(flow, {})
    assert await handle.status() == "sleeping"
    workflow_env.evict(handle.execution_id)
    result = await workflow_env.result(handle)
    assert result.ok and result.value == ["tx-a", "tx-a"]
    assert calls == ["a"]
