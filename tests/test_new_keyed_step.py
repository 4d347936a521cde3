"""A new step whose only option is a key of its own takes the new step's first attempt
(``run_new_step``, with the key): what it journals, byte for byte, and what it does, are what
the general path (``run_step``) gives such a step."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from workkit_workflow import RetryPolicy, current_step, workflow
from workkit_workflow.definitions._steps import keyed_options, plain_call
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine.phase import _operations
from workkit_workflow.engine.phase._attempt import hash_key
from workkit_workflow.engine.phase._run import PhaseRun
from workkit_workflow.engine.phase._step import run_step
from workkit_workflow.local import VirtualClock
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

PAIRS = [
    ("charge", "charge:o-1"),
    ('quote " inside', 'quo"te'),
    ("back\\slash", "back\\slash"),
    ("ünïcödé ✓", "ünï ✓"),
    ("plain", "tab\tkey"),
    ("long key", "k" * 300),
]
"""Step names and their keys: escapes, text outside ASCII (written by the encoder then)."""


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The steps with a key that took ``run_new_step``."""
    names: list[str] = []
    new_step = _operations.run_new_step

    def spy(run: PhaseRun, op: int, name: str, fn: Any, args: Any, key: str | None = None) -> Any:
        if key is not None:
            names.append(name)
        return new_step(run, op, name, fn, args, key)

    monkeypatch.setattr(_operations, "run_new_step", spy)
    return names


def _general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every keyed step the general way, as before ``run_new_step`` took them."""
    new_step = _operations.run_new_step

    def general(run: PhaseRun, op: int, name: str, fn: Any, args: Any, key: str | None = None) -> Any:
        if key is None:
            return new_step(run, op, name, fn, args)
        return run_step(run, op, name, plain_call(fn, args), keyed_options(key))

    monkeypatch.setattr(_operations, "run_new_step", general)


HELD: dict[str, asyncio.Event] = {}
SEEN: dict[str, list[str]] = {}


async def held(name: str) -> str:
    SEEN.setdefault(name, []).append(current_step().idempotency_key)  # type: ignore[union-attr]
    await HELD[name].wait()
    return name


@workflow(unique("keyed-texts"))
async def texts_flow(ctx: Any, input: Any) -> Any:
    for name, key in PAIRS:
        await ctx.step(name, held, name, idempotency_key=key)
    return len(PAIRS)


async def _texts(env: WorkflowTestEnv) -> tuple[list[str], dict[str, str]]:
    """The running entry of each step as stored while it runs, then the whole journal."""
    HELD.clear()
    SEEN.clear()
    HELD.update({name: asyncio.Event() for name, _ in PAIRS})
    handle = await env.start(texts_flow, None, execution_id="keyed-texts")

    def stored() -> dict[str, str]:
        return env.ns.backend.list(handle.execution_id, jn.MAIN, None, None, None, False)

    running = []
    for op, (name, _) in enumerate(PAIRS):
        await env.settle()
        running.append(stored()[jn.op_key(jn.MAIN, op)])  # the step waits: its start is stored
        HELD[name].set()
    assert (await env.result(handle)).value == len(PAIRS)
    return running, stored()


async def test_the_texts_a_new_keyed_step_journals_are_the_encoders(taken: list[str]) -> None:
    env = WorkflowTestEnv(clock=VirtualClock(1_767_225_600.125))
    try:
        running, journal = await _texts(env)
    finally:
        await env.close()
    assert taken == [name for name, _ in PAIRS]
    for op, (name, key_text) in enumerate(PAIRS):
        key = jn.op_key(jn.MAIN, op)
        fields = json.loads(running[op])
        assert list(fields) == [
            "v", "kind", "name", "status", "attempt", "started_at", "idempotency_key", "idempotency_hash",
        ]  # fmt: skip
        assert (fields["name"], fields["idempotency_key"]) == (name, key_text)
        assert fields["idempotency_hash"] == hash_key(key_text)
        assert running[op] == jn.encode_entry(key, fields)
        done = json.loads(journal[key])
        assert list(done) == [
            "v", "kind", "name", "status", "attempt", "started_at", "idempotency_hash", "finished_at",
            "output",
        ]  # fmt: skip
        assert (done["status"], done["output"]) == ("completed", name)
        assert journal[key] == jn.encode_entry(key, done)
        assert SEEN[name] == [key_text]  # the step's code saw its own key


async def test_the_journal_is_the_general_path_s_byte_for_byte(
    taken: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    journals = []
    for general in (False, True):
        if general:
            _general_path(monkeypatch)
        env = WorkflowTestEnv(clock=VirtualClock(1_767_225_600.125))
        try:
            journals.append(await _texts(env))
        finally:
            await env.close()
    assert taken == [name for name, _ in PAIRS]  # the first run's, the second took none
    assert journals[0] == journals[1]


async def test_a_failed_first_attempt_retries_with_the_same_key(
    env: WorkflowTestEnv, taken: list[str]
) -> None:
    keys: list[str] = []

    def flaky() -> str:
        info = current_step()
        assert info is not None
        keys.append(f"{info.attempt}:{info.idempotency_key}")
        if info.attempt == 1:
            raise ConnectionError("timeout")
        return "paid"

    @workflow(unique("keyed-retry"), retry=RetryPolicy(max_attempts=3, initial_delay=1.0, jitter=0.0))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("pay", flaky, idempotency_key="pay-7")

    handle = await env.run(flow, None)
    assert (await env.result(handle)).value == "paid"
    assert taken == ["pay"] and keys == ["1:pay-7", "2:pay-7"]
    entry = next(e for e in await handle.journal() if e.get("name") == "pay")
    assert (entry["status"], entry["attempt"]) == ("completed", 2)
    assert entry["idempotency_hash"] == hash_key("pay-7")
    assert [e["attempt"] for e in entry["errors"]] == [1]


async def test_a_key_already_completed_returns_its_result_without_running(
    env: WorkflowTestEnv, taken: list[str]
) -> None:
    calls: list[str] = []

    def charge(name: str) -> dict[str, str]:
        calls.append(name)
        return {"charged": name}

    @workflow(unique("keyed-twice"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step("first", charge, "first", idempotency_key="order-1")
        second = await ctx.step("second", charge, "second", idempotency_key="order-1")
        other = await ctx.step("other", charge, "other", idempotency_key="order-2")
        return [first, second, other]

    handle = await env.run(flow, None)
    assert (await env.result(handle)).value == [{"charged": "first"}] * 2 + [{"charged": "other"}]
    assert calls == ["first", "other"]
    # The second step's key was known: from there it went the general way, which reused the
    # result (a known key is no new one's: ``unrecorded``).
    assert taken == ["first", "second", "other"]


async def test_parallel_steps_with_one_key_behave_as_on_the_general_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two steps started together with one key: neither is completed when the other looks
    it up, so both run, on either path (the key's dedupe is across completions)."""
    results = []
    for general in (False, True):
        if general:
            _general_path(monkeypatch)
        calls: list[str] = []

        async def charge(name: str, calls: list[str] = calls) -> str:
            calls.append(name)
            await asyncio.sleep(0)
            return name

        @workflow(unique("keyed-parallel"))
        async def flow(ctx: Any, input: Any) -> Any:
            return await asyncio.gather(
                ctx.step("a", charge, "a", idempotency_key="same"),
                ctx.step("b", charge, "b", idempotency_key="same"),
            )

        env = WorkflowTestEnv()
        try:
            handle = await env.run(flow, None)
            results.append(((await env.result(handle)).value, sorted(calls)))
        finally:
            await env.close()
    assert results[0] == results[1]


async def test_a_key_with_other_options_goes_the_general_way(env: WorkflowTestEnv, taken: list[str]) -> None:
    @workflow(unique("keyed-options"))
    async def flow(ctx: Any, input: Any) -> Any:
        a = await ctx.step("a", lambda: 1, idempotency_key="a-1", retry=RetryPolicy(max_attempts=2))
        b = await ctx.step("b", lambda: 2, idempotency_key=lambda ctx: "b-1")
        c = await ctx.step("c", lambda: 3, idempotency_key="c-1")
        return [a, b, c]

    handle = await env.run(flow, None)
    assert (await env.result(handle)).value == [1, 2, 3]
    assert taken == ["c"]
