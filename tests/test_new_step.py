"""A new step with the default options runs its first attempt on a path of its own
(``phase._new_step``): it writes exactly what the general path (``run_step``) writes.

Each scenario runs twice on a virtual clock with the same seed, once as the engine runs
it and once with that path turned off, and the two runs' storage writes (keys, values,
deletes, in order) and results must be the same."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest

from workkit_workflow import NonRetryableError, RetryPolicy, Workflow, workflow
from workkit_workflow.definitions._steps import DEFAULT_OPTIONS, plain_call
from workkit_workflow.engine.phase import _new_step, _operations
from workkit_workflow.engine.phase._step import run_step
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

Writes = list[tuple[str, dict[str, str], list[str]]]

_FAILURES: dict[str, int] = {}
"""Attempts still to fail, by step key (module level: both runs of a scenario share it)."""


def _flaky(key: str, value: Any) -> Any:
    if _FAILURES.get(key, 0) > 0:
        _FAILURES[key] -= 1
        _CLOCK[0].advance(0.5)  # the next attempt starts later than the step did
        raise RuntimeError(f"{key} failed")
    return value


async def _slow(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


def _refused() -> Any:
    raise NonRetryableError("no")


def _plain(ctx: Any) -> Awaitable[Any]:
    async def body() -> Any:
        a = await ctx.step("one", lambda: {"n": 1, "pair": (1, 2)})
        b = await ctx.step("café", lambda: "naïve ✓")
        c = await ctx.step("async", _slow, [a, b])
        # A step returns what its replay will: the value decoded from its journaled text.
        return [a, b, c, type(a["pair"]).__name__]

    return body()


def _retried(ctx: Any) -> Awaitable[Any]:
    async def body() -> Any:
        first = await ctx.step("flaky", _flaky, "flaky", "ok")
        return [first, await ctx.step("after", lambda: 2)]

    return body()


def _failing(ctx: Any) -> Awaitable[Any]:
    async def body() -> Any:
        await ctx.step("before", lambda: 1)
        return await ctx.step("refused", _refused)

    return body()


def _too_large(ctx: Any) -> Awaitable[Any]:
    async def body() -> Any:
        return await ctx.step("big", lambda: "x" * (3 << 20))

    return body()


def _unserializable(ctx: Any) -> Awaitable[Any]:
    async def body() -> Any:
        return await ctx.step("object", lambda: object())

    return body()


def _gathered(ctx: Any) -> Awaitable[Any]:
    async def body() -> Any:
        return await asyncio.gather(*(ctx.step(f"g{i}", _slow, i) for i in range(4)))

    return body()


def _past_deadline(ctx: Any) -> Awaitable[Any]:
    async def body() -> Any:
        await ctx.step("late", lambda: _CLOCK[0].advance(10.0))  # past the workflow's timeout
        return await ctx.step("never", lambda: "ran")

    return body()


def _in_doubt(ctx: Any) -> Awaitable[Any]:
    async def body() -> Any:
        return await asyncio.gather(ctx.step("refused", _refused), ctx.step("held", _held))

    return body()


async def _held() -> Any:
    for _ in range(20):  # still running when its sibling fails the execution
        await asyncio.sleep(0)
    return "held"


def _crashed(ctx: Any) -> Awaitable[Any]:
    async def body() -> Any:
        return [await ctx.step(name, lambda name=name: name) for name in ("one", "two", "three")]

    return body()


_CLOCK: list[Any] = []
"""The running scenario's virtual clock (for the step that moves it)."""

_COMPENSATED: list[Any] = []
"""What each run's compensation was told of its in-doubt steps."""


def _compensate(ctx: Any) -> None:
    _COMPENSATED.append(sorted(step["name"] for step in ctx.in_doubt_steps))


SCENARIOS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "past-deadline": _past_deadline,
    "in-doubt": _in_doubt,
    "crashed": _crashed,
    "retried-at-once": _retried,
    "plain": _plain,
    "retried": _retried,
    "failing": _failing,
    "too-large": _too_large,
    "unserializable": _unserializable,
    "gathered": _gathered,
}


_FLOWS: dict[str, Workflow] = {}


def _flow(scenario: str) -> Workflow:
    """The scenario's workflow, defined once: both runs journal the same name."""
    if scenario not in _FLOWS:
        body = SCENARIOS[scenario]

        delay = 0.0 if scenario == "retried-at-once" else 1.0  # 0: retried in the same drive
        retry = RetryPolicy(max_attempts=4, initial_delay=delay, max_delay=1.0, jitter=0.0)
        timeout = 5.0 if scenario == "past-deadline" else None

        @workflow(unique(f"new-step-{scenario}"), retry=retry, timeout=timeout)
        async def flow(ctx: Any, input: Any) -> Any:
            return await body(ctx)

        _FLOWS[scenario] = flow.on_failure(_compensate)
    return _FLOWS[scenario]


async def _run(
    scenario: str, *, fast: bool, history: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[Writes, Any, int]:
    calls = 0

    def general(run: Any, op: int, name: str, fn: Any, args: Any) -> Any:
        return run_step(run, op, name, plain_call(fn, args), DEFAULT_OPTIONS)

    def counted(run: Any, op: int, name: str, fn: Any, args: Any) -> Any:
        nonlocal calls
        calls += 1
        return _new_step.run_new_step(run, op, name, fn, args)

    def delegated(*args: Any) -> Any:
        raise AssertionError("the new step's path handed a scenario's step to run_step")

    monkeypatch.setattr(_operations, "run_new_step", counted if fast else general)
    monkeypatch.setattr(_new_step, "run_step", delegated)
    _FAILURES.clear()
    _FAILURES["flaky"] = 2
    flow = _flow(scenario)
    writes: Writes = []

    def hook(name: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        writes.append((name, dict(puts), list(deletes)))

    env = WorkflowTestEnv(history=history)
    env.ns.write_hook = hook
    _CLOCK[:] = [env.clock]
    if scenario == "crashed":
        env.faults.crash_at("before_step", step="two").crash_at("after_side_effect", step="three")
    try:
        handle = await env.start(flow, {}, execution_id="the-execution")
        result = await env.result(handle)
        outcome = (result.status, result.value, result.error and str(result.error))
    finally:
        await env.close()
    return writes, outcome, calls


@pytest.mark.parametrize("history", [False, True], ids=["plain", "history"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_the_new_step_path_writes_what_the_general_path_does(
    scenario: str, history: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_writes, fast_outcome, calls = await _run(
        scenario, fast=True, history=history, monkeypatch=monkeypatch
    )
    general_writes, general_outcome, _ = await _run(
        scenario, fast=False, history=history, monkeypatch=monkeypatch
    )
    assert calls > 0, "the scenario never took the new step's path"
    assert fast_outcome == general_outcome
    assert len(fast_writes) == len(general_writes)
    for fast, general in zip(fast_writes, general_writes, strict=True):
        assert fast == general


async def test_the_scenarios_end_as_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    """What each scenario's run ends with (so the comparison above compares something)."""
    outcomes = {}
    for scenario in SCENARIOS:
        _COMPENSATED.clear()
        _, (status, value, error), _ = await _run(scenario, fast=True, history=False, monkeypatch=monkeypatch)
        outcomes[scenario] = (status, value, error, list(_COMPENSATED))
    one = {"n": 1, "pair": [1, 2]}
    assert outcomes["plain"] == ("completed", [one, "naïve ✓", [one, "naïve ✓"], "list"], None, [])
    assert outcomes["retried"] == outcomes["retried-at-once"] == ("completed", ["ok", 2], None, [])
    assert outcomes["gathered"] == ("completed", [0, 1, 2, 3], None, [])
    assert outcomes["crashed"] == ("completed", ["one", "two", "three"], None, [])
    assert outcomes["past-deadline"] == (
        "failed", None, "step 'never' failed: the workflow ran past its timeout", [[]]
    )  # fmt: skip
    assert outcomes["failing"] == outcomes["in-doubt"] == ("failed", None, "step 'refused' failed: no", [[]])
    for failed in ("too-large", "unserializable"):
        assert outcomes[failed][0] == "failed", failed
        assert f"output of step {outcomes[failed][2].split(chr(39))[1]!r}" in outcomes[failed][2]
