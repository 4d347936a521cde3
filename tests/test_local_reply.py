"""A request to a local object: the caller waits on a reply, the object's handler
runs as the object's own task (as on Cloudflare, a caller that gives up does not
stop the object; an object that dies answers its callers with a transport error)."""

from __future__ import annotations

import asyncio

import pytest

from workkit_workflow import Workflow, create_durable_workflow
from workkit_workflow.errors import TransportError
from workkit_workflow.local import LocalNamespace

from conftest import unique


async def test_a_caller_that_gives_up_leaves_the_handler_running() -> None:
    gate = asyncio.Event()
    ran: list[str] = []

    async def slow(input: object, prev: object, ctx: object) -> str:
        await gate.wait()
        ran.append("slow")
        return "done"

    flow = Workflow(unique("reply")).step("slow", slow)
    ns = LocalNamespace(deliver_alarms=False)
    client = create_durable_workflow(ns)
    try:
        caller = asyncio.ensure_future(client.run(flow, {}, execution_id="r-1"))
        for _ in range(20):
            await asyncio.sleep(0)
        host = ns._live["r-1"]
        assert any(not task.done() for task in host.tasks)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert host.busy() and host.alive
        gate.set()
        await ns.idle(5.0)
        assert ran == ["slow"]
        result = await client.execution("r-1").result(timeout=0)
        assert result.ok and result.value == "done"
        assert not host.tasks  # the reaper took the handler's task and its reply
    finally:
        await ns.close()


async def test_callers_of_an_evicted_object_get_a_transport_error() -> None:
    gate = asyncio.Event()

    async def stuck(input: object, prev: object, ctx: object) -> None:
        await gate.wait()

    flow = Workflow(unique("reply")).step("stuck", stuck)
    ns = LocalNamespace(deliver_alarms=False)
    client = create_durable_workflow(ns)
    try:
        caller = asyncio.ensure_future(client.run(flow, {}, execution_id="r-2"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not caller.done()
        ns.evict("r-2")
        with pytest.raises(TransportError, match="reset while serving"):
            await caller
    finally:
        await ns.close()
