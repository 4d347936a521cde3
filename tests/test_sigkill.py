"""Real process death: SIGKILL the local runtime at random moments, restart it, check invariants.

Each iteration starts ``tests/procs/sigkill_worker.py`` (a LocalNamespace on one
SQLite file, synchronous=FULL), which resumes what earlier processes left
(pending alarms) and starts three new executions; it is killed with SIGKILL
at a random moment. A last process runs everything to the end. The fsync'd
side-effect log then has to show:

* no step handler was entered after its completion was committed;
* the attempts of a step are increasing, and the journaled one is the last run;
* every step's side effect reached the outside world, under one key (exactly
  once per idempotency key from the outside, at least once inside);
* every execution completed.

``WORKKIT_SIGKILL_ITERATIONS`` (default 8) sets the number of kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

WORKER = Path(__file__).parent / "procs" / "sigkill_worker.py"
SRC = Path(__file__).parent.parent / "src"
STEP_NAMES = ["s0", "s1", "s2", "s3", "s4", "s5", "fan-a", "fan-b", "s6", "s7"]


def _spawn(db: Path, log: Path, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(db), str(log), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_ready(proc: subprocess.Popen[str], what: str = "READY") -> None:
    assert proc.stdout is not None
    # Byte by byte from the descriptor: readline() on the text wrapper could buffer
    # what follows READY (the final DONE), which communicate() then never sees.
    raw = b""
    while not raw.endswith(b"\n"):
        byte = os.read(proc.stdout.fileno(), 1)
        if not byte:
            break
        raw += byte
    line = raw.decode()
    if line.strip() != what:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"worker did not say {what}: {line!r}\n{err[-3000:]}")


def _final_states(db: Path) -> dict[str, dict[str, object]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT obj, value FROM kv WHERE key = ?", (b"state",)).fetchall()
        return {obj: json.loads(value) for obj, value in rows}
    finally:
        conn.close()


def _journal(db: Path) -> dict[tuple[str, str], dict[str, object]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT obj, value FROM kv WHERE key >= ? AND key < ?", (b"j:", b"j;")).fetchall()
    finally:
        conn.close()
    entries = {}
    for obj, value in rows:
        record = json.loads(value)
        entries[(obj, record["name"])] = record
    return entries


def test_sigkill_at_random_moments_loses_nothing_and_repeats_no_journaled_step(tmp_path: Path) -> None:
    iterations = int(os.environ.get("WORKKIT_SIGKILL_ITERATIONS", "8"))
    seed = int(os.environ.get("WORKKIT_SIGKILL_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    db, log = tmp_path / "runtime.db", tmp_path / "effects.log"
    kills = 0
    for i in range(iterations):
        proc = _spawn(db, log, "--new", f"wf{i}")
        _wait_ready(proc)
        if i == 0:
            # On a loaded machine a kill could land before any start: let the first
            # life create its executions, so the loop always has some to break.
            _wait_ready(proc, "STARTED")
        time.sleep(rng.uniform(0.0, 0.35))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL, f"worker exited by itself (seed {seed})"
        kills += 1

    final = _spawn(db, log, "--finish")
    _wait_ready(final)
    out, err = final.communicate(timeout=90)
    assert final.returncode == 0, f"seed {seed}: {out}\n{err[-3000:]}"
    assert "DONE" in out

    # -- invariants, from the fsync'd log and the database --------------------------
    executions = {f"wf{i}-{n}" for i in range(iterations) for n in range(3)}
    states = _final_states(db)
    started = set(states)
    # A kill can land before an execution was even created: those never existed.
    assert started <= executions
    assert len(started) >= 3, f"seed {seed}: too few executions were created: {sorted(started)}"
    assert {obj: s["status"] for obj, s in states.items()} == dict.fromkeys(started, "completed")

    runs: dict[tuple[str, str], list[int]] = defaultdict(list)
    journaled: dict[tuple[str, str], int] = {}
    effects: set[str] = set()
    violations = []
    boots = 0
    lives: dict[str, set[int]] = defaultdict(set)  # the processes each execution ran in
    for line in log.read_text().splitlines():
        kind, *rest = line.split()
        if kind == "boot":
            boots += 1
        elif kind == "run":
            execution, step, attempt, _key = rest
            lives[execution].add(boots)
            if (execution, step) in journaled:
                violations.append(f"{execution}/{step} ran (attempt {attempt}) after it was journaled")
            runs[(execution, step)].append(int(attempt))
        elif kind == "effect":
            effects.add(rest[0])
        elif kind == "journaled":
            execution, step, attempt = rest
            journaled[(execution, step)] = int(attempt)
    assert violations == [], f"seed {seed}: {violations}"
    assert boots == kills + 1
    interrupted = [e for e, seen in lives.items() if len(seen) > 1]
    assert interrupted, f"seed {seed}: no kill landed in the middle of an execution"

    journal = _journal(db)
    for execution in started:
        for step in STEP_NAMES:
            entry = journal[(execution, step)]
            assert entry["status"] == "completed"
            attempts = runs[(execution, step)]
            assert attempts == sorted(set(attempts)), f"seed {seed}: {execution}/{step} attempts {attempts}"
            # The output journaled is the last run's (no run after, none lost).
            assert attempts[-1] == entry["attempt"], (execution, step, attempts, entry)
    # Exactly once to the outside world: one distinct key per step of each execution.
    expected_keys = {
        f"{execution}:j:{op}:{step}"
        for execution in started
        for op, step in enumerate(["s0", "s1", "s2", "s3", "nap", "s4", "s5", "fan-a", "fan-b", "s6", "s7"])
        if step != "nap"
    }
    assert effects == expected_keys


async def test_an_alarm_stays_stored_while_its_handler_runs(tmp_path: Path) -> None:
    """What makes a SIGKILL mid-handler safe: the alarm is only removed once its
    handler succeeded, so the next process on the file delivers it again."""
    import asyncio

    from workkit_workflow import WorkflowExecutionDO
    from workkit_workflow.local import LocalNamespace

    inside = asyncio.Event()
    release = asyncio.Event()

    class Blocking(WorkflowExecutionDO):  # type: ignore[misc]
        async def alarm(self, alarm_info: object = None) -> None:
            inside.set()
            await release.wait()

    db = tmp_path / "alarm.db"
    ns = LocalNamespace(str(db), object_class=Blocking)
    try:
        ns.backend.commit("obj", {"k": "v"}, (), 0.0)  # due at once
        await ns.start()
        await asyncio.wait_for(inside.wait(), timeout=5.0)
        # Another process looking at the file now (as one started after a kill would):
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("SELECT obj FROM alarms").fetchall() == [("obj",)]
        finally:
            conn.close()
        release.set()
        await ns.idle()
        assert ns.backend.get_alarm("obj") is None  # handled: gone
    finally:
        release.set()
        await ns.close()
