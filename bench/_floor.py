"""The floor: one raw committed SQLite write per step, nothing else.

Same table shape as the local runtime's SQLite backend (``kv`` WITHOUT ROWID,
UTF-8 BLOB keys), same journal mode (WAL), ``synchronous`` setting and checkpoint
interval (``CHECKPOINT_PAGES``), and a
value of the same size as the engine's average write. A step of the engine can
never cost less than this.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from workkit_workflow.local._backends import CHECKPOINT_PAGES


@dataclass(frozen=True)
class OutboxModel:
    """What the history projection adds to a run's storage writes, measured (not assumed)
    over one untimed run of the history engine and one of the plain engine
    (:func:`bench._sqlite.outbox_model`)."""

    commits_per_step: float
    """Commits the history engine made more than the plain engine, per step."""
    bytes_per_step: float
    """Bytes it wrote more, per step, less those riding in the journal's commits."""
    riders_per_step: float = 0.0
    """The journal's commits that also carried outbox records (``o:`` keys), per step."""
    rider_bytes_per_step: float = 0.0
    """The bytes of those outbox records, per step."""

    def extra_commits(self, steps: int) -> int:
        """Extra commits in a run of ``steps`` steps (the measured rate, rounded)."""
        return round(self.commits_per_step * steps)

    def riders(self, steps: int) -> int:
        """Step commits of a run of ``steps`` steps that carry an outbox row too."""
        return round(self.riders_per_step * steps)

    def commit_bytes(self) -> int:
        """The row each extra commit writes: its share of the extra bytes (0: it deletes)."""
        return round(self.bytes_per_step / self.commits_per_step) if self.commits_per_step else 0

    def rider_bytes(self) -> int:
        """The outbox row a carrying step commit adds: its share of the riding bytes."""
        return max(1, round(self.rider_bytes_per_step / self.riders_per_step)) if self.riders_per_step else 0


NO_OUTBOX = OutboxModel(0.0, 0.0)


class Floor:
    def __init__(self, path: str, synchronous: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS kv (obj TEXT NOT NULL, key BLOB NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (obj, key)) WITHOUT ROWID"
        )
        self._runs = 0
        self.last_commits = 0
        """Commits of the last run."""

    def run(self, steps: int, value_bytes: int, outbox: OutboxModel = NO_OUTBOX) -> float:
        """Seconds for ``steps`` committed writes of one ``value_bytes`` row each.

        ``outbox``: the history outbox's measured writes, as raw SQLite: some step commits
        also write an ``o:head`` row (in another key range) of the bytes that rode in the
        journal's commits, and the extra commits each rewrite that row with their share of the
        other extra bytes, or delete it if they had none (a delivery deletes what was
        stored). Both are spread evenly over the run; in a run too short for one, their bytes
        go in the steps' rows. No engine code: the floor of the same durable work."""
        self._runs += 1
        # Numbered so each run's keys sort after every earlier run's (see bench._engine.Engine.run).
        obj = f"floor-{self._runs:06d}"
        extra, riders = outbox.extra_commits(steps), outbox.riders(steps)
        # Too short a run for a whole extra commit or carrying commit: its bytes ride in the rows.
        value_bytes += round(
            (0 if extra else outbox.bytes_per_step) + (0 if riders else outbox.rider_bytes_per_step)
        )
        value = "x" * value_bytes
        rider, head = "o" * outbox.rider_bytes(), "o" * outbox.commit_bytes()
        put = "INSERT OR REPLACE INTO kv (obj, key, value) VALUES (?, ?, ?)"
        db = self.db
        start = time.perf_counter()
        for op in range(steps):
            rows = [(obj, f"j:{op:08d}".encode(), value)]
            if _due(riders, op, steps):
                rows.append((obj, b"o:head", rider))
            db.execute("BEGIN IMMEDIATE")
            db.executemany(put, rows)
            db.execute("COMMIT")
            if _due(extra, op, steps):
                db.execute("BEGIN IMMEDIATE")
                if head:
                    db.executemany(put, [(obj, b"o:head", head)])
                else:
                    db.execute("DELETE FROM kv WHERE obj = ? AND key = ?", (obj, b"o:head"))
                db.execute("COMMIT")
        elapsed = time.perf_counter() - start
        self.last_commits = steps + extra
        return elapsed

    def close(self) -> None:
        self.db.close()


def _due(count: int, op: int, steps: int) -> bool:
    """Whether step ``op`` (from 0) gets one of ``count`` events spread evenly over ``steps``
    steps: when the running count due, ``count * (op + 1) // steps``, goes up."""
    return count * (op + 1) // steps > count * op // steps
