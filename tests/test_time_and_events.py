"""Durable sleep and external events, on a virtual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workkit_workflow import Workflow, workflow
from workkit_workflow.errors import ExecutionConflictError
from workkit_workflow.testing import WorkflowTestEnv, step_names

from conftest import unique

WEEK = 7 * 86400


async def test_sleep_of_a_week_takes_no_wall_time(env: WorkflowTestEnv) -> None:
    calls: list[float] = []
    flow = (
        Workflow(unique("sleepy"))
        .step("before", lambda i, p, c: calls.append(env.clock.now()) or "a")
        .sleep("a-week", timedelta(days=7))
        .step("after", lambda i, p, c: calls.append(env.clock.now()) or p)
    )
    handle = await env.run(flow, {})
    view = await handle.describe()
    assert view["status"] == "sleeping"
    assert view["wake_at"] == pytest.approx(calls[0] + WEEK)
    result = await env.result(handle)
    assert result.ok and result.value == "a"  # a sleep passes `prev` through to the next step
    assert calls[1] - calls[0] == pytest.approx(WEEK)
    assert step_names(await handle.journal(), status="completed") == ["before", "a-week", "after"]


async def test_sleep_survives_restart_and_is_not_repeated(env: WorkflowTestEnv) -> None:
    calls: list[str] = []
    flow = (
        Workflow(unique("sleep-restart"))
        .step("a", lambda i, p, c: calls.append("a"))
        .sleep("nap", "2h")
        .step("b", lambda i, p, c: calls.append("b"))
    )
    handle = await env.run(flow, {})
    assert await handle.status() == "sleeping"
    await env.restart()
    created = (await handle.meta())["created_at"]
    result = await env.result(handle)
    assert result.ok and calls == ["a", "b"]
    nap = next(e for e in await handle.journal() if e["name"] == "nap")
    assert nap["wake_at"] == pytest.approx(created + 7200)
    # A replay after waking skips the finished sleep: no new wait.
    assert env.clock.now() - created == pytest.approx(7200, abs=1)


async def test_sleep_until(env: WorkflowTestEnv) -> None:
    target = datetime.fromtimestamp(env.clock.now(), tz=UTC) + timedelta(days=3)
    woke: list[float] = []
    flow = (
        Workflow(unique("until"))
        .sleep_until("monday", target)
        .step("go", lambda i, p, c: woke.append(env.clock.now()))
    )
    assert (await env.result(await env.run(flow, {}))).ok
    assert woke == [pytest.approx(target.timestamp())]


def approval_flow(decisions: list[Any]) -> Workflow:
    return (
        Workflow(unique("approval"))
        .step("quote", lambda i, p, c: {"amount": i["amount"]})
        .wait_for_event("manager-approval", "approved", timeout="3d")
        .step("book", lambda i, p, c: decisions.append(p) or {"booked": p["by"]})
    )


async def test_wait_for_event_and_resume(env: WorkflowTestEnv) -> None:
    decisions: list[Any] = []
    handle = await env.run(approval_flow(decisions), {"amount": 10})
    view = await handle.describe()
    assert view["status"] == "waiting" and view["waiting_for"] == ["approved"]
    assert await handle.resume("approved", {"by": "ana"})
    result = await env.result(handle)
    assert result.ok and result.value == {"booked": "ana"}
    assert decisions == [{"by": "ana"}]
    wait = next(e for e in await handle.journal() if e["kind"] == "wait")
    assert wait["output"] == {"by": "ana"} and wait["event_id"]


async def test_event_sent_before_the_wait_is_kept_in_the_inbox(env: WorkflowTestEnv) -> None:
    decisions: list[Any] = []
    flow = (
        Workflow(unique("early"))
        .sleep("first-a-nap", "1h")
        .wait_for_event("approval", "approved")
        .step("book", lambda i, p, c: decisions.append(p))
    )
    handle = await env.run(flow, {})
    assert await handle.status() == "sleeping"
    assert await handle.send_event("approved", {"by": "early-bird"}, event_id="evt-1")
    result = await env.result(handle)
    assert result.ok and decisions == [{"by": "early-bird"}]


async def test_duplicate_event_delivery_is_ignored(env: WorkflowTestEnv) -> None:
    got: list[Any] = []

    @workflow(unique("two-waits"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.wait_for_event("first", "tick")
        await ctx.sleep("gap", "1m")
        second = await ctx.wait_for_event("second", "tick", timeout="1h", default="none")
        got.extend([first, second])
        return [first, second]

    handle = await env.run(flow, {})
    assert await handle.send_event("tick", 1, event_id="same") is True
    assert await handle.send_event("tick", 1, event_id="same") is False  # duplicate
    result = await env.result(handle)
    assert result.value == [1, "none"]


async def test_wait_timeout_fails_the_step_and_compensates(env: WorkflowTestEnv) -> None:
    undone: list[Any] = []
    flow = approval_flow([]).on_failure(lambda ctx: undone.append((ctx.failed_step, ctx.error["code"])))
    handle = await env.run(flow, {"amount": 5})
    result = await env.result(handle)
    assert not result.ok and result.error is not None
    assert result.error.failed_step == "manager-approval"
    assert result.error.code == "wait_timeout"
    assert undone == [("manager-approval", "wait_timeout")]
    meta = await handle.meta()
    assert meta["finished_at"] - meta["created_at"] == pytest.approx(3 * 86400, abs=1)


async def test_wait_timeout_with_a_default(env: WorkflowTestEnv) -> None:
    flow = (
        Workflow(unique("default"))
        .wait_for_event("maybe", "approved", timeout="1h", default={"by": "auto"})
        .step("use", lambda i, p, c: p)
    )
    assert (await env.result(await env.run(flow, {}))).value == {"by": "auto"}


async def test_cancel_aborts_a_wait(env: WorkflowTestEnv) -> None:
    undone: list[str] = []
    flow = approval_flow([]).on_failure(lambda ctx: undone.append(ctx.status))
    handle = await env.run(flow, {"amount": 1})
    assert await handle.status() == "waiting"
    assert await handle.cancel("customer left")
    result = await env.result(handle)
    assert result.status == "cancelled" and undone == ["cancelled"]
    with pytest.raises(ExecutionConflictError, match="cancelled"):
        await handle.resume("approved", {"by": "late"})


async def test_event_to_a_finished_execution_is_refused(env: WorkflowTestEnv) -> None:
    flow = Workflow(unique("done")).step("s", lambda i, p, c: 1)
    handle = await env.run(flow, {})
    assert (await env.result(handle)).ok
    with pytest.raises(ExecutionConflictError, match="completed"):
        await handle.send_event("anything", {})


async def test_crash_while_waiting_then_resume(env: WorkflowTestEnv) -> None:
    decisions: list[Any] = []
    handle = await env.run(approval_flow(decisions), {"amount": 3})
    assert await handle.status() == "waiting"
    await env.restart()
    assert await handle.status() == "waiting"
    assert await handle.resume("approved", {"by": "bo"})
    result = await env.result(handle)
    assert result.ok and decisions == [{"by": "bo"}]


def test_the_clock_under_pyodide_gives_the_instants_of_the_clock_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Under Pyodide ``time.time()`` is ``Date.now()``, whole milliseconds as seconds plus
    # nanoseconds (not always the nearest float): the clock there rounds the reading, and
    # keeps the last one's, and must give the instants the nanosecond clock gives.
    import random
    import time as time_module

    from workkit_workflow.engine import _ports

    rng = random.Random(7)
    readings = [1_796_196_903_961 + rng.randrange(-(10**9), 10**9) for _ in range(2_000)]
    readings += [readings[-1]] * 3 + [0, 1, 999, 1_000]
    for ms in readings:
        seconds, millis = divmod(ms, 1000)
        monkeypatch.setattr(time_module, "time_ns", lambda ms=ms: ms * 1_000_000)
        monkeypatch.setattr(time_module, "time", lambda s=seconds, m=millis: s + m * 1_000_000 * 1e-9)
        assert _ports._now_from_javascript() == _ports._now_to_the_millisecond() == ms / 1000
