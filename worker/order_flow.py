"""The example's workflow: an order with a manager's approval above a threshold.

reserve-inventory → charge-card → (approval, if the amount is large) → ship.
A failure, a rejection or a cancellation after charging refunds and releases
(compensation steps, journaled like any other step).
"""

from __future__ import annotations

from typing import Any

from workkit_workflow import NonRetryableError, RetryPolicy, current_step, workflow

APPROVAL_THRESHOLD = 1000.0
"""Orders of this amount or more wait for an ``approval`` event."""


async def reserve_inventory(order: dict[str, Any]) -> dict[str, Any]:
    step = current_step()
    key = step.idempotency_key if step else ""
    return {"reservation_id": f"res-{order['order_id']}", "items": len(order["items"]), "key": key}


async def charge_card(order: dict[str, Any]) -> dict[str, Any]:
    # A real worker would call its payment provider here with
    # workkit_workflow.http.fetch(...), which sends this step's Idempotency-Key.
    return {"transaction_id": f"tx-{order['order_id']}", "amount": order["amount"]}


def ship(order: dict[str, Any], approved_by: str | None) -> dict[str, Any]:
    return {"tracking": f"trk-{order['order_id']}", "approved_by": approved_by}


@workflow("order", retry=RetryPolicy(max_attempts=3, initial_delay=2.0), timeout="7d")
async def order_flow(ctx: Any, order: dict[str, Any]) -> dict[str, Any]:
    reservation = await ctx.step("reserve-inventory", reserve_inventory, order)
    payment = await ctx.step("charge-card", charge_card, order)
    approved_by = None
    if order["amount"] >= APPROVAL_THRESHOLD:
        decision = await ctx.wait_for_event("manager-approval", "approval", timeout="3d")
        if not decision.get("approved"):
            raise NonRetryableError(f"order rejected by {decision.get('by', 'a manager')}")
        approved_by = decision.get("by")
    shipment = await ctx.step("ship", ship, order, approved_by)
    return {**shipment, "reservation": reservation["reservation_id"], "payment": payment["transaction_id"]}


async def undo_order(ctx: Any) -> None:
    if "charge-card" in ctx.step_outputs:
        await ctx.step("refund", lambda: {"refunded": ctx.step_outputs["charge-card"]["transaction_id"]})
    if "reserve-inventory" in ctx.step_outputs:
        await ctx.step("release-inventory", lambda: {"released": True})


order_flow.on_failure(undo_order)
