"""The ``set_state`` operation: journal it and write the value in one commit (see
``engine._live_state``)."""

from __future__ import annotations

from .. import _journal as jn
from .. import _live_state as live
from ._run import PhaseRun


async def run_set_state(run: PhaseRun, op: int, key: str, text: str) -> None:
    run.enter(op, key)
    try:
        entry = await run.replayed(op, "state", key)
        if entry is not None and not (entry.get("restored_from") and not entry.get("value_written")):
            return  # written by the first run; replay never rewrites it
        # First run, or an entry a restart carried over: this execution has no value yet.
        await run.hold(op)  # control: no operation starts while paused
        run.check_continue(key)
        execution = run.execution
        now = execution.now()
        phase = jn.phase_of(run.prefix)
        value = live.encode(key, op, phase, text, now)
        if entry is None:
            record = {"op": op, "kind": "state", "name": key, "status": "completed"}
            record.update(started_at=now, finished_at=now)
        else:
            record = {**entry, "value_written": True}
        entry_key, entry_text = run.record(op, record)
        await execution.write({entry_key: entry_text, live.record_key(key): value})
    finally:
        run.leave(op)
