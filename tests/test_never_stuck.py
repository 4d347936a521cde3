"""Ways an execution could be stranded, each pinned: the alarm handler's one
exception (a failed next alarm), compensation told of in-doubt steps, nothing
left running in a settled execution, prompt recovery after a crash, and a request
answered "no execution with this id" for one that is there after a failed write."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from workkit_workflow import Workflow
from workkit_workflow.engine._alarms import DEFAULT_LEASE
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

UNFINISHED = {"running", "retrying", "sleeping", "waiting"}


def fail_object_writes_in_alarm(env: WorkflowTestEnv, times: int) -> dict[str, int]:
    """The object's own writes fail while its alarm handler runs (a disk full for a
    moment), ``times`` handler runs in a row; the runtime's bookkeeping is unaffected."""
    seen = {"failed_runs": 0, "failed_writes": 0}
    current: dict[str, Any] = {"task": None}

    def hook(obj: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        live = env.ns._live.get(obj)
        if live is None or not live.in_alarm_handler:
            return
        if current["task"] is not live.alarm_task:
            if seen["failed_runs"] >= times:
                return
            current["task"] = live.alarm_task
            seen["failed_runs"] += 1
        seen["failed_writes"] += 1
        raise OSError("database or disk is full (injected)")

    env.ns.write_hook = hook
    return seen


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_failed_write_in_the_alarm_handler_keeps_a_wake_up(
    backend: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)
    env = WorkflowTestEnv(path=None if backend == "memory" else str(tmp_path / "w.db"))
    flow = Workflow(unique("nap")).sleep("nap", "1h").step("after", lambda i, p, c: "woke")
    try:
        handle = await env.run(flow, {})
        assert await handle.status() == "sleeping"
        seen = fail_object_writes_in_alarm(env, times=2)
        result = await env.result(handle)
        assert result.ok and result.value == "woke"
        assert seen["failed_runs"] == 2 and seen["failed_writes"] >= 2
    finally:
        await env.close()


def saga(effects: list[str], told: list[dict[str, Any]], **options: Any) -> Workflow:
    def charge(input: Any, prev: Any, ctx: Any) -> str:
        effects.append(f"charge:{ctx.idempotency_key}")
        return "tx-1"

    def ship(input: Any, prev: Any, ctx: Any) -> str:
        effects.append("ship")
        return "shipped"

    def refund(ctx: Any) -> None:
        told.append(
            {
                "outputs": dict(ctx.step_outputs),
                "in_doubt": [(s.name, s.attempt, s.idempotency_key) for s in ctx.in_doubt_steps],
            }
        )

    return Workflow(unique("saga"), **options).step("charge", charge).step("ship", ship).on_failure(refund)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_cancel_after_a_lost_attempt_hands_compensation_the_in_doubt_step(
    backend: str, tmp_path: Any
) -> None:
    env = WorkflowTestEnv(path=None if backend == "memory" else str(tmp_path / "w.db"))
    effects: list[str] = []
    told: list[dict[str, Any]] = []
    flow = saga(effects, told)
    try:
        env.faults.crash_at("after_side_effect", step="charge")
        handle = await env.start(flow, {})
        await env.settle()
        assert len(effects) == 1, "the charge ran and its object died before journaling it"
        assert await handle.cancel("customer changed their mind")
        result = await env.result(handle)
        assert result.status == "cancelled"
        key = effects[0].split(":", 1)[1]
        assert told == [{"outputs": {}, "in_doubt": [("charge", 1, key)]}]
        journal = await handle.journal()
        assert [(e["name"], e["status"]) for e in journal if e["phase"] == "main"] == [("charge", "in_doubt")]
        assert effects == [f"charge:{key}"], "a cancelled execution does not re-run the lost attempt"
    finally:
        await env.close()


async def test_a_deadline_passing_before_a_lost_attempt_reruns_hands_it_to_compensation() -> None:
    env = WorkflowTestEnv()
    effects: list[str] = []
    told: list[dict[str, Any]] = []
    flow = saga(effects, told, timeout="2s")
    try:
        env.faults.crash_at("after_side_effect", step="charge")
        handle = await env.start(flow, {})
        result = await env.result(handle)
        assert result.status == "failed" and result.error is not None
        assert result.error.code == "workflow_timeout"
        assert [d[0] for d in told[0]["in_doubt"]] == ["charge"]
        journal = await handle.journal()
        assert not [e for e in journal if e["status"] in UNFINISHED], journal
    finally:
        await env.close()


async def test_a_settled_execution_leaves_no_operation_unfinished() -> None:
    """Cancelled while sleeping, and while a step waits to retry: both read as abandoned."""
    env = WorkflowTestEnv()
    try:
        sleeper = await env.run(Workflow(unique("sleeper")).sleep("nap", "1d").step("s", lambda i, p, c: 1))
        await sleeper.cancel()
        await env.result(sleeper)

        def flaky(input: Any, prev: Any, ctx: Any) -> None:
            raise ConnectionError("down")

        retrier = await env.run(Workflow(unique("retrier")).step("call", flaky))
        assert await retrier.status() == "sleeping"
        await retrier.cancel()
        await env.result(retrier)
        statuses = [(e["name"], e["status"]) for e in await sleeper.journal()]
        statuses += [(e["name"], e["status"]) for e in await retrier.journal()]
        assert statuses == [("nap", "abandoned"), ("call", "abandoned")]
    finally:
        await env.close()


async def test_recovery_after_a_crash_is_prompt_by_default() -> None:
    """The lease alarm resumes a crashed execution within a few seconds."""
    assert DEFAULT_LEASE <= 5.0
    env = WorkflowTestEnv()
    effects: list[str] = []
    flow = saga(effects, [])
    try:
        env.faults.crash_at("before_step", step="ship")
        started = env.clock.now()
        handle = await env.start(flow, {})
        result = await env.result(handle)
        assert result.ok
        finished = (await handle.describe())["finished_at"]
        assert finished - started <= DEFAULT_LEASE + 0.5
    finally:
        await env.close()


async def test_a_long_step_keeps_its_lease_without_writes_per_step() -> None:
    """While a step runs for a minute, the lease alarm fires and is renewed
    (one alarm write per lease period); the step runs once."""
    env = WorkflowTestEnv()
    calls: list[int] = []

    async def long(input: Any, prev: Any, ctx: Any) -> str:
        calls.append(1)
        await env.clock.sleep(60)
        return "done"

    try:
        handle = await env.run(Workflow(unique("long")).step("long", long))
        result = await env.result(handle)
        assert result.ok and calls == [1]
        renewals = env.ns.stats.alarm_sets
        assert 60 / DEFAULT_LEASE - 2 <= renewals <= 60 / DEFAULT_LEASE + 4, renewals
    finally:
        await env.close()


def fail_one_write(env: WorkflowTestEnv, number: int) -> dict[str, int]:
    """The object's ``number``-th write from now fails (a disk I/O error for a moment)."""
    seen = {"writes": 0}

    def hook(obj: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        seen["writes"] += 1
        if seen["writes"] == number:
            raise OSError("disk I/O error (injected)")

    env.ns.write_hook = hook
    return seen


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("failing", [2, 3])
async def test_a_run_whose_write_fails_answers_the_execution_never_not_found(
    backend: str, failing: int, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The write after the creation fails (a step's start, or its completion): the run
    # forgets what it read and waits for its retry. The caller must learn that the
    # execution exists; "no execution with this id" would have it start another, and
    # every step would run twice.
    caplog.set_level(logging.CRITICAL)
    env = WorkflowTestEnv(path=None if backend == "memory" else str(tmp_path / "w.db"))
    effects: list[str] = []
    flow = (
        Workflow(unique("fails-once"))
        .step("a", lambda i, p, c: effects.append("a"))
        .step("b", lambda i, p, c: effects.append("b"))
    )
    try:
        seen = fail_one_write(env, failing)
        handle = await env.run(flow, {})
        assert seen["writes"] >= failing, "the injected failure was not reached"
        assert await handle.status() in UNFINISHED
        result = await env.result(handle)
        assert result.ok, result
        assert effects.count("b") == 1 and effects.count("a") <= 2, effects
    finally:
        await env.close()


async def test_an_event_read_while_a_failed_run_forgets_the_execution_is_still_accepted() -> None:
    # A run that fails forgets what it read (storage is the truth) at any await of a request
    # it interleaves with: an event request then checks a state that is not loaded. Answered
    # "no execution with this id", the mail outbox of a child would dead-letter its
    # completion (a definitive 404), and its parent would wait for good.
    env = WorkflowTestEnv()
    flow = Workflow(unique("forgotten")).wait_for_event("go", "go").step("after", lambda i, p, c: p)
    try:
        handle = await env.run(flow, {})
        assert await handle.status() == "waiting"
        core = env.ns._instance(handle.execution_id).instance._object.core
        storage = core.execution.storage
        read = storage.get

        async def get_then_forget(key: str) -> Any:
            found = await read(key)
            core.execution.forget()  # a run failing meanwhile (``Driver._after_failure``)
            return found

        storage.get = get_then_forget
        assert await handle.send_event("go", "went")
        storage.get = read
        result = await env.result(handle)
        assert result.ok and result.value == "went"
    finally:
        await env.close()
