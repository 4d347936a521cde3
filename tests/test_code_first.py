"""Code-first workflows: ordinary control flow, fan-out, determinism checks, typed steps, restarts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from workkit_workflow import NonRetryableError, RetryPolicy, Workflow, current_step, workflow
from workkit_workflow.errors import DefinitionError, InvalidRequestError, StepFailedError
from workkit_workflow.testing import WorkflowTestEnv, step_names

from conftest import unique


async def test_control_flow_between_steps(env: WorkflowTestEnv) -> None:
    @workflow(unique("branchy"))
    async def flow(ctx: Any, input: Any) -> Any:
        total = 0
        for i in range(input["n"]):
            total += await ctx.step("add", lambda i=i: i)
        if total > 3:
            await ctx.step("big", lambda: "big")
        return total

    handle = await env.run(flow, {"n": 4})
    assert (await env.result(handle)).value == 6
    assert step_names(await handle.journal()) == ["add", "add", "add", "add", "big"]


async def test_step_context_via_current_step(env: WorkflowTestEnv) -> None:
    seen: list[Any] = []

    def charge(amount: int) -> int:
        info = current_step()
        assert info is not None
        seen.append((info.step, info.attempt, info.idempotency_key))
        return amount

    @workflow(unique("ctx"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("charge", charge, 42, idempotency_key=f"charge:{input['id']}")

    assert (await env.result(await env.run(flow, {"id": "o-7"}))).value == 42
    assert seen == [("charge", 1, "charge:o-7")]
    assert current_step() is None


async def test_current_step_in_a_new_steps_first_attempt_and_its_retry(env: WorkflowTestEnv) -> None:
    # A new step's first attempt hands its code no built context (``FirstAttempt``): what
    # ``current_step`` builds from it is the context the general path gives, whole, in sync
    # and async code, and a retry's context has the same derived key.
    seen: list[Any] = []

    def sync_step(amount: int) -> int:
        seen.append(current_step())
        if len(seen) == 1:
            raise RuntimeError("once")
        return amount

    async def async_step() -> str:
        await asyncio.sleep(0)
        info = current_step()
        seen.append(info)
        assert info == current_step()  # a new object each time, always an equal one
        return "ok"

    @workflow(unique("first-attempt"), retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    async def flow(ctx: Any, input: Any) -> Any:
        return [await ctx.step("charge", sync_step, 5), await ctx.step("mail", async_step)]

    handle = await env.run(flow, {"order": 7}, execution_id="first-attempt-ctx")
    assert (await env.result(handle)).value == [5, "ok"]
    assert [(s.execution_id, s.workflow, s.step, s.attempt, s.input) for s in seen] == [
        ("first-attempt-ctx", flow.name, "charge", 1, {"order": 7}),
        ("first-attempt-ctx", flow.name, "charge", 2, {"order": 7}),
        ("first-attempt-ctx", flow.name, "mail", 1, {"order": 7}),
    ]
    keys = [s.idempotency_key for s in seen]
    assert keys[0] == keys[1] == "first-attempt-ctx:j:0:charge" and keys[2] != keys[0]
    assert current_step() is None


async def test_gather_fan_out_crash_in_the_middle_reruns_only_unfinished(env: WorkflowTestEnv) -> None:
    runs: dict[int, int] = {}
    release = asyncio.Event()

    async def work(i: int) -> int:
        runs[i] = runs.get(i, 0) + 1
        if i >= 3 and not release.is_set():
            await asyncio.sleep(0)
        return i * i

    @workflow(unique("fan-out"))
    async def flow(ctx: Any, input: Any) -> Any:
        squares = await asyncio.gather(*(ctx.step(f"square-{i}", work, i) for i in range(6)))
        return sum(squares)

    # Crash once three branches have been journaled.
    env.faults.crash_at("after_journal", step="square-2")
    handle = await env.start(flow, {})
    result = await env.result(handle)
    assert result.value == sum(i * i for i in range(6))
    journal = await handle.journal()
    assert sorted(step_names(journal, status="completed")) == sorted(f"square-{i}" for i in range(6))
    assert env.faults.crashes
    finished_before_crash = [i for i in range(6) if runs[i] == 1]
    assert finished_before_crash, "some branches were journaled before the crash and not run again"
    assert all(count <= 2 for count in runs.values())


async def test_gather_with_a_retrying_branch_parks_and_resumes(env: WorkflowTestEnv) -> None:
    attempts: dict[str, int] = {}

    def flaky(name: str) -> str:
        attempts[name] = attempts.get(name, 0) + 1
        if name == "b" and attempts[name] < 3:
            raise ConnectionError("flaky")
        return name.upper()

    @workflow(unique("fan-retry"), retry=RetryPolicy(max_attempts=3, initial_delay=60.0, jitter=0.0))
    async def flow(ctx: Any, input: Any) -> Any:
        return await asyncio.gather(
            ctx.step("a", flaky, "a"), ctx.step("b", flaky, "b"), ctx.step("c", flaky, "c")
        )

    handle = await env.run(flow, {})
    assert await handle.status() == "sleeping"
    result = await env.result(handle)
    assert result.value == ["A", "B", "C"]
    assert attempts == {"a": 1, "b": 3, "c": 1}


async def test_a_failed_branch_fails_the_workflow_after_siblings_settle(env: WorkflowTestEnv) -> None:
    finished: list[str] = []

    async def slow_ok() -> str:
        await asyncio.sleep(0)
        finished.append("slow")
        return "ok"

    def bad() -> None:
        raise NonRetryableError("nope")

    outputs: list[Any] = []

    @workflow(unique("fan-fail"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await asyncio.gather(ctx.step("bad", bad), ctx.step("slow", slow_ok))

    flow.on_failure(lambda ctx: outputs.append(ctx.step_outputs))
    result = await env.result(await env.run(flow, {}))
    assert not result.ok and result.error is not None and result.error.failed_step == "bad"
    assert finished == ["slow"]
    assert outputs == [{"slow": "ok"}]  # the sibling's output is journaled and compensated


async def test_workflow_code_may_catch_a_failed_step(env: WorkflowTestEnv) -> None:
    @workflow(unique("catchy"))
    async def flow(ctx: Any, input: Any) -> Any:
        try:
            await ctx.step("primary", lambda: (_ for _ in ()).throw(NonRetryableError("down")))
        except StepFailedError as exc:
            failed = exc.step
            return await ctx.step("fallback", lambda: f"fallback after {failed}")
        return "primary"

    handle = await env.run(flow, {})
    assert (await env.result(handle)).value == "fallback after primary"
    # On replay the recorded failure is raised again, not re-run.
    await env.restart()
    assert (await env.result(handle)).value == "fallback after primary"


async def test_reordered_steps_are_detected_on_replay(env: WorkflowTestEnv) -> None:
    name = unique("evolving")
    order = ["a", "b", "c"]

    @workflow(name)
    async def v1(ctx: Any, input: Any) -> Any:
        for step in order:
            await ctx.step(step, lambda s=step: s)
            if step == "a":
                await ctx.sleep("pause", "1h")
        return "done"

    handle = await env.run(v1, {})
    assert await handle.status() == "sleeping"
    order[:] = ["b", "a", "c"]  # a deploy reorders the steps under a running execution
    result = await env.result(handle)
    assert not result.ok and result.error is not None
    assert result.error.code == "replay_mismatch"
    assert "'b'" in result.error.message and "'a'" in result.error.message


async def test_removed_trailing_step_is_detected(env: WorkflowTestEnv) -> None:
    steps = ["a", "b"]

    @workflow(unique("shrinking"))
    async def flow(ctx: Any, input: Any) -> Any:
        for s in steps:
            await ctx.step(s, lambda s=s: s)
            await ctx.sleep(f"after-{s}", "1m")
        return "ok"

    handle = await env.run(flow, {})
    await env.clock.sleep(0)
    steps[:] = []
    result = await env.result(handle)
    assert result.error is not None and result.error.code == "replay_mismatch"


class Quote(BaseModel):
    amount: int
    currency: str


async def test_typed_steps_revalidate_on_replay(env: WorkflowTestEnv) -> None:
    types_seen: list[type] = []

    @workflow(unique("typed"), input_type=Quote)
    async def flow(ctx: Any, input: Quote) -> Any:
        types_seen.append(type(input))
        quote = await ctx.step("quote", lambda: Quote(amount=input.amount * 2, currency="EUR"), output=Quote)
        types_seen.append(type(quote))
        await ctx.sleep("think", "1m")
        return quote

    handle = await env.run(flow, {"amount": 5, "currency": "EUR"})
    result = await env.result(handle)
    assert result.value == {"amount": 10, "currency": "EUR"}
    assert types_seen == [Quote, Quote, Quote, Quote]  # first run and replay alike


async def test_typed_input_is_validated_at_the_edge(env: WorkflowTestEnv) -> None:
    @workflow(unique("typed-input"), input_type=Quote)
    async def flow(ctx: Any, input: Quote) -> Any:
        return input.amount

    from workkit_workflow.errors import SerializationError

    with pytest.raises(SerializationError, match="Quote"):
        await env.run(flow, {"amount": "lots"})
    with pytest.raises(SerializationError):
        await env.client.run(flow.name, {"amount": "lots"})  # by name: validated in the object


async def test_restart_from_a_step_reuses_the_journal(env: WorkflowTestEnv) -> None:
    calls: list[str] = []
    broken = {"ship": True}

    def ship(input: Any, prev: Any, ctx: Any) -> Any:
        calls.append("ship")
        if broken["ship"]:
            raise NonRetryableError("bug in ship")
        return {"shipped": prev["charged"]}

    flow = (
        Workflow(unique("restartable"))
        .step("reserve", lambda i, p, c: calls.append("reserve") or {"reserved": 1})
        .step(
            "charge", lambda i, p, c: calls.append("charge") or {"charged": 99}, idempotency_key="charge:r-1"
        )
        .step("ship", ship)
    )
    first = await env.run(flow, {"order": "r-1"})
    assert not (await env.result(first)).ok
    broken["ship"] = False  # the bug is fixed and deployed
    second = await env.client.restart(first.execution_id, from_step="ship")
    result = await env.result(second)
    assert result.ok and result.value == {"shipped": 99}
    assert calls == ["reserve", "charge", "ship", "ship"]
    meta = await second.meta()
    assert meta["restarted_from"] == {
        "execution_id": first.execution_id,
        "from_step": "ship",
        "kind": "step",
        "occurrence": 1,
    }
    journal = await second.journal()
    assert [e.get("restored_from") for e in journal] == [first.execution_id, first.execution_id, None]

    # Restarting from an earlier step re-runs it, but a recorded idempotent
    # result is reused rather than charging again.
    third = await env.client.restart(first.execution_id, from_step="charge")
    assert (await env.result(third)).ok
    assert calls.count("charge") == 1


async def test_restart_from_an_unknown_step(env: WorkflowTestEnv) -> None:
    flow = Workflow(unique("r2")).step("a", lambda i, p, c: 1)
    handle = await env.run(flow, {})
    with pytest.raises(InvalidRequestError, match="no operation named"):
        await env.client.restart(handle.execution_id, from_step="zzz")


def test_definition_errors() -> None:
    with pytest.raises(DefinitionError):
        Workflow("")
    flow = Workflow(unique("defs")).step("a", lambda i, p, c: 1)
    with pytest.raises(DefinitionError, match="already has a step"):
        flow.step("a", lambda i, p, c: 2)
    with pytest.raises(DefinitionError):
        flow.step("b", "not callable")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError):
        flow.sleep("c", "ten minutes-ish")
    with pytest.raises(DefinitionError):
        workflow(unique("sync"))(lambda ctx, i: 1)  # type: ignore[arg-type,return-value]
