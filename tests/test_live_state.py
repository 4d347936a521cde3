"""Live state: ``ctx.set_state`` in the body, ``handle.state()`` from any caller,
while the execution runs, after it settles, and across eviction and replay."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from workkit_workflow import NonRetryableError, workflow
from workkit_workflow.engine._ports import WireRequest
from workkit_workflow.errors import DefinitionError, SerializationError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


async def test_state_is_visible_while_a_step_runs_and_after_settling(env: WorkflowTestEnv) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "done"

    @workflow(unique("live-running"))
    async def flow(ctx: Any, input: Any) -> str:
        await ctx.set_state("progress", {"done": 0, "of": 2})
        result = await ctx.step("slow", slow)
        await ctx.set_state("progress", {"done": 2, "of": 2})
        return str(result)

    handle = await env.start(flow, None)
    while not started.is_set():
        await env.settle()
    assert await handle.state() == {"progress": {"done": 0, "of": 2}}
    assert await handle.state("progress") == {"done": 0, "of": 2}
    assert await handle.state("missing", default="none") == "none"
    release.set()
    result = await env.result(handle)
    assert result.ok
    assert await handle.state() == {"progress": {"done": 2, "of": 2}}
    journal = await handle.journal()
    assert [(e["kind"], e["name"]) for e in journal] == [
        ("state", "progress"),
        ("step", "slow"),
        ("state", "progress"),
    ]


BODY_RUNS = {"n": 0}


@workflow(unique("live-replay"))
async def replayed_flow(ctx: Any, input: Any) -> str:
    BODY_RUNS["n"] += 1
    # Not deterministic on purpose: a replay must not rewrite what the first run stored.
    await ctx.set_state("run", BODY_RUNS["n"])
    await ctx.sleep("nap", 3600)
    await ctx.set_state("after-nap", True)
    return "ok"


async def test_replay_after_eviction_does_not_rewrite_state(env: WorkflowTestEnv) -> None:
    BODY_RUNS["n"] = 0
    handle = await env.run(replayed_flow, None)
    assert await handle.status() == "sleeping"
    assert await handle.state() == {"run": 1}
    await env.restart()
    assert await handle.state() == {"run": 1}  # read from storage by a fresh object
    result = await env.result(handle)
    assert result.ok and BODY_RUNS["n"] >= 2
    assert await handle.state() == {"after-nap": True, "run": 1}
    await env.restart()
    assert await handle.state("run") == 1


async def test_bad_values_and_keys_raise_where_they_are_set(env: WorkflowTestEnv) -> None:
    caught: list[str] = []

    @workflow(unique("live-bad"))
    async def flow(ctx: Any, input: Any) -> str:
        for key, value in (("obj", object()), ("big", "x" * 200_000), ("nan", float("nan"))):
            try:
                await ctx.set_state(key, value)
            except SerializationError as exc:
                caught.append(f"{key}:{exc.code}")
        try:
            await ctx.set_state("", 1)
        except DefinitionError:
            caught.append("empty-key")
        await ctx.set_state("ok", [1, 2])
        return "ok"

    handle = await env.run(flow, None)
    assert (await env.result(handle)).ok
    assert caught == [
        "obj:serialization_error",
        "big:serialization_error",
        "nan:serialization_error",
        "empty-key",
    ]
    assert await handle.state() == {"ok": [1, 2]}
    # Nothing was journaled for the refused values.
    assert [e["name"] for e in await handle.journal()] == ["ok"]


async def test_compensation_can_publish_state_too(env: WorkflowTestEnv) -> None:
    @workflow(unique("live-comp"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.set_state("stage", "charging")
        raise RuntimeError("card declined")

    async def undo(ctx: Any) -> None:
        await ctx.set_state("stage", "refunded")

    flow.on_failure(undo)
    handle = await env.run(flow, None)
    assert not (await env.result(handle)).ok
    assert await handle.state() == {"stage": "refunded"}


async def test_state_route_answers_reads_and_refuses_bad_requests(env: WorkflowTestEnv) -> None:
    @workflow(unique("live-route"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.set_state("k", {"v": 1})

    handle = await env.run(flow, None, execution_id="live-route-1")
    await env.result(handle)
    ok = await env.ns.request("live-route-1", "GET", "/state", None, {"key": "k"})
    assert (ok.status, ok.body) == (200, {"key": "k", "found": True, "value": {"v": 1}})
    bad = await env.ns.request("live-route-1", "GET", "/state", None, {"key": ""})
    assert bad.status == 400 and bad.body["error"]["code"] == "invalid_request"
    wrong = await env.ns.request("live-route-1", "DELETE", "/state", None, None)
    assert wrong.status == 405
    missing = await env.ns.request("no-such-execution", "GET", "/state", None, None)
    assert missing.status == 404
    assert isinstance(WireRequest, type)


@pytest.mark.parametrize("point", ["before_step", "after_journal"])
async def test_state_survives_crashes_around_it(env: WorkflowTestEnv, point: str) -> None:
    @workflow(unique("live-crash"))
    async def flow(ctx: Any, input: Any) -> int:
        await ctx.set_state("phase", "one")
        await ctx.step("work", lambda: 41)
        await ctx.set_state("phase", "two")
        return 42

    env.faults.crash_at(point, step="work")
    handle = await env.start(flow, None)
    result = await env.result(handle)
    assert result.ok and env.faults.crashes
    assert await handle.state() == {"phase": "two"}


async def test_a_restart_from_a_later_step_carries_the_state_over(env: WorkflowTestEnv) -> None:
    SHIP["broken"] = True

    @workflow(unique("live-restart"))
    async def flow(ctx: Any, input: Any) -> str:
        await ctx.set_state("stage", "prepared")
        await ctx.step("prepare", lambda: 1)
        await ctx.step("ship", _ship)
        return "shipped"

    handle = await env.run(flow, None)
    assert not (await env.result(handle)).ok
    SHIP["broken"] = False
    again = await env.client.restart(handle.execution_id, from_step="ship")
    result = await env.result(again)
    assert result.ok
    assert await again.state() == {"stage": "prepared"}
    journal = await again.journal()
    assert journal[0]["kind"] == "state" and journal[0]["restored_from"] == handle.execution_id


SHIP = {"broken": True}


def _ship() -> str:
    if SHIP["broken"]:
        raise NonRetryableError("carrier down")
    return "ok"
