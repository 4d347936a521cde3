"""The durable "last tick" of one schedule, kept in its own object
(``schedule:<name>``, same namespace and class as the executions).

Whoever fires the schedule (the Worker's scheduled handler, the local
scheduler) reads the record, starts the due ticks' executions (idempotent by
id), and only then advances the record. A crash in between leaves the record
behind, so the next trigger computes the same ticks again and ``/execute``
starts each once. The record only moves forward: two triggers racing cannot
move it back.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from ..errors import InvalidRequestError
from ._ports import Storage

KEY = "schedule"
VERSION = 1


class ScheduleRecord:
    """Reads and advances the record in one object's storage."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = asyncio.Lock()

    async def read(self) -> dict[str, Any]:
        raw = await self.storage.get(KEY)
        if raw is None:
            return {"last_tick": None, "fired": 0}
        record: dict[str, Any] = json.loads(raw)
        return {"last_tick": record.get("last_tick"), "fired": record.get("fired", 0)}

    async def advance(self, body: bytes, now: float) -> tuple[dict[str, Any], bool]:
        """Move ``last_tick`` forward to ``advance_to`` (never back); returns the record
        and whether it moved."""
        tick, started = _parse(body)
        # Another request may run at each storage await: read and write under one lock.
        async with self._lock:
            record = await self.read()
            last = record["last_tick"]
            if last is not None and tick <= last:
                return record, False
            new = {
                "v": VERSION,
                "last_tick": tick,
                "fired": int(record["fired"]) + started,
                "updated_at": now,
            }
            await self.storage.commit({KEY: json.dumps(new, separators=(",", ":"))})
            return {"last_tick": tick, "fired": new["fired"]}, True


def _parse(body: bytes) -> tuple[float, int]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise InvalidRequestError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the body must be a JSON object")
    tick = data.get("advance_to")
    if isinstance(tick, bool) or not isinstance(tick, (int, float)) or not math.isfinite(tick) or tick < 0:
        raise InvalidRequestError("advance_to must be a tick time in epoch seconds", advance_to=tick)
    started = data.get("started", 0)
    if isinstance(started, bool) or not isinstance(started, int) or not 0 <= started <= 100_000:
        raise InvalidRequestError("started must be a count of executions", started=started)
    return float(tick), started
