"""A step's completion rides on the next write.

A completion is deferred (``ExecutionState.defer``) until the next operation's write,
or until the body suspends for anything else."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from workkit_workflow import create_durable_workflow, workflow
from workkit_workflow.local import LocalNamespace
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


def _record_writes(ns: LocalNamespace, obj: str, writes: list[Mapping[str, str]]) -> None:
    def hook(name: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        if name == obj:
            writes.append(dict(puts))

    ns.write_hook = hook


async def test_a_step_the_body_then_waits_past_is_journaled_at_once(workflow_env: WorkflowTestEnv) -> None:
    gate = asyncio.Event()

    @workflow(unique("body-waits"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step("first", lambda: "first")
        await gate.wait()  # not an operation: no write carries the completion
        return first

    handle = await workflow_env.start(flow, {})
    await workflow_env.settle()
    journal = {e["name"]: e["status"] for e in await handle.journal()}
    assert journal == {"first": "completed"}
    gate.set()
    assert (await workflow_env.result(handle)).value == "first"


async def test_a_completion_and_the_next_start_are_one_write() -> None:
    @workflow(unique("one-write"))
    async def flow(ctx: Any, input: Any) -> Any:
        for i in range(5):
            await ctx.step(f"s{i}", lambda i=i: i)
        return "done"

    async with LocalNamespace() as ns:
        writes: list[Mapping[str, str]] = []
        _record_writes(ns, "one", writes)
        handle = await create_durable_workflow(ns).run(flow, {}, execution_id="one")
        assert await handle.status() == "completed"
    carrying = [w for w in writes if sum(k.startswith("j:") for k in w) == 2]
    # Steps 1-4 start in the write that completes the step before them.
    assert len(carrying) == 4
