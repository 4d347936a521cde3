"""The sleep operation: a durable wait until an instant, journaled as ``sleeping``."""

from __future__ import annotations

from ._run import PhaseRun


async def run_sleep(run: PhaseRun, op: int, name: str, until: float | None, duration: float | None) -> None:
    run.enter(op, name)
    try:
        entry = await run.replayed(op, "sleep", name)
        if entry is not None and entry["status"] == "completed":
            return
        if entry is not None:
            wake_at = float(entry["wake_at"])
        else:
            await run.hold(op)
            run.check_continue(name)
            now = run.execution.now()
            wake_at = until if until is not None else now + (duration or 0.0)
            entry = {
                "op": op,
                "kind": "sleep",
                "name": name,
                "status": "sleeping",
                "started_at": now,
                "wake_at": wake_at,
            }
            key, text = run.record(op, entry)
            if wake_at > now:
                await run.execution.write({key: text})
        await run.wait_until(op, name, wake_at, 0)
        key, text = run.record(op, {**entry, "status": "completed", "finished_at": run.execution.now()})
        run.execution.defer(key, text, name)
    finally:
        run.leave(op)
