"""Per-step undo handlers: order, once-only under crashes, retries, in-doubt steps,
``on_failure`` after them, cancel; over both local storages."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from workkit_workflow import NonRetryableError, RetryPolicy, StepUndo, Workflow, current_step, workflow
from workkit_workflow.errors import DefinitionError, SerializationError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import PERMANENT, unique

UNDONE: list[tuple[str, str, Any, Any, str | None]] = []
"""What the module-level undo handlers saw: (step, status, output, input, key)."""
CALLS: Counter[str] = Counter()
FLAKY = {"failures": 0}


@pytest.fixture(autouse=True)
def _reset() -> None:
    UNDONE.clear()
    CALLS.clear()
    FLAKY["failures"] = 0


def record_undo(info: StepUndo) -> dict[str, Any]:
    CALLS["undo:" + info.step] += 1
    UNDONE.append((info.step, info.status, info.output, info.input, info.idempotency_key))
    return {"undone": info.step}


async def flaky_undo(info: StepUndo) -> None:
    CALLS["undo:" + info.step] += 1
    if CALLS["undo:" + info.step] <= FLAKY["failures"]:
        raise ConnectionError("refund API unavailable")
    UNDONE.append((info.step, info.status, info.output, info.input, info.idempotency_key))


def broken_undo(info: StepUndo) -> None:
    CALLS["undo:" + info.step] += 1
    raise NonRetryableError("refund refused")


def effect(name: str) -> dict[str, Any]:
    CALLS[name] += 1
    return {"did": name}


def fail(name: str) -> None:
    raise PERMANENT


def builder_undo(info: StepUndo) -> None:
    record_undo(info)


def builder_flow(*, on_failure: Any = None, undo_retry: RetryPolicy | None = None) -> Workflow:
    flow = (
        Workflow(unique("undo-builder"), retry=RetryPolicy(max_attempts=2, initial_delay=1.0))
        .step("reserve", lambda input, prev, ctx: effect("reserve"), undo=builder_undo)
        .step("note", lambda input, prev, ctx: effect("note"))
        .step(
            "charge",
            lambda input, prev, ctx: effect("charge"),
            undo=lambda info: record_undo(info),
            undo_retry=undo_retry,
        )
        .step("ship", lambda input, prev, ctx: fail("ship"))
    )
    if on_failure is not None:
        flow.on_failure(on_failure)
    return flow


async def test_builder_undos_run_last_started_first_once(env: WorkflowTestEnv) -> None:
    handle = await env.run(builder_flow(), {"order": 7})
    result = await env.result(handle)
    assert not result.ok and result.error is not None
    assert [(s, st, out, inp) for s, st, out, inp, _ in UNDONE] == [
        ("charge", "completed", {"did": "charge"}, {"order": 7}),
        ("reserve", "completed", {"did": "reserve"}, {"order": 7}),
    ]
    assert all(key and key.startswith(handle.execution_id) for *_, key in UNDONE)
    compensation = result.error.compensation
    assert compensation is not None and compensation["status"] == "completed"
    assert [(u["step"], u["status"], u["attempts"]) for u in compensation["undos"]] == [
        ("charge", "completed", 1),
        ("reserve", "completed", 1),
    ]
    journal = await handle.journal()
    assert [(e["name"], e["status"]) for e in journal if e["phase"] == "compensation"] == [
        ("undo:charge", "completed"),
        ("undo:reserve", "completed"),
    ]
    await env.restart()
    await env.clock.sleep(3600)
    assert CALLS["undo:charge"] == 1 and CALLS["undo:reserve"] == 1


@workflow(unique("undo-gather"))
async def gather_flow(ctx: Any, input: Any) -> None:
    await ctx.step("first", effect, "first", undo=record_undo)
    await asyncio.gather(
        ctx.step("left", effect, "left", undo=record_undo),
        ctx.step("right", effect, "right", undo=record_undo),
    )
    await ctx.sleep("pause", 5)
    await ctx.step("last", effect, "last", undo=record_undo)
    await ctx.step("boom", fail, "boom", undo=record_undo)


async def test_code_first_undo_order_with_gather_and_journaled_args(env: WorkflowTestEnv) -> None:
    handle = await env.start(gather_flow, None)
    result = await env.result(handle)
    assert not result.ok
    # Reverse start order; the gathered pair started together: the later position first.
    assert [(s, inp) for s, _, _, inp, _ in UNDONE] == [
        ("last", ["last"]),
        ("right", ["right"]),
        ("left", ["left"]),
        ("first", ["first"]),
    ]
    # The failed step is not undone (it never completed).
    assert CALLS["undo:boom"] == 0


@pytest.mark.parametrize("point", ["before_step", "after_side_effect", "after_journal"])
async def test_crash_inside_an_undo_resumes_it_without_repeating_finished_ones(
    env: WorkflowTestEnv, point: str
) -> None:
    env.faults.crash_at(point, step="undo:reserve")
    flow = builder_flow()
    handle = await env.start(flow, {"order": 1})
    result = await env.result(handle)
    assert env.faults.crashes
    assert result.error is not None and result.error.compensation is not None
    assert result.error.compensation["status"] == "completed"
    assert CALLS["undo:charge"] == 1  # finished before the crash: never again
    # A crash after the handler returned but before its outcome was journaled runs
    # it again (with the same idempotency key); otherwise it ran once.
    assert CALLS["undo:reserve"] == (2 if point == "after_side_effect" else 1)
    keys = {key for step, *_, key in UNDONE if step == "reserve"}
    assert len(keys) == 1


@workflow(unique("undo-flaky"))
async def flaky_flow(ctx: Any, input: Any) -> None:
    await ctx.step(
        "charge", effect, "charge", undo=flaky_undo, undo_retry=RetryPolicy(max_attempts=3, initial_delay=2)
    )
    await ctx.step("boom", fail, "boom")


async def test_undo_that_fails_then_succeeds_on_retry(env: WorkflowTestEnv) -> None:
    FLAKY["failures"] = 2
    handle = await env.start(flaky_flow, None)
    result = await env.result(handle)
    assert result.error is not None and result.error.compensation is not None
    assert result.error.compensation["status"] == "completed"
    (undo,) = result.error.compensation["undos"]
    assert (undo["step"], undo["status"], undo["attempts"], undo["error"]) == ("charge", "completed", 3, None)
    assert CALLS["undo:charge"] == 3 and len(UNDONE) == 1


@workflow(unique("undo-broken"))
async def broken_flow(ctx: Any, input: Any) -> None:
    await ctx.step("reserve", effect, "reserve", undo=record_undo)
    await ctx.step("charge", effect, "charge", undo=broken_undo)
    await ctx.step("boom", fail, "boom")


async def test_undo_that_fails_for_good_lets_the_rest_run_and_fails_compensation(
    env: WorkflowTestEnv,
) -> None:
    seen: list[Any] = []

    def after(ctx: Any) -> None:
        seen.append([(u["step"], u["status"]) for u in ctx.undos])

    broken_flow.on_failure(after)
    try:
        handle = await env.start(broken_flow, None)
        result = await env.result(handle)
    finally:
        broken_flow._compensation = None
    assert result.error is not None and result.error.compensation is not None
    compensation = result.error.compensation
    assert compensation["status"] == "failed"
    assert compensation["error"]["code"] == "undo_failed"
    assert [(u["step"], u["status"]) for u in compensation["undos"]] == [
        ("charge", "failed"),
        ("reserve", "completed"),
    ]
    assert compensation["undos"][0]["error"]["code"] == "non_retryable"
    assert seen == [[("charge", "failed"), ("reserve", "completed")]]
    assert CALLS["undo:charge"] == 1 and CALLS["undo:reserve"] == 1


async def test_undo_of_an_in_doubt_step_after_a_crash_then_cancel(env: WorkflowTestEnv) -> None:
    # The step's attempt has its effect, then the object dies before journaling it;
    # a cancel arrives before anything resumes the execution.
    env.faults.crash_at("after_side_effect", step="charge")
    flow = builder_flow()
    handle = await env.start(flow, {"order": 2})
    await env.settle()
    assert env.faults.crashes
    assert await handle.cancel("customer changed their mind")
    result = await env.result(handle)
    assert result.status == "cancelled" and result.error is not None
    assert CALLS["charge"] == 1  # never ran again
    assert [(s, st, out) for s, st, out, _, _ in UNDONE] == [
        ("charge", "in_doubt", None),
        ("reserve", "completed", {"did": "reserve"}),
    ]
    charge_key = UNDONE[0][4]
    assert charge_key == f"{handle.execution_id}:j:2:charge"
    compensation = result.error.compensation
    assert compensation is not None
    assert [(u["step"], u["step_status"], u["status"]) for u in compensation["undos"]] == [
        ("charge", "in_doubt", "completed"),
        ("reserve", "completed", "completed"),
    ]


async def test_on_failure_runs_after_the_undos_and_sees_their_outcomes(env: WorkflowTestEnv) -> None:
    order: list[str] = []

    async def on_failure(ctx: Any) -> None:
        order.append(f"on_failure after {len(UNDONE)} undos")
        assert [u["step"] for u in ctx.undos] == ["charge", "reserve"]
        await ctx.step("notify", lambda: effect("notify"))

    handle = await env.run(builder_flow(on_failure=on_failure), {"order": 3})
    result = await env.result(handle)
    assert order == ["on_failure after 2 undos"]
    journal = await handle.journal()
    assert [e["name"] for e in journal if e["phase"] == "compensation"] == [
        "undo:charge",
        "undo:reserve",
        "notify",
    ]
    assert result.error is not None and result.error.compensation is not None
    assert result.error.compensation["status"] == "completed"


async def test_cancel_while_sleeping_undoes_the_finished_steps(env: WorkflowTestEnv) -> None:
    handle = await env.run(gather_flow, None)
    assert await handle.status() == "sleeping"
    assert await handle.cancel()
    result = await env.result(handle)
    assert result.status == "cancelled"
    assert [s for s, *_ in UNDONE] == ["right", "left", "first"]
    assert CALLS["last"] == 0


async def test_undo_handler_receives_its_own_step_context(env: WorkflowTestEnv) -> None:
    seen: list[Any] = []

    def undo(info: StepUndo) -> None:
        ctx = current_step()
        seen.append((ctx.step if ctx else None, info.reason, info.error and info.error["code"]))

    flow = (
        Workflow(unique("undo-ctx"))
        .step("a", lambda input, prev, ctx: 1, undo=undo)
        .step("b", lambda input, prev, ctx: fail("b"))
    )
    result = await env.result(await env.run(flow))
    assert not result.ok
    assert seen == [("undo:a", "failed", "non_retryable")]


async def test_code_first_undo_must_resolve_by_name(env: WorkflowTestEnv) -> None:
    def local(info: StepUndo) -> None:
        return None

    @workflow(unique("undo-local"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.step("a", effect, "a", undo=local)

    result = await env.result(await env.run(flow))
    assert result.error is not None and result.error.code == DefinitionError.code
    assert "module-level function" in result.error.message
    with pytest.raises(DefinitionError, match="undo_retry and undo_timeout need an undo handler"):
        Workflow(unique("x")).step("a", lambda i, p, c: 1, undo_retry=RetryPolicy())


async def test_undo_args_must_be_small_json(env: WorkflowTestEnv) -> None:
    @workflow(unique("undo-args"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.step("a", effect, "x" * 70_000, undo=record_undo)

    result = await env.result(await env.run(flow))
    assert result.error is not None and result.error.code == SerializationError.code
    assert "limit is 65536" in result.error.message


async def test_compensation_steps_cannot_have_undo_handlers(env: WorkflowTestEnv) -> None:
    async def on_failure(ctx: Any) -> None:
        await ctx.step("notify", effect, "notify", undo=record_undo)

    flow = Workflow(unique("undo-in-comp")).step("a", lambda i, p, c: fail("a")).on_failure(on_failure)
    result = await env.result(await env.run(flow))
    assert result.error is not None and result.error.compensation is not None
    assert result.error.compensation["status"] == "failed"
    assert "a compensation step cannot have an undo handler" in result.error.compensation["error"]["message"]


async def hang_once(info: StepUndo) -> None:
    CALLS["undo:" + info.step] += 1
    if CALLS["undo:" + info.step] == 1:
        await asyncio.Event().wait()  # the first attempt hangs: its timeout cuts it
    UNDONE.append((info.step, info.status, info.output, info.input, info.idempotency_key))


@workflow(unique("undo-timeout"))
async def timeout_flow(ctx: Any, input: Any) -> None:
    await ctx.step(
        "charge",
        effect,
        "charge",
        undo=hang_once,
        undo_timeout="30s",
        undo_retry=RetryPolicy(max_attempts=2, initial_delay=1),
    )
    await ctx.step("boom", fail, "boom")


async def test_undo_timeout_cuts_an_attempt_and_the_retry_finishes_it(env: WorkflowTestEnv) -> None:
    handle = await env.start(timeout_flow, None)
    result = await env.result(handle)
    assert result.error is not None and result.error.compensation is not None
    (undo,) = result.error.compensation["undos"]
    assert (undo["status"], undo["attempts"]) == ("completed", 2)
    journal = await handle.journal()
    (entry,) = [e for e in journal if e["name"] == "undo:charge"]
    assert [e["code"] for e in entry["errors"]] == ["step_timeout"]
    assert CALLS["undo:charge"] == 2 and len(UNDONE) == 1
