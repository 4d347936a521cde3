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
undelivered (see :meth:`alarm_for`), even after the execution is done. The
delivery itself (single-flight, paged, backed off) is the engine's shared
``engine._outbox.Delivery``; this module says what delivering a page is.

Outbox record (JSON text, ``"v": 1``)::

    {"v":1, "seq":7, "at":1700000000.5, "execution_id":"...", "kind":"execution",
     "execution": {workflow, status, phase, created_at, ..., error, compensation}}
    {"v":1, "seq":8, "at":..., "execution_id":"...", "kind":"step", "phase":"main",
     "entry": {op, kind, name, status, attempt, started_at, finished_at, errors, ...}}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..definitions._versions import version_of
from ..engine import _journal as jn
from ..engine._outbox import Delivery
from ..engine._plugins import ObservedExecution, register_observer
from ..engine._ports import KEEP_ALARM
from ..errors import SerializationError
from ._d1 import D1Port
from ._projection import projection

log = logging.getLogger("workkit_workflow.history")

HEAD = jn.OUTBOX + "head"
RECORD_PREFIX = jn.OUTBOX + "0"
"""Record keys are ``o:`` + 12 zero-padded digits (``seq_key``): they all start with ``o:0``."""

BATCH = 40
"""Outbox records sent per D1 batch."""

SEND_TIMEOUT = 10.0
"""Seconds one D1 batch may take before the delivery counts as failed."""

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


class Outbox(Delivery):
    """One execution's outbox: the journal observer the history projection plugs into its engine."""

    HEAD = HEAD

    def __init__(self, core: ObservedExecution, database: Any) -> None:
        # Records may wait in storage until a delivery proved otherwise.
        super().__init__(
            core, record_prefix=RECORD_PREFIX, batch=BATCH, undelivered=True, log=log, what="history"
        )
        self.db = database if isinstance(database, D1Port) else D1Port(database)
        self.seq = 0
        self._last: list[Any] | None = None
        self._head_seq = -1
        self._alarm_ours = False
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
            return self._retry_alarm()
        if alarm is not KEEP_ALARM:
            self._alarm_ours = False
            if self.undelivered and self._failures:
                # A delivery failed: its retry must not wait for a far wake-up (a
                # parked execution may sleep for days). An early alarm only replays
                # and re-parks, with this write's wake-up restored once delivered.
                return min(alarm, self._retry_alarm())
        return alarm

    # -- delivery ----------------------------------------------------------------

    async def _delivered_all(self) -> None:
        await super()._delivered_all()
        if self._alarm_ours:
            # Only this outbox wanted that alarm (the core had cleared it): drop it.
            self._alarm_ours = False
            await self.core.storage.set_alarm(None)

    async def _deliver_page(self, found: dict[str, str]) -> bool:
        """Send a whole page to D1 in one batch, then drop it from storage."""
        self.core.fault("in_history", records=len(found))
        try:
            records = [jn.decode_record(k, v) for k, v in found.items()]
            await self._within(self.db.batch(projection(records)), SEND_TIMEOUT, "D1")
        except Exception as exc:
            await self._back_off("history delivery failed (%d records pending): %r", len(found), exc)
            return False
        await self.core.storage.commit({}, list(found))
        self.delivered += len(found)
        return True


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
