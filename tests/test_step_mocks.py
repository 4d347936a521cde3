"""``WorkflowTestEnv.mock_step``: a step's handler or output replaced for one test, on
builder and code-first workflows, journaled like the real step and put back afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from workkit_workflow import Workflow, workflow
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

REAL: list[str] = []


def real_lookup(order_id: str) -> dict[str, str]:
    REAL.append(order_id)
    return {"price": "real"}


builder = (
    Workflow(unique("mock-builder"))
    .step("lookup", lambda input, prev, ctx: real_lookup(input["order_id"]))
    .step("total", lambda input, prev, ctx: {"total": prev["price"]})
)


@workflow(unique("mock-code-first"))
async def code_first(ctx: Any, input: Any) -> Any:
    price = await ctx.step("lookup", real_lookup, input["order_id"])
    return await ctx.step("total", lambda: {"total": price["price"]})


async def test_a_builder_steps_output_is_replaced_and_journaled(workflow_env: WorkflowTestEnv) -> None:
    workflow_env.mock_step(builder, "lookup", output={"price": "mocked"})
    handle = await workflow_env.run(builder, {"order_id": "b-1"})
    assert (await workflow_env.result(handle)).value == {"total": "mocked"}
    assert "b-1" not in REAL
    lookup = (await handle.journal())[0]
    assert (lookup["name"], lookup["status"], lookup["output"]) == (
        "lookup",
        "completed",
        {"price": "mocked"},
    )


async def test_a_code_first_steps_handler_is_replaced_and_can_fail(workflow_env: WorkflowTestEnv) -> None:
    calls: list[str] = []

    def flaky(order_id: str) -> dict[str, str]:
        calls.append(order_id)
        if len(calls) == 1:
            raise ConnectionError("price service down")
        return {"price": "second try"}

    workflow_env.mock_step(code_first, "lookup", handler=flaky)
    handle = await workflow_env.run(code_first, {"order_id": "c-1"})
    assert (await workflow_env.result(handle)).value == {"total": "second try"}
    assert calls == ["c-1", "c-1"] and "c-1" not in REAL  # retried like the real step


async def test_mocks_are_put_back_when_the_environment_closes() -> None:
    env = WorkflowTestEnv()
    env.mock_step(builder, "lookup", output={"price": "mocked"})
    env.mock_step(code_first, "lookup", output={"price": "mocked"})
    await env.close()
    again = WorkflowTestEnv()
    try:
        for flow, order in ((builder, "b-2"), (code_first, "c-2")):
            handle = await again.run(flow, {"order_id": order})
            assert (await again.result(handle)).value == {"total": "real"}
            assert order in REAL
    finally:
        await again.close()


def test_mock_step_refuses_unknown_steps_and_ambiguous_replacements() -> None:
    env = WorkflowTestEnv()
    with pytest.raises(ValueError, match="has no step 'nope'"):
        env.mock_step(builder, "nope", output=1)
    with pytest.raises(ValueError, match="exactly one of"):
        env.mock_step(builder, "lookup")
    with pytest.raises(ValueError, match="exactly one of"):
        env.mock_step(builder, "lookup", output=1, handler=lambda *a: 1)
    env.close_from_sync()


def test_a_plain_sync_test_drives_the_environment(workflow_env: WorkflowTestEnv) -> None:
    handle = workflow_env.sync(workflow_env.run(builder, {"order_id": "s-1"}))
    assert workflow_env.sync(workflow_env.result(handle)).value == {"total": "real"}
