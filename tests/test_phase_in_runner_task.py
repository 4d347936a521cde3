"""The phase body runs in the runner's own task (``PhaseRun.execute``): what a body sets in
context variables stays its own, as in a task of its own; a body suspended while parked
resumes from the journal; and a workflow function with input validation or none runs alike.
Through the public API on the local runtime's virtual clock."""

from __future__ import annotations

import contextvars
from typing import Any

from pydantic import BaseModel

from workkit_workflow import NonRetryableError, RetryPolicy, workflow
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

_SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


async def test_what_the_main_body_sets_in_a_context_variable_the_compensation_does_not_see(
    workflow_env: WorkflowTestEnv,
) -> None:
    seen: list[str] = []

    @workflow(unique("ctxvar"), retry=RetryPolicy(max_attempts=1))
    async def flow(ctx: Any, input: Any) -> Any:
        _SEEN.set("main")
        await ctx.step("one", lambda: 1)

        def boom() -> None:
            raise NonRetryableError("no")

        await ctx.step("two", boom)

    flow.on_failure(lambda ctx: seen.append(_SEEN.get()))
    handle = await workflow_env.start(flow, {})
    result = await workflow_env.result(handle)
    assert result.status == "failed"
    assert seen == ["unset"]
    assert _SEEN.get() == "unset"  # nor does the caller


async def test_a_body_parked_twice_resumes_from_its_journal_each_time(workflow_env: WorkflowTestEnv) -> None:
    runs: list[int] = []

    @workflow(unique("parked"))
    async def flow(ctx: Any, input: Any) -> Any:
        runs.append(1)
        a = await ctx.step("a", lambda: 1)
        await ctx.sleep("first", 10.0)
        b = await ctx.step("b", lambda: 2)
        await ctx.sleep("second", 10.0)
        return a + b

    handle = await workflow_env.start(flow, {})
    result = await workflow_env.result(handle)
    assert result.ok and result.value == 3
    assert len(runs) == 3  # the first run, and one after each sleep
    assert [e["status"] for e in await handle.journal()] == ["completed"] * 4


class _In(BaseModel):
    n: int


async def test_a_body_with_an_input_type_and_one_without_run_alike(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("typed"), input_type=_In)
    async def typed(ctx: Any, input: _In) -> Any:
        return await ctx.step("double", lambda: input.n * 2)

    @workflow(unique("plain"))
    async def plain(ctx: Any, input: Any) -> Any:
        return await ctx.step("double", lambda: input["n"] * 2)

    for flow in (typed, plain):
        result = await workflow_env.result(await workflow_env.start(flow, {"n": 4}))
        assert result.ok and result.value == 8, flow


async def test_a_workflow_function_that_refuses_the_call_fails_the_execution(
    workflow_env: WorkflowTestEnv,
) -> None:
    async def one_argument(ctx: Any) -> Any:  # the engine passes (ctx, input)
        return 1

    flow = workflow(unique("refuses"))(one_argument)  # type: ignore[arg-type]
    result = await workflow_env.result(await workflow_env.start(flow, {}))
    assert result.status == "failed"
    assert "positional argument" in str(result.error)
