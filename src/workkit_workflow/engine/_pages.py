"""Reading a long journal a page at a time, as the workflow's code reaches each operation.

A drive starts with one bounded ``list`` of the object's records. When that holds
everything (the common case: a journal of fewer than :data:`FIRST_READ` records), the
main phase's entries are a window over it whose pages all count as read
(:meth:`JournalWindow.whole`). When it does not, the drive reads the few small
records it needs by name and prefix (:func:`read_execution`), and the main phase's
entries become a :class:`JournalWindow`: a dict that the phase fills page by page
(:meth:`JournalWindow.reach`, awaited by ``PhaseRun.replayed``) and from which it
drops the entries of finished operations once they were replayed, so the memory a
replay holds does not grow with the journal's length. A page's entries are held as their
text (:attr:`JournalWindow.texts`) and decoded as the phase reaches each: a step completed
as most are gives its output without the rest of its entry being decoded at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

from . import _journal as jn
from ._ports import Storage, StorageReadError
from ._signals import StorageFailure

FIRST_READ = 1024
"""Records the drive's first ``list`` reads: past this, the journal is read in pages."""

PAGE = 512
"""Operation entries per page."""

DISPOSABLE_KINDS = frozenset({"step", "sleep", "wait", "child"})
"""Operation kinds whose finished entries nothing reads once they were replayed (the
phase's end reads the children still waiting, to cancel them, not the finished ones).
Any other kind (live state, kinds added later) is kept, and so is a step with an undo
handler: the phase's end runs its undo."""


def _disposable(entry: dict[str, Any] | None) -> bool:
    return (
        entry is not None
        and entry.get("status") in ("completed", "failed")
        and entry.get("kind") in DISPOSABLE_KINDS
        and not entry.get("undo")
    )


class JournalWindow(dict[int, dict[str, Any]]):
    """The main phase's entries, read from storage as the phase reaches them.

    Holds the pages read so far, less the finished entries already replayed;
    what the phase records itself is added as in any entries dict.
    """

    # No instance dict beside the entries: one object less per execution in flight.
    __slots__ = (
        "_hashing",
        "_pages",
        "_reached",
        "_read_pages",
        "end",
        "hashes",
        "prefix",
        "scanned",
        "storage",
        "texts",
    )

    def __init__(self, storage: Storage, prefix: str, end: int, hashes: dict[str, str]) -> None:
        super().__init__()
        self.storage = storage
        self.prefix = prefix
        self.end = end
        """One past the last operation stored when the drive began."""
        self.hashes = hashes
        """Where completed entries with an idempotency key are recorded: their storage
        keys, by key hash (the execution's ``keyed``)."""
        self._pages: dict[int, asyncio.Future[None]] = {}
        # Dicts of ints rather than sets: the garbage collector does not track them, and the
        # window lives as long as the main phase runs (for every execution in flight).
        self._reached: dict[int, None] = {}
        """The operations reached (keys only)."""
        self._read_pages: dict[int, None] = {}
        """Pages read successfully, keys only (a read page stays read: its future never
        changes)."""
        self.texts: dict[int, str] = {}
        """The entries of the pages read, not decoded yet: a replayed step takes its output
        from its text (``phase._step``); any other is decoded into the window once its
        operation is reached (:meth:`_arrive`)."""
        self._hashing = False
        """Whether a scan began: a page read from then on records its keys as it is taken."""
        self.scanned = False
        """Whether a scan ended: every key of the journal is among ``hashes``."""

    @classmethod
    def whole(
        cls, storage: Storage, prefix: str, texts: dict[int, str], hashes: dict[str, str]
    ) -> JournalWindow:
        """A window over a journal the drive's first read held whole: every page counts as
        read, and its entries, held as ``texts``, are decoded as the phase reaches them."""
        window = cls(storage, prefix, max(texts, default=-1) + 1, hashes)
        window.texts = texts
        window._read_pages = dict.fromkeys(range(window._page_count()))
        return window

    def _page_count(self) -> int:
        return (self.end + PAGE - 1) // PAGE

    def _unread_pages(self) -> Iterator[int]:
        """The journal's pages neither read nor being read, each told as it comes (a page
        another task starts reading meanwhile is left to it)."""
        return (p for p in range(self._page_count()) if p not in self._pages and p not in self._read_pages)

    def ready(self, op: int) -> bool:
        """Whether ``op``'s page was read (then ``op`` counts as reached), without awaiting."""
        if op >= self.end:
            return True
        page = op // PAGE
        if page not in self._read_pages:
            loading = self._pages.get(page)
            if loading is None or not loading.done() or loading.exception() is not None:
                return False
            self._read_pages[page] = None
        self._arrive(op)
        return True

    async def reach(self, op: int) -> None:
        """Read the page holding ``op`` (if the journal has one), then forget finished
        entries that were already replayed."""
        if op >= self.end:
            return
        page = op // PAGE
        loading = self._pages.get(page)
        if self.ready(op):
            return
        if loading is None:
            self._prune()
            loading = self._pages[page] = asyncio.get_running_loop().create_future()
            try:
                self._take(await self._read(page * PAGE, (page + 1) * PAGE))
            except BaseException as exc:
                del self._pages[page]
                loading.set_exception(exc)
                loading.exception()  # retrieved: whoever waits on it re-raises
                raise
            loading.set_result(None)
        elif not loading.done():
            await asyncio.shield(loading)
        self._arrive(op)

    def _arrive(self, op: int) -> None:
        """``op`` is reached: its entry, if held as text, is decoded now. A text that is
        refused stays, so :meth:`finish` refuses it again and the drive fails, as when a
        page holding it is read whole."""
        self._reached[op] = None
        if op in self.texts:
            if op not in self:
                self[op] = self._decode(op, self.texts[op])
            del self.texts[op]

    async def finish(self) -> None:
        """Read every page the phase never reached, so its end sees (and settles) the
        journal's unreached operations as it would with the whole journal in memory."""
        for page in self._unread_pages():
            await self.reach(page * PAGE)
        for op in list(self.texts):
            self._arrive(op)

    async def scan_hashes(self) -> None:
        """Record the idempotency keys of the whole journal (once): a step looking one up
        may meet an operation the phase has not reached yet (parallel branches)."""
        if self.scanned:
            return
        # A scan that begins while another reads its pages reads them too: it may not say
        # the keys are known before they are.
        self._hashing = True
        self._remember_hashes(self.texts)  # the pages read so far (from now on, ``_take``)
        for page in self._unread_pages():
            self._remember_hashes(await self._read(page * PAGE, (page + 1) * PAGE))
        self.scanned = True

    async def _read(self, start: int, end: int) -> dict[int, str]:
        """The page's entries, as text (decoding waits until an operation needs one).

        Read inside the phase's body (a step reaching its page): a failure is raised as the
        engine's signal, which the body's ``except Exception`` cannot take for the step's."""
        ops = range(start, min(end, self.end))
        try:
            found = await self.storage.list(
                start=jn.op_key(self.prefix, ops.start), end=jn.op_key(self.prefix, ops.stop)
            )
        except StorageReadError as exc:
            raise StorageFailure(exc.cause, "read") from exc
        if len(found) == len(ops):
            # Every operation of the page is stored (the usual page): nothing but operation
            # entries is stored under the prefix, so the keys are exactly theirs, and the port
            # lists keys in order. The texts pair with the operations, no key parsed.
            return dict(zip(ops, found.values(), strict=True))
        start_at = len(self.prefix)
        return {int(key[start_at:]): text for key, text in found.items()}

    def _take(self, texts: dict[int, str]) -> None:
        # What the phase recorded itself is newer than what storage held.
        for op in [op for op in self if op in texts]:
            del texts[op]
        self.texts.update(texts)
        if self._hashing:
            self._remember_hashes(texts)

    def _remember_hashes(self, texts: dict[int, str]) -> None:
        """Record the idempotency keys held by entries not decoded yet: only a text that
        names the field can hold one (the entries decoded are recorded as they are)."""
        for op, text in texts.items():
            if not isinstance(text, str) or '"idempotency_hash"' in text:
                self._decode(op, text)

    def _decode(self, op: int, text: str) -> dict[str, Any]:
        """The entry at ``op``, decoded from its text (or refused); a completed one's
        idempotency key is recorded."""
        entry = jn.decode_record(jn.op_key(self.prefix, op), text)
        key_hash = entry.get("idempotency_hash")
        if key_hash and entry.get("status") == "completed":
            self.remember_key(str(key_hash), op)
        return entry

    def remember_key(self, key_hash: str, op: int) -> None:
        """The completed step at ``op``, replayed from its text, has this key's hash."""
        self.hashes.setdefault(key_hash, jn.op_key(self.prefix, op))

    def release(self, op: int) -> None:
        """Forget a finished entry replayed in passing (see ``PhaseRun.went_by``)."""
        self._reached.pop(op, None)
        self.pop(op, None)

    def _prune(self) -> None:
        done = [op for op in self._reached if _disposable(self.get(op))]
        for op in done:
            self.pop(op, None)
            self._reached.pop(op, None)


async def read_execution(storage: Storage, observer_heads: Sequence[str]) -> dict[str, str]:
    """The records a drive needs besides the journal, by name and prefix: ``meta``,
    ``state``, the inbox, the recorded idempotent results, and each journal observer's
    head with its first record. An observer's records share its head's prefix and sort
    before the head (``o:0...`` < ``o:head``), so that first key says whether any waits."""
    records = dict(await storage.get_many([jn.META, jn.STATE, *observer_heads]))
    records.update(await storage.list(prefix=jn.INBOX))
    records.update(await storage.list(prefix=jn.IDEMPOTENT))
    for head in observer_heads:
        records.update(await storage.list(prefix=head[: head.rindex(":") + 1], limit=1))
    return records


async def journal_end(storage: Storage, prefix: str) -> int:
    """One past the last operation stored under ``prefix`` (0 for none)."""
    last = await storage.list(prefix=prefix, reverse=True, limit=1)
    return max((jn.op_of(key) + 1 for key in last), default=0)
