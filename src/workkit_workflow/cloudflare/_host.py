"""The host of an execution in a Durable Object: what its ``ctx`` gives the engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from ..engine._ports import Clock, Namespace, Storage, SystemClock
from ._sql_storage import SqlJournalStorage
from ._storage import DurableObjectStorage
from ._workers import to_py

log = logging.getLogger("workkit_workflow")


def storage_of(storage: Any) -> Storage:
    """The Storage port for a Durable Object's ``ctx.storage``: the SQL journal on
    SQLite-backed objects, the key-value API on the others (classes declared with a
    ``new_classes`` migration).

    On those, ``storage.sql`` is there (the SDK's wrapper resolves it lazily) but every
    statement throws, so a trivial statement decides. Only that one: a SQLite-backed
    object that then fails to create the table raises, it never falls back to the
    key-value API, where its journal is not.
    """
    try:
        sql = storage.sql
        sql.exec("SELECT 1")
    except Exception:
        return DurableObjectStorage(storage)
    return SqlJournalStorage(storage, sql)


class CloudflareHost:
    """What a Durable Object's ``ctx`` gives the engine."""

    is_workkit_host = True
    faults = None

    def __init__(self, ctx: Any, *, clock: Clock | None = None) -> None:
        self.ctx = ctx
        self.storage: Storage = storage_of(ctx.storage)
        self.clock: Clock = clock or SystemClock()
        self.peers: Namespace | None = None
        """Set by ``WorkflowExecutionDO`` from its ``namespace_binding``."""
        try:
            name = to_py(ctx.id.name)
        except AttributeError:
            name = None
        # workerd of 2024 gives no name inside the object (undefined).
        self.object_name: str | None = name if isinstance(name, str) and name else None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        # Pyodide 0.27's WebLoop calls exception() on a finished task whose only
        # done-callback is its own; for a cancelled task (the engine cancels its
        # timers) that raises, is logged as "Exception in callback", and the
        # loop's in-progress count never returns to zero. A second callback
        # keeps it off that path.
        task.add_done_callback(_settled)
        return task


def _settled(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("workkit_workflow: background task ended with %r", task.exception())


def host_from_ctx(ctx: Any) -> CloudflareHost:
    return CloudflareHost(ctx)
