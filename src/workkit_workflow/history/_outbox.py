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

After each commit the core calls :meth:`kick`. A run's step transitions, its start
and its resumes go out in batches (``BATCH`` commits, or after ``LINGER`` seconds); a
write that parks or ends the execution sends what waits at once. A
delivery sends a page of records to D1 in one batch of idempotent statements
(upserts guarded by sequence, inserts keyed by execution id + sequence), then
deletes them from storage. A crash between the two re-sends them later; the
projection ignores what it already has. If D1 fails, the workflow does not
notice: the records wait, with exponential backoff, and the core keeps an alarm
set while any are undelivered (see :meth:`alarm_for`), even after the execution
is done. The delivery itself (single-flight, paged, backed off) is the engine's
shared ``engine._outbox.Delivery``; this module says what delivering a page is.

A run's deliveries cost its storage next to nothing: a page that held only records kept
in memory deletes nothing, and the head's mark it moves on is written by the run's next
commit (a commit of its own only when memory is left empty); storage is listed only when
some commit may have stored a record since it was last seen without any. What a commit
records, and what memory holds of it, is ``_capture``'s.
"""

from __future__ import annotations

import logging
from itertools import accumulate, chain, islice
from typing import Any

from ..engine._outbox import Delivery
from ..engine._plugins import ObservedExecution, register_observer
from ..engine._ports import KEEP_ALARM, Cancellable, call_later, from_the_loop
from ._bundle import UNREAD, Bundle, Record, bundle_key
from ._capture import BATCH, HEAD, HELD, RECORD_PREFIX, SEQ_BLOCK, Capture
from ._d1 import D1Port, Statement
from ._plain import plain_projection, tail_projection
from ._projection import projection
from ._records import records_of, resolved
from ._recovery import already_projected
from ._schema import ADDED

__all__ = ["BATCH", "HEAD", "HELD", "LINGER", "RECORD_PREFIX", "SEND_TIMEOUT", "SEQ_BLOCK", "Outbox"]

log = logging.getLogger("workkit_workflow.history")

LINGER = 0.25
"""Seconds a step's records may wait for more before they are sent anyway."""

SEND_TIMEOUT = 10.0
"""Seconds one D1 batch may take before the delivery counts as failed."""

_TAIL_PAGE: dict[str, str] = {"o:tail": ""}
"""The page ``Outbox._page`` hands the delivery when memory's tail is all there is (told by
identity): the first ``BATCH`` of its commits, delivered as they are (``_deliver_tail``)."""


class Outbox(Capture, Delivery):
    """One execution's outbox: the journal observer the history projection plugs into its
    engine. What a commit records is :class:`Capture`'s; delivering it is this class's."""

    HEAD = HEAD
    captures = True
    steers_kept_alarm = False
    """``alarm_for`` changes only a write that sets or clears the alarm."""

    def __init__(self, core: ObservedExecution, database: Any) -> None:
        # Records may wait in storage until a delivery proved otherwise.
        Delivery.__init__(
            self, core, record_prefix=RECORD_PREFIX, batch=BATCH, undelivered=True, log=log, what="history"
        )
        Capture.__init__(self)
        self.db = database if isinstance(database, D1Port) else D1Port(database)
        self._clean: int | None = None
        """``_stores`` when storage was last seen without records: none to list until it moves."""
        self._listed: tuple[int, frozenset[str]] | None = None
        """The last short page listed: ``_stores`` then, and its keys."""
        self._nudge: Cancellable | None = None
        """The ``LINGER`` timer (``call_later``)."""
        self._drain = False
        """Whether the running delivery sends a partial page too (else it leaves it)."""
        self._settling = False
        self._alarm_ours = False

    def alarm_for(self, alarm: Any) -> Any:
        """The alarm to commit: keeps one set while records wait, even when the core clears it."""
        if alarm is not KEEP_ALARM and not self._active:
            self._flush = self.kick_due = True  # the execution parks or ends: deliver now
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

    def aborted(self) -> None:
        super().aborted()
        # The write that may have left the alarm to this outbox (the core clearing it) did
        # not happen: whatever alarm is set is the core's, and a delivery must not clear it.
        self._alarm_ours = False

    # -- delivery ----------------------------------------------------------------

    def kick(self) -> bool:
        """A write succeeded: deliver now, or soon; True when a page is full (the engine
        then lets the event loop run once, for its delivery to start).

        A run's step transitions go out in batches, since each D1 batch (and each
        deletion of what it delivered) costs as much as many records: at once when
        ``BATCH`` commits wait or when the execution parks or ends (a write of its status
        or its alarm, with a status other than pending or running), else after
        ``LINGER`` seconds, so a start and a long step's start still show soon (a short
        execution's whole history goes in one batch). Only a hint: the records are in
        storage (or read back from the journal), and the alarm that keeps an execution
        going also delivers them.

        A run over the SQL journal whose steps wait for nothing never lets the event loop
        run: without that turn at each full page, its records would wait in memory until
        the run's end, and past ``HELD_REFERENCES`` bundles each commit would store them.
        """
        full = self._pending >= BATCH
        if self._flush or full:
            self._drain = self._drain or self._flush
            self._flush = False
            self._pending = 0
            if self._nudge is not None:
                self._nudge.cancel()
                self._nudge = None
            super().kick()
        elif self.undelivered and self._nudge is None:
            self._nudge = call_later(self.core.clock, LINGER, self._lingered, self.core.spawn)
        # Until a commit fills the page or asks for delivery now, the timer does it:
        # the engine need not call this after each commit (``Capture.kick_due``).
        self.kick_due = self._nudge is None
        return full

    async def settle(self) -> bool:
        self._settling = True
        try:
            return await super().settle()
        finally:
            self._settling = False

    def _delivering(self) -> bool:
        return self._task is not None and not self._task.done()

    def _page_wanted(self, found: dict[str, str]) -> bool:
        if (len(self._tail) if found is _TAIL_PAGE else len(found)) >= BATCH or self._settling:
            return True  # settling means everything, partial pages too
        # A partial page goes once per flush: what later writes add waits for theirs.
        drain, self._drain = self._drain, False
        return drain

    def _lingered(self) -> None:
        """The page's timer. Fired after the object died, it starts nothing
        (``from_the_loop``): the next instance delivers what is stored or read back."""
        self._nudge = None
        self._flush = self.kick_due = True
        from_the_loop(self.kick)

    async def _delivered_all(self) -> None:
        await super()._delivered_all()
        if self._nudge is not None:
            # Nothing waits any more: an object at rest keeps no task.
            self._nudge.cancel()
            self._nudge = None
            self.kick_due = True
        # Bundles of commits that failed are never found in storage: forget them too.
        self._held.clear()
        if self._alarm_ours:
            # Only this outbox wanted that alarm (the core had cleared it): drop it.
            self._alarm_ours = False
            await self.core.storage.set_alarm(None)

    def _page(self, stored: dict[str, str]) -> dict[str, str]:
        if self._tail:
            if not (stored or self._memory):
                return _TAIL_PAGE  # nearly every page of a run
            self._settle_tail()
        if not self._memory:
            return stored
        if not stored:
            # Memory holds its bundles in the order of their keys (each a new sequence).
            return dict.fromkeys(islice(self._memory, BATCH), "")
        page = dict(stored) | dict.fromkeys(self._memory, "")
        return {key: page[key] for key in sorted(page)[:BATCH]}

    async def _deliver_page(self, found: dict[str, str]) -> bool:
        """Send a whole page to D1 in one batch, then drop it from storage (and memory)."""
        if found is _TAIL_PAGE:
            return await self._deliver_tail()
        self.core.fault("in_history", records=len(found))
        # Nearly every page of a run: every bundle memory holds, and only those.
        held = self._memory if found.keys() == self._memory.keys() == self._held.keys() else None
        try:
            statements = self._plain_statements(found, held)
            if statements is None:
                records = await self._records(found)
                quiet: frozenset[int] = frozenset()
                if any(r.recovered for r in records):
                    check = already_projected(self.db, self._execution_id or self.core.execution_id, records)
                    quiet = await self._within(check, SEND_TIMEOUT, "D1")
                statements = projection(records, quiet)
        except Exception as exc:
            return await self._failed(exc, len(found))
        if not await self._sent(statements, len(found)):
            return False
        if held is not None and len(held) == len(self._held) == len(found):
            stored: list[str] = []  # nothing was captured meanwhile (the tail takes what is)
            self._held.clear()
            held.clear()
        else:
            stored = self._forget(found)
        await self._delivered(stored)
        return True

    async def _deliver_tail(self) -> bool:
        """Send the first page of memory's tail (``Held._tail``) to D1 as it is, then drop it."""
        tail = self._tail
        page = tail[:BATCH]
        seqs = list(accumulate(map(len, page), initial=self._tail_seq))  # each commit's, and one past
        try:
            statements = tail_projection(self._execution_id or self.core.execution_id, page, seqs)
        except Exception as exc:
            return await self._failed(exc, len(page))
        if statements is None:  # not only plain steps: its bundles go as records
            self._settle_tail()
            return await self._deliver_page(self._page({}))
        self.core.fault("in_history", records=len(page))
        if not await self._sent(statements, len(page)):
            return False
        if self._tail is tail:
            del tail[: len(page)]  # what the run added meanwhile stays
            self._tail_seq = seqs[-1]
            stored: list[str] = []
        else:  # settled while D1 answered: the page's bundles are memory's, or were stored since
            stored = self._forget(dict.fromkeys(map(bundle_key, seqs[:-1]), ""))
        await self._delivered(stored)
        return True

    async def _sent(self, statements: list[Statement], records: int) -> bool:
        """Whether D1 ran ``statements`` (a page of ``records``), else backed off."""
        try:
            await self._within(self.db.batch(statements), SEND_TIMEOUT, "D1")
        except Exception as exc:
            return await self._failed(exc, records)
        return True

    async def _failed(self, exc: Exception, records: int) -> bool:
        why = "history delivery failed (%d records pending): %r" + _missing_migration(exc)
        await self._back_off(why, records, exc)
        return False

    def _forget(self, found: dict[str, str]) -> list[str]:
        """Forget the delivered bundles of ``found``; the keys of those stored."""
        stored = [key for key in found if key not in self._memory]
        for key in found:
            self._held.pop(key, None)
            self._memory.pop(key, None)
        return stored

    async def _delivered(self, stored: list[str]) -> None:
        """A page is in D1: delete what of it was ``stored``, with the head and alarm this leaves."""
        puts: dict[str, str] = {}
        mark = self._memory_mark()
        in_memory = bool(self._memory or self._tail)
        if mark != self._mark:
            self._mark = mark
            if stored or not (in_memory or self._active):
                puts[HEAD] = self._head()
            else:
                # The run goes on (it holds more in memory, or its last status recorded is
                # pending or running: it writes again, at the latest as it parks or ends):
                # its next commit stores the head, rather than a commit of its own here,
                # whether or not the run could commit while D1 answered. Until then the
                # stored mark is lower than it need be, which only makes a recovery read
                # back more.
                self._unsure = True
        listed, self._listed = self._listed, None
        clean = self._clean
        if listed is not None and listed[1].issubset(stored):
            clean = listed[0]  # every record that was stored then is gone with this commit
        alarm: Any = KEEP_ALARM
        if self._alarm_ours and clean == self._stores and not in_memory:
            # Nothing waits after this commit: the alarm only this outbox wanted goes with it.
            alarm, self._alarm_ours = None, False
        if stored or puts or alarm is None:
            await self.core.storage.commit(puts, stored, alarm)
        self._clean = clean

    async def _stored(self) -> dict[str, str]:
        stores = self._stores
        if self._clean == stores:
            return {}  # no commit stored a record since storage was seen without any
        found = await super()._stored()
        # A short page is every record stored by the commits counted until the list was
        # issued (each is issued at its capture, and storage answers in issue order).
        self._listed = (stores, frozenset(found)) if len(found) < BATCH else None
        if not found:
            self._clean = stores
        return found

    def _plain_statements(
        self, found: dict[str, str], held: dict[str, Bundle] | None = None
    ) -> list[Statement] | None:
        """The statements of a page whose bundles memory holds, all of plain steps
        (``plain_projection``), or None to project its records; ``held``: memory's
        bundles, when they are the page's, every one."""
        if held is not None:
            bundles = list(held.values())
        else:
            bundles = []
            for key, text in found.items():
                bundle = self._held.get(key)
                if bundle is None or bundle.text != text:
                    return None
                bundles.append(bundle)
        return plain_projection(self._execution_id or self.core.execution_id, bundles)

    async def _records(self, found: dict[str, str]) -> list[Record]:
        """The history records of a page: from the bundles held in memory, else decoded
        from storage with their references read from the journal."""
        execution_id = self._execution_id or self.core.execution_id
        # Newest first, so that a bundle knows which of its steps a newer record of the
        # page shows (a step's start, with its completion a commit later): those need no
        # decoding, only their event is written.
        groups: list[list[Record]] = []
        superseded: set[str] = set()
        for key in reversed(found):
            text = found[key]
            held = self._held.get(key)
            if held is not None and held.text == text:
                group = held.records(superseded)
            else:
                group = records_of(key, text, execution_id)
            superseded.update([record.key for record in group])
            groups.append(group)
        records = list(chain.from_iterable(reversed(groups)))
        refs = [r.key for r in records if r.value is UNREAD]
        if not refs:
            return records
        return resolved(records, dict(await self.core.storage.get_many(refs)))


def _missing_migration(exc: Exception) -> str:
    """A hint when D1 lacks what a migration of ``migrations/`` adds (the records wait)."""
    text = str(exc)
    for migration, names in ADDED.items():
        if any(name in text for name in names):
            return f" (D1 lacks migrations/{migration}: wrangler d1 migrations apply)"
    return ""


# The engine's plug-in hook: an execution built with ``history=<D1 binding>`` gets an outbox.
register_observer("history", Outbox)
