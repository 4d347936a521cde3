"""The wait-for-event operation: consume an event of its type from the inbox, or
park until one arrives or its timeout passes (then its default, or a failure)."""

from __future__ import annotations

from typing import Any

from ...definitions._steps import MISSING
from ...definitions._values import to_data
from ...errors import WaitTimeoutError
from .. import _journal as jn
from ._run import PhaseRun

_PENDING: Any = object()
"""The wait is not over: park."""


async def run_wait(
    run: PhaseRun, op: int, name: str, event_type: str, timeout: float | None, default: Any
) -> Any:
    run.enter(op, name)
    try:
        entry = await run.replayed(op, "wait", name)
        if entry is not None and entry["status"] == "completed":
            return entry.get("output")
        if entry is not None and entry["status"] == "failed":
            raise run.failed(entry)
        if entry is None:
            await run.hold(op)
            entry = await _start(run, op, name, event_type, timeout)
        timeout_at = entry.get("wake_at")
        while True:
            await run.hold(op)
            run.check_continue(name)
            result = await _try_to_finish(run, op, name, event_type, entry, default)
            if result is not _PENDING:
                return result
            wake = timeout_at
            if run.deadline is not None:
                wake = run.deadline if wake is None else min(wake, run.deadline)
            await run.park(op, wake_at=wake, event_type=event_type)
    finally:
        run.leave(op)


async def _start(run: PhaseRun, op: int, name: str, event_type: str, timeout: float | None) -> dict[str, Any]:
    run.check_continue(name)
    now = run.execution.now()
    entry = {
        "op": op,
        "kind": "wait",
        "name": name,
        "status": "waiting",
        "event_type": event_type,
        "started_at": now,
        "wake_at": None if timeout is None else now + timeout,
    }
    key, text = run.record(op, entry)
    await run.execution.write({key: text})
    return entry


async def _try_to_finish(
    run: PhaseRun, op: int, name: str, event_type: str, entry: dict[str, Any], default: Any
) -> Any:
    """The event's payload, the default after the timeout, or ``_PENDING``; raises on a timeout
    without default."""
    execution = run.execution
    event = execution.take_event(event_type)
    if event is not None:
        event_key, event_record = event
        done = {
            **entry,
            "status": "completed",
            "finished_at": execution.now(),
            "event_id": event_record.get("id"),
            "output": event_record.get("payload"),
        }
        key, text = run.record(op, done)
        await execution.write({key: text}, deletes=[event_key])
        return done["output"]
    now = execution.now()
    timeout_at = entry.get("wake_at")
    if timeout_at is None or now < timeout_at:
        return _PENDING
    if default is not MISSING:
        data = to_data(default)
        done = {**entry, "status": "completed", "finished_at": now, "output": data, "timed_out": True}
        key, text = run.record(op, done)
        execution.defer(key, text, name)
        return data
    error = dict(
        jn.serialize_error(
            WaitTimeoutError(f"no {event_type!r} event arrived before the wait's timeout"),
            attempt=1,
            started_at=entry.get("started_at"),
            finished_at=now,
            retryable=False,
        )
    )
    raise await run.fail(op, {**entry, "attempt": 1}, error)
