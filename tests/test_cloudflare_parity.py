"""The engine scenarios of ``miniflare/pyodide/scenarios.py`` on CPython, over the local
runtime's storage (memory and SQLite). ``test_pyodide_runtime.py`` runs the very same
scenarios under real Pyodide through the Durable Object storage adapter."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from workkit_workflow.local import LocalHost, LocalNamespace

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "miniflare" / "pyodide"
sys.path.insert(0, str(SCENARIO_DIR))

import scenarios  # noqa: E402


class LocalHarness:
    """Fresh ``LocalHost`` instances over one LocalNamespace's durable backend."""

    def __init__(self, path: str | None) -> None:
        self.clock = scenarios.ManualClock()
        self.namespace = LocalNamespace(path, clock=self.clock, deliver_alarms=False)

    def host(self, name: str) -> LocalHost:
        return LocalHost(self.namespace, name)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("scenario", scenarios.SCENARIOS, ids=lambda s: s.__name__)
async def test_scenario_on_the_local_runtime(scenario: Any, backend: str, tmp_path: Path) -> None:
    harness = LocalHarness(None if backend == "memory" else str(tmp_path / "objects.db"))
    try:
        await scenario(harness)
    finally:
        await harness.namespace.close()


import storage_contract  # noqa: E402


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("check", storage_contract.CONTRACT, ids=lambda c: c.__name__)
async def test_storage_contract_on_the_local_runtime(check: Any, backend: str, tmp_path: Path) -> None:
    harness = LocalHarness(None if backend == "memory" else str(tmp_path / "objects.db"))
    try:
        await check(harness.host("contract").storage)
    finally:
        await harness.namespace.close()
