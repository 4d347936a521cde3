"""Load: many concurrent requests to one execution object.

* 100 concurrent ``/execute`` calls with the same execution id start exactly one
  execution (one ``created``, one run of every step, one journal);
* ``/status``, ``/journal`` and ``/meta`` answer while a step awaits I/O.

Over both storage backends, with the default interleaving (another request
runs at every storage await) and with chaos interleaving.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from workkit_workflow import WorkflowContext, create_durable_workflow, workflow
from workkit_workflow.local import LocalNamespace

_names = itertools.count()


@pytest_asyncio.fixture(params=["memory-storage", "memory-chaos", "sqlite-storage", "sqlite-chaos"])
async def ns(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LocalNamespace]:
    backend, interleave = request.param.split("-")
    path = None if backend == "memory" else str(tmp_path / "load.db")
    # Durability is not under test here (test_sigkill is): NORMAL keeps fsyncs off the clock.
    namespace = LocalNamespace(path, interleave=interleave, seed=7, synchronous="NORMAL")
    try:
        yield namespace
    finally:
        await namespace.close()


def gated_flow(calls: Counter[str], gate: asyncio.Event) -> Any:
    async def io(name: str) -> dict[str, str]:
        calls[name] += 1
        await gate.wait()  # an outside call in flight
        return {"done": name}

    @workflow(f"load-{next(_names)}")
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        first = await ctx.step("fetch", io, "fetch")
        second = await ctx.step("store", io, "store")
        return [first, second]

    return flow


async def test_100_concurrent_executes_with_one_id_start_one_execution(ns: LocalNamespace) -> None:
    calls: Counter[str] = Counter()
    gate = asyncio.Event()
    flow = gated_flow(calls, gate)
    body = {"workflow": flow.name, "input": {"n": 1}, "execution_id": "same-id"}

    async def execute(i: int) -> Any:
        # Half wait for the execution to finish or park, half return at once.
        return await ns.request("same-id", "POST", "/execute", {**body, "wait": i % 2 == 0})

    requests = [asyncio.ensure_future(execute(i)) for i in range(100)]
    for _ in range(50):
        await asyncio.sleep(0)
    gate.set()
    responses = await asyncio.gather(*requests)

    assert all(r.ok for r in responses), [r.body for r in responses if not r.ok][:3]
    assert [r.body["created"] for r in responses].count(True) == 1
    assert sorted({r.status for r in responses}) == [200, 201]
    result = await create_durable_workflow(ns).execution("same-id").result(timeout=10)
    assert result.ok
    assert result.value == [{"done": "fetch"}, {"done": "store"}]
    assert calls == {"fetch": 1, "store": 1}
    journal = await create_durable_workflow(ns).execution("same-id").journal()
    assert [(e["name"], e["status"], e["attempt"]) for e in journal] == [
        ("fetch", "completed", 1),
        ("store", "completed", 1),
    ]
    assert ns.backend.objects() == ["same-id"]


async def test_status_answers_while_a_step_awaits_io(ns: LocalNamespace) -> None:
    calls: Counter[str] = Counter()
    gate = asyncio.Event()
    flow = gated_flow(calls, gate)
    client = create_durable_workflow(ns)
    # wait=True: this request drives the execution and stays in flight.
    driving = asyncio.ensure_future(client.run(flow, {}, execution_id="busy"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert calls == {"fetch": 1}, "the first step should be awaiting its I/O"

    handle = client.execution("busy")
    for _ in range(10):
        view = await asyncio.wait_for(handle.describe(), timeout=2.0)
        assert view["status"] == "running"
        assert view["running"] == ["fetch"]
        journal = await asyncio.wait_for(handle.journal(), timeout=2.0)
        assert [(e["name"], e["status"]) for e in journal] == [("fetch", "running")]
        meta = await asyncio.wait_for(handle.meta(), timeout=2.0)
        assert meta["status"] == "running"
    assert not driving.done()

    gate.set()
    await asyncio.wait_for(driving, timeout=10.0)
    result = await handle.result(timeout=10)
    assert result.ok
    assert calls == {"fetch": 1, "store": 1}


async def test_many_executions_at_once_each_run_each_step_once(ns: LocalNamespace) -> None:
    calls: Counter[str] = Counter()

    async def step(execution: str, name: str) -> str:
        calls[f"{execution}/{name}"] += 1
        await asyncio.sleep(0)
        return name

    @workflow(f"many-{next(_names)}")
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        return [await ctx.step(f"s{i}", step, input["id"], f"s{i}") for i in range(3)]

    client = create_durable_workflow(ns)
    handles = await asyncio.gather(
        *(client.run(flow, {"id": f"e{i}"}, execution_id=f"e{i}") for i in range(200))
    )
    results = await asyncio.gather(*(h.result(timeout=10) for h in handles))
    assert all(r.ok and r.value == ["s0", "s1", "s2"] for r in results)
    assert len(calls) == 600 and set(calls.values()) == {1}
