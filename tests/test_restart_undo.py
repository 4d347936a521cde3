"""Restart and undo handlers: a restarted execution undoes the steps it carried over
with the idempotency keys they ran with in the source, and never undoes a second time
a step the source's compensation already undid (such a step is not carried over: it
runs again, and its new effect is undone once). Over both local storages."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from workkit_workflow import NonRetryableError, StepUndo, current_step, workflow
from workkit_workflow.client._restart import restart_records
from workkit_workflow.errors import ExecutionConflictError, InvalidRequestError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

EFFECTS: list[tuple[str, str | None]] = []
"""Each step attempt that reached the outside world: (step, its idempotency key)."""
UNDONE: list[tuple[str, str | None]] = []
"""Each undo that reached the outside world: (step, the idempotency key it was given)."""
SHIP_BROKEN = {"broken": True}
REFUSED: set[str] = set()
"""Steps whose undo is refused for good (NonRetryableError)."""
HELD: dict[tuple[str, str], asyncio.Event] = {}
"""(execution, step): that undo waits on this event before it acts."""


@pytest.fixture(autouse=True)
def _reset() -> None:
    EFFECTS.clear()
    UNDONE.clear()
    SHIP_BROKEN["broken"] = True
    REFUSED.clear()
    HELD.clear()


def act(name: str) -> dict[str, str]:
    step = current_step()
    EFFECTS.append((name, step.idempotency_key if step else None))
    return {"did": name}


async def undo(info: StepUndo) -> None:
    held = HELD.get((info.execution_id, info.step))
    if held is not None:
        await held.wait()
    if info.step in REFUSED:
        raise NonRetryableError(f"the undo of {info.step} is refused")
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


async def test_a_step_the_source_undid_is_never_undone_twice(env: WorkflowTestEnv) -> None:
    source = await env.run(checkout, {"order": "o-2"})
    failed = await env.result(source)
    assert failed.error is not None and failed.error.compensation is not None
    assert failed.error.compensation["status"] == "completed"
    assert Counter(UNDONE) == Counter(EFFECTS)  # the source undid both its steps
    # Carrying 'reserve' and 'charge' over would keep effects that were undone (and the
    # restart's compensation would undo them a second time): refused, naming where to cut.
    with pytest.raises(InvalidRequestError, match="step 'reserve' was undone") as refused:
        await env.client.restart(source.execution_id, from_step="ship")
    assert refused.value.details["undone"] == {"from_step": "reserve", "kind": "step", "occurrence": 1}
    # From the first undone step on, both run again (charge's recorded result is not
    # reused: its effect was undone), and each effect is undone once, with its own key.
    restarted = await env.client.restart(source.execution_id, from_step="reserve")
    assert not (await env.result(restarted)).ok
    assert [step for step, _ in EFFECTS] == ["reserve", "charge", "reserve", "charge"]
    assert Counter(UNDONE) == Counter(EFFECTS)


async def test_a_step_whose_undo_failed_in_the_source_is_carried_and_undone(env: WorkflowTestEnv) -> None:
    REFUSED.add("reserve")
    source = await env.run(checkout, {"order": "o-3"})
    failed = await env.result(source)
    assert failed.error is not None and failed.error.compensation is not None
    assert failed.error.compensation["status"] == "failed"
    assert list(UNDONE) == [("charge", "charge:o-3")]
    REFUSED.clear()  # the refund API takes it now
    # 'reserve' is still in effect (its undo failed): carried; 'charge' was undone: it runs again.
    restarted = await env.client.restart(source.execution_id, from_step="charge")
    assert not (await env.result(restarted)).ok
    reserve_key = f"{source.execution_id}:j:0:reserve"
    assert list(EFFECTS) == [("reserve", reserve_key), ("charge", "charge:o-3"), ("charge", "charge:o-3")]
    assert list(UNDONE) == [("charge", "charge:o-3"), ("charge", "charge:o-3"), ("reserve", reserve_key)]


async def test_a_restart_waits_for_the_sources_compensation_to_end(env: WorkflowTestEnv) -> None:
    held = HELD[("source-4", "reserve")] = asyncio.Event()
    source = await env.run(checkout, {"order": "o-4"}, execution_id="source-4")
    await env.clock.sleep(60)  # the sleep ends; ship fails; the undo of reserve waits
    await env.settle()
    described = await source.describe()
    assert described["compensation"]["status"] == "running"
    # Whether 'reserve' ends undone is not known yet: which steps to carry neither.
    with pytest.raises(ExecutionConflictError, match="compensation"):
        await env.client.restart(source.execution_id, from_step="ship")
    held.set()
    assert (await env.result(source)).error is not None
    restarted = await env.client.restart(source.execution_id, from_step="reserve")
    assert not (await env.result(restarted)).ok
    assert Counter(UNDONE) == Counter(EFFECTS)


async def test_a_restart_asked_again_after_its_source_began_compensating_is_the_same_restart(
    env: WorkflowTestEnv,
) -> None:
    held = HELD[("source-5", "reserve")] = asyncio.Event()
    source = await env.run(checkout, {"order": "o-5"}, execution_id="source-5")
    assert await source.status() == "sleeping"
    first = await env.client.restart(
        source.execution_id, from_step="cool-off", kind="sleep", new_execution_id="again-5"
    )
    assert first.created
    # Its answer was lost; meanwhile the source woke, failed and began compensating.
    await env.clock.sleep(60)
    await env.settle()
    assert (await source.describe())["compensation"]["status"] == "running"
    again = await env.client.restart(
        source.execution_id, from_step="cool-off", kind="sleep", new_execution_id="again-5"
    )
    assert again.execution_id == "again-5" and not again.created
    with pytest.raises(ExecutionConflictError, match="compensation"):  # a new restart waits
        await env.client.restart(
            source.execution_id, from_step="cool-off", kind="sleep", new_execution_id="other-5"
        )
    held.set()
    assert (await env.result(source)).error is not None
    # Compensated now (both steps undone): the same request still names the restart made...
    again = await env.client.restart(
        source.execution_id, from_step="cool-off", kind="sleep", new_execution_id="again-5"
    )
    assert again.execution_id == "again-5" and not again.created
    # ...while one that cut elsewhere under that id is refused for what it is.
    with pytest.raises(InvalidRequestError, match="was undone"):
        await env.client.restart(source.execution_id, from_step="ship", new_execution_id="again-5")


def _journal(undo_status: str) -> list[dict[str, Any]]:
    """Two steps named 'charge' then a failed 'ship'; the later charge's undo ran first."""
    undo_record = {"ref": "shop:refund", "key": "k"}
    main = [
        {"op": op, "kind": "step", "name": "charge", "status": "completed", "started_at": float(op)}
        | {"undo": undo_record, "idempotency_hash": f"h{op}", "phase": "main"}
        for op in (0, 1)
    ]
    main.append({"op": 2, "kind": "step", "name": "ship", "status": "failed", "phase": "main"})
    compensation = [
        {"op": 0, "kind": "step", "name": "undo:charge", "status": undo_status, "phase": "compensation"},
        {"op": 1, "kind": "step", "name": "undo:charge", "status": "failed", "phase": "compensation"},
    ]
    return main + compensation


@pytest.mark.parametrize("undo_status", ["completed", "in_doubt"])
def test_restart_records_leave_out_what_the_source_undid(undo_status: str) -> None:
    journal = _journal(undo_status)
    with pytest.raises(InvalidRequestError, match=r"restart from step 'charge' \(occurrence 2\)") as refused:
        restart_records(journal, "ship", "step", 1)
    assert refused.value.details["undone"] == {"from_step": "charge", "kind": "step", "occurrence": 2}
    kept, idempotent = restart_records(journal, "charge", "step", 2)
    assert [e["op"] for e in kept] == [0] and kept[0]["undo"]["key"] == "k" and "phase" not in kept[0]
    assert idempotent == []  # the second charge was undone: it runs again
    kept, idempotent = restart_records(journal, "charge", "step", 1)
    assert kept == [] and [r["idempotency_hash"] for r in idempotent] == ["h0"]  # its undo failed
