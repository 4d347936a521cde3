"""The history outbox's write side: what each commit of an execution records.

The engine calls :meth:`Capture.capture` inside its single write path (``ExecutionState.
write``): the ``state``, ``j:<op>`` and ``c:<op>`` records of a commit become one outbox
bundle (``_bundle``), added to *the same atomic commit*, or, when they are all references
to journal entries (a step's completion and the next one's start), kept in memory only,
under the head's mark, for ``_recovery`` to read back after a crash: nearly every commit
of a run, kept as the values the engine handed over, with nothing built from them until
a delivery reads them (``Capture.capture``). The head (``o:head``)
reserves sequences a block at a time and carries the execution's last summary and the mark.
Delivering what is captured is ``_outbox.Outbox``'s part.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..engine import _journal as jn
from ..engine._plugins import ObservedExecution
from ._bundle import (
    Bundle,
    Piece,
    bundle_key,
    bundles,
    execution_piece,
    execution_row,
    plain_pieces,
    recovered_bundles,
    state_summary,
    step_piece,
)
from ._held import Held
from ._plain import foldable
from ._recovery import lowered, mark_for, read_back

log = logging.getLogger("workkit_workflow.history")

HEAD = jn.OUTBOX + "head"
RECORD_PREFIX = jn.OUTBOX + "0"
"""Record keys are ``o:`` + 12 zero-padded digits (``seq_key``): they all start with ``o:0``."""

SEQ_BLOCK = 256
"""Sequences the head reserves at a time. It is rewritten once per block, or when the
execution's summary changes, rather than with every commit; an object that restarts
goes on after the block (a gap in the sequence, never a reuse)."""

BATCH = 160
"""Outbox records (one per commit) sent per D1 batch; a run's step transitions wait for
this many before they are sent (or for ``LINGER``). ``HELD``, what memory keeps, is four
such pages. Each batch costs D1 a commit (a sync at FULL), the object a delivery and, on
Cloudflare, a subrequest: 80 rather than 40 took history on / off from about 1.35x to 1.28x
at FULL (medians of nine alternating runs, three times each, outside the bench); 160 rather
than 80 took 4k instructions a step off the history's 44k at NORMAL (most of it D1's SQL: a
block of 100 plain steps' entries is then written about once and a half rather than twice,
merged by ``json_patch`` each time after the first) and the batches per step by half."""

HELD = 4 * BATCH
"""Bundles kept in memory with their values for their delivery at most, four of its pages."""

HELD_REFERENCES = 4 * HELD
"""Bundles kept in memory at most, those beyond ``HELD`` as references only (a few hundred
bytes each, read back from the journal as they go out): while deliveries lag or fail.
Beyond, a commit stores its records (read back likewise). A run that never lets them run
(steps that wait for nothing, over a Durable Object's synchronous SQL journal) gets a turn
of the event loop at each full page (``Outbox.kick``), so it holds a page or two."""

READ_BACK_PAGE = 40
"""Journal entries read at a time by :meth:`Capture.restore`."""

_ACTIVE = ("pending", "running")


class Capture(Held):
    """The records an execution's commits carry, and what only memory holds of them."""

    # Slots: with its delivery's, ``_outbox.Outbox`` has 33 attributes, past the 30 whose
    # keys CPython shares among a class's instances (each execution's own dict, 1.6 KB).
    __slots__ = (
        "_active", "_floor", "_flush", "_last", "_last_text", "_mark", "_pending", "_reserved",
        "_restoring", "_stores", "_unsure", "kick_due", "seq", "undelivered",
    )  # fmt: skip

    core: ObservedExecution
    undelivered: bool
    """Whether records may wait (in storage or in memory): the delivery's to clear."""

    def __init__(self) -> None:
        Held.__init__(self)
        self.seq = 0
        self._last: list[Any] | None = None
        self._last_text = "null"
        self._mark: dict[str, int] = {}
        """The head's ``mem``: per journal prefix, the lowest operation whose transitions may
        be in memory only; empty when none is. Stored with the head, or, while ``_unsure``,
        by the next commit (the stored one is then lower, never higher)."""
        self._floor: tuple[dict[str, int], str | None] = (self._mark, None)
        """``_mark`` (never changed in place: a new mark is a new dict) and, when it holds the main
        phase's operation only (a run's usual mark), that operation's key: what ``capture``
        compares a commit's lowest key with, as text (zero-padded, keys sort as their operations
        do); None otherwise (each key is then looked at, ``lowered``)."""
        self._restoring: dict[str, int] | None = None
        """The mark an earlier instance left: what :meth:`restore` reads back."""
        self._unsure = False
        """Whether the stored head may lack ``_mark`` (``aborted``, a delivery): the next commit stores it."""
        self._stores = 0
        """Commits that stored records, counted as each is issued (``capture``, ``restore``)."""
        self._pending = 0
        """Outbox records (commits) written since the last delivery started."""
        self._flush = False
        """Whether a write since then asks for delivery now (``Outbox.kick``)."""
        self._active = False
        """Whether the last status recorded is pending or running: a start or a resume
        shows within ``LINGER``, with what follows it, rather than in a batch of its own."""
        self._reserved = 0
        """The sequence the stored head reserves up to (``SEQ_BLOCK``)."""
        self.kick_due = True
        """The journal observer's (``_plugins``): False only while the ``LINGER`` timer is set and
        nothing asks for delivery sooner (``Outbox.kick``; a commit that fills a page sets it)."""

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
                self._settle_tail()  # its sequences are its own; the tail's next ones follow the head's
                self._last = head.get("last")
                self._last_text = jn.dumps(self._last)
                self.seq = max(self.seq, reserved)
                self._reserved = reserved
                self._mark = {str(k): int(v) for k, v in (head.get("mem") or {}).items()}
                if self._mark and not (self._memory or self._tail):
                    self._restoring = dict(self._mark)  # it died with records in memory only
        if complete:
            self.undelivered = bool(self._restoring or self._memory or self._tail) or any(
                k.startswith(RECORD_PREFIX) for k in records
            )

    def capture(
        self, puts: Mapping[str, str], entries: Mapping[str, Mapping[str, Any]] | None = None
    ) -> dict[str, str]:
        """The outbox records for a commit of ``puts`` (added to the same commit);
        ``entries``: the values of some of them as the engine built them.

        Nearly every commit of a run holds a step's transitions only, every value handed
        over: it stays in memory only, as the values (``Held._tail``) or, past ``HELD``, as a
        bundle of references (``_keep_references``), under the head's mark (the journal holds
        it all)."""
        try:
            if entries is None or len(entries) != len(puts) or self._restoring is not None:
                return self._capture(puts, entries)
            tail = self._tail
            held = len(tail) + len(self._held)
            if held < HELD:
                if not tail:
                    self._tail_seq = self.seq + 1
                tail.append(entries)
            elif held < HELD_REFERENCES:
                self._keep_references(entries)
            else:
                return self._capture(puts, entries)
            self.seq += len(entries)
            mark = self._mark
            marked, floor = self._floor
            if marked is not mark:
                floor = jn.op_key(jn.MAIN, mark[jn.MAIN]) if mark.keys() == {jn.MAIN} else None
                self._floor = (mark, floor)
            # A key under the floor: a lower operation, or a compensation's (``c:`` sorts first).
            if floor is None or min(entries) < floor:
                mark = lowered(mark, entries)
            if self.seq > self._reserved or mark is not self._mark or self._unsure:
                return self._recorded({}, mark, True)
            self.undelivered = True  # ``_recorded`` of a commit that stores no head, spelt out
            self._pending += 1
            if self._pending >= BATCH:
                self.kick_due = True
            return {}
        except Exception:
            # Never fail a workflow's write because of its history.
            log.exception("workkit_workflow: could not record history for this write")
            self.kick_due = True
            return {}

    def _capture(
        self, puts: Mapping[str, str], entries: Mapping[str, Mapping[str, Any]] | None
    ) -> dict[str, str]:
        self._settle_tail()
        pieces: list[Piece] | None = None
        if entries is not None and len(entries) == len(puts):
            # The engine built every value: a step's transitions, read without their texts.
            pieces = plain_pieces(entries)
        references = pieces is not None  # a step's transitions are references, every one
        if references:
            last = self._last
        elif jn.STATE in puts or jn.META in puts:
            pieces, last = self._with_state(puts)
        else:
            # A step's transitions only: nearly every commit of a run.
            pieces = [step_piece(key, puts[key]) for key in sorted(puts) if key.startswith(jn.OP_PREFIXES)]
            last = self._last
        if not pieces:
            return {}
        execution_id = self._id()
        seq, at = self.seq + 1, self.core.now()
        out: dict[str, str] = {}
        self.seq += len(pieces)
        mark = self._mark
        if (
            self._restoring is None
            and len(self._held) < HELD
            and (references or None not in [p.ref for p in pieces])
        ):
            # Only references: the journal entries of this commit hold all of it.
            key = bundle_key(seq)
            self._memory[key] = self._held[key] = Bundle.held(key, seq, at, execution_id, pieces)
            mark = lowered(mark, [piece.key for piece in pieces])
        else:
            # It may overwrite an entry a bundle in memory refers to (a retry's start, a
            # wait): those are stored with it.
            self._store(out, seq, at, pieces)
            mark = self._memory_mark()
        head = (
            last is not self._last
            or self.seq > self._reserved
            or (mark is not self._mark and mark != self._mark)
            or self._unsure
        )
        if last is not self._last:
            self._last, self._last_text = last, jn.dumps(last)
        return self._recorded(out, mark, head)

    def _recorded(self, out: dict[str, str], mark: dict[str, int], head: bool) -> dict[str, str]:
        """``out``, the records of a commit that recorded something, with the head when
        ``head`` says it must be stored (it then holds ``mark``)."""
        if head:
            self._mark, self._unsure = mark, False
            self._reserved = self.seq + SEQ_BLOCK
            out[HEAD] = self._head()
        self.undelivered = True
        self._pending += 1
        if self._pending >= BATCH:
            self.kick_due = True  # a full page (a flush sets it where it is asked for)
        return out

    def _with_state(self, puts: Mapping[str, str]) -> tuple[list[Piece], list[Any] | None]:
        """The pieces of a commit that writes the execution's ``state`` or ``meta``, and the
        summary of its state then (an event only when it changed, or with ``meta``)."""
        meta: dict[str, Any] | None = None
        if jn.META in puts:
            meta = jn.decode_record(jn.META, puts[jn.META])
            self._execution_id = str(meta["execution_id"])
        pieces = []
        last = self._last
        for key in sorted(puts):
            if key == jn.STATE:
                state = jn.decode_record(key, puts[key])
                summary = state_summary(state)
                if summary == last and meta is None:
                    continue
                last = summary
                pieces.append(execution_piece(execution_row(state, meta, self.core.workflow_name)))
                self._active = state.get("status") in _ACTIVE
                if not self._active:
                    self._flush = self.kick_due = True  # it parks or ends: the page should show it now
            elif key.startswith(jn.OP_PREFIXES):
                pieces.append(step_piece(key, puts[key]))
        return pieces, last

    def _head(self) -> str:
        tail = f'"last":{self._last_text}' + (f',"mem":{jn.dumps(self._mark)}' if self._mark else "")
        return f'{{"v":{jn.VERSION},"seq":{self.seq},"reserved":{self._reserved},{tail}}}'

    def _store(self, out: dict[str, str], seq: int, at: float, pieces: list[Piece]) -> None:
        """Put the records of a commit (``pieces``, sequences from ``seq`` on) and of every bundle
        memory holds into ``out``: one record for all when memory's are transitions their steps'
        rows hold (the record's one time is then no event's) and no delivery has a page of them
        in hand, else one each: a short execution's end writes (and deletes) one record."""
        first = next(iter(self._memory.values()), None)
        if first is not None and not self._delivering() and (held := foldable(self._memory, seq)) is not None:
            self._drop_memory()
            seq, pieces = first.seq, held + pieces
        elif first is not None:
            self._store_memory(out)
        for bundle in bundles(seq, at, self._id(), pieces):
            out[bundle.key] = bundle.text
            if len(self._held) < HELD:
                self._held[bundle.key] = bundle
        self._stores += 1

    def _delivering(self) -> bool:
        """Whether a delivery may have a page of memory's in hand (``Outbox``'s): each bundle is
        then stored under its own key, the one the delivery drops after it."""
        return True

    def _keep_references(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Keep a commit of a step's transitions in memory as references only (past ``HELD``:
        read back from the journal as they go out), after what the tail holds."""
        self._settle_tail()
        seq = self.seq + 1
        key = bundle_key(seq)
        pieces = plain_pieces(entries, values=False)
        self._memory[key] = self._held[key] = Bundle.held(key, seq, None, self._id(), pieces)

    def aborted(self) -> None:
        """A write failed after :meth:`capture` saw it: memory may hold its records, which never
        happened, and the head it carried was not stored. As after a crash, the journal says
        what did happen: the next drive reads it back from the lowest operation any record
        held here names (``restore``), and the next write stores the head again."""
        mark = self._tail_mark(mark_for(self._held.values(), self._restoring))
        self._drop_memory()
        self._restoring = mark or None
        self._unsure = True

    def _memory_mark(self) -> dict[str, int]:
        """The mark the head needs for what is in memory now (and what waits for ``restore``)."""
        return self._tail_mark(mark_for(self._memory.values(), self._restoring))

    async def restore(self) -> None:
        """Store what the journal shows of the transitions an earlier instance held in
        memory only, before this instance's drive writes (``_recovery``)."""
        restoring = self._restoring
        if not restoring:
            return
        storage = self.core.storage
        items = await read_back(storage, restoring, READ_BACK_PAGE)
        puts = recovered_bundles(self.seq + 1, items) if items else {}
        self.seq += len(items)
        self._reserved = self.seq + SEQ_BLOCK
        self._restoring = None
        self._mark, self._unsure = self._memory_mark(), False
        puts[HEAD] = self._head()
        self._stores += 1
        try:
            await storage.commit(puts)
        except BaseException:
            self._restoring, self._unsure = restoring, True  # the mark stays: the next drive tries again
            raise
        self.undelivered = True
