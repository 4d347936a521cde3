"""The floor: one raw committed SQLite write per step, nothing else.

Same table shape as the local runtime's SQLite backend (``kv`` WITHOUT ROWID,
UTF-8 BLOB keys), same journal mode (WAL) and ``synchronous`` setting, and a
value of the same size as the engine's average write. A step of the engine can
never cost less than this.
"""

from __future__ import annotations

import sqlite3
import time

OUTBOX_BATCH = 40
"""Outbox rows deleted per commit (the history outbox's batch)."""


class Floor:
    def __init__(self, path: str, synchronous: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS kv (obj TEXT NOT NULL, key BLOB NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (obj, key)) WITHOUT ROWID"
        )
        self._runs = 0

    def run(self, steps: int, value_bytes: int, *, outbox: int = 0) -> float:
        """Seconds for ``steps`` committed writes of one ``value_bytes`` row each.

        ``outbox``: each commit also writes a row of that many bytes under another key
        range (``o:``), deleted 40 at a time in a commit of their own: the floor of a
        history outbox written in the same commit as the journal, as the engine's is."""
        self._runs += 1
        obj = f"floor-{self._runs}"
        value = "x" * value_bytes
        db = self.db
        start = time.perf_counter()
        for op in range(steps):
            rows = [(obj, f"j:{op:08d}".encode(), value)]
            if outbox:
                rows.append((obj, f"o:{op:012d}".encode(), "o" * outbox))
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO kv (obj, key, value) VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")
            if outbox and (op % OUTBOX_BATCH == OUTBOX_BATCH - 1 or op == steps - 1):
                first = op - op % OUTBOX_BATCH
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "DELETE FROM kv WHERE obj = ? AND key = ?",
                    [(obj, f"o:{k:012d}".encode()) for k in range(first, op + 1)],
                )
                db.execute("COMMIT")
        return time.perf_counter() - start

    def close(self) -> None:
        self.db.close()
