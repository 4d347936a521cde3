"""Recovery after a crash of the runtime, in the real runtime (miniflare/realruntime/recovery.py).

A small run of the recovery measurement: orders of three 0.3 s steps on an execution class with
the package's default lease, workerd SIGKILLed while they run and restarted at once. Asserts
what does not depend on the machine's speed: every order completes, the kill interrupted
orders, and no step ran again once its result was journaled. The recovery times are printed
(``pytest -s``), not asserted: ``recovery.py`` measures them over more orders.
"""

from __future__ import annotations

import random
import shutil
import sys

import pytest

from _runtime_kit import ROOT, require_kit

sys.path.insert(0, str(ROOT / "miniflare" / "realruntime"))
import recovery

pytestmark = pytest.mark.realruntime

STATE = ROOT / ".cache" / "realruntime-recovery-test"
KILLS = 2
ORDERS_PER_KILL = 3


def test_orders_interrupted_by_sigkills_complete_without_rerunning_journaled_steps() -> None:
    kit = require_kit()
    shutil.rmtree(STATE, ignore_errors=True)
    rt = recovery.RecoveryRuntime(kit.serve_args, STATE)
    rt.start()
    try:
        rt.wait_ready(recovery.SERVICE)
        outcome = recovery.measure(rt, "default", KILLS * ORDERS_PER_KILL, KILLS, random.Random(7))
    finally:
        rt.stop()
    summary = recovery.summary(outcome)
    print(recovery.line(summary))
    assert summary["orders"] == KILLS * ORDERS_PER_KILL
    # Every round kills before its last order can have finished its three steps.
    assert summary["interrupted"] >= KILLS, summary
    assert summary["problems"] == [], summary
