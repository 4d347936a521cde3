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
rarely rewritten. A commit whose records are all references (a step's completion
and the next one's start) writes no bundle at all: it waits in memory only, under
the head's mark, and is recovered from the journal after a crash (``_recovery``).

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

from ..engine import _journal as jn
from ..engine._outbox import Delivery
from ..engine._plugins import ObservedExecution, register_observer
from ..engine._ports import KEEP_ALARM
from ._bundle import (
    UNREAD,
    Bundle,
    Record,
    bundle_key,
    bundles,
    execution_piece,
    execution_row,
    records_of,
    recovered_bundles,
    resolved,
    state_summary,
    step_piece,
)
from ._d1 import D1Port
from ._projection import projection
from ._recovery import already_projected, lowered, mark_for, read_back

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

_OP_PREFIXES = (jn.MAIN, jn.COMPENSATION)


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
        self._memory: dict[str, Bundle] = {}
        """Bundles of commits that wrote no outbox record (all references), by key, in
        ``_held`` too: the journal holds their entries (``_recovery``)."""
        self._mark: dict[str, int] = {}
        """The stored head's ``mem``: per journal prefix, the lowest operation whose
        transitions may be in memory only; empty when none is."""
        self._restoring: dict[str, int] | None = None
        """The mark an earlier instance left: what :meth:`restore` reads back."""
        self._unsure = False
        """A write failed: whether the stored head holds ``_mark`` is unknown."""
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
                self._mark = {str(k): int(v) for k, v in (head.get("mem") or {}).items()}
                if self._mark and not self._memory:
                    self._restoring = dict(self._mark)  # it died with records in memory only
        if complete:
            self.undelivered = bool(self._restoring or self._memory) or any(
                k.startswith(RECORD_PREFIX) for k in records
            )

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
                summary = state_summary(state)
                if summary == last and meta is None:
                    continue
                last = summary
                pieces.append(execution_piece(execution_row(state, meta, self.core.workflow_name)))
                self._flush = True  # a status change: the page should show it now
            elif key.startswith(_OP_PREFIXES):
                pieces.append(step_piece(key, puts[key]))
        if not pieces:
            return {}
        if meta is not None:
            self._execution_id = str(meta["execution_id"])
        elif self._execution_id is None:
            self._execution_id = self.core.execution_id
        seq, at = self.seq + 1, self.core.now()
        out: dict[str, str] = {}
        self.seq += len(pieces)
        mark = self._mark
        if self._restoring is None and len(self._memory) < HELD and all(p.ref is not None for p in pieces):
            # Only references: the journal entries of this commit hold all of it.
            bundle = Bundle(bundle_key(seq), "", seq, at, self._execution_id, pieces)
            self._memory[bundle.key] = self._held[bundle.key] = bundle
            mark = lowered(mark, pieces)
        else:
            # It may overwrite an entry a bundle in memory refers to (a retry's start, a
            # wait): those are stored with it.
            if self._memory:
                self._store_memory(out)
            mark = self._memory_mark()
            for bundle in bundles(seq, at, self._execution_id, pieces):
                out[bundle.key] = bundle.text
                if len(self._held) < HELD:
                    self._held[bundle.key] = bundle
        if last is not self._last or self.seq > self._reserved or mark != self._mark or self._unsure:
            if last is not self._last:
                self._last, self._last_text = last, jn.dumps(last)
            self._mark, self._unsure = mark, False
            self._reserved = self.seq + SEQ_BLOCK
            out[HEAD] = self._head()
        self.undelivered = True
        self._pending += 1
        return out

    def _head(self) -> str:
        tail = f'"last":{self._last_text}' + (f',"mem":{jn.dumps(self._mark)}' if self._mark else "")
        return f'{{"v":{jn.VERSION},"seq":{self.seq},"reserved":{self._reserved},{tail}}}'

    def _store_memory(self, out: dict[str, str]) -> None:
        """Put every bundle held in memory only into ``out`` (the commit being made)."""
        for kept in self._memory.values():
            for bundle in bundles(kept.seq, kept.at, kept.execution_id, kept.pieces):
                out[bundle.key] = bundle.text
                self._held[bundle.key] = bundle
        self._memory.clear()

    def aborted(self) -> None:
        """A write failed after :meth:`capture` saw it: what memory holds may hold its
        records, which never happened, and the head it carried was not stored. As after a
        crash, the journal says what did happen: the next drive reads it back from the
        lowest operation any record held here names (``restore``), and the next write
        stores the head again."""
        mark = mark_for(self._held.values(), self._restoring)
        for key in self._memory:
            self._held.pop(key, None)
        self._memory.clear()
        self._restoring = mark or None
        self._unsure = True

    def _memory_mark(self) -> dict[str, int]:
        """The mark the head needs for what is in memory now (and what waits for ``restore``)."""
        return mark_for(self._memory.values(), self._restoring)

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

    def _page(self, stored: dict[str, str]) -> dict[str, str]:
        if not self._memory:
            return stored
        page = dict(stored) | dict.fromkeys(self._memory, "")
        return {key: page[key] for key in sorted(page)[:BATCH]}

    async def _deliver_page(self, found: dict[str, str]) -> bool:
        """Send a whole page to D1 in one batch, then drop it from storage (and memory)."""
        self.core.fault("in_history", records=len(found))
        try:
            records = await self._records(found)
            quiet: frozenset[int] = frozenset()
            if any(r.recovered for r in records):
                check = already_projected(self.db, self._execution_id or self.core.execution_id, records)
                quiet = await self._within(check, SEND_TIMEOUT, "D1")
            await self._within(self.db.batch(projection(records, quiet)), SEND_TIMEOUT, "D1")
        except Exception as exc:
            await self._back_off("history delivery failed (%d records pending): %r", len(found), exc)
            return False
        stored = [key for key in found if key not in self._memory]
        for key in found:
            self._held.pop(key, None)
            self._memory.pop(key, None)
        puts: dict[str, str] = {}
        mark = self._memory_mark()
        if mark != self._mark:
            self._mark = mark
            puts[HEAD] = self._head()
        if stored or puts:
            await self.core.storage.commit(puts, stored)
        self.delivered += len(found)
        return True

    async def restore(self) -> None:
        """Store what the journal shows of the transitions an earlier instance held in
        memory only, before this instance's drive writes (``_recovery``)."""
        restoring = self._restoring
        if not restoring:
            return
        storage = self.core.storage
        items = await read_back(storage, restoring, BATCH)
        puts = recovered_bundles(self.seq + 1, items) if items else {}
        self.seq += len(items)
        self._reserved = self.seq + SEQ_BLOCK
        self._restoring = None
        self._mark, self._unsure = self._memory_mark(), False
        puts[HEAD] = self._head()
        try:
            await storage.commit(puts)
        except BaseException:
            self._restoring, self._unsure = restoring, True  # the mark stays: the next drive tries again
            raise
        self.undelivered = True

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
