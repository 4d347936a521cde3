"""The local runtime: Durable Object semantics on CPython, for development and tests.

``LocalNamespace`` goes wherever ``env.WORKFLOW_DO`` goes::

    from workkit_workflow import create_durable_workflow
    from workkit_workflow.local import LocalNamespace

    async with LocalNamespace("workflows.db") as ns:
        workflows = create_durable_workflow(ns)
        handle = await workflows.run(order_flow, {"order_id": "o-1"})
"""

from ._backends import MemoryBackend, SqliteBackend
from ._clock import SystemClock, VirtualClock
from ._lock import DatabaseInUseError
from ._namespace import (
    LocalHost,
    LocalNamespace,
    LocalStorage,
    ObjectEvicted,
    SimulatedCrash,
    StorageStats,
)

__all__ = [
    "DatabaseInUseError",
    "LocalHost",
    "LocalNamespace",
    "LocalStorage",
    "MemoryBackend",
    "ObjectEvicted",
    "SimulatedCrash",
    "SqliteBackend",
    "StorageStats",
    "SystemClock",
    "VirtualClock",
]
