"""What memory holds of an execution's history: the records its latest commits hold, which
storage does not (``_capture``: nearly every commit of a run is kept so), or not yet keyed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..engine._journal import OUTBOX
from ..engine._plugins import ObservedExecution
from ._bundle import Bundle
from ._recovery import lowered

_new = tuple.__new__


class Held:
    """The bundles an execution's commits wrote or kept in memory, until they are delivered
    (``Capture``'s part, apart)."""

    __slots__ = ("_execution_id", "_held", "_memory", "_tail", "_tail_seq")

    core: ObservedExecution

    def __init__(self) -> None:
        self._execution_id: str | None = None
        self._held: dict[str, Bundle] = {}
        """The bundles written and not delivered yet, by key (at most ``HELD``)."""
        self._memory: dict[str, Bundle] = {}
        """Bundles of commits that wrote no outbox record (all references), by key, in ``_held``
        too: the journal holds their entries (``_recovery``). In the order of their keys, each
        commit's sequences new (``Outbox._page`` reads it so)."""
        self._tail: list[Mapping[str, Mapping[str, Any]]] = []
        """The latest such commits (nearly every one of a run), newer than ``_memory``'s, as the
        values the engine handed over, no bundle made: :meth:`_settle_tail` makes theirs before
        anything else reads memory; a delivery of the tail alone projects them as they are
        (``Outbox._deliver_tail``). Held so, a run's steps leave the collector nothing to track
        but each commit's mapping (a bundle would be one more a commit)."""
        self._tail_seq = 0
        """The sequence of the tail's first record (each commit's follow on)."""

    def _store_memory(self, out: dict[str, str]) -> None:
        """Put every bundle held in memory only into ``out`` (the commit being made)."""
        for kept in self._memory.values():
            for bundle in kept.stored():
                out[bundle.key] = bundle.text
                self._held[bundle.key] = bundle
        self._memory.clear()

    def _drop_memory(self) -> None:
        """Forget every bundle memory alone holds (stored otherwise, or never written)."""
        for key in self._memory:
            self._held.pop(key, None)
        self._memory.clear()
        self._tail = []

    def _settle_tail(self) -> None:
        """Make the bundles of ``_tail``'s commits, in ``_memory`` and ``_held``; a new tail
        (a delivery with a page of the old one in hand tells so)."""
        if self._tail:
            seq, execution_id, memory, held = self._tail_seq, self._id(), self._memory, self._held
            for entries in self._tail:
                key = OUTBOX + str(seq).zfill(12)  # bundle_key(seq) and Bundle.held, spelt out
                memory[key] = held[key] = _new(Bundle, (key, "", seq, None, execution_id, entries))
                seq += len(entries)
            self._tail = []

    def _id(self) -> str:
        if self._execution_id is None:
            self._execution_id = self.core.execution_id
        return self._execution_id

    def _tail_mark(self, mark: dict[str, int]) -> dict[str, int]:
        """``mark`` lowered for the tail's operations too."""
        for entries in self._tail:
            mark = lowered(mark, entries)
        return mark
