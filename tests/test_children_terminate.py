"""Terminating a parent (``cancel(compensate=False)``) terminates its whole tree: the
children still running are cancelled without compensation too, their grandchildren
with them; a child already cancelled with compensation keeps it. Every test runs over
both local storages (memory and SQLite)."""

from __future__ import annotations

import asyncio
from typing import Any

from workkit_workflow import WorkflowContext, workflow
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


def _kid(undone: list[str], *, cool_off: float = 0.0) -> Any:
    """A child that charges, then sleeps an hour; its compensation refunds (after
    ``cool_off`` seconds)."""

    async def refund(ctx: Any) -> None:
        if cool_off:
            await ctx.sleep("cool-off", cool_off)
        await ctx.step("refund", lambda: undone.append(ctx.execution_id))

    @workflow(unique("kid"))
    async def kid(ctx: WorkflowContext, input: Any) -> Any:
        charged = await ctx.step("charge", lambda: input * 2)
        await ctx.sleep("settle", 3600.0)
        return charged

    return kid.on_failure(refund)


async def test_terminating_a_parent_terminates_its_children_and_grandchildren_without_compensation(
    env: WorkflowTestEnv,
) -> None:
    undone: list[str] = []
    grandkid = _kid(undone)

    async def refund(ctx: Any) -> None:
        await ctx.step("refund", lambda: undone.append(ctx.execution_id))

    @workflow(unique("middle"))
    async def middle(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.child(grandkid, input, name="grand")

    middle.on_failure(refund)

    @workflow(unique("root"))
    async def root(ctx: WorkflowContext, input: Any) -> Any:
        return await asyncio.gather(ctx.child(middle, 1, name="a"), ctx.child(middle, 2, name="b"))

    root.on_failure(refund)
    handle = await env.run(root, None, execution_id="pt-1")
    await env.settle()
    tree = ["pt-1.0-a", "pt-1.1-b", "pt-1.0-a.0-grand", "pt-1.1-b.0-grand"]
    assert [await env.client.execution(c).status() for c in tree] == ["waiting"] * 2 + ["sleeping"] * 2
    assert await handle.cancel("stop everything", compensate=False)
    result = await env.result(handle)
    assert not result.ok and result.error is not None and result.error.code == "terminated"
    for child_id in tree:
        child = env.client.execution(child_id)
        outcome = await env.result(child)
        assert outcome.status == "cancelled" and outcome.error is not None
        assert outcome.error.code == "terminated", child_id
        described = await child.describe()
        assert described["compensation"] is None, child_id
    assert (await env.client.execution("pt-1.0-a").describe())["cancel_reason"] == "parent pt-1 terminated"
    assert undone == []  # no on_failure anywhere in the tree


async def test_the_terminating_cancel_is_written_with_the_parent_and_survives_a_crash(
    env: WorkflowTestEnv,
) -> None:
    # The parent dies with the cancel message written and not yet sent: the message
    # delivered after it comes back says, from storage, that the child is not compensated.
    undone: list[str] = []
    kid = _kid(undone)

    @workflow(unique("parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.child(kid, input, name="only")

    handle = await env.run(parent, 5, execution_id="pt-2")
    await env.settle()
    env.faults.crash_at(
        "in_mail", execution_id="pt-2", times=2, when=lambda info: info.get("id") == "pt-2.0-only:cancel"
    )
    assert await handle.cancel("stop", compensate=False)
    await env.restart()
    child = env.client.execution("pt-2.0-only")
    outcome = await env.result(child)
    assert env.faults.crashes
    assert outcome.status == "cancelled" and outcome.error is not None and outcome.error.code == "terminated"
    parent_outcome = await env.result(env.client.execution("pt-2"))  # the namespace was reopened
    assert parent_outcome.error is not None and parent_outcome.error.code == "terminated"
    assert undone == []


async def test_a_child_already_cancelled_with_compensation_keeps_it_when_its_parent_is_terminated(
    env: WorkflowTestEnv,
) -> None:
    undone: list[str] = []
    kid = _kid(undone, cool_off=60.0)

    @workflow(unique("parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.child(kid, input, name="only")

    handle = await env.run(parent, 5, execution_id="pt-3")
    await env.settle()
    child = env.client.execution("pt-3.0-only")
    assert await child.cancel("by hand")  # compensates: its on_failure sleeps a minute first
    await env.settle()
    assert (await child.describe())["compensation"]["status"] == "running"
    assert await handle.cancel("stop", compensate=False)
    outcome = await env.result(child)
    assert outcome.status == "cancelled" and outcome.error is not None and outcome.error.code == "cancelled"
    assert (await child.describe())["compensation"]["status"] == "completed"
    assert undone == ["pt-3.0-only"]
    parent_outcome = await env.result(handle)
    assert parent_outcome.error is not None and parent_outcome.error.code == "terminated"
