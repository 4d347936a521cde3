"""What an execution keeps in memory while it is in flight, counted: every object the
garbage collector tracks is walked by each full collection, so at thousands of executions
in flight each one kept per execution costs CPU (issue #16, the flatness of CPU per
execution from 10 to 5,000). Counts, not times: the same run after run on one Python."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from bench import _engine

from workkit_workflow import workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine._state import decode_state
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

OBJECTS_PER_EXECUTION = 42
"""The gc-tracked objects per execution in flight, at most: 41.2 in the landing run here
(1,000 executions, the caller's task and coroutines included; the bench counts 39.2 outside
pytest). It was 53 before the state, the journal window and the driver's pieces stopped
holding objects of their own, the local host became its object's live record and the
execution's core its requests' handler, and 43.2 before the object's ``fetch`` returned
the handler's coroutine rather than awaiting it in a frame of its own and the request
stopped being held while its run lasts; a change that adds one to every execution shows
here."""


async def test_an_execution_in_flight_holds_few_objects_the_collector_tracks(tmp_path: Path) -> None:
    per_execution = await _engine.objects_in_flight(str(tmp_path), 1000, 5, "NORMAL")
    assert 20 < per_execution <= OBJECTS_PER_EXECUTION, per_execution


def test_a_state_waiting_for_no_event_decodes_into_a_dict_the_collector_does_not_track() -> None:
    stored = jn.encode_record(
        jn.STATE,
        {"status": "sleeping", "phase": "main", "waiting_for": [], "wake_at": 12.5, "error": None},
        what="state",
    )
    state = decode_state(stored)
    assert not gc.is_tracked(state)
    assert state["waiting_for"] == () and not state["waiting_for"]
    # It encodes as it was stored, and the copies a write makes of it stay untracked.
    assert jn.encode_record(jn.STATE, state, what="state") == stored
    assert not gc.is_tracked({**state, "status": "running", "updated_at": 13.0})


def test_a_state_waiting_for_events_keeps_its_list() -> None:
    stored = jn.encode_record(jn.STATE, {"status": "waiting", "waiting_for": ["go", "stop"]}, what="state")
    state = decode_state(stored)
    assert state["waiting_for"] == ["go", "stop"]
    assert jn.encode_record(jn.STATE, state, what="state") == stored


async def test_the_cached_state_of_a_sleeping_execution_is_not_tracked(workflow_env: WorkflowTestEnv) -> None:
    @workflow(unique("untracked-state"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.step("one", lambda: {"ok": True})
        await ctx.sleep("nap", 60.0)
        return await ctx.step("two", lambda: 2)

    handle = await workflow_env.start(flow, {})
    await workflow_env.ns.idle()
    described = await handle.describe()
    assert described["status"] == "sleeping" and described["waiting_for"] == []
    core = workflow_env.ns._instance(handle.execution_id).instance._object.core
    assert core.execution.state["status"] == "sleeping"
    assert not gc.is_tracked(core.execution.state)
    result = await workflow_env.result(handle)
    assert result.ok and result.value == 2
