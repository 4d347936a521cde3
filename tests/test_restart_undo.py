"""Restart and undo handlers: a restarted execution undoes the steps it carried over
with the idempotency keys they ran with in the source. Over both local storages."""

from __future__ import annotations

from typing import Any

import pytest

from workkit_workflow import NonRetryableError, StepUndo, current_step, workflow
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

EFFECTS: list[tuple[str, str | None]] = []
"""Each step attempt that reached the outside world: (step, its idempotency key)."""
UNDONE: list[tuple[str, str | None]] = []
"""Each undo that reached the outside world: (step, the idempotency key it was given)."""
SHIP_BROKEN = {"broken": True}


@pytest.fixture(autouse=True)
def _reset() -> None:
    EFFECTS.clear()
    UNDONE.clear()
    SHIP_BROKEN["broken"] = True


def act(name: str) -> dict[str, str]:
    step = current_step()
    EFFECTS.append((name, step.idempotency_key if step else None))
    return {"did": name}


def undo(info: StepUndo) -> None:
    UNDONE.append((info.step, info.idempotency_key))


def ship() -> str:
    if SHIP_BROKEN["broken"]:
        raise NonRetryableError("bug in ship")
    return "shipped"


@workflow(unique("restart-undo"))
async def checkout(ctx: Any, input: Any) -> Any:
    await ctx.step("reserve", act, "reserve", undo=undo)
    await ctx.step("charge", act, "charge", undo=undo, idempotency_key=f"charge:{input['order']}")
    await ctx.sleep("cool-off", "1m")
    return await ctx.step("ship", ship)


async def test_carried_steps_are_undone_with_the_keys_they_ran_with(env: WorkflowTestEnv) -> None:
    source = await env.run(checkout, {"order": "o-1"})
    assert await source.status() == "sleeping"
    assert await source.cancel("hold it", compensate=False)  # terminated: nothing undone
    assert (await env.result(source)).status == "cancelled" and not UNDONE
    restarted = await env.client.restart(source.execution_id, from_step="cool-off", kind="sleep")
    result = await env.result(restarted)
    assert result.error is not None and result.error.compensation is not None
    assert result.error.compensation["status"] == "completed"
    ran = dict(EFFECTS)
    assert ran == {"reserve": f"{source.execution_id}:j:0:reserve", "charge": "charge:o-1"}
    # The undos of the steps the restart carried get the keys those steps ran with.
    assert list(UNDONE) == [("charge", ran["charge"]), ("reserve", ran["reserve"])]
    # The journal views still leave the undo's key out.
    for entry in await restarted.journal():
        assert "key" not in (entry.get("undo") or {})
