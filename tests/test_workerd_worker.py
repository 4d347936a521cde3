"""The example Worker served by a real workerd 1.20241112.0 (miniflare/workerd/worker_checks.py):
its API drives executions through a real Durable Object namespace binding (a JavaScript double of
WorkflowExecutionDO behind it, as Python DOs cannot run there) and answers bad input with 4xx
JSON; a probe worker shows outbound fetch with the Idempotency-Key and pyodide-http failing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from _cf_harness import MINIFLARE, NODE_MODULES, assert_all_passed, require

pytestmark = pytest.mark.workerd


def test_example_worker_under_workerd() -> None:
    require(NODE_MODULES / "workerd" / "bin" / "workerd")
    run = subprocess.run(
        [sys.executable, str(MINIFLARE / "workerd" / "worker_checks.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert_all_passed(output, minimum=24)
    assert run.returncode == 0, output[-3000:]
    for needle in ("real DO binding", "4xx JSON for bad input: no token", "Idempotency-Key", "pyodide-http"):
        assert needle in run.stdout, f"check {needle!r} did not run"
