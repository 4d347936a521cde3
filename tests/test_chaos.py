"""Random interleaving at storage awaits, with concurrent requests hitting the object."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from workkit_workflow import Workflow
from workkit_workflow.errors import ExecutionConflictError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import Effects, make_order_flow, unique


@pytest.mark.parametrize("seed", range(12))
async def test_concurrent_requests_under_chaotic_interleaving(seed: int) -> None:
    env = WorkflowTestEnv(interleave="chaos", seed=seed)
    effects = Effects()
    flow = make_order_flow(effects, charge_failures=1)
    try:
        handles = await asyncio.gather(
            *(env.start(flow, {"order_id": "c"}, execution_id="chaos") for _ in range(5)),
            *(env.client.execution("chaos").describe() for _ in range(3)),
            return_exceptions=True,
        )
        assert sum(1 for h in handles[:5] if getattr(h, "created", False)) == 1
        result = await env.result(env.client.execution("chaos"))
        assert result.ok
        assert effects.calls == {"reserve": 1, "charge": 2, "ship": 1}
    finally:
        await env.close()


@pytest.mark.parametrize("seed", range(12))
async def test_events_and_cancel_race_a_waiting_execution(seed: int) -> None:
    env = WorkflowTestEnv(interleave="chaos", seed=seed)
    compensated: list[str] = []
    flow = (
        Workflow(unique("race"))
        .step("a", lambda i, p, c: "a")
        .wait_for_event("go", "go", timeout="1h")
        .step("b", lambda i, p, c: p)
        .on_failure(lambda ctx: compensated.append(ctx.status))
    )
    try:
        handle = await env.run(flow, {})

        async def event(n: int) -> Any:
            try:
                return await handle.send_event("go", {"n": n}, event_id=f"e{n % 2}")
            except ExecutionConflictError:
                return "refused"

        outcomes = await asyncio.gather(
            *(event(n) for n in range(4)), handle.cancel(), return_exceptions=True
        )
        assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
        result = await env.result(handle)
        # Either an event won (completed) or the cancel did (compensated once).
        if result.ok:
            assert result.value in ({"n": 0}, {"n": 1}, {"n": 2}, {"n": 3})
            assert compensated == []
        else:
            assert result.status == "cancelled" and compensated == ["cancelled"]
    finally:
        await env.close()
