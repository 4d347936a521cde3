"""The Storage port over ``ctx.storage.sql`` of a SQLite-backed Durable Object: the SQL journal."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping, MutableSequence, Sequence
from typing import Any

from ..definitions._json import MAX_VALUE_BYTES, check_size
from ..engine._ports import KEEP_ALARM, StorageReadError
from ._storage import _ms, _text_map, read_alarm
from ._workers import to_js, to_py

log = logging.getLogger("workkit_workflow")


JOURNAL_TABLE = "workkit_journal"
_CREATE = f"CREATE TABLE IF NOT EXISTS {JOURNAL_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_SELECT_ONE = f"SELECT value FROM {JOURNAL_TABLE} WHERE key = ?"
_ANY_ROW = f"SELECT 1 FROM {JOURNAL_TABLE} LIMIT 1"
_MAX_BOUND = 100
"""Bound parameters per statement a Durable Object's SQLite accepts."""
_ROWS_PER_UPSERT = _MAX_BOUND // 2


@functools.cache
def _upsert(rows: int) -> str:
    values = ", ".join(["(?, ?)"] * rows)
    return (
        f"INSERT INTO {JOURNAL_TABLE} (key, value) VALUES {values} "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )


@functools.cache
def _delete(keys: int) -> str:
    return f"DELETE FROM {JOURNAL_TABLE} WHERE key IN ({', '.join(['?'] * keys)})"


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[at : at + size] for at in range(0, len(items), size)]


class SqlJournalStorage:
    """The Storage port over ``ctx.storage.sql`` of a SQLite-backed Durable Object.

    Why: an awaited ``ctx.storage.put`` per step suspends the step's task, which costs
    Pyodide about three event-loop turns plus the JavaScript wake-up (0.13-0.4 ms a step in
    workerd, miniflare/realruntime/NOTES.md); ``sql.exec`` is synchronous (0.01-0.03 ms),
    so ``commit`` completes without suspending.

    Atomicity: a step's commit (a few puts, the alarm kept) is one multi-row upsert, and a
    SQL statement is atomic by itself. A commit of more than one statement (deletes, more
    than 50 puts) or with an alarm change runs inside one ``transactionSync`` callback, so a
    throw part-way rolls every write and the alarm change back (measured in workerd:
    miniflare/realruntime/worker/probes.py); ``transactionSync`` is left off the hot path
    because in the engine it costs more than the upsert (miniflare/realruntime/NOTES.md).
    The object's SQLite database commits key-value data, SQL tables and the alarm together,
    so a crash keeps a commit whole or drops it (SIGKILL test in tests/test_realruntime_do.py).
    Durability is what an awaited ``put`` gave: the runtime's output gate holds every
    response and outgoing message until the write is on disk. A commit that changes the
    alarm (not a step's: the engine changes it when it starts, parks or settles) awaits
    ``setAlarm``'s promise after the transaction, to surface a refusal; the change is
    already in the transaction (on SQLite-backed objects the alarm lives in that database).

    Keys and values are text in one table, in the byte order of their UTF-8 keys (SQLite's
    BINARY collation), like the key-value API's ``list``. Values stay str: ``sql.exec``
    refuses ints >= 2**53 and stores True as 'true'.

    Executions journaled by an older version of this package through the key-value API are
    adopted once per object, on first use: the table is empty, so every text value of the
    key-value store is copied into it and deleted from the key-value store in one
    transaction (see :meth:`_adopt_key_value_journal`).
    """

    def __init__(self, storage: Any, sql: Any) -> None:
        self._storage = storage
        self._sql = sql
        sql.exec(_CREATE)
        self._adopted = False
        self._adopting = asyncio.Lock()

    # -- reads ------------------------------------------------------------------

    def _rows(self, query: str, *args: Any) -> list[list[Any]]:
        try:
            rows = to_py(self._sql.exec(query, *args).raw().toArray())
        except Exception as exc:
            raise StorageReadError(exc) from exc
        return rows if isinstance(rows, list) else []

    async def get(self, key: str) -> str | None:
        await self._ready()
        rows = self._rows(_SELECT_ONE, key)
        return rows[0][0] if rows and isinstance(rows[0][0], str) else None

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        await self._ready()
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        for at in range(0, len(unique), _MAX_BOUND):
            chunk = unique[at : at + _MAX_BOUND]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT key, value FROM {JOURNAL_TABLE} WHERE key IN ({marks})"
            found.update(_text_rows(self._rows(query, *chunk)))
        # In key order, as the key-value API's get([...]) answers.
        return {key: found[key] for key in sorted(found, key=_utf8)}

    async def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, str]:
        await self._ready()
        where, args = _range_clause(prefix, start, end)
        query = f"SELECT key, value FROM {JOURNAL_TABLE}{where} ORDER BY key{' DESC' if reverse else ''}"
        if limit is not None:
            query += " LIMIT ?"
            args.append(int(limit))
        return _text_rows(self._rows(query, *args))

    # -- writes -----------------------------------------------------------------

    def commit_now(self, puts: Mapping[str, str]) -> bool:
        """A step's commit (a few rows, nothing deleted, the alarm kept), made at once: one
        statement, no await. False, with nothing written, if it needs one (the journal
        not adopted yet, too many rows): then the engine calls :meth:`commit`."""
        if not self._adopted or len(puts) > _ROWS_PER_UPSERT:
            return False
        args = _row_args(puts)
        if args:
            self._sql.exec(_upsert(len(puts)), *args)
        return True

    async def commit(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> None:
        _row_args(puts)  # refused before anything is written
        if not self._adopted:
            await self._adopt_key_value_journal()
        if alarm is KEEP_ALARM and not deletes and self.commit_now(puts):
            return
        await self._transaction(lambda issued: self._write(puts, deletes, alarm, issued))

    async def _transaction(self, body: Callable[[MutableSequence[Any]], None]) -> None:
        """Run ``body`` in one ``transactionSync``, then await the storage calls it issued
        (alarm changes, key-value deletes), to surface a refusal as an error: their writes
        are already part of the committed transaction. Only such commits wait; a step's
        does not get here."""
        issued: list[Any] = []
        try:
            self._storage.transactionSync(lambda: body(issued))
        except BaseException:
            for call in issued:
                _discard(call)
            raise
        for call in issued:
            await call

    def _write(
        self, puts: Mapping[str, str], deletes: Sequence[str], alarm: Any, issued: MutableSequence[Any]
    ) -> None:
        self._upsert(puts)
        for chunk in _chunks(list(dict.fromkeys(deletes)), _MAX_BOUND):
            self._sql.exec(_delete(len(chunk)), *chunk)
        if alarm is not KEEP_ALARM:
            issued.append(self._issue_alarm(alarm))

    def _upsert(self, puts: Mapping[str, str]) -> None:
        for chunk in _chunks(list(puts.items()), _ROWS_PER_UPSERT):
            self._sql.exec(_upsert(len(chunk)), *[part for row in chunk for part in row])

    def _issue_alarm(self, at: float | None) -> Any:
        """Issue the alarm change; its promise (or the SDK wrapper's coroutine)."""
        if at is None:
            return self._storage.deleteAlarm()
        return self._storage.setAlarm(_ms(at))

    async def get_alarm(self) -> float | None:
        value = await read_alarm(self._storage)
        return None if value is None else float(value) / 1000.0

    async def set_alarm(self, at: float | None) -> None:
        await self._issue_alarm(at)

    # -- executions journaled through the key-value API ------------------------------

    async def _ready(self) -> None:
        if not self._adopted:
            await self._adopt_key_value_journal()

    async def _adopt_key_value_journal(self) -> None:
        """Move what an older version journaled through the key-value API into the table.

        Only while the table is empty: once anything is in it, the table is the journal and
        key-value leftovers (there are none: the move is one transaction) are not read.
        """
        async with self._adopting:
            if self._adopted:
                return
            if not self._key_value_store_empty() and not self._rows(_ANY_ROW):
                legacy = _text_map(await self._storage.list())
                if legacy and not self._rows(_ANY_ROW):
                    await self._transaction(lambda issued: self._move(legacy, issued))
                    log.info(
                        "workkit_workflow: moved %d key-value entries into %s", len(legacy), JOURNAL_TABLE
                    )
            self._adopted = True

    def _key_value_store_empty(self) -> bool:
        """Whether the key-value store is known to be empty without a wait: the synchronous
        ``ctx.storage.kv`` of SQLite-backed objects, where the runtime has it. A new object
        (every execution is one) then adopts nothing without awaiting ``list()``: one
        JavaScript promise and a turn of Pyodide's event loop less per execution, and no
        look at the table either."""
        kv = getattr(self._storage, "kv", None)
        if kv is None:
            return False
        try:
            return next(iter(kv.list(to_js({"limit": 1}))), None) is None
        except Exception:
            return False  # an API of another shape: list() as before

    def _move(self, legacy: Mapping[str, str], issued: MutableSequence[Any]) -> None:
        self._upsert(legacy)
        for chunk in _chunks(list(legacy), 128):
            # Issued inside the transaction, so part of it (128 keys: the per-call limit of
            # key-value-backed objects, kept for safety).
            issued.append(self._storage.delete(to_js(list(chunk))))


def _discard(call: Any) -> None:
    # The SDK's storage wrapper returns a coroutine around the JS promise: closed, not
    # left to warn "never awaited" (the transaction that issued it was rolled back).
    if asyncio.iscoroutine(call):
        call.close()


def _utf8(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def _text_rows(rows: list[list[Any]]) -> dict[str, str]:
    return {str(row[0]): row[1] for row in rows if isinstance(row[1], str)}


def _range_clause(prefix: str | None, start: str | None, end: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause of a key-value ``list``: ``start`` inclusive, ``end`` exclusive."""
    clauses: list[str] = []
    args: list[Any] = []
    if prefix is not None:
        # The range lets SQLite use the primary key; substr checks the prefix exactly.
        clauses.append("key >= ? AND substr(key, 1, ?) = ?")
        args += [prefix, len(prefix), prefix]
    if start is not None:
        clauses.append("key >= ?")
        args.append(start)
    if end is not None:
        clauses.append("key < ?")
        args.append(end)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _row_args(puts: Mapping[str, str]) -> list[str]:
    """The upsert's arguments for ``puts`` (key, value, ...), each checked as the key-value
    API would check it (text, within the size limit)."""
    args: list[str] = []
    for key, value in puts.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"storage value for {key!r} must be str, got {type(value).__name__}")
        if not (key.isascii() and value.isascii() and len(key) + len(value) <= MAX_VALUE_BYTES):
            check_size(key, value, what=f"stored value {key!r}")
        args += (key, value)
    return args
