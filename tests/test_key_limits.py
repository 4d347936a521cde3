"""An idempotency key is at most ``MAX_KEY_CHARS`` characters: a longer one is refused with a
clear error where it is given, and the execution ends failed. Before, a key near a stored
value's limit made the step's start unstorable at every wake-up: the drive failed, its alarm
retried, and the execution was left paused with no alarm (stranded)."""

from __future__ import annotations

from typing import Any

import pytest

from workkit_workflow import Workflow, workflow
from workkit_workflow.definitions._steps import MAX_KEY_CHARS
from workkit_workflow.engine import _journal as jn
from workkit_workflow.errors import DefinitionError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


@pytest.mark.parametrize("length", [MAX_KEY_CHARS + 1, jn.MAX_VALUE_BYTES + 10])
async def test_a_key_too_long_fails_the_execution_before_the_step_runs(
    env: WorkflowTestEnv, length: int
) -> None:
    calls: list[int] = []

    @workflow(unique("long-key"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("pay", lambda: calls.append(1), idempotency_key="k" * length)

    handle = await env.start(flow, None)
    result = await env.result(handle)
    assert await handle.status() == "failed"
    assert f"idempotency_key must be at most {MAX_KEY_CHARS} characters, got {length}" in str(result.error)
    assert calls == []


async def test_a_key_function_returning_one_too_long_fails_the_step(env: WorkflowTestEnv) -> None:
    calls: list[int] = []
    flow = Workflow(unique("long-key-fn")).step(
        "pay",
        lambda input, prev, ctx: calls.append(1),
        idempotency_key=lambda input, ctx: "k" * (MAX_KEY_CHARS + 1),
    )
    handle = await env.start(flow, None)
    result = await env.result(handle)
    assert await handle.status() == "failed"
    assert f"must return at most {MAX_KEY_CHARS} characters" in str(result.error)
    assert calls == []


def test_a_builder_step_s_key_too_long_is_refused_when_defined() -> None:
    with pytest.raises(DefinitionError, match=f"at most {MAX_KEY_CHARS} characters"):
        Workflow(unique("long-key-builder")).step(
            "pay", lambda input, prev, ctx: 1, idempotency_key="k" * (MAX_KEY_CHARS + 1)
        )


@pytest.mark.parametrize("key", ["k" * MAX_KEY_CHARS, "ü" * MAX_KEY_CHARS])
async def test_a_key_of_the_longest_length_runs(env: WorkflowTestEnv, key: str) -> None:
    @workflow(unique("longest-key"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("pay", lambda: "paid", idempotency_key=key)

    handle = await env.run(flow, None)
    assert (await env.result(handle)).value == "paid"
