"""The ``set_state`` operation: journal it and write the value in one commit (see
``engine._live_state``)."""

from __future__ import annotations

from .. import _journal as jn
from .. import _live_state as live
from ._run import PhaseRun


async def run_set_state(run: PhaseRun, op: int, key: str, text: str) -> None:
    run.enter(op, key)
    try:
        if run.replayed(op, "state", key) is not None:
            return  # written by the first run; replay never rewrites it
        run.check_continue(key)
        execution = run.execution
        now = execution.now()
        phase = "main" if run.prefix == jn.MAIN else "compensation"
        value = live.encode(key, op, phase, text, now)
        record = {"op": op, "kind": "state", "name": key, "status": "completed", "started_at": now}
        entry_key, entry_text = run.record(op, {**record, "finished_at": now})
        await execution.write({entry_key: entry_text, live.record_key(key): value})
    finally:
        run.leave(op)
