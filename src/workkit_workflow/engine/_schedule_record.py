"""The durable record of one schedule, kept in its own object
(``schedule:<name>``, same namespace and class as the executions).

It says: every tick up to ``last_tick`` has been started, except the ticks in
``owed`` (their start failed; the firings try them again while the catch-up
policy keeps them due, then give them up). Whoever fires the schedule (the
Worker's scheduled handler, the local scheduler) reads it, starts each due tick
(idempotent by id), and records that tick before starting the next: ``POST
/schedule`` with ``advance_to`` (the tick), ``started`` (how many executions it
created), ``owe`` (ticks it passes over without starting them) and ``settle``
(owed ticks no longer owed: started, or given up). A crash in between leaves the
record behind, so the next trigger computes the same tick again and
``/execute`` starts it once.

``last_tick`` only moves forward, so two triggers racing cannot move it back; a
tick is owed only by the request that moves ``last_tick`` past it (a racing
firing that passed it first has started it or owes it already), and settling is
idempotent.

Version 2 adds ``owed``; a version 1 record (``last_tick``, ``fired``) reads as
owing nothing, and a version 1 body (``advance_to``, ``started``) is still taken.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError
from ._ports import Storage

KEY = "schedule"
VERSION = 2

MAX_OWED = 1000
"""The most owed ticks kept (the newest): as many as the largest ``max_catch_up``."""


@dataclass(frozen=True)
class Advance:
    """One validated ``POST /schedule`` body."""

    advance_to: float
    started: int = 0
    owe: tuple[float, ...] = ()
    settle: tuple[float, ...] = ()


class ScheduleRecord:
    """Reads and advances the record in one object's storage."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = asyncio.Lock()

    async def read(self) -> dict[str, Any]:
        raw = await self.storage.get(KEY)
        if raw is None:
            return {"last_tick": None, "fired": 0, "owed": []}
        record: dict[str, Any] = json.loads(raw)
        owed = record.get("owed") or []  # version 1 has none
        return {"last_tick": record.get("last_tick"), "fired": record.get("fired", 0), "owed": owed}

    async def advance(self, body: bytes, now: float) -> tuple[dict[str, Any], bool]:
        """Apply one advance (see the module docstring); returns the record and whether
        ``last_tick`` moved."""
        change = _parse(body)
        # Another request may run at each storage await: read and write under one lock.
        async with self._lock:
            record = await self.read()
            last = record["last_tick"]
            moved = last is None or change.advance_to > last
            owed = set(record["owed"])
            if moved:
                owed.update(t for t in change.owe if (last is None or t > last) and t <= change.advance_to)
            owed.difference_update(change.settle)
            new = {
                "last_tick": change.advance_to if moved else last,
                "fired": int(record["fired"]) + change.started,
                "owed": sorted(owed)[-MAX_OWED:],
            }
            if new == record:
                return record, False
            stored = {"v": VERSION, **new, "updated_at": now}
            await self.storage.commit({KEY: json.dumps(stored, separators=(",", ":"))})
            return new, moved


def _tick(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value >= 0
    )


def _ticks(data: dict[str, Any], key: str) -> tuple[float, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_OWED or not all(_tick(t) for t in value):
        raise InvalidRequestError(f"{key} must be a list of tick times in epoch seconds", **{key: value})
    return tuple(float(t) for t in value)


def _parse(body: bytes) -> Advance:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise InvalidRequestError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the body must be a JSON object")
    tick = data.get("advance_to")
    if not _tick(tick):
        raise InvalidRequestError("advance_to must be a tick time in epoch seconds", advance_to=tick)
    started = data.get("started", 0)
    if isinstance(started, bool) or not isinstance(started, int) or not 0 <= started <= 100_000:
        raise InvalidRequestError("started must be a count of executions", started=started)
    assert isinstance(tick, (int, float))
    return Advance(float(tick), started, _ticks(data, "owe"), _ticks(data, "settle"))
