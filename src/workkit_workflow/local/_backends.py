"""Where the local runtime keeps Durable Object storage: in memory or in SQLite.

Both are synchronous and hold every object of a namespace, keyed by object
name, with the key-value API of a Durable Object (ordered keys, atomic
commits, one alarm per object). SQLite runs in WAL mode with durable commits
(``synchronous=FULL`` unless told otherwise): a commit that returned survives
the process being killed.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..engine._ports import KEEP_ALARM

log = logging.getLogger("workkit_workflow.local")

CHECKPOINT_PAGES = 10_000
"""Pages the write-ahead log grows to before a commit copies it into the database (SQLite's
``wal_autocheckpoint``; its default is 1,000). A checkpoint copies each page the log holds
once, however often it was rewritten since the last, and syncs the file (at NORMAL the only
waits on the disk): with many objects writing at once, ten times fewer checkpoints copy
fewer pages in all and wait on the disk ten times less. The log holds up to about 40 MiB
(4 KiB pages) in return. Durability is the same at any value: a checkpoint only moves
committed pages from the log into the database."""


class Backend(Protocol):
    def get_many(self, obj: str, keys: Sequence[str]) -> dict[str, str]: ...

    def list(
        self,
        obj: str,
        prefix: str | None,
        start: str | None,
        end: str | None,
        limit: int | None,
        reverse: bool,
    ) -> dict[str, str]: ...

    def commit(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str], alarm: Any) -> None: ...

    def get_alarm(self, obj: str) -> float | None: ...

    def alarms(self) -> dict[str, float]: ...

    def objects(self) -> builtins.list[str]: ...

    def close(self) -> None: ...


def _in_range(key: str, prefix: str | None, start: str | None, end: str | None) -> bool:
    if prefix is not None and not key.startswith(prefix):
        return False
    if start is not None and key.encode() < start.encode():
        return False
    return not (end is not None and key.encode() >= end.encode())


class MemoryBackend:
    """Dicts in memory: survives eviction of an object, not the process."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}
        self._alarms: dict[str, float] = {}

    def get_many(self, obj: str, keys: Sequence[str]) -> dict[str, str]:
        data = self._data.get(obj, {})
        return {k: data[k] for k in keys if k in data}

    def list(
        self,
        obj: str,
        prefix: str | None,
        start: str | None,
        end: str | None,
        limit: int | None,
        reverse: bool,
    ) -> dict[str, str]:
        data = self._data.get(obj, {})
        # Cloudflare orders keys by their UTF-8 bytes.
        keys = sorted((k for k in data if _in_range(k, prefix, start, end)), key=str.encode, reverse=reverse)
        if limit is not None:
            keys = keys[:limit]
        return {k: data[k] for k in keys}

    def commit(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str], alarm: Any) -> None:
        data = self._data.setdefault(obj, {})
        data.update(puts)
        for key in deletes:
            data.pop(key, None)
        if not data:
            del self._data[obj]  # an object with no keys holds nothing (as in SQLite)
        if alarm is not KEEP_ALARM:
            if alarm is None:
                self._alarms.pop(obj, None)
            else:
                self._alarms[obj] = float(alarm)

    def get_alarm(self, obj: str) -> float | None:
        return self._alarms.get(obj)

    def alarms(self) -> dict[str, float]:
        return dict(self._alarms)

    def objects(self) -> builtins.list[str]:
        return sorted(self._data)

    def close(self) -> None:
        return None


ONE_STATEMENT_ROWS = 8
"""Commits of up to this many puts and nothing else are one multi-row INSERT."""

_KEY = "CAST(? AS BLOB)"
"""A key bound as text and stored as its UTF-8 bytes (the database's encoding): the
bytes ``str.encode()`` gives, without the driver's adapter lookup for a bytes
argument (a failed ``__conform__`` probe per key)."""

_PUTS = [""] + [
    "INSERT OR REPLACE INTO kv (obj, key, value) VALUES " + ", ".join([f"(?, {_KEY}, ?)"] * rows)
    for rows in range(1, ONE_STATEMENT_ROWS + 1)
]
_GET = f"SELECT value FROM kv WHERE obj = ? AND key = {_KEY}"
_GET_MANY = [""] + [
    f"SELECT CAST(key AS TEXT), value FROM kv WHERE obj = ? AND key IN ({', '.join([_KEY] * keys)})"
    for keys in range(1, ONE_STATEMENT_ROWS + 1)
]
"""A read of up to ``ONE_STATEMENT_ROWS`` keys as one statement (an object's load reads
three): one pass through the driver, not one per key."""
_DELETE = f"DELETE FROM kv WHERE obj = ? AND key = {_KEY}"


class SqliteBackend:
    """One SQLite database for all objects of a namespace (WAL, durable commits)."""

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError("synchronous must be FULL, NORMAL, EXTRA or OFF")
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kv (obj TEXT NOT NULL, key BLOB NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (obj, key)) WITHOUT ROWID"
        )
        # Keyed by the object itself (no rowid): setting an alarm rewrites one page. With a
        # rowid, ``INSERT OR REPLACE`` moved the row to a new rowid at the table's end and
        # rewrote its index entry too, and with thousands of objects the two were pages apart.
        # (A file made before keeps its table: the statements are the same for both.)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS alarms (obj TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID"
        )
        self._writer = self._db.cursor()
        """The cursor of every commit (under ``_lock``): one object less per statement."""

    @property
    def connection(self) -> sqlite3.Connection:
        """The file's SQLite connection, for reading SQLite's own counters (the bench
        counts the log's frames through it); the runtime's writes go through this class."""
        return self._db

    def get_many(self, obj: str, keys: Sequence[str]) -> dict[str, str]:
        if 1 < len(keys) <= ONE_STATEMENT_ROWS:
            rows = dict(self._db.execute(_GET_MANY[len(keys)], (obj, *keys)))
            return {key: rows[key] for key in keys if key in rows}  # in the order asked
        found: dict[str, str] = {}
        for key in keys:
            row = self._db.execute(_GET, (obj, key)).fetchone()
            if row is not None:
                found[key] = row[0]
        return found

    def list(
        self,
        obj: str,
        prefix: str | None,
        start: str | None,
        end: str | None,
        limit: int | None,
        reverse: bool,
    ) -> dict[str, str]:
        # Keys are stored as UTF-8 BLOBs so SQLite orders them as Cloudflare does; read
        # back as text, the rows are (str, str) pairs the dict is built from directly.
        sql = "SELECT CAST(key AS TEXT), value FROM kv WHERE obj = ?"
        args: list[Any] = [obj]
        if prefix:
            low = prefix.encode()
            sql += " AND key >= ? AND key < ?"
            args += [low, low + b"\xff"]
        if start is not None:
            sql += " AND key >= ?"
            args.append(start.encode())
        if end is not None:
            sql += " AND key < ?"
            args.append(end.encode())
        sql += " ORDER BY key DESC" if reverse else " ORDER BY key"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return dict(self._db.execute(sql, args))

    def commit(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str], alarm: Any) -> None:
        with self._lock:
            if deletes or alarm is not KEEP_ALARM or not 0 < len(puts) <= ONE_STATEMENT_ROWS:
                self._transaction(obj, puts, deletes, alarm)
                return
            # A step transition (a few puts, nothing else) is one statement, and
            # in autocommit mode one statement is one transaction: atomic, synced
            # as COMMIT would be, and it takes the write lock at its start as
            # BEGIN IMMEDIATE does. It saves two round trips through the driver.
            # On an error SQLite rolls the statement back by itself.
            args: list[str] = []
            for key, value in puts.items():
                args += (obj, key, value)
            self._writer.execute(_PUTS[len(puts)], args)

    def _transaction(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str], alarm: Any) -> None:
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            if puts:
                db.executemany(_PUTS[1], [(obj, k, v) for k, v in puts.items()])
            if deletes:
                db.executemany(_DELETE, [(obj, k) for k in deletes])
            if alarm is not KEEP_ALARM:
                if alarm is None:
                    db.execute("DELETE FROM alarms WHERE obj = ?", (obj,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO alarms (obj, at) VALUES (?, ?)",
                        (obj, float(alarm)),
                    )
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        # SQLite rolls back by itself on some errors (SQLITE_FULL, SQLITE_IOERR):
        # a ROLLBACK then fails with "no transaction is active" and would hide
        # the real error ("database or disk is full") from the caller.
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback after a failed commit failed too: %r", exc)

    def get_alarm(self, obj: str) -> float | None:
        row = self._db.execute("SELECT at FROM alarms WHERE obj = ?", (obj,)).fetchone()
        return None if row is None else float(row[0])

    def alarms(self) -> dict[str, float]:
        return {obj: float(at) for obj, at in self._db.execute("SELECT obj, at FROM alarms")}

    def objects(self) -> builtins.list[str]:
        return [row[0] for row in self._db.execute("SELECT DISTINCT obj FROM kv ORDER BY obj")]

    def close(self) -> None:
        self._db.close()
