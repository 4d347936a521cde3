"""The floor: one raw committed SQLite write per step, nothing else.

Same table shape as the local runtime's SQLite backend (``kv`` WITHOUT ROWID,
UTF-8 BLOB keys), same journal mode (WAL) and ``synchronous`` setting, and a
value of the same size as the engine's average write. A step of the engine can
never cost less than this.
"""

from __future__ import annotations

import sqlite3
import time


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

    def run(self, steps: int, value_bytes: int) -> float:
        """Seconds for ``steps`` committed writes of one ``value_bytes`` row each."""
        self._runs += 1
        obj = f"floor-{self._runs}"
        value = "x" * value_bytes
        db = self.db
        start = time.perf_counter()
        for op in range(steps):
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR REPLACE INTO kv (obj, key, value) VALUES (?, ?, ?)",
                (obj, f"j:{op:08d}".encode(), value),
            )
            db.execute("COMMIT")
        return time.perf_counter() - start

    def close(self) -> None:
        self.db.close()
