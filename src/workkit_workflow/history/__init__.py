"""Execution history you can query: a D1 projection, fed by an outbox.

* The Durable Object records history in its own storage, in the same atomic
  write as each journal change, and delivers it to D1 idempotently, retried
  by alarm while D1 is down (``_outbox``).
* :class:`HistoryQuery` lists executions and reads one execution's history,
  from D1 on Cloudflare or :class:`LocalD1` locally (``create_durable_workflow(
  ..., history=env.HISTORY_DB)`` gives one as ``client.history``).
* :mod:`workkit_workflow.history.page` renders the timeline page.
"""

from ._d1 import D1Error, D1Port, LocalD1
from ._query import (
    EventRecord,
    ExecutionHistory,
    ExecutionPage,
    ExecutionRecord,
    HistoryQuery,
    StepRecord,
)
from ._schema import MIGRATIONS, SCHEMA, TABLES, VIEWS

__all__ = [
    "MIGRATIONS",
    "SCHEMA",
    "TABLES",
    "VIEWS",
    "D1Error",
    "D1Port",
    "EventRecord",
    "ExecutionHistory",
    "ExecutionPage",
    "ExecutionRecord",
    "HistoryQuery",
    "LocalD1",
    "StepRecord",
]
