"""Pause and continue (``unpause``), cancel without compensation, restart by kind and
occurrence: over both local storages (the ``env`` fixture of conftest)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from workkit_workflow import RetryPolicy, create_durable_workflow, current_step, workflow
from workkit_workflow.engine._alarms import DEFAULT_LEASE
from workkit_workflow.errors import (
    ExecutionConflictError,
    ExecutionNotFoundError,
    InvalidOptionError,
    InvalidRequestError,
)
from workkit_workflow.local import LocalNamespace, VirtualClock
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


class Probe:
    """What ran, by step name; gates a step can be held at; what compensation saw."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.started: dict[str, asyncio.Event] = {}
        self.release: dict[str, asyncio.Event] = {}
        self.compensated: list[str] = []

    def gate(self, name: str) -> None:
        self.started[name] = asyncio.Event()
        self.release[name] = asyncio.Event()

    async def effect(self, name: str) -> str:
        self.calls[name] += 1
        if name in self.release:
            self.started[name].set()
            await self.release[name].wait()
        return f"{name}-done"


def _alarm(env: WorkflowTestEnv, execution_id: str) -> float | None:
    return env.ns.backend.get_alarm(execution_id)


def _entry(journal: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in journal if e["name"] == name)


async def _paused_and_quiet(env: WorkflowTestEnv, handle: Any) -> dict[str, Any]:
    """Once the runner has parked the paused execution: its view; no alarm is left."""
    await env.settle()
    alarm = _alarm(env, handle.execution_id)
    if alarm is not None:
        # The alarm the pause set (due now) may have found the runner still active and
        # renewed its lease; when that fires, the runner parks the paused execution again.
        assert alarm <= env.clock.now() + DEFAULT_LEASE, "only a lease renewal may be left"
        await env.clock.sleep(alarm - env.clock.now() + 0.001)
        await env.settle()
    view = await handle.describe()
    assert view["status"] == "paused", view
    assert view["paused_at"] is not None
    assert view["running"] == []
    assert _alarm(env, handle.execution_id) is None, "a paused execution has nothing due"
    return view


# -- pause and continue at each stage ------------------------------------------------------


async def test_pause_before_start_runs_nothing_until_continued() -> None:
    probe = Probe()

    @workflow(unique("pause-before-start"))
    async def flow(ctx: Any, input: Any) -> str:
        return await ctx.step("a", probe.effect, "a")

    # No alarm delivery: the only runner is the one the pause wakes (and parks).
    async with LocalNamespace(clock=VirtualClock(), deliver_alarms=False) as ns:
        client = create_durable_workflow(ns)
        handle = await client.start(flow, None, execution_id="before-start")
        assert await handle.pause() is True
        await ns.idle()
        view = await handle.describe()
        assert (view["status"], view["started_at"], probe.calls["a"]) == ("paused", None, 0)
        assert ns.backend.get_alarm("before-start") is None
        assert await handle.pause() is False, "already paused"
        assert await handle.unpause() is True
        result = await handle.result(timeout=5)
        assert (result.ok, result.value, probe.calls["a"]) == (True, "a-done", 1)


async def test_a_running_step_finishes_and_is_journaled_and_the_next_waits(env: WorkflowTestEnv) -> None:
    probe = Probe()
    probe.gate("a")

    @workflow(unique("pause-mid-step"))
    async def flow(ctx: Any, input: Any) -> list[str]:
        return [await ctx.step("a", probe.effect, "a"), await ctx.step("b", probe.effect, "b")]

    handle = await env.start(flow)
    await probe.started["a"].wait()
    assert await handle.pause() is True
    probe.release["a"].set()
    await _paused_and_quiet(env, handle)
    journal = await handle.journal()
    assert _entry(journal, "a")["status"] == "completed"
    assert [e["name"] for e in journal] == ["a"] and probe.calls["b"] == 0
    assert await handle.unpause() is True
    result = await env.result(handle)
    assert result.value == ["a-done", "b-done"] and probe.calls == Counter(a=1, b=1)


async def test_a_sleep_that_comes_due_while_paused_ends_after_continue(env: WorkflowTestEnv) -> None:
    probe = Probe()

    @workflow(unique("pause-sleep"))
    async def flow(ctx: Any, input: Any) -> str:
        await ctx.sleep("nap", "1h")
        return await ctx.step("b", probe.effect, "b")

    handle = await env.run(flow)
    assert await handle.status() == "sleeping"
    assert await handle.pause() is True
    await _paused_and_quiet(env, handle)
    env.clock.advance(3 * 3600)  # the sleep's time passes while paused
    await _paused_and_quiet(env, handle)
    assert _entry(await handle.journal(), "nap")["status"] == "sleeping" and probe.calls["b"] == 0
    assert await handle.unpause() is True
    result = await env.result(handle)
    assert result.value == "b-done"
    nap = _entry(await handle.journal(), "nap")
    assert nap["status"] == "completed" and nap["finished_at"] >= nap["wake_at"] + 3600


async def test_a_sleep_not_yet_due_keeps_its_time_after_continue(env: WorkflowTestEnv) -> None:
    @workflow(unique("pause-sleep-early"))
    async def flow(ctx: Any, input: Any) -> str:
        await ctx.sleep("nap", "1h")
        return "woke"

    handle = await env.run(flow)
    wake_at = (await handle.describe())["wake_at"]
    await handle.pause()
    await _paused_and_quiet(env, handle)
    await handle.unpause()
    await env.settle()
    view = await handle.describe()
    assert (view["status"], view["wake_at"]) == ("sleeping", wake_at)
    assert _alarm(env, handle.execution_id) == wake_at
    assert (await env.result(handle)).value == "woke"


async def test_an_event_that_arrives_while_paused_waits_in_the_inbox(env: WorkflowTestEnv) -> None:
    probe = Probe()

    @workflow(unique("pause-wait"))
    async def flow(ctx: Any, input: Any) -> Any:
        got = await ctx.wait_for_event("approval", "approved", timeout="1d")
        await ctx.step("b", probe.effect, "b")
        return got

    handle = await env.run(flow)
    assert await handle.status() == "waiting"
    await handle.pause()
    await _paused_and_quiet(env, handle)
    assert await handle.send_event("approved", {"by": "ops"}) is True
    await _paused_and_quiet(env, handle)
    assert _entry(await handle.journal(), "approval")["status"] == "waiting" and probe.calls["b"] == 0
    await handle.unpause()
    result = await env.result(handle)
    assert result.value == {"by": "ops"} and probe.calls["b"] == 1


async def test_a_retry_backoff_that_ends_while_paused_retries_after_continue(env: WorkflowTestEnv) -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        step = current_step()
        assert step is not None
        attempts.append(step.attempt)
        if step.attempt == 1:
            raise ConnectionError("first attempt fails")
        return "ok"

    policy = RetryPolicy(max_attempts=3, initial_delay="10s", jitter=0.0)

    @workflow(unique("pause-retry"))
    async def flow(ctx: Any, input: Any) -> str:
        return await ctx.step("call", flaky, retry=policy)

    handle = await env.run(flow)
    assert _entry(await handle.journal(), "call")["status"] == "retrying"
    await handle.pause()
    await _paused_and_quiet(env, handle)
    env.clock.advance(3600)
    await _paused_and_quiet(env, handle)
    assert attempts == [1]
    await handle.unpause()
    assert (await env.result(handle)).value == "ok" and attempts == [1, 2]


async def test_pause_holds_compensation_and_keeps_the_failed_status(env: WorkflowTestEnv) -> None:
    probe = Probe()
    probe.gate("undo-1")

    async def undo(ctx: Any) -> None:
        await ctx.step("undo-1", probe.effect, "undo-1")
        await ctx.step("undo-2", probe.effect, "undo-2")

    async def boom() -> None:
        raise ValueError("no")

    @workflow(unique("pause-compensation"), retry=RetryPolicy(max_attempts=1))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.step("fails", boom)

    handle = await env.start(flow.on_failure(undo))
    await probe.started["undo-1"].wait()
    await handle.pause()
    probe.release["undo-1"].set()
    await _paused_and_quiet(env, handle)
    assert probe.calls == Counter({"undo-1": 1})
    await handle.unpause()
    result = await env.result(handle)
    assert result.status == "failed" and result.error is not None
    assert result.error.compensation is not None and result.error.compensation["status"] == "completed"
    assert probe.calls == Counter({"undo-1": 1, "undo-2": 1})


async def test_a_step_that_fails_while_paused_settles_to_failed_after_continue(env: WorkflowTestEnv) -> None:
    probe = Probe()
    probe.gate("a")

    async def failing() -> None:
        await probe.effect("a")
        raise ValueError("broken")

    @workflow(unique("pause-failing-step"), retry=RetryPolicy(max_attempts=1))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.step("a", failing)

    async def undo(ctx: Any) -> None:
        probe.compensated.append(ctx.status)

    handle = await env.start(flow.on_failure(undo))
    await probe.started["a"].wait()
    await handle.pause()
    probe.release["a"].set()
    await _paused_and_quiet(env, handle)
    assert probe.compensated == [], "compensation is an operation too: it waits"
    await handle.unpause()
    result = await env.result(handle)
    assert result.status == "failed" and probe.compensated == ["failed"]


@pytest.mark.parametrize("last", [False, True], ids=["a-step-follows", "the-sleep-is-last"])
async def test_the_deadline_passing_while_paused_times_out_after_continue(
    env: WorkflowTestEnv, last: bool
) -> None:
    probe = Probe()

    @workflow(unique("pause-deadline"), timeout="1h")
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.sleep("nap", "30m")  # due, and the deadline past, while paused
        if not last:
            await ctx.step("b", probe.effect, "b")

    handle = await env.run(flow.on_failure(lambda ctx: probe.compensated.append(ctx.error["code"])))
    await handle.pause()
    await _paused_and_quiet(env, handle)
    env.clock.advance(2 * 3600)
    await _paused_and_quiet(env, handle)
    await handle.unpause()
    result = await env.result(handle)
    assert result.status == "failed" and result.error is not None and result.error.code == "workflow_timeout"
    assert probe.calls["b"] == 0 and probe.compensated == ["workflow_timeout"]


async def test_cancel_of_a_paused_execution_runs_compensation(env: WorkflowTestEnv) -> None:
    probe = Probe()

    @workflow(unique("pause-cancel"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.step("a", probe.effect, "a")
        await ctx.sleep("nap", "1h")
        await ctx.step("b", probe.effect, "b")

    handle = await env.run(flow.on_failure(lambda ctx: probe.compensated.append(ctx.status)))
    await handle.pause()
    await _paused_and_quiet(env, handle)
    assert await handle.cancel("stop it") is True
    result = await env.result(handle)
    assert result.status == "cancelled" and probe.compensated == ["cancelled"]
    assert probe.calls == Counter(a=1)
    assert (await handle.describe())["paused_at"] is None


async def test_a_paused_execution_survives_eviction_and_a_restart(env: WorkflowTestEnv) -> None:
    @workflow(unique("pause-evict"))
    async def flow(ctx: Any, input: Any) -> str:
        await ctx.sleep("nap", "1m")
        return "done"

    handle = await env.run(flow)
    await handle.pause()
    await _paused_and_quiet(env, handle)
    await env.restart()
    env.clock.advance(600)
    await _paused_and_quiet(env, handle)
    await handle.unpause()
    assert (await env.result(handle)).value == "done"


# -- cancel without compensation ---------------------------------------------------------------


async def test_cancel_without_compensation_terminates(env: WorkflowTestEnv) -> None:
    probe = Probe()

    @workflow(unique("terminate"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.step("a", probe.effect, "a")
        await ctx.wait_for_event("w", "go")

    handle = await env.run(flow.on_failure(lambda ctx: probe.compensated.append(ctx.status)))
    assert await handle.cancel("operator", compensate=False) is True
    result = await env.result(handle)
    assert result.status == "cancelled" and result.error is not None
    assert result.error.code == "terminated" and result.error.compensation is None
    assert probe.compensated == []
    assert _entry(await handle.journal(), "w")["status"] == "abandoned"
    assert await handle.cancel(compensate=False) is False, "already finished"


async def test_cancel_with_compensation_still_compensates(env: WorkflowTestEnv) -> None:
    probe = Probe()

    @workflow(unique("cancel-compensates"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.wait_for_event("w", "go")

    handle = await env.run(flow.on_failure(lambda ctx: probe.compensated.append(ctx.status)))
    await handle.cancel("operator")
    result = await env.result(handle)
    assert result.error is not None and result.error.code == "cancelled"
    assert probe.compensated == ["cancelled"]


# -- restart by kind and occurrence ------------------------------------------------------------


def _checkpoint_flow(probe: Probe, fail_once: list[bool]) -> Any:
    async def final() -> str:
        probe.calls["final"] += 1
        if fail_once:
            fail_once.pop()
            raise ValueError("bug")
        return "shipped"

    @workflow(unique("checkpoints"), retry=RetryPolicy(max_attempts=1))
    async def flow(ctx: Any, input: Any) -> str:
        await ctx.step("prep", probe.effect, "prep")
        await ctx.sleep("checkpoint", "1s")
        await ctx.step("checkpoint", probe.effect, "checkpoint")
        await ctx.step("middle", probe.effect, "middle")
        await ctx.step("checkpoint", probe.effect, "checkpoint")
        return await ctx.step("final", final)

    return flow


@pytest.mark.parametrize(
    ("kind", "occurrence", "rerun"),
    [
        ("step", 1, Counter(checkpoint=2, middle=1, final=1)),
        ("sleep", 1, Counter(checkpoint=2, middle=1, final=1)),
        ("step", 2, Counter(checkpoint=1, final=1)),
    ],
)
async def test_restart_cuts_at_the_named_kind_and_occurrence(
    env: WorkflowTestEnv, kind: str, occurrence: int, rerun: Counter[str]
) -> None:
    probe = Probe()
    flow = _checkpoint_flow(probe, [True])
    failed = await env.run(flow)
    assert (await env.result(failed)).status == "failed"
    before = Counter(probe.calls)
    again = await env.client.restart(
        failed.execution_id, from_step="checkpoint", kind=kind, occurrence=occurrence
    )
    result = await env.result(again)
    assert result.value == "shipped"
    assert probe.calls - before == rerun
    journal = await again.journal()
    ops = [(e["kind"], e["name"], "restored_from" in e) for e in journal]
    kept = {"step": 2, "sleep": 1}[kind] if occurrence == 1 else 4
    assert all(restored for _, _, restored in ops[:kept]) and not any(r for _, _, r in ops[kept:])
    meta = await again.meta()
    assert meta["restarted_from"] == {
        "execution_id": failed.execution_id,
        "from_step": "checkpoint",
        "kind": kind,
        "occurrence": occurrence,
    }


async def test_restart_to_an_id_another_execution_has_is_a_conflict(env: WorkflowTestEnv) -> None:
    flow = _checkpoint_flow(Probe(), [True])
    failed = await env.run(flow)
    await env.result(failed)
    other = await env.run(flow)
    await env.result(other)
    eid = failed.execution_id
    for taken in (eid, other.execution_id):  # the source itself, another execution of the flow
        with pytest.raises(ExecutionConflictError, match="is not this restart"):
            await env.client.restart(eid, from_step="checkpoint", new_execution_id=taken)
    first = await env.client.restart(eid, from_step="checkpoint", new_execution_id="again-1")
    assert first.created
    repeated = await env.client.restart(eid, from_step="checkpoint", new_execution_id="again-1")
    assert not repeated.created  # the same restart asked twice (a retry) finds the one made
    with pytest.raises(ExecutionConflictError, match="is not this restart"):
        await env.client.restart(eid, from_step="checkpoint", occurrence=2, new_execution_id="again-1")


async def test_restart_refuses_what_the_journal_does_not_have(env: WorkflowTestEnv) -> None:
    flow = _checkpoint_flow(Probe(), [True])
    failed = await env.run(flow)
    await env.result(failed)
    eid = failed.execution_id
    with pytest.raises(InvalidRequestError, match="kind must be one of"):
        await env.client.restart(eid, from_step="checkpoint", kind="task")
    with pytest.raises(InvalidRequestError, match="occurrence counts from 1"):
        await env.client.restart(eid, from_step="checkpoint", occurrence=0)
    with pytest.raises(InvalidRequestError, match="occurrence counts from 1"):
        await env.client.restart(eid, from_step="checkpoint", occurrence=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="2 step operations named 'checkpoint', so no occurrence 3"):
        await env.client.restart(eid, from_step="checkpoint", occurrence=3)
    with pytest.raises(InvalidRequestError, match="no operation named 'checkpoint' of kind wait"):
        await env.client.restart(eid, from_step="checkpoint", kind="wait")


# -- bad input ----------------------------------------------------------------------------------


async def test_control_of_a_finished_or_unknown_execution_is_refused(env: WorkflowTestEnv) -> None:
    @workflow(unique("finished"))
    async def flow(ctx: Any, input: Any) -> int:
        return 1

    handle = await env.run(flow)
    with pytest.raises(ExecutionConflictError, match="finished execution cannot be paused") as caught:
        await handle.pause()
    assert caught.value.details["status"] == "completed"
    # Nothing to continue: a retried continue after the execution finished is not an error.
    assert await handle.unpause() is False
    with pytest.raises(ExecutionNotFoundError):
        await env.client.execution("no-such-execution").pause()
    with pytest.raises(ExecutionNotFoundError):
        await env.client.execution("no-such-execution").unpause()


async def test_unpause_of_a_running_execution_changes_nothing(env: WorkflowTestEnv) -> None:
    @workflow(unique("not-paused"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.wait_for_event("w", "go")

    handle = await env.run(flow)
    assert await handle.unpause() is False
    assert await handle.status() == "waiting"


async def test_pause_holds_the_compensation_of_a_cancel(env: WorkflowTestEnv) -> None:
    probe = Probe()
    probe.gate("undo")

    @workflow(unique("cancelling"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.wait_for_event("w", "go")

    async def undo(ctx: Any) -> None:
        await ctx.step("undo", probe.effect, "undo")
        await ctx.step("undo-2", probe.effect, "undo-2")

    handle = await env.run(flow.on_failure(undo))
    await handle.cancel()
    await probe.started["undo"].wait()
    # In compensation: a pause holds its next operation (not refused).
    assert await handle.pause() is True
    probe.release["undo"].set()
    await _paused_and_quiet(env, handle)
    assert probe.calls == Counter(undo=1)
    await handle.unpause()
    assert (await env.result(handle)).status == "cancelled"
    assert probe.calls == Counter({"undo": 1, "undo-2": 1})


async def test_bad_wire_bodies_get_structured_errors(env: WorkflowTestEnv) -> None:
    @workflow(unique("wire"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.wait_for_event("w", "go")

    handle = await env.run(flow)
    response = await env.ns.request(handle.execution_id, "POST", "/cancel", {"compensate": "no"})
    assert response.status == 400 and response.body["error"]["code"] == "invalid_request"
    response = await env.ns.request(handle.execution_id, "GET", "/pause")
    assert response.status == 405
    body = {
        "workflow": flow.name,
        "execution_id": "restarted",
        "restart": {"execution_id": handle.execution_id, "from_step": "w", "kind": "task", "occurrence": 0},
    }
    response = await env.ns.request("restarted", "POST", "/execute", body)
    assert response.status == 400
    fields = {p["field"] for p in response.body["error"]["problems"]}
    assert fields == {"restart.kind", "restart.occurrence"}


def test_negative_or_malformed_retention_is_refused_at_definition() -> None:
    for bad in (-1, "-1d", "forever", float("inf")):
        with pytest.raises(InvalidOptionError, match="retention"):

            @workflow(unique("bad-retention"), retention=bad)
            async def flow(ctx: Any, input: Any) -> None:
                return None


async def test_an_execution_whose_last_step_ends_while_paused_completes(env: WorkflowTestEnv) -> None:
    probe = Probe()
    probe.gate("last")

    @workflow(unique("pause-last-step"))
    async def flow(ctx: Any, input: Any) -> str:
        return await ctx.step("last", probe.effect, "last")

    handle = await env.start(flow)
    await probe.started["last"].wait()
    await handle.pause()
    probe.release["last"].set()
    result = await env.result(handle)
    assert (result.status, result.value) == ("completed", "last-done")
    view = await handle.describe()
    assert (view["status"], view["paused_at"]) == ("completed", None)


async def test_paused_shows_in_the_history_and_on_the_page() -> None:
    from workkit_workflow.history.page import render_execution_page

    env = WorkflowTestEnv(history=True)
    try:

        @workflow(unique("pause-history"))
        async def flow(ctx: Any, input: Any) -> None:
            await ctx.sleep("nap", "1h")

        handle = await env.run(flow)
        await handle.pause()
        await _paused_and_quiet(env, handle)
        await env.ns.idle()
        assert env.client.history is not None
        history = await env.client.history.get_execution(handle.execution_id)
        assert history.execution.status == "paused"
        html = render_execution_page(history)
        assert "Paused: no new step starts until it continues." in html
        assert "class='badge paused'" in html or 'class="badge paused"' in html
    finally:
        await env.close()


async def test_set_state_waits_while_paused_like_any_operation(env: WorkflowTestEnv) -> None:
    probe = Probe()
    probe.gate("a")

    @workflow(unique("pause-set-state"))
    async def flow(ctx: Any, input: Any) -> str:
        await ctx.step("a", probe.effect, "a")
        await ctx.set_state("stage", "after-a")
        return "done"

    handle = await env.start(flow)
    await probe.started["a"].wait()
    await handle.pause()
    probe.release["a"].set()
    await _paused_and_quiet(env, handle)
    assert await handle.state() == {}
    await handle.unpause()
    assert (await env.result(handle)).value == "done"
    assert await handle.state() == {"stage": "after-a"}


async def test_cancel_without_compensation_runs_no_undo_handler(env: WorkflowTestEnv) -> None:
    from workkit_workflow import Workflow

    undone: list[str] = []
    flow = (
        Workflow(unique("terminate-undo"))
        .step("reserve", lambda i, p, c: {"r": 1}, undo=lambda info: undone.append(info.step))
        .wait_for_event("approval", "approved")
    )
    handle = await env.run(flow)
    assert await handle.status() == "waiting"
    await handle.cancel("operator", compensate=False)
    result = await env.result(handle)
    assert result.error is not None and result.error.code == "terminated"
    assert undone == []
    again = await env.run(flow)
    await again.cancel("operator")
    assert (await env.result(again)).status == "cancelled" and undone == ["reserve"]
