"""The history outbox: projection records written with the journal, delivered to D1.

It plugs into the engine as a journal observer (``engine._plugins``), registered
below under the execution option ``history``; the engine calls
:meth:`Outbox.capture` inside its single write path:
for every ``state``, ``j:<op>`` and ``c:<op>`` record in a commit it adds one
outbox record ``o:<seq>`` (and the head ``o:head``, the last sequence used)
to *the same atomic commit*. So a journal change and its history record exist
together or not at all.

After each commit the core calls :meth:`kick`: a background task sends the
pending records to D1 in one batch of idempotent statements (upserts guarded
by sequence, inserts keyed by execution id + sequence), then deletes them from
storage. A crash between the two re-sends them later; the projection ignores
what it already has. If D1 fails, the workflow does not notice: the records
wait, with exponential backoff, and the core keeps an alarm set while any are
undelivered (see :meth:`alarm_for`), even after the execution is done.

Outbox record (JSON text, ``"v": 1``)::

    {"v":1, "seq":7, "at":1700000000.5, "execution_id":"...", "kind":"execution",
     "execution": {workflow, status, phase, created_at, ..., error, compensation}}
    {"v":1, "seq":8, "at":..., "execution_id":"...", "kind":"step", "phase":"main",
     "entry": {op, kind, name, status, attempt, started_at, finished_at, errors, ...}}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ..definitions._versions import version_of
from ..engine import _journal as jn
from ..engine._plugins import ObservedExecution, register_observer
from ..engine._ports import KEEP_ALARM
from ..errors import SerializationError
from ._d1 import D1Port, Statement
from ._projection import projection

log = logging.getLogger("workkit_workflow.history")

HEAD = jn.OUTBOX + "head"
RECORD_PREFIX = jn.OUTBOX + "0"
"""Record keys are ``o:`` + 12 zero-padded digits (``seq_key``): they all start with ``o:0``."""

BATCH = 40
"""Outbox records sent per D1 batch."""

SEND_TIMEOUT = 10.0
"""Seconds one D1 batch may take before the delivery counts as failed."""

MAX_BACKOFF = 300.0

_EXECUTION_FIELDS = (
    "status",
    "phase",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "wake_at",
    "waiting_for",
    "error",
    "failed_step",
    "step_attempt",
    "compensation",
    "cancel_reason",
)
_ENTRY_DROPPED = ("output", "idempotency_key", "idempotency_hash", "v", "undo")


def _summary(state: Mapping[str, Any]) -> list[Any]:
    """What makes a state change worth a history event (not ``updated_at`` alone)."""
    compensation = state.get("compensation") or {}
    error = state.get("error") or {}
    return [
        state.get("status"),
        state.get("phase"),
        compensation.get("status"),
        sorted(state.get("waiting_for") or []),
        state.get("wake_at"),
        error.get("code"),
        state.get("cancel_requested_at"),
    ]


class Outbox:
    """One execution's outbox: the journal observer the history projection plugs into its engine."""

    HEAD = HEAD

    def __init__(self, core: ObservedExecution, database: Any) -> None:
        self.core = core
        self.db = database if isinstance(database, D1Port) else D1Port(database)
        self.seq = 0
        self._last: list[Any] | None = None
        self._head_seq = -1
        self.undelivered = True
        """Whether records may wait in storage (True until a delivery proved otherwise)."""
        self._alarm_ours = False
        self._failures = 0
        self._retry_at = 0.0
        self._task: asyncio.Task[bool] | None = None
        self._again = False
        self.delivered = 0

    # -- inside the core's write ---------------------------------------------------

    def load(self, records: Mapping[str, str], *, complete: bool) -> None:
        """Take the head (and, from a full snapshot, the pending records) as read from storage."""
        head_text = records.get(HEAD)
        if head_text is not None:
            head = jn.decode_record(HEAD, head_text)
            seq = int(head.get("seq", 0))
            # Never go back: a stale read must not make us reuse a sequence.
            if seq >= self.seq:
                self._last = head.get("last")
            self.seq = max(self.seq, seq)
        if complete:
            self.undelivered = any(k.startswith(RECORD_PREFIX) for k in records)

    def capture(self, puts: Mapping[str, str]) -> dict[str, str]:
        """The outbox records for a commit of ``puts`` (added to the same commit)."""
        try:
            return self._capture(puts)
        except Exception:
            # Never fail a workflow's write because of its history.
            log.exception("workkit_workflow: could not record history for this write")
            return {}

    def _capture(self, puts: Mapping[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        meta: dict[str, Any] | None = None
        if jn.META in puts:
            meta = jn.decode_record(jn.META, puts[jn.META])
        execution_id = meta["execution_id"] if meta else self.core.execution_id
        workflow = meta["workflow"] if meta else self.core.workflow_name
        now = self.core.now()
        last = self._last
        for key in sorted(puts):
            if key == jn.STATE:
                state = jn.decode_record(key, puts[key])
                summary = _summary(state)
                if summary == last and meta is None:
                    continue
                last = summary
                row: dict[str, Any] = {f: state.get(f) for f in _EXECUTION_FIELDS}
                row["workflow"] = workflow
                if meta is not None:
                    row["input"] = meta.get("input")
                    row["restarted_from"] = meta.get("restarted_from")
                    row["version"] = version_of(meta)  # versions: kept in the event's detail
                    if meta.get("parent"):
                        # In the event's detail only: the page links a child to its parent.
                        row["parent"] = meta["parent"]
                record: dict[str, Any] = {"kind": "execution", "execution": row}
            elif key.startswith((jn.MAIN, jn.COMPENSATION)):
                entry = jn.decode_record(key, puts[key])
                for name in _ENTRY_DROPPED:
                    entry.pop(name, None)
                entry["op"] = jn.op_of(key)
                phase = "main" if key.startswith(jn.MAIN) else "compensation"
                record = {"kind": "step", "phase": phase, "entry": entry}
            else:
                continue
            self.seq += 1
            record.update(seq=self.seq, at=now, execution_id=execution_id)
            out[jn.seq_key(jn.OUTBOX, self.seq)] = _encode(jn.seq_key(jn.OUTBOX, self.seq), record)
        if out:
            self._last = last
            out[HEAD] = jn.encode_record(HEAD, {"seq": self.seq, "last": last}, what="history head")
            self.undelivered = True
        return out

    def alarm_for(self, alarm: Any) -> Any:
        """The alarm to commit: keeps one set while records wait, even when the core clears it."""
        if alarm is None and self.undelivered:
            self._alarm_ours = True
            return max(self._retry_at, self.core.now() + 1.0)
        if alarm is not KEEP_ALARM:
            self._alarm_ours = False
            if self.undelivered and self._failures:
                # A delivery failed: its retry must not wait for a far wake-up (a
                # parked execution may sleep for days). An early alarm only replays
                # and re-parks, with this write's wake-up restored once delivered.
                return min(alarm, max(self._retry_at, self.core.now() + 1.0))
        return alarm

    # -- delivery ----------------------------------------------------------------

    def kick(self) -> None:
        """Deliver in the background (single-flight; backs off while D1 fails)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        if not self.undelivered or self.core.now() < self._retry_at:
            return
        self._task = self.core.spawn(self._deliver_loop())

    async def settle(self) -> bool:
        """Deliver now and wait for it (the alarm handler of a finished execution).

        While D1 is known to be failing (backing off), returns at once: the alarm
        set for the retry comes back later, so nobody waits on a dead D1.
        """
        if self.core.now() < self._retry_at:
            return False
        if self._task is not None and not self._task.done():
            self._again = True
        else:
            self._task = self.core.spawn(self._deliver_loop())
        task = self._task
        await asyncio.wait({task})
        return not task.cancelled() and task.exception() is None and task.result()

    async def _deliver_loop(self) -> bool:
        while True:
            self._again = False
            ok = await self._deliver_once()
            if not ok or not self._again:
                return ok

    async def _deliver_once(self) -> bool:
        storage = self.core.storage
        while True:
            found = await storage.list(prefix=RECORD_PREFIX, limit=BATCH)
            if not found:
                if self._again:
                    return True  # a commit landed meanwhile: look again before concluding
                self.undelivered = False
                self._failures = 0
                self._retry_at = 0.0
                if self._alarm_ours:
                    # Only this outbox wanted that alarm (the core had cleared it): drop it.
                    self._alarm_ours = False
                    await storage.set_alarm(None)
                return True
            self.core.fault("in_history", records=len(found))
            try:
                records = [jn.decode_record(k, v) for k, v in found.items()]
                await self._send(projection(records))
            except Exception as exc:
                self._failures += 1
                delay = min(2.0 ** (self._failures - 1), MAX_BACKOFF)
                self._retry_at = self.core.now() + delay
                log.warning(
                    "workkit_workflow: history delivery failed (%d records pending): %r; next try in %.0fs",
                    len(found),
                    exc,
                    delay,
                )
                await self._alarm_no_later_than(self._retry_at)
                return False
            await storage.commit({}, list(found))
            self.delivered += len(found)

    async def _alarm_no_later_than(self, at: float) -> None:
        """Bring the object's alarm forward to the retry (a parked execution may sleep
        for days). Not marked as ours: an early alarm only replays and re-parks, while
        clearing an alarm the engine set could strand the execution."""
        try:
            current = await self.core.storage.get_alarm()
            if current is None or current > at:
                await self.core.storage.set_alarm(at)
        except Exception:
            log.exception("workkit_workflow: could not set the history retry alarm")

    async def _send(self, statements: list[Statement]) -> None:
        # Timed on the core's clock (not wait_for's loop time), so tests on a
        # virtual clock skip a hung D1 as they skip any other wait.
        send = self.core.spawn(self.db.batch(statements))
        timer = self.core.spawn(self.core.clock.sleep(SEND_TIMEOUT))
        try:
            await asyncio.wait({send, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not send.done():
                send.cancel()
        if send.cancelled():
            raise TimeoutError(f"D1 did not answer within {SEND_TIMEOUT:g}s")
        send.result()


def _encode(key: str, record: dict[str, Any]) -> str:
    try:
        return jn.encode_record(key, record, what="history record")
    except SerializationError:
        # Too large (a huge input, long error lists): keep the transition, drop the bulk.
        smaller = {**record, "truncated": True}
        if "entry" in record:
            smaller["entry"] = {k: v for k, v in record["entry"].items() if k != "errors"}
        if "execution" in record:
            smaller["execution"] = {k: v for k, v in record["execution"].items() if k != "input"}
        return jn.encode_record(key, smaller, what="history record")


# The engine's plug-in hook: an execution built with ``history=<D1 binding>`` gets an outbox.
register_observer("history", Outbox)
