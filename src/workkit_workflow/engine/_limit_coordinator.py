"""The coordinator of one concurrency key: the object ``limit:<workflow>:<key>``
(the same class as the executions, another route) hands out at most ``max``
slots, first come first served.

Its one record (``limit``) holds the holders and the FIFO queue, rewritten in
one write per change under an in-memory lock (another request may run at every
storage await). An execution asks for a slot (``acquire``, idempotent: asking
again answers the same), gives it back when it settles (``release``, sent
through the execution's mail outbox, so it is durable), and is woken
(``POST /wake``) when its turn comes.

No slot leaks: while the record has holders or waiters, the coordinator's alarm
is set, and each time it fires it asks every holder for its status. A holder
that has settled (its release is late or lost) or no longer exists gives its
slot back; a holder granted but still ``queued`` (the wake was lost) is woken
again. A holder whose object crashed is not settled: on Durable Objects its
alarm resumes it, so it keeps its slot until it finishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ..errors import InvalidRequestError
from ._ports import Clock, Namespace, Storage

log = logging.getLogger("workkit_workflow")

KEY = "limit"
VERSION = 1

CHECK_EVERY = 30.0
"""Seconds between the coordinator's checks of its holders while it has any."""


class LimitCoordinator:
    """The slots of one key, in one object's storage."""

    def __init__(self, storage: Storage, clock: Clock, peers: Namespace | None, spawn: Any = None) -> None:
        self.storage = storage
        self.clock = clock
        self.peers = peers
        self._spawn = spawn or asyncio.ensure_future
        self._lock = asyncio.Lock()

    async def read(self) -> dict[str, Any]:
        raw = await self.storage.get(KEY)
        if raw is None:
            return {"holders": {}, "queue": [], "max": 1}
        record: dict[str, Any] = json.loads(raw)
        return {"holders": dict(record["holders"]), "queue": list(record["queue"]), "max": record["max"]}

    async def request(self, body: bytes) -> dict[str, Any]:
        """``acquire`` or ``release`` for one execution; the answer says where it stands."""
        op, execution_id, limit = _parse(body)
        async with self._lock:
            record = await self.read()
            if op == "acquire":
                if limit is not None:
                    record["max"] = limit
                if execution_id not in record["holders"] and execution_id not in record["queue"]:
                    record["queue"].append(execution_id)
            else:
                record["holders"].pop(execution_id, None)
                if execution_id in record["queue"]:
                    record["queue"].remove(execution_id)
            granted = self._grant(record)
            await self._write(record)
        self._wake([e for e in granted if e != execution_id])
        return _answer(record, execution_id)

    async def alarm(self) -> None:
        """Check every holder: settled or gone gives its slot back, still queued is woken."""
        record = await self.read()
        gone: list[str] = []
        unaware: list[str] = []
        for holder in list(record["holders"]):
            status = await self._status_of(holder)
            if status == "gone":
                gone.append(holder)
            elif status == "queued":
                unaware.append(holder)
        async with self._lock:
            record = await self.read()
            for holder in gone:
                if record["holders"].pop(holder, None) is not None:
                    log.warning("workkit_workflow: %s had settled without releasing its slot", holder)
            granted = self._grant(record)
            await self._write(record)
        self._wake(granted + unaware)

    def _grant(self, record: dict[str, Any]) -> list[str]:
        """Move waiters into free slots, oldest first; the ones granted."""
        granted = []
        while record["queue"] and len(record["holders"]) < record["max"]:
            execution_id = record["queue"].pop(0)
            record["holders"][execution_id] = self.clock.now()
            granted.append(execution_id)
        return granted

    async def _write(self, record: dict[str, Any]) -> None:
        busy = bool(record["holders"] or record["queue"])
        text = json.dumps({"v": VERSION, **record}, separators=(",", ":"))
        await self.storage.commit({KEY: text}, alarm=self.clock.now() + CHECK_EVERY if busy else None)

    async def _status_of(self, execution_id: str) -> str:
        """``gone`` (settled or missing), ``queued`` or ``live``; ``live`` when unsure."""
        if self.peers is None:
            return "live"
        try:
            answer = await self.peers.request(execution_id, "GET", "/status")
        except Exception:
            return "live"
        if answer.status == 404:
            return "gone"
        body = answer.body if isinstance(answer.body, dict) else {}
        view = body.get("execution") if answer.ok else None
        if not isinstance(view, dict):
            return "live"
        if view.get("settled"):
            return "gone"
        return "queued" if view.get("status") == "queued" else "live"

    def _wake(self, execution_ids: list[str]) -> None:
        for execution_id in execution_ids:
            self._spawn(self._wake_one(execution_id))

    async def _wake_one(self, execution_id: str) -> None:
        # Best effort: a lost wake is made good by the execution's own recheck alarm
        # and by this coordinator's next check.
        if self.peers is None:
            return
        try:
            await self.peers.request(execution_id, "POST", "/wake")
        except Exception as exc:
            log.info("workkit_workflow: could not wake %s: %r", execution_id, exc)


def _answer(record: dict[str, Any], execution_id: str) -> dict[str, Any]:
    queue = record["queue"]
    return {
        "granted": execution_id in record["holders"],
        "position": queue.index(execution_id) + 1 if execution_id in queue else None,
        "holders": len(record["holders"]),
        "waiting": len(queue),
        "max": record["max"],
    }


def _parse(body: bytes) -> tuple[str, str, int | None]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise InvalidRequestError("the body must be a JSON object") from None
    if not isinstance(data, dict) or data.get("op") not in ("acquire", "release"):
        raise InvalidRequestError("op must be 'acquire' or 'release'")
    execution_id = data.get("execution_id")
    if not isinstance(execution_id, str) or not 0 < len(execution_id) <= 200:
        raise InvalidRequestError("execution_id must be an execution id")
    limit = data.get("max")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000
    ):
        raise InvalidRequestError("max must be an integer from 1 to 10000")
    return data["op"], execution_id, limit
