"""Every signal, at every await point of a run, a park and a wake-up.

A deterministic sweep instead of sampled timings: the execution is started, the
test lets exactly ``k`` event-loop turns pass (each storage await of the local
runtime is one turn, as on Cloudflare every storage await lets another request
in), then delivers one signal: an event, a cancel, an alarm, an eviction, a
duplicate ``/execute``, an eviction followed by a cancel, a pause (continued once
the test has seen it hold), or a pause and its continue at once. ``k`` runs over every
turn of the start, the run and the park, and again over every turn of the
wake-up that the event causes. After each interleaving the execution must
settle (or have an alarm set while it has work left), every acknowledged
signal must have been acted on, no journaled step may have run again, and no
journal entry may be left running in a settled execution.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import pytest

from workkit_workflow import workflow
from workkit_workflow.errors import ExecutionConflictError, TransportError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

SIGNALS = ("event", "cancel", "alarm", "evict", "execute", "evict+cancel", "pause", "pause+unpause")
UNSETTLED_ENTRY = {"running", "retrying", "sleeping", "waiting"}


class Probe:
    """Side effects by step name, and what compensation was told."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.compensations: list[dict[str, Any]] = []


def make_flow(probe: Probe) -> Any:
    name = unique("park-wake")

    async def effect(step: str) -> str:
        probe.calls[step] += 1
        return f"{step}-done"

    async def undo(ctx: Any) -> None:
        in_doubt = [s.name for s in getattr(ctx, "in_doubt_steps", [])]
        probe.compensations.append(
            {"status": ctx.status, "outputs": dict(ctx.step_outputs), "in_doubt": in_doubt}
        )

    @workflow(name)
    async def flow(ctx: Any, input: Any) -> dict[str, Any]:
        a = await ctx.step("a", effect, "a")
        got = await ctx.wait_for_event("w", "go")
        b = await ctx.step("b", effect, "b")
        return {"a": a, "got": got, "b": b}

    return flow.on_failure(undo)


async def turns(k: int) -> None:
    for _ in range(k):
        await asyncio.sleep(0)


def _core(env: WorkflowTestEnv, execution_id: str) -> Any:
    live = env.ns._live.get(execution_id)
    return None if live is None else live.instance._object.core


async def _signal(env: WorkflowTestEnv, handle: Any, flow: Any, kind: str, acked: dict[str, Any]) -> None:
    """Deliver one signal and record whether it was acknowledged."""
    if kind == "event":
        acked["event"] = await handle.send_event("go", {"n": 1}, event_id="e-1")
    elif kind == "cancel":
        acked["cancel"] = await handle.cancel("test")
    elif kind == "alarm":
        live = env.ns._live.get(handle.execution_id)
        if live is None or live.alarm_task is None or live.alarm_task.done():
            env.ns._fire(handle.execution_id)
    elif kind == "evict":
        env.evict(handle.execution_id)
    elif kind == "execute":
        await env.client.start(flow, {}, execution_id=handle.execution_id)
    elif kind == "evict+cancel":
        env.evict(handle.execution_id)
        acked["cancel"] = await handle.cancel("test")
    elif kind.startswith("pause"):
        # Refused once the execution has finished; otherwise acknowledged.
        with contextlib.suppress(ExecutionConflictError):
            acked["pause"] = await handle.pause()
        if acked.get("pause") and kind == "pause+unpause":
            acked["unpause"] = await handle.unpause()


async def _finish(env: WorkflowTestEnv, handle: Any, acked: dict[str, Any], probe: Probe) -> Any:
    """Let time pass and send the event the workflow waits for, unless it is over."""
    await env.settle()
    status = await handle.status()
    if acked.get("pause") and not acked.get("unpause"):
        # Paused: it stays paused (or settles, if its last step was running) and runs
        # nothing new however long it is left; then it continues.
        calls = Counter(probe.calls)
        await env.settle()
        status = await handle.status()
        assert status in ("paused", "completed", "cancelled", "failed"), f"paused execution is {status}"
        assert probe.calls == calls, "a step ran while paused"
        if status == "paused":
            acked["unpause"] = await handle.unpause()
            await env.settle()
            status = await handle.status()
    if status not in ("cancelled", "failed", "completed") and not acked.get("event"):
        # Same id: a duplicate of an event already stored is answered accepted=False,
        # and either way the event is stored now.
        await handle.send_event("go", {"n": 1}, event_id="e-1")
        acked["event"] = True
    return await env.result(handle, timeout=3600.0)


def _check(
    where: str, result: Any, journal: list[dict[str, Any]], probe: Probe, acked: dict[str, Any], evicted: bool
) -> None:
    assert result.settled if hasattr(result, "settled") else True, where
    stuck = [e for e in journal if e.get("status") in UNSETTLED_ENTRY]
    assert not stuck, f"{where}: settled with entries left unsettled: {stuck}"
    by_name = {e["name"]: e for e in journal if e.get("phase") == "main"}
    for step in ("a", "b"):
        entry = by_name.get(step)
        runs = probe.calls[step]
        if entry is None:
            assert runs == 0, f"{where}: step {step} ran {runs}x without a journal entry"
            continue
        # A lost attempt (the object died mid-step) may run again; nothing else does.
        limit = int(entry.get("attempt", 0)) if evicted else min(1, int(entry.get("attempt", 0)))
        assert runs <= max(limit, 0), f"{where}: step {step} ran {runs}x, journal says {entry}"
    if acked.get("cancel"):
        assert result.status == "cancelled", f"{where}: acknowledged cancel ignored: {result.status}"
        assert len(probe.compensations) == 1, f"{where}: compensation ran {probe.compensations}"
        seen = probe.compensations[0]
        in_doubt = {e["name"] for e in journal if e.get("status") == "in_doubt"}
        assert set(seen["in_doubt"]) == in_doubt, f"{where}: compensation not told of {in_doubt}: {seen}"
    else:
        # The payload in the result proves the event was acted on (it may have been
        # stored by a request whose answer an eviction cut off: not acknowledged, still fine).
        assert result.ok, f"{where}: {result.status} {result.error}"
        assert result.value == {"a": "a-done", "got": {"n": 1}, "b": "b-done"}, where
        assert probe.compensations == [], where


async def _baseline_turns(env: WorkflowTestEnv, flow: Any, *, wake: bool) -> int:
    """How many loop turns the start (and park), or the wake-up, takes here."""
    handle = await env.start(flow, {})
    count = 0
    if wake:
        while (await handle.status()) != "waiting":
            await asyncio.sleep(0)
        await env.settle()
        asyncio.ensure_future(handle.send_event("go", {"n": 1}))  # noqa: RUF006 - counted in turns
    for count in range(1, 500):  # noqa: B007 - the count is the answer
        await asyncio.sleep(0)
        core = _core(env, handle.execution_id)
        quiet = core is not None and not core.runner.active and core._state is not None
        if quiet and core._state["status"] in (("completed",) if wake else ("waiting", "completed")):
            break
    return count + 4


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("phase", ["start-and-park", "wake-up"])
async def test_every_signal_at_every_turn(backend: str, phase: str, tmp_path: Any) -> None:
    wake = phase == "wake-up"
    probe_env = WorkflowTestEnv(path=None if backend == "memory" else str(tmp_path / "probe.db"))
    try:
        horizon = await _baseline_turns(probe_env, make_flow(Probe()), wake=wake)
    finally:
        await probe_env.close()
    failures: list[str] = []
    checked = 0
    for kind in SIGNALS:
        if wake and kind == "event":
            continue  # the wake-up is the event; a second one is a duplicate id
        for k in range(horizon):
            path = None if backend == "memory" else str(tmp_path / f"{kind}-{k}.db")
            env = WorkflowTestEnv(path=path)
            probe = Probe()
            flow = make_flow(probe)
            acked: dict[str, Any] = {}
            where = f"{backend} {phase} {kind} at turn {k}"
            try:
                handle = await env.start(flow, {})
                wake_event = None
                if wake:
                    while (await handle.status()) != "waiting":
                        await asyncio.sleep(0)
                    await env.settle()
                    # The wake-up starts with the event's own request, still in flight.
                    wake_event = asyncio.ensure_future(handle.send_event("go", {"n": 1}, event_id="e-1"))
                await turns(k)
                await _signal(env, handle, flow, kind, acked)
                if wake_event is not None:
                    # Refused (a cancel came first) or reset under the request: not
                    # acknowledged, and _finish sends it again if the execution still waits.
                    with contextlib.suppress(TransportError, ExecutionConflictError):
                        acked["event"] = await wake_event
                result = await _finish(env, handle, acked, probe)
                journal = await handle.journal()
                _check(where, result, journal, probe, acked, evicted="evict" in kind)
                checked += 1
            except AssertionError as exc:
                message = str(exc).splitlines()[0]
                failures.append(message if message.startswith(where) else f"{where}: {message}")
            finally:
                await env.close()
    assert not failures, f"{len(failures)} of {checked + len(failures)} interleavings failed:\n" + "\n".join(
        failures[:40]
    )
