"""Regression tests for engine bugs found by the fault matrix, the SIGKILL loop and fuzzing."""

from __future__ import annotations

import asyncio
from typing import Any

from workkit_workflow import Workflow
from workkit_workflow.engine._ports import WireRequest
from workkit_workflow.local import LocalNamespace, VirtualClock
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


async def test_two_virtual_clocks_on_one_loop_both_advance() -> None:
    first, second = VirtualClock(), VirtualClock()
    await first.sleep(1.0)
    done = asyncio.ensure_future(second.sleep(1.0))
    await asyncio.wait({done}, timeout=0.5)
    assert done.done(), "the second clock never advanced"


class FlakyCommit:
    """Wraps a backend; its commits fail while `failing` is set."""

    def __init__(self, ns: LocalNamespace) -> None:
        self.failing = False
        self._commit = ns.backend.commit
        ns.backend.commit = self.commit  # type: ignore[method-assign]

    def commit(self, *args: Any) -> None:
        if self.failing:
            raise OSError("disk I/O error")
        self._commit(*args)


async def test_a_failed_write_in_a_request_is_a_clean_503_and_a_retry_works() -> None:
    env = WorkflowTestEnv()
    flow = Workflow(unique("flaky-disk")).step("a", lambda i, p, c: 1)
    flaky = FlakyCommit(env.ns)
    try:
        flaky.failing = True
        body = {"workflow": flow.name, "input": {}, "execution_id": "disk", "wait": True}
        response = await env.ns.request("disk", "POST", "/execute", body)
        assert response.status == 503 and response.body["error"]["code"] == "storage_unavailable"
        assert env.ns.backend.list("disk", None, None, None, None, False) == {}
        flaky.failing = False
        handle = await env.run(flow, {}, execution_id="disk")
        assert (await env.result(handle)).ok
    finally:
        await env.close()


async def test_a_failed_cancel_write_leaves_state_as_stored() -> None:
    env = WorkflowTestEnv()
    flow = Workflow(unique("flaky-cancel")).sleep("nap", "1h").step("a", lambda i, p, c: 1)
    flaky = FlakyCommit(env.ns)
    try:
        handle = await env.run(flow, {})
        flaky.failing = True
        response = await env.ns.request(handle.execution_id, "POST", "/cancel", {})
        assert response.status == 503
        flaky.failing = False
        assert await handle.status() == "sleeping"  # the cached state did not drift
        assert (await env.result(handle)).ok
    finally:
        await env.close()


async def test_hostile_restart_entries_are_rejected() -> None:
    Workflow("restart-target").step("a", lambda i, p, c: 1)
    async with LocalNamespace() as ns:
        for entries in (
            [{}],
            [{"op": "first"}],
            [{"op": 0, "kind": None, "name": None, "status": None, "v": None}],
        ):
            body = {
                "workflow": "restart-target",
                "execution_id": "r",
                "restart": {"execution_id": "old", "from_step": "a", "entries": entries},
            }
            import json

            response = await ns.fetch("r", WireRequest("POST", "/execute", body=json.dumps(body).encode()))
            assert response.status == 400, response.body
            assert ns.backend.list("r", None, None, None, None, False) == {}
