"""The main job: the demo tour runs end to end (a real OS process is SIGKILLed inside it),
quickly, never quiet for long, and ends with commands that work as printed."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).parents[1] / "src")


def run_demo(tmp_path: Path) -> tuple[list[tuple[float, str]], dict[str, str]]:
    """Run ``python -m workkit_workflow demo`` in ``tmp_path``; each line with when it arrived."""
    env = {
        **os.environ,
        "PYTHONPATH": SRC,
        "PYTHONUNBUFFERED": "1",
        "WORKKIT_DEMO_EFFECTS": str(tmp_path / "effects.log"),
        "WORKKIT_DEMO_DB": "demo.db",
    }
    started = time.monotonic()
    with subprocess.Popen(
        [sys.executable, "-m", "workkit_workflow", "demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        lines = [(time.monotonic() - started, line.rstrip("\n")) for line in proc.stdout]
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:]
    lines.append((time.monotonic() - started, "<exit>"))
    return lines, env


def test_the_demo_tour(tmp_path: Path) -> None:
    lines, env = run_demo(tmp_path)
    out = "\n".join(text for _, text in lines)
    # Well under 20 s, and something on screen at least every 2 s.
    assert lines[-1][0] < 15.0, out
    gaps = [(b[0] - a[0], b[1]) for a, b in itertools.pairwise(lines)]
    assert max(gap for gap, _ in gaps) < 2.0, max(gaps)
    # 1. retried with durable backoff
    assert "charge-card        completed  attempts=3  errors: ConnectionError, ConnectionError" in out
    # 2. killed mid-step and resumed from the journal by its lease alarm, in a new process:
    # journaled steps did not run again
    assert "SIGKILL" in out
    pids = re.findall(r"pid (\d+)", out)
    assert len(set(pids)) == 2, pids
    assert "its lease alarm alone" in out
    assert "ship               completed  attempts=2  errors: attempt_lost" in out
    assert "effects: {'reserve': 1, 'charge': 1, 'ship': 1}" in out
    # 3. a permanent failure, compensated
    assert "result: failed at 'ship' (bad_address); compensation completed" in out
    assert "refund             completed  attempts=1  (compensation)" in out
    # 4. human approval through an external event, charged against the real reservation
    assert "waiting for ['approved']" in out
    assert "manager-approval   completed" in out
    assert "'reservation_id': 'res-o-4'" in out
    # 5. per-step undo handlers, last started first
    assert "undo of 'charge-card': completed after 1 attempt\n  undo of 'reserve-inventory'" in out
    # 6. child workflows: one per parcel, each its own execution, results back in the parent
    assert re.search(r"parcel-desk +completed +child demo-o-6\.0-parcel-desk", out)
    assert "'labels': ['desk: labelled by demo-o-6.0-parcel-desk'" in out
    # No placeholders.
    assert "'-'" not in out and "=-" not in out and " - " not in out.replace(" - http", "")
    assert "Every step above was journaled in SQLite" in out
    # The commands it prints work as printed, from the directory it ran in.
    commands = [
        line.split("   ")[0].strip()
        for _, line in lines
        if "workkit-workflow" in line and " --db demo.db" in line and "serve" not in line
    ]
    assert len(commands) == 3, commands
    for command in commands:
        argv = shlex.split(command)
        assert argv[0].startswith(sys.prefix) or argv[0] == sys.executable, argv
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
        assert "demo-o-" in done.stdout or "ship" in done.stdout, done.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "workkit_workflow", "list", "--db", "demo.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0 and all(f"demo-o-{i}" in listed.stdout for i in range(1, 5)), listed.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "workkit_workflow", "show", "demo-o-3", "--db", "demo.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "refund" in shown.stdout and "release" in shown.stdout
