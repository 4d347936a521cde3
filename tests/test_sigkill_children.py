"""Real process death with child workflows: the local runtime running a parent and its three
children is SIGKILLed at random moments, three times, then a last process finishes them
(tests/procs/children_worker.py). The fsync'd log of the outside world must show no step
entered after its completion was committed, every side effect under one key per step, one
object per child (no second child after a replay) and the parent's result complete."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

WORKER = Path(__file__).parent / "procs" / "children_worker.py"
SRC = Path(__file__).parent.parent / "src"


def _spawn(db: Path, log: Path, *extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, str(WORKER), str(db), str(log), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _expect(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != what:
        proc.kill()
        raise AssertionError(f"worker did not say {what}: {line!r}\n{proc.communicate()[1][-3000:]}")


def test_sigkill_while_parent_and_children_run(tmp_path: Path) -> None:
    db, log = tmp_path / "family.db", tmp_path / "world.log"
    rng = random.Random(int(os.environ.get("WORKKIT_SIGKILL_SEED", "7")))
    for kill in range(3):
        proc = _spawn(db, log, *(["--start"] if kill == 0 else []))
        try:
            _expect(proc, "READY")
            if kill == 0:
                _expect(proc, "STARTED")  # the parent exists: what follows is its run
            time.sleep(rng.uniform(0.15, 0.6))  # somewhere in a step, a sleep or a delivery
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)
    final = _spawn(db, log, "--finish")
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err[-3000:]
    done = json.loads(out.splitlines()[-1].removeprefix("DONE "))
    kids = [[f"family.{n}-kid-{n}/pack-{n}", f"family.{n}-kid-{n}/label-{n}"] for n in range(3)]
    assert done == {"ok": True, "value": {"kids": kids, "last": "family/ship"}, "objects": 4}

    journaled: set[tuple[str, str]] = set()
    effects: dict[str, int] = {}
    runs: dict[tuple[str, str], set[str]] = {}
    for line in log.read_text().splitlines():
        kind, *rest = line.split(" ")
        if kind == "journaled":
            journaled.add((rest[0], rest[1]))
        elif kind == "run":
            execution, step, _, key = rest
            assert (execution, step) not in journaled, f"{step} of {execution} ran after its completion"
            runs.setdefault((execution, step), set()).add(key)
        elif kind == "effect":
            effects[rest[0]] = effects.get(rest[0], 0) + 1
    assert len(runs) == 7 and all(len(keys) == 1 for keys in runs.values())
    assert set(effects) == {key for keys in runs.values() for key in keys}
