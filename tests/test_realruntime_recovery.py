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
from typing import Any

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


def test_an_execution_killed_at_the_same_point_every_time_is_paused_then_continues() -> None:
    """The recovery cap (``engine/_recoveries.py``) in workerd: a body that hangs between its
    steps, the runtime SIGKILLed there each time (as a CPU limit would end it). With
    ``max_recoveries=2``, the third recovery in a row pauses the execution, with its reason
    and no alarm; continued, it completes, its journaled step not run again."""
    kit = require_kit()
    state = STATE.with_name("realruntime-poisoned-test")
    shutil.rmtree(state, ignore_errors=True)
    rt = recovery.RecoveryRuntime(kit.serve_args, state)
    rt.start()
    eid = "poisoned-1"
    try:
        rt.wait_ready(recovery.SERVICE)
        view = recovery.poisoned(rt, eid, kills=3)
        assert view["status"] == "paused", view
        assert view["paused_reason"]["code"] == "recovery_limit", view
        meta = recovery._get(rt, f"/executions/{eid}/meta")["meta"]
        assert meta["recoveries"] == 3, meta
        runs = recovery._get(rt, f"/runs?prefix={eid}:")
        assert runs == {f"{eid}:body": 3, f"{eid}:reserve-inventory": 1}, runs

        assert recovery._post(rt, f"/executions/{eid}/unpause")["unpaused"] is True

        def settled() -> Any:
            view = recovery._describe(rt, "default", eid)
            return view["settled"] and view

        done = recovery._poll("continued", settled)
        assert done["status"] == "completed", done
        runs = recovery._get(rt, f"/runs?prefix={eid}:")
        assert runs == {f"{eid}:body": 4, f"{eid}:reserve-inventory": 1, f"{eid}:ship": 1}, runs
    finally:
        rt.stop()
