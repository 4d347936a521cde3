"""Retries with durable backoff, non-retryable errors, step and workflow timeouts."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from workkit_workflow import NonRetryableError, RetryPolicy, Workflow
from workkit_workflow.testing import WorkflowTestEnv

from conftest import Effects, make_order_flow, unique


def test_backoff_maths() -> None:
    policy = RetryPolicy(
        max_attempts=6, initial_delay=1.0, max_delay=10.0, backoff_multiplier=2.0, jitter=0.0
    )
    assert [policy.next_delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    jittery = RetryPolicy(initial_delay=4.0, max_delay=4.0, jitter=0.25)
    import random

    rng = random.Random(7)
    delays = [jittery.next_delay(1, rng) for _ in range(200)]
    assert min(delays) >= 3.0 and max(delays) <= 5.0 and len(set(delays)) > 100


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"backoff_multiplier": 0.5},
        {"jitter": 2.0},
        {"initial_delay": 5, "max_delay": 1},
        {"initial_delay": -1},
    ],
)
def test_retry_policy_validates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_retry_policy_accepts_duration_strings() -> None:
    policy = RetryPolicy.create(initial_delay="500ms", max_delay="1m")
    assert policy.initial_delay == 0.5 and policy.max_delay == 60.0


async def test_retries_wait_durably_with_backoff(env: WorkflowTestEnv) -> None:
    attempts: list[float] = []

    async def flaky(input: Any, prev: Any, ctx: Any) -> str:
        attempts.append(env.clock.now())
        if ctx.attempt < 4:
            raise ConnectionError("upstream 503")
        return "ok"

    policy = RetryPolicy(
        max_attempts=4, initial_delay=10.0, max_delay=60.0, backoff_multiplier=3.0, jitter=0.0
    )
    flow = Workflow(unique("backoff"), retry=policy).step("call", flaky)
    handle = await env.run(flow, {})
    # The first attempt failed and the execution parked on an alarm: nothing in memory.
    view = await handle.describe()
    assert view["status"] == "sleeping"
    assert view["wake_at"] == pytest.approx(attempts[0] + 10.0)
    assert view["running"] == []
    result = await env.result(handle)
    assert result.ok and result.value == "ok"
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(attempts)]
    assert gaps == [10.0, 30.0, 60.0]
    entry = (await handle.journal())[0]
    assert entry["attempt"] == 4
    assert [e["code"] for e in entry["errors"]] == ["ConnectionError"] * 3
    assert all(e["retryable"] for e in entry["errors"])


async def test_retry_wait_survives_eviction(env: WorkflowTestEnv) -> None:
    calls: list[int] = []

    def flaky(input: Any, prev: Any, ctx: Any) -> int:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise TimeoutError("slow")
        return ctx.attempt

    flow = Workflow(
        unique("evict-retry"), retry=RetryPolicy(initial_delay=3600.0, max_delay=3600.0, jitter=0.0)
    ).step("s", flaky)
    handle = await env.run(flow, {})
    assert await handle.status() == "sleeping"
    await env.restart()
    result = await env.result(handle)
    assert result.ok and result.value == 2 and calls == [1, 2]


@pytest.mark.parametrize(
    "error",
    [
        NonRetryableError("card declined"),
        type("Declined", (Exception,), {"retryable": False})("declined"),
    ],
    ids=["NonRetryableError", "retryable-attribute"],
)
async def test_non_retryable_errors_fail_at_once(
    env: WorkflowTestEnv, effects: Effects, error: Exception
) -> None:
    flow = make_order_flow(effects, ship_error=error)
    handle = await env.run(flow, {"order_id": "o-1"})
    result = await env.result(handle)
    assert not result.ok and result.error is not None
    assert effects.calls["ship"] == 1
    assert result.error.failed_step == "ship"
    assert result.error.step_attempt == 1
    assert result.error.error is not None and result.error.error["retryable"] is False
    assert result.error.execution_id == handle.execution_id
    assert [e["name"] for e in result.error.journal if e["phase"] == "main"] == [
        "reserve-inventory",
        "charge-card",
        "ship",
    ]


async def test_policy_lists_non_retryable_error_names(env: WorkflowTestEnv) -> None:
    calls = 0

    def bad(input: Any, prev: Any, ctx: Any) -> None:
        nonlocal calls
        calls += 1
        raise KeyError("missing")

    flow = Workflow(unique("names"), retry=RetryPolicy(max_attempts=5, non_retryable=("KeyError",))).step(
        "s", bad
    )
    result = await env.result(await env.run(flow, {}))
    assert not result.ok and calls == 1


async def test_retries_exhausted_reports_last_error(env: WorkflowTestEnv, effects: Effects) -> None:
    flow = make_order_flow(effects, charge_failures=99)
    result = await env.result(await env.run(flow, {"order_id": "o-2"}))
    assert not result.ok and result.error is not None
    assert result.error.failed_step == "charge-card"
    assert result.error.step_attempt == 3
    assert result.error.code == "ConnectionError"
    assert "card network timeout #3" in result.error.message
    assert effects.calls["charge"] == 3


async def test_step_timeout_is_retried_then_fails(env: WorkflowTestEnv) -> None:
    started: list[int] = []

    async def hangs(input: Any, prev: Any, ctx: Any) -> None:
        started.append(ctx.attempt)
        await asyncio.Event().wait()

    flow = Workflow(unique("step-timeout"), retry=RetryPolicy(max_attempts=2, initial_delay=1.0)).step(
        "hang", hangs, timeout="30s"
    )
    result = await env.result(await env.run(flow, {}))
    assert not result.ok and result.error is not None
    assert result.error.code == "step_timeout"
    assert started == [1, 2]


async def test_workflow_timeout_fails_and_compensates(env: WorkflowTestEnv) -> None:
    undone: list[dict[str, Any]] = []

    async def slow(input: Any, prev: Any, ctx: Any) -> None:
        await asyncio.Event().wait()

    flow = (
        Workflow(unique("wf-timeout"), timeout="5m")
        .step("quick", lambda i, p, c: {"done": True})
        .step("slow", slow)
        .on_failure(lambda ctx: undone.append(ctx.step_outputs))
    )
    handle = await env.run(flow, {})
    result = await env.result(handle)
    assert not result.ok and result.error is not None
    assert result.error.code == "workflow_timeout"
    assert result.error.failed_step == "slow"
    assert undone == [{"quick": {"done": True}}]
    meta = await handle.meta()
    assert meta["deadline"] == pytest.approx(meta["created_at"] + 300)


async def test_workflow_timeout_cuts_a_long_retry_wait(env: WorkflowTestEnv) -> None:
    def always(input: Any, prev: Any, ctx: Any) -> None:
        raise ConnectionError("down")

    flow = Workflow(
        unique("deadline-retry"),
        timeout="1h",
        retry=RetryPolicy(max_attempts=10, initial_delay=600.0, max_delay=3000.0, jitter=0.0),
    )
    flow.step("s", always)
    handle = await env.run(flow, {})
    result = await env.result(handle)
    assert not result.ok and result.error is not None
    # Attempts at 0, 600, 1800 s; the next would start after the deadline: fail now.
    assert result.error.step_attempt == 3
    assert (await handle.meta())["finished_at"] - (await handle.meta())["created_at"] <= 3600
