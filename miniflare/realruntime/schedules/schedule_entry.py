"""Test Worker for tests/test_realruntime_schedules.py: the example Worker as shipped
(its ``Default`` with the ``scheduled`` handler, its ``WorkflowExecutionDO``), plus a
schedule of the example's order workflow and a workflow with a concurrency limit."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import app
import order_flow  # noqa: F401  (registers "order")
from entry import Default, WorkflowExecutionDO

from workkit_workflow import Limit, Schedule, Workflow, create_durable_workflow

__all__ = ["Default", "WorkflowExecutionDO"]


def _order_for(tick: Any) -> dict[str, Any]:
    stamp = tick.strftime("%Y%m%d%H%M")
    return {"order_id": f"tick-{stamp}", "amount": 10, "items": [{"sku": "sku-1", "quantity": 1}]}


Schedule("rt-orders", cron="*/5 * * * *", workflow="order", input=_order_for, catch_up="all")


async def _hold(input: Any, prev: Any, ctx: Any) -> int:
    return int(input["i"])


limited = (
    Workflow("rt-limited", concurrency=Limit(key="account", max=1))
    .step("first", _hold)
    .sleep("hold", 1.0)
    .step("second", _hold)
)


async def _test_routes(wire: Any, env: Any) -> tuple[int, Any]:
    """``POST /limited/<id>?account=&i=`` starts an execution of ``rt-limited``;
    ``GET /describe/<id>`` is its full status view; ``GET|POST /coordinator/<name>``
    reaches a coordinator's ``/limit``; anything else is the example's API."""
    parts = wire.path.strip("/").split("/")
    if len(parts) != 2 or parts[0] not in ("limited", "describe", "coordinator"):
        return await _example_handle(wire, env)
    client = create_durable_workflow(env.WORKFLOW_DO)
    if parts[0] == "coordinator":  # a coordinator's record, or a raw acquire/release on it
        body = json.loads(wire.body) if wire.body else None
        answer = await client.namespace.request(unquote(parts[1]), wire.method, "/limit", body)
        return answer.status, answer.body
    if parts[0] == "limited":
        input = {"account": wire.query["account"], "i": int(wire.query["i"])}
        handle = await client.run(limited, input, execution_id=unquote(parts[1]))
    else:
        handle = client.execution(unquote(parts[1]))
    return 200, {"execution": await handle.describe()}


# The example's Default is exported unchanged (its ``scheduled`` handler is what is
# under test); the extra routes join through the app module it serves from. (Observed
# with a subclass of it as the entry point instead: every Durable Object stub's fetch
# raised TypeError inside the newest runtime's SDK, workers/_workers.py.)
_example_handle = app.handle
app.handle = _test_routes
