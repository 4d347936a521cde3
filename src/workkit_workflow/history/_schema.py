"""The D1 schema of the history projection.

The same SQL ships as ``migrations/0001_workkit_history.sql`` for
``wrangler d1 migrations apply`` (a test keeps the two identical); the local
D1 stand-in applies it on open.

``wf_executions``  one row per execution, its latest known state
``wf_steps``       one row per operation (step, sleep, wait) of either phase,
                   its latest state: attempts, timings, every failed attempt
``wf_events``      every transition, append-only, keyed by execution and sequence

Every row carries the outbox sequence that wrote it: an upsert only replaces a
row with a newer sequence, and an event row is inserted once, so delivering
the same outbox record twice (or late, after a newer one) changes nothing.
"""

from __future__ import annotations

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

TABLES: Final = ("wf_executions", "wf_steps", "wf_events")


def statements(sql: str = SCHEMA) -> list[str]:
    """The schema as single statements (D1's ``exec`` and ``batch`` take one each)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
