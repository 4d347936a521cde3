"""The floor: one raw committed SQLite write per step, nothing else.

Same table shape as the local runtime's SQLite backend (``kv`` WITHOUT ROWID,
UTF-8 BLOB keys), same journal mode (WAL) and ``synchronous`` setting, and a
value of the same size as the engine's average write. A step of the engine can
never cost less than this.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class OutboxModel:
    """What the history projection adds to a run's storage writes, measured (not assumed):
    the history engine's commits and bytes per step less the plain engine's, over one
    untimed run of each (:func:`bench._sqlite.outbox_model`)."""

    commits_per_step: float
    bytes_per_step: float

    def extra_commits(self, steps: int) -> int:
        """Extra commits in a run of ``steps`` steps (the measured rate, rounded)."""
        return round(self.commits_per_step * steps)

    def commit_bytes(self) -> int:
        """The value of each extra commit: the measured extra bytes spread over them."""
        return max(1, round(self.bytes_per_step / self.commits_per_step))


NO_OUTBOX = OutboxModel(0.0, 0.0)


class Floor:
    def __init__(self, path: str, synchronous: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS kv (obj TEXT NOT NULL, key BLOB NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (obj, key)) WITHOUT ROWID"
        )
        self._runs = 0
        self.last_commits = 0
        """Commits of the last run."""

    def run(self, steps: int, value_bytes: int, outbox: OutboxModel = NO_OUTBOX) -> float:
        """Seconds for ``steps`` committed writes of one ``value_bytes`` row each.

        ``outbox``: the history outbox's measured extra writes, as raw commits: its extra
        commits spread evenly over the run, each rewriting one row (``o:head``, another
        key range) with the measured extra bytes divided among them. If the outbox adds
        bytes but no commits, the bytes ride in the steps' own rows instead. No engine
        code either way: the floor of the same durable work."""
        self._runs += 1
        # Numbered so each run's keys sort after every earlier run's (see bench._engine.Engine.run).
        obj = f"floor-{self._runs:06d}"
        extra = outbox.extra_commits(steps)
        if extra == 0:
            value_bytes += round(outbox.bytes_per_step)
        value = "x" * value_bytes
        head = "o" * (outbox.commit_bytes() if extra else 0)
        put = "INSERT OR REPLACE INTO kv (obj, key, value) VALUES (?, ?, ?)"
        db = self.db
        start = time.perf_counter()
        for op in range(steps):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(put, [(obj, f"j:{op:08d}".encode(), value)])
            db.execute("COMMIT")
            # The (op + 1)-th step is followed by an extra commit whenever the running
            # count of extra commits due, extra * (op + 1) // steps, goes up.
            if extra and extra * (op + 1) // steps > extra * op // steps:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(put, [(obj, b"o:head", head)])
                db.execute("COMMIT")
        elapsed = time.perf_counter() - start
        self.last_commits = steps + extra
        return elapsed

    def close(self) -> None:
        self.db.close()
