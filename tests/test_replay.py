"""Checkpoint and replay: crashes at every boundary never re-run a journaled step."""

from __future__ import annotations

from typing import Any

import pytest

from workkit_workflow import RetryPolicy, Workflow, workflow
from workkit_workflow.testing import WorkflowTestEnv, step_names

from conftest import Effects, make_order_flow, unique

STEPS = ["reserve-inventory", "charge-card", "ship"]


async def test_happy_path_runs_each_step_once(env: WorkflowTestEnv, effects: Effects) -> None:
    flow = make_order_flow(effects)
    handle = await env.run(flow, {"order_id": "o-1"})
    result = await env.result(handle)
    assert result.ok
    assert result.value == {"tracking": "trk-o-1", "transaction": "tx-o-1"}
    assert effects.calls == {"reserve": 1, "charge": 1, "ship": 1}
    journal = await handle.journal()
    assert step_names(journal, status="completed") == STEPS
    assert all(e["attempt"] == 1 for e in journal)
    assert await handle.status() == "completed"


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("point", ["before_step", "after_side_effect", "after_journal"])
async def test_crash_at_every_boundary_resumes_from_the_journal(
    env: WorkflowTestEnv, effects: Effects, step: str, point: str
) -> None:
    flow = make_order_flow(effects)
    env.faults.crash_at(point, step=step)
    handle = await env.start(flow, {"order_id": "o-1"})
    result = await env.result(handle)
    assert result.ok, result.error
    assert env.faults.crashes, "the fault point was never reached"
    journal = await handle.journal()
    assert step_names(journal, status="completed") == STEPS
    # Exactly once towards the outside world: one effect per stable idempotency key.
    assert effects.effects_applied == 3
    for name in STEPS:
        key = {"reserve-inventory": "reserve", "charge-card": "charge", "ship": "ship"}[name]
        if point == "after_side_effect" and name == step:
            assert effects.calls[key] == 2  # ran, never journaled: runs again (at least once)
        else:
            assert effects.calls[key] == 1  # journaled steps never run again


async def test_crash_after_each_journal_write(env: WorkflowTestEnv, effects: Effects) -> None:
    flow = make_order_flow(effects)
    # Crash after every write that carried a step output, one after another.
    env.faults.crash_at("after_journal", times=3)
    handle = await env.start(flow, {"order_id": "o-2"})
    result = await env.result(handle)
    assert result.ok
    assert len(env.faults.crashes) == 3
    assert effects.calls == {"reserve": 1, "charge": 1, "ship": 1}


async def test_lost_attempt_counts_and_is_retried(env: WorkflowTestEnv, effects: Effects) -> None:
    flow = make_order_flow(effects)
    env.faults.crash_at("after_side_effect", step="charge-card", times=2)
    handle = await env.start(flow, {"order_id": "o-3"})
    result = await env.result(handle)
    assert result.ok
    charge = next(e for e in await handle.journal() if e["name"] == "charge-card")
    assert charge["attempt"] == 3
    assert [e["code"] for e in charge["errors"]] == ["attempt_lost", "attempt_lost"]
    # The charge ran three times, but the outside world saw one charge.
    # The charge ran three times, all with one key: the outside world charged once.
    assert effects.calls["charge"] == 3
    assert effects.external["charge:o-3"] == 3
    assert effects.effects_applied == 3


async def test_lost_attempts_do_not_use_up_the_retry_policy(env: WorkflowTestEnv, effects: Effects) -> None:
    # A single-attempt step that may have run without being journaled still runs again.
    flow = make_order_flow(effects, retry=RetryPolicy(max_attempts=1))
    env.faults.crash_at("before_step", step="charge-card", times=3)
    result = await env.result(await env.start(flow, {"order_id": "o-4"}))
    assert result.ok
    assert effects.calls["charge"] == 1  # the three lost attempts crashed before the handler


@pytest.mark.parametrize("cap", [None, 2, 8])
async def test_a_step_that_always_kills_its_process_fails_after_the_lost_attempt_cap(
    env: WorkflowTestEnv, effects: Effects, cap: int | None
) -> None:
    from workkit_workflow.definitions._retry import DEFAULT_LOST_ATTEMPTS

    retry = None if cap is None else RetryPolicy(max_lost_attempts=cap)
    flow = make_order_flow(effects, retry=retry)
    env.faults.crash_at("after_side_effect", step="charge-card", times=100)
    handle = await env.start(flow, {"order_id": "o-5"})
    result = await env.result(handle)
    assert not result.ok and result.error is not None
    assert result.error.failed_step == "charge-card"
    assert result.error.code == "attempt_lost"
    lost = DEFAULT_LOST_ATTEMPTS if cap is None else cap
    assert effects.calls["charge"] == lost
    assert effects.calls["compensate"] == 1
    # The failed entry keeps every lost attempt, the last one included; only the last
    # is not retryable.
    [charge] = [e for e in await handle.journal() if e["name"] == "charge-card"]
    assert [e["code"] for e in charge["errors"]] == ["attempt_lost"] * lost
    assert [e["retryable"] for e in charge["errors"]] == [True] * (lost - 1) + [False]


async def test_lost_attempts_do_not_use_up_max_attempts(env: WorkflowTestEnv, effects: Effects) -> None:
    # Two attempts allowed, three lost in a row under a cap of four: the step still completes.
    flow = make_order_flow(effects, retry=RetryPolicy(max_attempts=2, max_lost_attempts=4))
    env.faults.crash_at("after_side_effect", step="charge-card", times=3)
    handle = await env.start(flow, {"order_id": "o-6"})
    result = await env.result(handle)
    assert result.ok, result.error
    assert effects.calls["charge"] == 4


async def test_idempotency_key_is_stable_across_retries_and_restarts(env: WorkflowTestEnv) -> None:
    seen: list[str] = []
    counter = iter(range(100))

    async def flaky(input: Any, prev: Any, ctx: Any) -> str:
        seen.append(ctx.idempotency_key)
        if len(seen) < 3:
            raise RuntimeError("try again")
        return ctx.idempotency_key

    # A key function that is not deterministic: the journaled key still wins.
    flow = Workflow(unique("idem"), retry=RetryPolicy(max_attempts=5)).step(
        "pay", flaky, idempotency_key=lambda i, c: f"pay-{next(counter)}"
    )
    env.faults.crash_at("before_step", step="pay", attempt=2)
    handle = await env.start(flow, {})
    result = await env.result(handle)
    assert result.ok
    assert len(set(seen)) == 1 and seen[0] == "pay-0"
    entry = (await handle.journal())[0]
    assert entry["idempotency_hash"].startswith("sha256:")
    assert "idempotency_key" not in entry  # only the hash is kept


async def test_default_idempotency_key_is_per_execution_and_step(env: WorkflowTestEnv) -> None:
    keys: list[str] = []
    flow = Workflow(unique("default-key")).step("a", lambda i, p, c: keys.append(c.idempotency_key) or 1)
    h1 = await env.run(flow, {}, execution_id="exec-a")
    h2 = await env.run(flow, {}, execution_id="exec-b")
    assert (await h1.result()).ok and (await h2.result()).ok
    assert keys[0] != keys[1] and keys[0].startswith("exec-a:")


async def test_recorded_idempotent_result_is_reused_instead_of_calling_again(env: WorkflowTestEnv) -> None:
    calls: list[str] = []

    @workflow(unique("reuse"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step(
            "charge", lambda: calls.append("first") or {"tx": 1}, idempotency_key="charge:o-9"
        )
        # The same external operation again (a code path that repeats it): the
        # recorded result is returned, the handler is not called.
        second = await ctx.step(
            "charge-again", lambda: calls.append("second") or {"tx": 2}, idempotency_key="charge:o-9"
        )
        return [first, second]

    handle = await env.run(flow, {})
    assert (await handle.result()).value == [{"tx": 1}, {"tx": 1}]
    assert calls == ["first"]
    assert (await handle.journal())[1]["reused_from"] == "charge"


async def test_evicted_mid_step_is_resumed_by_its_alarm_alone(env: WorkflowTestEnv, effects: Effects) -> None:
    flow = make_order_flow(effects)
    env.faults.crash_at("before_step", step="charge-card")
    handle = await env.start(flow, {"order_id": "o-5"})
    # Nobody calls the object again: only the lease alarm can resume it.
    await env.clock.sleep(120)
    assert env.faults.crashes
    status = await env.ns.request(handle.execution_id, "GET", "/status")
    assert status.body["execution"]["status"] == "completed"
    assert effects.calls == {"reserve": 1, "charge": 1, "ship": 1}


async def test_sync_and_async_handlers_and_builder_prev(env: WorkflowTestEnv) -> None:
    async def a(input: Any, prev: Any, ctx: Any) -> int:
        return int(input["n"]) + 1

    def b(input: Any, prev: Any, ctx: Any) -> int:
        return prev * 10

    flow = Workflow(unique("sync-async")).step("a", a).step("b", b)
    handle = await env.run(flow, {"n": 4})
    assert (await handle.result()).value == 50


async def test_outputs_round_trip_through_json_on_first_run_too(env: WorkflowTestEnv) -> None:
    @workflow(unique("roundtrip"))
    async def flow(ctx: Any, input: Any) -> Any:
        value = await ctx.step("t", lambda: (1, 2, {3: "x"}))
        assert value == [1, 2, {"3": "x"}]  # what replay would return
        return value

    handle = await env.run(flow, None)
    assert (await handle.result()).ok


async def test_golden_journal_v1_still_replays(env: WorkflowTestEnv) -> None:
    """A journal written by version 1 of the format must keep replaying."""
    import json
    from pathlib import Path

    golden = json.loads((Path(__file__).parent / "golden" / "journal_v1.json").read_text())
    calls: list[str] = []
    flow = (
        Workflow("golden-order-flow")
        .step("reserve-inventory", lambda i, p, c: calls.append("reserve") or {"reservation_id": "res-g"})
        .step("charge-card", lambda i, p, c: calls.append("charge") or {"transaction_id": "tx-g"})
        .step("ship", lambda i, p, c: calls.append("ship") or {"tracking": p["transaction_id"]})
    )
    assert flow.name == golden["meta"]["workflow"]
    env.ns.backend.commit(
        "golden-1", {k: json.dumps(v) for k, v in golden["records"].items()}, (), env.clock.now()
    )
    handle = env.client.execution("golden-1")
    result = await env.result(handle)
    assert result.ok
    assert result.value == {"tracking": "tx-g"}
    assert calls == ["ship"]  # reserve and charge come from the golden journal


async def test_a_replayed_step_makes_no_call_only_a_step_that_runs_does(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The port makes a step's call (fn and its arguments) only when the step runs: a
    # replay, from memory or from a cold object's journal, makes none and runs nothing.
    # A new step takes the new step's path with ``fn`` and its arguments as they are; any
    # other step that runs gets its call from ``plain_call``.
    from workkit_workflow.definitions._steps import plain_call
    from workkit_workflow.engine.phase import _operations

    made: list[str] = []
    ran: list[int] = []
    new_step = _operations.run_new_step

    def counted_call(fn: Any, args: Any) -> Any:
        made.append(fn.__name__)
        return plain_call(fn, args)

    def counted_new_step(run: Any, op: int, name: str, fn: Any, args: Any) -> Any:
        made.append(fn.__name__)
        return new_step(run, op, name, fn, args)

    def work(i: int) -> int:
        ran.append(i)
        return i * 10

    @workflow(unique("replayed-calls"))
    async def flow(ctx: Any, input: Any) -> Any:
        outputs = [await ctx.step(f"s{i}", work, i) for i in range(3)]
        await ctx.wait_for_event("go", "go")
        outputs.append(await ctx.step("after", work, 3))
        return outputs

    monkeypatch.setattr(_operations, "plain_call", counted_call)
    monkeypatch.setattr(_operations, "run_new_step", counted_new_step)
    handle = await env.run(flow, None)
    assert made == ["work"] * 3 and ran == [0, 1, 2]
    env.evict(handle.execution_id)  # the event wakes a cold object: its journal is read
    await env.send_event(handle.execution_id, "go", None)
    result = await env.result(handle)
    assert result.ok and result.value == [0, 10, 20, 30]
    assert made == ["work"] * 4 and ran == [0, 1, 2, 3]
