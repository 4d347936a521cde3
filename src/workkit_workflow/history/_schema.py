"""The D1 schema of the history projection.

The same SQL ships as ``migrations/0001_workkit_history.sql`` and
``migrations/0002_workkit_transitions.sql`` for ``wrangler d1 migrations apply``
(a test keeps them identical); the local D1 stand-in applies what a file lacks on open.

``wf_executions``   one row per execution, its latest known state
``wf_steps``        one row per operation (step, sleep, wait) of either phase,
                    its latest state: attempts, timings, every failed attempt
``wf_events``       the transitions its row does not hold, append-only, keyed by
                    execution and sequence
``wf_transitions``  (a view) every transition: ``wf_events`` and, from each step's
                    row, its first start and its completion

A step's first attempt starting and its completion are most of a run's transitions,
and the step's row holds both (``started_at``, ``finished_at``): since version 2 they
are not events of their own but the row's ``started_seq`` and ``finished_seq``, the
sequences their events would have had. That is a third of the rows D1 writes (and
bills) per step. An event that adds something (an error, a retry's time) stays one.

Every row carries the outbox sequence that wrote it: an upsert only replaces a
row with a newer sequence (a transition's sequence, once set, stays), and an event
row is inserted once, so delivering the same outbox record twice (or late, after a
newer one) changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

SCHEMA: Final = """\
-- workkit-workflow history projection (schema version 1)
CREATE TABLE IF NOT EXISTS wf_executions (
  execution_id TEXT PRIMARY KEY,
  workflow TEXT NOT NULL,
  status TEXT NOT NULL,
  phase TEXT NOT NULL,
  created_at REAL NOT NULL,
  started_at REAL,
  finished_at REAL,
  updated_at REAL NOT NULL,
  wake_at REAL,
  waiting_for TEXT,
  error TEXT,
  failed_step TEXT,
  step_attempt INTEGER,
  compensation_status TEXT,
  compensation TEXT,
  cancel_reason TEXT,
  input TEXT,
  restarted_from TEXT,
  seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS wf_executions_created ON wf_executions (created_at DESC, execution_id DESC);
CREATE INDEX IF NOT EXISTS wf_executions_workflow ON wf_executions (workflow, created_at DESC);
CREATE INDEX IF NOT EXISTS wf_executions_status ON wf_executions (status, created_at DESC);
CREATE TABLE IF NOT EXISTS wf_steps (
  execution_id TEXT NOT NULL,
  phase TEXT NOT NULL,
  op INTEGER NOT NULL,
  name TEXT NOT NULL,
  kind TEXT NOT NULL,
  status TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  started_at REAL,
  attempt_started_at REAL,
  finished_at REAL,
  retry_at REAL,
  wake_at REAL,
  event_type TEXT,
  error TEXT,
  errors TEXT,
  restored_from TEXT,
  seq INTEGER NOT NULL,
  PRIMARY KEY (execution_id, phase, op)
);
CREATE TABLE IF NOT EXISTS wf_events (
  execution_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  at REAL NOT NULL,
  kind TEXT NOT NULL,
  phase TEXT,
  op INTEGER,
  name TEXT,
  status TEXT NOT NULL,
  attempt INTEGER,
  detail TEXT NOT NULL,
  PRIMARY KEY (execution_id, seq)
);
"""

TRANSITIONS: Final = """\
-- workkit-workflow history projection (schema version 2): a step's plain transitions in its row,
-- and how many event types an execution waits for when waiting_for lists only the first 32
ALTER TABLE wf_steps ADD COLUMN started_seq INTEGER;
ALTER TABLE wf_steps ADD COLUMN finished_seq INTEGER;
ALTER TABLE wf_executions ADD COLUMN waiting_for_count INTEGER;
CREATE VIEW IF NOT EXISTS wf_transitions AS
  SELECT execution_id, seq, at, kind, phase, op, name, status, attempt, detail FROM wf_events
  UNION ALL
  SELECT execution_id, started_seq, started_at, 'step', phase, op, name, 'running', 1, '{}'
  FROM wf_steps WHERE started_seq IS NOT NULL
  UNION ALL
  SELECT execution_id, finished_seq, finished_at, 'step', phase, op, name, 'completed', attempt, '{}'
  FROM wf_steps WHERE finished_seq IS NOT NULL;
"""

MIGRATIONS: Final = {"0001_workkit_history.sql": SCHEMA, "0002_workkit_transitions.sql": TRANSITIONS}
"""The files of ``migrations/``, in the order ``wrangler d1 migrations apply`` runs them."""

ADDED: Final = {
    "0002_workkit_transitions.sql": ("started_seq", "finished_seq", "waiting_for_count", "wf_transitions")
}
"""The names each migration after the first adds: D1 naming one in an error means it lacks it."""

TABLES: Final = ("wf_executions", "wf_steps", "wf_events")

VIEWS: Final = ("wf_transitions",)


def statements(sql: str = SCHEMA) -> list[str]:
    """The schema as single statements (D1's ``exec`` and ``batch`` take one each)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def migration_statements(step_columns: Collection[str]) -> list[str]:
    """What brings a database whose ``wf_steps`` has ``step_columns`` (none: no table yet)
    to the newest schema: the tables if missing, version 2 if its columns are."""
    out = statements(SCHEMA)
    if "started_seq" not in step_columns:
        out += statements(TRANSITIONS)
    return out
