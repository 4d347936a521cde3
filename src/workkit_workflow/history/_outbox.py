"""The history outbox: projection records written with the journal, delivered to D1.

It plugs into the engine as a journal observer (``engine._plugins``), registered
below under the execution option ``history``; the engine calls
:meth:`Outbox.capture` inside its single write path: the ``state``, ``j:<op>``
and ``c:<op>`` records of a commit become one outbox record ``o:<seq>`` (a
*bundle*, ``_bundle``: a step that runs or completed by reference to its journal
entry, any other entry as the journal's own text, not decoded), added to *the same
atomic commit*. So a journal change and its history record exist together or not
at all. The bundle also stays in memory until delivered, so delivering it reads
nothing back in the common case. Each record in a bundle has its own sequence;
the head ``o:head`` reserves them a block at a time (``SEQ_BLOCK``), so it is
rarely rewritten.

After each commit the core calls :meth:`kick`. A run's step transitions go out in
batches (``BATCH`` commits, or after ``LINGER`` seconds); a write that starts,
parks or ends the execution, or changes its status, sends what waits at once. A
delivery sends a page of records to D1 in one batch of idempotent statements
(upserts guarded by sequence, inserts keyed by execution id + sequence), then
deletes them from storage. A crash between the two re-sends them later; the
projection ignores what it already has. If D1 fails, the workflow does not
notice: the records wait, with exponential backoff, and the core keeps an alarm
set while any are undelivered (see :meth:`alarm_for`), even after the execution
is done. The delivery itself (single-flight, paged, backed off) is the engine's
shared ``engine._outbox.Delivery``; this module says what delivering a page is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ..definitions._versions import version_of
from ..engine import _journal as jn
from ..engine._outbox import Delivery
from ..engine._plugins import ObservedExecution, register_observer
from ..engine._ports import KEEP_ALARM
from ._bundle import UNREAD, Bundle, Record, bundles, execution_piece, records_of, resolved, step_piece
from ._d1 import D1Port
from ._projection import projection

log = logging.getLogger("workkit_workflow.history")

HEAD = jn.OUTBOX + "head"
RECORD_PREFIX = jn.OUTBOX + "0"
"""Record keys are ``o:`` + 12 zero-padded digits (``seq_key``): they all start with ``o:0``."""

SEQ_BLOCK = 64
"""Sequences the head reserves at a time. It is rewritten once per block, or when the
execution's summary changes, rather than with every commit; an object that restarts
goes on after the block (a gap in the sequence, never a reuse)."""

BATCH = 40
"""Outbox records (one per commit) sent per D1 batch; a run's step transitions wait for
this many before they are sent (or for ``LINGER``)."""

HELD = 4 * BATCH
"""Bundles kept in memory for their delivery at most (beyond, while deliveries lag, a
reference is read back from the journal)."""

LINGER = 0.25
"""Seconds a step's records may wait for more before they are sent anyway."""

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
_OP_PREFIXES = (jn.MAIN, jn.COMPENSATION)


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
        self._last_text = "null"
        self._execution_id: str | None = None
        self._held: dict[str, Bundle] = {}
        """The bundles written and not delivered yet, by key (at most ``HELD``)."""
        self._pending = 0
        """Outbox records (commits) written since the last delivery started."""
        self._flush = False
        """Whether a write since then asks for delivery now (see :meth:`kick`)."""
        self._nudge: asyncio.Task[None] | None = None
        self._drain = False
        """Whether the running delivery sends a partial page too (else it leaves it)."""
        self._settling = False
        self._reserved = 0
        """The sequence the stored head reserves up to (``SEQ_BLOCK``)."""
        self._alarm_ours = False
        self.delivered = 0

    # -- inside the core's write ---------------------------------------------------

    def load(self, records: Mapping[str, str], *, complete: bool) -> None:
        """Take the head (and, from a full snapshot, the pending records) as read from storage."""
        head_text = records.get(HEAD)
        if head_text is not None:
            head = jn.decode_record(HEAD, head_text)
            # Sequences up to ``reserved`` may have been used (a head written before
            # reservations holds the last one used, as ``seq``). A head this instance
            # wrote changes nothing; another's (or one from before a restart) moves us
            # past its reservation. Never back: a stale read must not make us reuse one.
            reserved = int(head.get("reserved", head.get("seq", 0)))
            if reserved > self._reserved:
                self._last = head.get("last")
                self._last_text = jn.dumps(self._last)
                self.seq = max(self.seq, reserved)
                self._reserved = reserved
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
        meta: dict[str, Any] | None = None
        if jn.META in puts:
            meta = jn.decode_record(jn.META, puts[jn.META])
        pieces = []
        last = self._last
        for key in sorted(puts) if len(puts) > 1 else puts:
            if key == jn.STATE:
                state = jn.decode_record(key, puts[key])
                summary = _summary(state)
                if summary == last and meta is None:
                    continue
                last = summary
                pieces.append(execution_piece(self._execution_row(state, meta)))
                self._flush = True  # a status change: the page should show it now
            elif key.startswith(_OP_PREFIXES):
                pieces.append(step_piece(key, puts[key]))
        if not pieces:
            return {}
        if meta is not None:
            self._execution_id = str(meta["execution_id"])
        elif self._execution_id is None:
            self._execution_id = self.core.execution_id
        out = {}
        for bundle in bundles(self.seq + 1, self.core.now(), self._execution_id, pieces):
            out[bundle.key] = bundle.text
            if len(self._held) < HELD:
                self._held[bundle.key] = bundle
        self.seq += len(pieces)
        if last is not self._last or self.seq > self._reserved:
            if last is not self._last:
                self._last, self._last_text = last, jn.dumps(last)
            self._reserved = self.seq + SEQ_BLOCK
            out[HEAD] = (
                f'{{"v":{jn.VERSION},"seq":{self.seq},"reserved":{self._reserved},"last":{self._last_text}}}'
            )
        self.undelivered = True
        self._pending += 1
        return out

    def _execution_row(self, state: Mapping[str, Any], meta: Mapping[str, Any] | None) -> dict[str, Any]:
        row: dict[str, Any] = {f: state.get(f) for f in _EXECUTION_FIELDS}
        row["workflow"] = meta["workflow"] if meta else self.core.workflow_name
        if meta is not None:
            row["input"] = meta.get("input")
            row["restarted_from"] = meta.get("restarted_from")
            row["version"] = version_of(meta)  # versions: kept in the event's detail
            if meta.get("parent"):
                # In the event's detail only: the page links a child to its parent.
                row["parent"] = meta["parent"]
        return row

    def alarm_for(self, alarm: Any) -> Any:
        """The alarm to commit: keeps one set while records wait, even when the core clears it."""
        if alarm is not KEEP_ALARM:
            self._flush = True  # the execution starts, parks or ends: deliver now
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

    def kick(self) -> None:
        """A write succeeded: deliver now, or soon.

        A run's step transitions go out in batches, since each D1 batch (and each
        deletion of what it delivered) costs as much as many records: at once when
        ``BATCH`` commits wait or when a write changed the execution's status or its
        alarm (it starts, parks or ends), else after ``LINGER`` seconds, so a long
        step's start still shows soon. Only a hint: the records are in storage, and
        the alarm that keeps an execution going also delivers them.
        """
        if self._flush or self._pending >= BATCH:
            self._drain = self._drain or self._flush
            self._flush = False
            self._pending = 0
            if self._nudge is not None:
                self._nudge.cancel()
                self._nudge = None
            super().kick()
        elif self.undelivered and self._nudge is None:
            self._nudge = self.core.spawn(self._linger())

    async def settle(self) -> bool:
        self._settling = True
        try:
            return await super().settle()
        finally:
            self._settling = False

    def _page_wanted(self, found: dict[str, str]) -> bool:
        if len(found) >= BATCH or self._settling:
            return True  # settling means everything, partial pages too
        # A partial page goes once per flush: what later writes add waits for theirs.
        drain, self._drain = self._drain, False
        return drain

    async def _linger(self) -> None:
        await self.core.clock.sleep(LINGER)
        self._nudge = None
        self._flush = True
        self.kick()

    async def _delivered_all(self) -> None:
        await super()._delivered_all()
        if self._nudge is not None:
            # Nothing waits any more: an object at rest keeps no task.
            self._nudge.cancel()
            self._nudge = None
        # Bundles of commits that failed are never found in storage: forget them too.
        self._held.clear()
        if self._alarm_ours:
            # Only this outbox wanted that alarm (the core had cleared it): drop it.
            self._alarm_ours = False
            await self.core.storage.set_alarm(None)

    async def _deliver_page(self, found: dict[str, str]) -> bool:
        """Send a whole page to D1 in one batch, then drop it from storage."""
        self.core.fault("in_history", records=len(found))
        try:
            records = await self._records(found)
            await self._within(self.db.batch(projection(records)), SEND_TIMEOUT, "D1")
        except Exception as exc:
            await self._back_off("history delivery failed (%d records pending): %r", len(found), exc)
            return False
        await self.core.storage.commit({}, list(found))
        for key in found:
            self._held.pop(key, None)
        self.delivered += len(found)
        return True

    async def _records(self, found: dict[str, str]) -> list[Record]:
        """The history records of a page: from the bundles held in memory, else decoded
        from storage with their references read from the journal."""
        records: list[Record] = []
        execution_id = self._execution_id or self.core.execution_id
        for key, text in found.items():
            held = self._held.get(key)
            if held is not None and held.text == text:
                records += held.records()
            else:
                records += records_of(key, text, execution_id)
        refs = [r.key for r in records if r.value is UNREAD]
        if not refs:
            return records
        return resolved(records, dict(await self.core.storage.get_many(refs)))


# The engine's plug-in hook: an execution built with ``history=<D1 binding>`` gets an outbox.
register_observer("history", Outbox)
