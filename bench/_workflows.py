"""The workflows the benchmarks run (registered once, by import)."""

from __future__ import annotations

import asyncio
from typing import Any

from workkit_workflow import WorkflowContext, workflow


def work(i: int) -> dict[str, Any]:
    """The step body: a small output, so the bench measures the engine, not the step."""
    return {"i": f"{i:05d}", "ok": True}


@workflow("bench-linear")
async def linear(ctx: WorkflowContext, input: Any) -> int:
    """N sequential steps."""
    n = int(input["n"])
    for i in range(n):
        await ctx.step(f"step-{i:05d}", work, i)
    return n


@workflow("bench-linear-keyed")
async def linear_keyed(ctx: WorkflowContext, input: Any) -> int:
    """``linear`` with an idempotency key on every step (each is hashed, looked up, journaled)."""
    n = int(input["n"])
    for i in range(n):
        await ctx.step(f"step-{i:05d}", work, i, idempotency_key=f"charge-{i:05d}")
    return n


@workflow("bench-linear-yield")
async def linear_yield(ctx: WorkflowContext, input: Any) -> int:
    """N sequential steps with a turn of the event loop between them, as a body that
    awaits something else between steps does: each step's completion is then written
    on its own (the deferral only joins writes within one loop turn)."""
    n = int(input["n"])
    for i in range(n):
        await ctx.step(f"step-{i:05d}", work, i)
        await asyncio.sleep(0)
    return n


@workflow("bench-replay")
async def replay(ctx: WorkflowContext, input: Any) -> Any:
    """N steps, then a wait: the event makes a cold object replay the whole journal."""
    n = int(input["n"])
    for i in range(n):
        await ctx.step(f"step-{i:05d}", work, i)
    return await ctx.wait_for_event("go", "go")


@workflow("bench-replay-keyed")
async def replay_keyed(ctx: WorkflowContext, input: Any) -> Any:
    """``replay`` with an idempotency key on every step (each one is looked up, and a
    replay records where each key's entry is)."""
    n = int(input["n"])
    for i in range(n):
        await ctx.step(f"step-{i:05d}", work, i, idempotency_key=f"charge-{i:05d}")
    return await ctx.wait_for_event("go", "go")


@workflow("bench-loop")
async def loop(ctx: WorkflowContext, input: Any) -> int:
    """A loop of turns driven by events: each waits for one, then runs a step. Each event
    wakes the execution, which replays every turn before it."""
    n = int(input["n"])
    for i in range(n):
        await ctx.wait_for_event(f"turn-{i:05d}", "tick")
        await ctx.step(f"handle-{i:05d}", work, i)
    return n


@workflow("bench-kid")
async def kid(ctx: WorkflowContext, input: Any) -> Any:
    """A child of one step."""
    return await ctx.step("double", lambda: 2 * input)


@workflow("bench-parent")
async def parent(ctx: WorkflowContext, input: Any) -> int:
    """N children of one step, one after the other, or all at once (``together``)."""
    n = int(input["n"])
    if input.get("together"):
        outputs = await asyncio.gather(*(ctx.child(kid, i, name=f"part-{i}") for i in range(n)))
    else:
        outputs = [await ctx.child(kid, i, name=f"part-{i}") for i in range(n)]
    return sum(outputs)
