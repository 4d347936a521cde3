"""The main job: the demo tour runs end to end (a real OS process is SIGKILLed inside it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_demo_tour(tmp_path: Path) -> None:
    db = str(tmp_path / "demo.db")
    env = {**os.environ, "WORKKIT_DEMO_EFFECTS": str(tmp_path / "effects.log"), "WORKKIT_DEMO_DB": db}
    run = subprocess.run(
        [sys.executable, "-m", "workkit_workflow.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    out = run.stdout
    assert run.returncode == 0, run.stderr[-3000:]
    # 1. retried with durable backoff
    assert "charge-card        completed  attempts=3  errors: ConnectionError, ConnectionError" in out
    # 2. killed mid-step and resumed from the journal: journaled steps did not run again
    assert "SIGKILL" in out
    assert "ship               completed  attempts=2  errors: attempt_lost" in out
    assert "effects: {'reserve': 1, 'charge': 1, 'ship': 1}" in out
    # 3. a permanent failure, compensated
    assert "result: failed at 'ship' (bad_address); compensation completed" in out
    assert "refund             completed  attempts=1  (compensation)" in out
    # 4. human approval through an external event
    assert "waiting for ['approved']" in out
    assert "manager-approval   completed" in out
    assert "Every step above was journaled in SQLite before the next one ran." in out
    # The tour's database, history included, is there to look back at with the CLI.
    shown = subprocess.run(
        [sys.executable, "-m", "workkit_workflow.cli", "show", "demo-o-3", "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "refund" in shown.stdout and "release" in shown.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "workkit_workflow.cli", "list", "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0 and all(f"demo-o-{i}" in listed.stdout for i in range(1, 5)), listed.stdout
