"""The SQL journal of SQLite-backed Durable Objects, in the real runtime (../shared/runtime kit).

On a SQLite-backed object the package journals through ``ctx.storage.sql`` (``SqlJournalStorage``
in ``cloudflare/_sql_storage.py``); on a key-value-backed class through the key-value API. The contract
scenarios of test_realruntime_do.py run on the SQL journal (their objects are SQLite-backed);
here: the same scenarios on a key-value-backed class, what the SQL journal relies on (a throw
inside a commit rolls back every write and the alarm change; probes.py), the move of an
execution journaled through the key-value API by an older version, and that a step no longer
suspends on storage. The SIGKILL check of torn commits is in test_realruntime_do.py.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from workkit_workflow.history._capture import HELD

from _runtime_kit import ROOT, require_kit

sys.path.insert(0, str(ROOT / "miniflare" / "realruntime"))
from rt_driver import NEW_STYLE_DATE, RealRuntime, Reply

pytestmark = pytest.mark.realruntime

STATE = ROOT / ".cache" / "realruntime-journal-state"


@pytest.fixture(scope="module")
def runtime() -> Iterator[RealRuntime]:
    kit = require_kit()
    shutil.rmtree(STATE, ignore_errors=True)
    rt = RealRuntime(kit.serve_args, STATE, dates=(NEW_STYLE_DATE,), kinds=("scenarios",))
    rt.start()
    try:
        rt.wait_ready(rt.service("scenarios", NEW_STYLE_DATE))
        yield rt
    finally:
        rt.stop()


def ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.text[:3000]
    return reply.body


def probe(rt: RealRuntime, name: str) -> Any:
    """``name``: the probe, optionally with its query (``adopt_finish?kv_keys=...&``); each
    probe runs in the ``Probe`` object named after it."""
    base = name.split("?")[0]
    query = name if "?" in name else name + "?"
    return ok(
        rt.request(rt.service("scenarios", NEW_STYLE_DATE), "POST", f"/probe/{query}id={base.split('_')[0]}")
    )


def test_a_throw_inside_a_commit_rolls_back_every_write_and_the_alarm(runtime: RealRuntime) -> None:
    report = probe(runtime, "rollback")
    assert report["sentinel"] == "rollback:reached"
    assert "NOT NULL" in report["statement_throw"], report
    assert "injected failure inside the commit" in report["sql_throw"], report
    assert "injected failure after the alarm change" in report["alarm_throw"], report
    assert report["before"]["rows"] == {"a": "1", "gone": "x"} and report["before"]["alarm"], report


def test_the_storage_contract_on_real_storage(runtime: RealRuntime) -> None:
    report = probe(runtime, "contract")
    assert report["sentinel"] == "contract:reached"
    assert len(report["ran"]) == 8 and "contract_list/SqlJournalStorage" in report["ran"], report


def test_an_execution_journaled_through_key_value_continues_over_sql(runtime: RealRuntime) -> None:
    report = probe(runtime, "adopt")
    assert report["sentinel"] == "adopt:reached"
    assert report["kv_keys"] and report["left_in_kv"] == [], report
    assert report["alarm"] is not None, report
    assert report["result"]["value"] == {"one": 1, "go": {"by": "sql"}, "two": 1}, report


def test_a_key_value_journal_survives_a_restart_into_the_sql_journal(runtime: RealRuntime) -> None:
    """Started by "the old version" (key-value adapter), workerd SIGKILLed, continued by a fresh
    instance of the object, whose host moves the journal into the SQL table on first use."""
    started = probe(runtime, "adopt_start")
    assert started["sentinel"] == "adopt_start:reached" and started["kv_keys"], started
    runtime.kill()
    runtime.start()
    runtime.wait_ready(runtime.service("scenarios", NEW_STYLE_DATE))
    keys = urllib.parse.quote(json.dumps(started["kv_keys"]))
    finished = probe(runtime, f"adopt_finish?kv_keys={keys}&")
    assert finished["sentinel"] == "adopt_finish:reached"
    assert finished["left_in_kv"] == [], finished
    assert finished["result"]["value"] == {"one": 1, "go": {"by": "sql"}, "two": 1}, finished


@pytest.mark.parametrize(
    "check", ["three_step_retry", "saga_compensation", "oversize_output", "retention_and_delete"]
)
def test_contract_scenarios_on_a_key_value_backed_class(runtime: RealRuntime, check: str) -> None:
    execution_id = f"kv-{check}-{time.monotonic_ns() % 10**9}"
    path = f"/check/{check}?id={execution_id}&storage=kv"
    service = runtime.service("scenarios", NEW_STYLE_DATE)
    report = ok(runtime.request(service, "POST", path))
    assert report["sentinel"] == f"{check}:reached"
    kinds = ok(runtime.request(service, "GET", "/runtime"))["storage_kinds"]
    assert kinds.get("DurableObjectStorage", 0) > 0, kinds


def test_sqlite_backed_objects_journal_through_sql(runtime: RealRuntime) -> None:
    service = runtime.service("scenarios", NEW_STYLE_DATE)
    path = f"/check/three_step_retry?id=sql-{time.monotonic_ns() % 10**9}"
    assert ok(runtime.request(service, "POST", path))["sentinel"] == "three_step_retry:reached"
    kinds = ok(runtime.request(service, "GET", "/runtime"))["storage_kinds"]
    assert kinds.get("SqlJournalStorage", 0) > 0, kinds


def test_a_subclass_of_the_execution_object_has_env_under_one_sdk_wrapper(runtime: RealRuntime) -> None:
    """``ScenarioExecutionDO`` subclasses ``WorkflowExecutionDO`` as a user does: the SDK wraps
    its ``env`` once per class level, and its ``self.env`` is under one wrapper, what a
    direct subclass of ``DurableObject`` gets. Its flows' steps bump their counters through a
    namespace binding of that ``self.env``: under two wrappers, the stubs refused ``fetch``."""
    service = runtime.service("scenarios", NEW_STYLE_DATE)
    path = f"/check/three_step_retry?id=env-{time.monotonic_ns() % 10**9}"
    assert ok(runtime.request(service, "POST", path))["sentinel"] == "three_step_retry:reached"
    wrappers = ok(runtime.request(service, "GET", "/runtime"))["env_wrappers"]
    assert wrappers and all(key.endswith("self.env 1") for key in wrappers), wrappers


def test_a_step_does_not_suspend_on_the_sql_journal(runtime: RealRuntime) -> None:
    """Event-loop turns per step are exact (the figures in ms are load-dependent: see
    ``python -m bench --real-runtime``): over the key-value API each commit's awaited ``put``
    suspends the step for two turns or more (2.1 printed by the bench on 2026-11-30, 3.15
    earlier that day); over the SQL journal a step completes without suspending, as in
    memory."""
    service = runtime.service("scenarios", NEW_STYLE_DATE)
    report = ok(runtime.request(service, "POST", "/bench?steps=50&id=journal-bench&rounds=1"))
    turns = report["loop_turns_per_step"]
    assert turns["engine_kv"] > 1.5 and turns["engine_kv"] > turns["engine_sql"] + 1.0, turns
    assert turns["engine_sql"] < turns["engine_memory"] + 0.2, turns


@pytest.mark.parametrize("steps", [50, HELD + 80])
def test_the_history_projects_inside_a_real_object(runtime: RealRuntime, steps: int) -> None:
    """The history projection in a real Python Durable Object (``worker/bench.py``'s history
    rows, over a D1-shaped stand-in running its SQL in the object's own SQLite): every step's
    row and transition is delivered. The bench's steps wait for nothing, so the run lets the
    event loop run only where the write that fills a page asks for a turn (``Outbox.kick``):
    each page goes out then, from the values memory holds, so even past ``HELD`` steps nothing
    is read back from the SQL journal. (Until 2026-12-02 the run delivered nothing until its
    end: past ``HELD`` its references were read back as they went out.)"""
    service = runtime.service("scenarios", NEW_STYLE_DATE)
    report = ok(runtime.request(service, "POST", f"/bench?steps={steps}&id=history-bench-{steps}&rounds=1"))
    projected = report["history_projected"]
    assert projected["executions"] == ["completed"], projected
    assert projected["completed_steps"] == steps, projected
    # Each step's start and completion, and the execution's own transitions.
    assert projected["transitions"] >= 2 * steps + 2, projected
    # No reference read back from the journal: no more reads than the run's own.
    reads = report["history_port_calls_per_run"]["engine_sql_history"].get("get_many", 0)
    assert reads == report["port_calls_per_run"].get("get_many", 0), report
    statements = report["history_statements_per_run"]
    assert statements["engine_sql_history"] == statements["engine_sql_history_offbox"] > 0, statements
