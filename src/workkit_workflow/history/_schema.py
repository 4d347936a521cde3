"""The D1 schema of the history projection.

The same SQL ships as ``migrations/0001_workkit_history.sql`` and
``migrations/0002_workkit_transitions.sql`` for ``wrangler d1 migrations apply``
(a test keeps them identical); the local D1 stand-in applies what a file lacks on open.

``wf_executions``   one row per execution, its latest known state
``wf_steps``        (a view) one row per operation (step, sleep, wait) of either
                    phase, its latest state: attempts, timings, every failed attempt;
                    from ``wf_step_rows`` and ``wf_step_pages``
``wf_step_rows``    an operation's latest state as a row of its own
``wf_step_pages``   the plain completed steps of 100 operations of a phase, one JSON
                    object a row
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

Since version 3 a step that completed plainly (first attempt, nothing failed, nothing
rare: most of a run's steps) is no row of its own but an entry of its page's row in
``wf_step_pages``: the operations ``100 * block`` to ``100 * block + 99`` of a phase, an
object from the operation (zero-padded as in the journal's keys, ``"00000238"``) to
``[name, attempt, started_at, attempt_started_at, finished_at, seq, started_seq]``, its
instants in whole milliseconds (``attempt_started_at`` null when it is ``started_at``; its
completion's sequence is ``seq``). A page is upserted by merging in its new entries
(``json_patch``, what it holds winning: a plain completion is final), so a page written in
several deliveries, or twice, holds each once. D1 bills and limits rows written, and builds
each a statement's worth of bound values: a run writes one row per 100 such steps, not one
per step. The ``wf_steps`` view shows, for an operation in both, its page entry: a step's
completion is its last transition, the row can only be its start (its sequence the entry's
``started_seq`` when the entry lacks it) or the same completion again (a recovered record
D1 held already, written as a row).
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

_TRANSITIONS_VIEW = """\
CREATE VIEW IF NOT EXISTS wf_transitions AS
  SELECT execution_id, seq, at, kind, phase, op, name, status, attempt, detail FROM wf_events
  UNION ALL
  SELECT execution_id, started_seq, started_at, 'step', phase, op, name, 'running', 1, '{}'
  FROM wf_steps WHERE started_seq IS NOT NULL
  UNION ALL
  SELECT execution_id, finished_seq, finished_at, 'step', phase, op, name, 'completed', attempt, '{}'
  FROM wf_steps WHERE finished_seq IS NOT NULL;
"""

TRANSITIONS: Final = (
    """\
-- workkit-workflow history projection (schema version 2): a step's plain transitions in its row,
-- and how many event types an execution waits for when waiting_for lists only the first 32
ALTER TABLE wf_steps ADD COLUMN started_seq INTEGER;
ALTER TABLE wf_steps ADD COLUMN finished_seq INTEGER;
ALTER TABLE wf_executions ADD COLUMN waiting_for_count INTEGER;
"""
    + _TRANSITIONS_VIEW
)

PAGE_OPS: Final = 100
"""Operations of a phase per ``wf_step_pages`` row: what the last two digits of an operation's
zero-padded journal key leave (``_pages.page_step`` reads its page off the key)."""

_ROWS_COLUMNS = (
    "execution_id, phase, op, name, kind, status, attempt, started_at, attempt_started_at, "
    "finished_at, retry_at, wake_at, event_type, error, errors, restored_from, seq, started_seq, finished_seq"
)

PAGES: Final = f"""\
-- workkit-workflow history projection (schema version 3): a page of plain completed steps a row
DROP VIEW IF EXISTS wf_transitions;
ALTER TABLE wf_steps RENAME TO wf_step_rows;
CREATE TABLE IF NOT EXISTS wf_step_pages (
  execution_id TEXT NOT NULL,
  phase TEXT NOT NULL,
  block INTEGER NOT NULL,
  steps TEXT NOT NULL,
  PRIMARY KEY (execution_id, phase, block)
);
CREATE VIEW IF NOT EXISTS wf_steps AS
  SELECT {_ROWS_COLUMNS} FROM wf_step_rows AS r
  WHERE NOT EXISTS (
    SELECT 1 FROM wf_step_pages AS p
    WHERE p.execution_id = r.execution_id AND p.phase = r.phase AND p.block = r.op / {PAGE_OPS}
      AND json_type(p.steps, '$."' || printf('%08d', r.op) || '"') IS NOT NULL
  )
  UNION ALL
  SELECT p.execution_id, p.phase, CAST(e.key AS INTEGER), json_extract(e.value, '$[0]'), 'step',
    'completed', json_extract(e.value, '$[1]'), json_extract(e.value, '$[2]') / 1000.0,
    COALESCE(json_extract(e.value, '$[3]'), json_extract(e.value, '$[2]')) / 1000.0,
    json_extract(e.value, '$[4]') / 1000.0,
    NULL, NULL, NULL, NULL, '[]', NULL,
    json_extract(e.value, '$[5]'),
    COALESCE(json_extract(e.value, '$[6]'), (
      SELECT r.started_seq FROM wf_step_rows AS r
      WHERE r.execution_id = p.execution_id AND r.phase = p.phase AND r.op = CAST(e.key AS INTEGER)
    )),
    json_extract(e.value, '$[5]')
  FROM wf_step_pages AS p, json_each(p.steps) AS e;
{_TRANSITIONS_VIEW}"""

MIGRATIONS: Final = {
    "0001_workkit_history.sql": SCHEMA,
    "0002_workkit_transitions.sql": TRANSITIONS,
    "0003_workkit_step_pages.sql": PAGES,
}
"""The files of ``migrations/``, in the order ``wrangler d1 migrations apply`` runs them."""

ADDED: Final = {
    "0002_workkit_transitions.sql": ("started_seq", "finished_seq", "waiting_for_count", "wf_transitions"),
    "0003_workkit_step_pages.sql": ("wf_step_rows", "wf_step_pages"),
}
"""The names each migration after the first adds: D1 naming one in an error means it lacks it."""

TABLES: Final = ("wf_executions", "wf_step_rows", "wf_step_pages", "wf_events")

VIEWS: Final = ("wf_steps", "wf_transitions")


def statements(sql: str = SCHEMA) -> list[str]:
    """The schema as single statements (D1's ``exec`` and ``batch`` take one each)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def migration_statements(step_columns: Collection[str], paged: bool = False) -> list[str]:
    """What brings a database whose ``wf_steps`` has ``step_columns`` (none: no table yet)
    to the newest schema: nothing if it has ``wf_step_rows`` (``paged``), else the tables if
    missing, version 2 if its columns are, and version 3."""
    if paged:
        return []
    out = statements(SCHEMA)
    if "started_seq" not in step_columns:
        out += statements(TRANSITIONS)
    return out + statements(PAGES)
