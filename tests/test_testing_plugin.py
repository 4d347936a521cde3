"""The pytest plugin users get (``workflow_env``, ``workflow_env_factory``), used as the README shows."""

from __future__ import annotations

from typing import Any

from workkit_workflow import workflow
from workkit_workflow.testing import FaultPlan, WorkflowTestEnv, step_names

from conftest import Effects, make_order_flow, unique


async def test_order_flow_survives_a_crash_after_charging(workflow_env: WorkflowTestEnv) -> None:
    effects = Effects()
    order_flow = make_order_flow(effects)
    workflow_env.faults.crash_at("after_side_effect", step="charge-card")
    handle = await workflow_env.start(order_flow, {"order_id": "o-1"})
    result = await workflow_env.result(handle)
    assert result.ok
    assert step_names(await handle.journal(), status="completed") == [
        "reserve-inventory",
        "charge-card",
        "ship",
    ]
    assert workflow_env.faults.crashes == [
        (handle.execution_id, "after_side_effect", {"step": "charge-card", "attempt": 1})
    ]


@workflow(unique("plugin-approval"), timeout="7d")
async def approval(ctx: Any, input: Any) -> Any:
    await ctx.sleep("cool-down", "3d")
    decision = await ctx.wait_for_event("manager", "approved", timeout="2d")
    return decision["by"]


async def test_a_week_of_sleeping_and_waiting_in_virtual_time(workflow_env: WorkflowTestEnv) -> None:
    handle = await workflow_env.run(approval, {})
    assert await handle.status() == "sleeping"
    await workflow_env.send_event(handle.execution_id, "approved", {"by": "ana"})  # kept in the inbox
    result = await workflow_env.result(handle)
    assert result.ok and result.value == "ana"
    elapsed = workflow_env.clock.now() - (await handle.meta())["created_at"]
    assert 3 * 86400 <= elapsed < 3 * 86400 + 60


async def test_the_factory_builds_sqlite_and_chaos_environments(
    workflow_env_factory: Any, tmp_path: Any
) -> None:
    env = workflow_env_factory(path=str(tmp_path / "w.db"), interleave="chaos", seed=3)
    effects = Effects()
    handle = await env.run(make_order_flow(effects, charge_failures=2), {"order_id": "f"})
    await env.restart()  # the SQLite file is reopened: pending alarms carry on
    result = await env.result(handle)
    assert result.ok and effects.calls["charge"] == 3


def test_fault_plans_refuse_unknown_points() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown fault point"):
        FaultPlan().crash_at("in_the_middle")


async def test_a_handle_from_before_a_restart_keeps_working(env: WorkflowTestEnv) -> None:
    """On SQLite, ``restart()`` opens a new namespace on the file: the env's handles (and its
    client) go to whichever namespace is current, not the closed one they were made with."""
    handle = await env.run(approval, {})
    client, looked_up = env.client, env.client.execution(handle.execution_id)
    assert await handle.status() == "sleeping"
    await env.restart()
    assert await handle.status() == "sleeping" and await looked_up.status() == "sleeping"
    assert [e["name"] for e in await handle.journal()] == ["cool-down"]
    assert await handle.send_event("approved", {"by": "bo"})
    result = await env.result(handle)
    assert result.ok and result.value == "bo"
    assert (await looked_up.result(timeout=0)).value == "bo"
    again = await client.run(approval, {}, execution_id=handle.execution_id)
    assert again.created is False and (await env.result(again)).value == "bo"
