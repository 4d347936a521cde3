"""The package as a real Python Durable Object in the newest workerd (../shared/runtime kit).

One workerd process (miniflare/realruntime/rt_driver.py) serves, for each compatibility date
(wrangler.toml's, 2025-09-20: the runtime calls ``fetch``/``alarm``; 2025-08-01: ``on_fetch``/``on_alarm``;
``newest``: the kit's newest date, with the flags that load its bundle, what a new project
gets): the example Worker exactly as shipped, and a test Worker whose in-runtime scenarios drive
executions through the real ``WORKFLOW_DO`` namespace binding with the package's client.
Executions have distinct ids; side-effect counters live in a separate Durable Object.

Validation inside the objects: the runtime has no pydantic, so every Worker here embeds the
tests' pydantic stand-in (miniflare/realruntime/standin/pydantic, strict mode only, checked
against the real pydantic by tests/test_realruntime_standin.py) and ``_wire.py`` runs unchanged
on it. The ``bare`` Worker embeds no pydantic at all: there, bodies must be refused, not
accepted unchecked.

Every in-runtime scenario answers with a sentinel written after its last check.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from _runtime_kit import ROOT, require_kit

sys.path.insert(0, str(ROOT / "miniflare" / "realruntime"))
import rt_driver
from rt_driver import NEW_STYLE_DATE, OLD_STYLE_DATE, RealRuntime, poll

pytestmark = pytest.mark.realruntime

DATES = [NEW_STYLE_DATE, OLD_STYLE_DATE, "newest"]
"""``newest``: the newest date the kit's workerd accepts (what a new project gets today)."""


STATE = ROOT / ".cache" / "realruntime-state"
"""workerd's config, modules, storage and log (workerd.log), kept after the run to look at."""


@pytest.fixture(scope="module")
def runtime() -> Iterator[RealRuntime]:
    kit = require_kit()
    shutil.rmtree(STATE, ignore_errors=True)
    rt = RealRuntime(
        kit.serve_args,
        STATE,
        dates=(NEW_STYLE_DATE, OLD_STYLE_DATE, kit.newest_date),
        flags={kit.newest_date: kit.newest_flags},
    )
    rt.aliases["newest"] = kit.newest_date
    rt.start()
    try:
        for service in rt.ports:
            rt.wait_ready(service)
        yield rt
    finally:
        rt.stop()


def eid(name: str, date: str) -> str:
    return f"{name}-{date}-{time.monotonic_ns() % 10**9}"


def ok(reply: rt_driver.Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.text[:3000]
    return reply.body


def counters(rt: RealRuntime, date: str, execution_id: str) -> dict[str, int]:
    body = ok(rt.request(rt.service("scenarios", date), "GET", f"/counters?prefix={execution_id}:"))
    return {k.split(":", 1)[1]: v for k, v in body["counters"].items()}


def wait_counter(rt: RealRuntime, date: str, execution_id: str, key: str, timeout: float = 20.0) -> None:
    """Until the counter ``key`` of the execution is at least 1."""
    poll(lambda: counters(rt, date, execution_id).get(key), timeout=timeout, what=f"{execution_id} {key}")


def wait_status(rt: RealRuntime, service: str, path: str, status: str, timeout: float = 30.0) -> None:
    def reached() -> bool:
        body = ok(rt.request(service, "GET", path))
        return bool(body.get("execution", body)["status"] == status)

    poll(reached, timeout=timeout, what=f"{path} {status}")


def settled_result(rt: RealRuntime, date: str, execution_id: str, timeout: float = 30.0) -> Any:
    def settled() -> Any:
        reply = rt.request(rt.service("scenarios", date), "GET", f"/result?id={execution_id}")
        return reply.body if reply.status == 200 else None

    return poll(settled, timeout=timeout, what=f"{execution_id} settled")


# -- in-runtime scenarios --------------------------------------------------------------


@pytest.mark.parametrize("date", DATES)
@pytest.mark.parametrize(
    "check",
    [
        "three_step_retry",
        "saga_compensation",
        "oversize_output",
        "concurrent_starts",
        "malformed_requests",
        "retention_and_delete",
        "pause_and_unpause",
        "undo_and_state",
    ],
)
def test_in_runtime_scenario(runtime: RealRuntime, date: str, check: str) -> None:
    report = ok(
        runtime.request(runtime.service("scenarios", date), "POST", f"/check/{check}?id={eid(check, date)}")
    )
    assert report["sentinel"] == f"{check}:reached"
    if check == "concurrent_starts":
        assert report["created"] == 1
    if check == "malformed_requests":
        assert len(report["outcomes"]) == 19


@pytest.mark.parametrize("date", DATES)
def test_event_before_and_after_the_wait(runtime: RealRuntime, date: str) -> None:
    service, execution_id = runtime.service("scenarios", date), eid("events", date)
    assert ok(runtime.request(service, "POST", f"/start?workflow=rt-events&id={execution_id}", {}))["created"]
    # Sent while the first step (1.5 s) still runs: kept in the inbox for the first wait.
    assert ok(runtime.request(service, "POST", f"/event?id={execution_id}&type=early", {"e": 1}))["accepted"]

    def waiting_for_late() -> bool:
        view = ok(runtime.request(service, "GET", f"/describe?id={execution_id}"))
        return bool(view["status"] == "waiting" and view["waiting_for"] == ["late"])

    poll(waiting_for_late, timeout=20, what="waiting for 'late'")
    assert ok(runtime.request(service, "POST", f"/event?id={execution_id}&type=late", {"l": 2}))["accepted"]
    result = settled_result(runtime, date, execution_id)
    assert result["ok"], result
    assert result["value"] == {"early": {"e": 1}, "late": {"l": 2}}
    assert counters(runtime, date, execution_id) == {"prep": 1, "finish": 1}


@pytest.mark.parametrize("date", DATES)
def test_cancel_during_a_step(runtime: RealRuntime, date: str) -> None:
    service, execution_id = runtime.service("scenarios", date), eid("cancel", date)
    ok(runtime.request(service, "POST", f"/start?workflow=rt-cancel&id={execution_id}", {}))
    wait_counter(runtime, date, execution_id, "work:start")
    assert ok(runtime.request(service, "POST", f"/cancel?id={execution_id}"))["cancelled"] is True
    result = settled_result(runtime, date, execution_id)
    assert result["status"] == "cancelled", result
    assert result["error"]["compensation"]["status"] == "completed", result
    seen = counters(runtime, date, execution_id)
    # The running attempt finishes (steps are not interrupted), nothing after it runs, undo runs once.
    assert seen == {"work:start": 1, "work:end": 1, "undo": 1}, seen


def test_a_parent_and_its_children_across_objects(runtime: RealRuntime) -> None:
    """``ctx.child``: each child's start and outcome travel object to object through the
    ``WORKFLOW_DO`` binding the adapter finds in the object's ``env`` (the mail outbox)."""
    service, execution_id = runtime.service("scenarios", NEW_STYLE_DATE), eid("parent", NEW_STYLE_DATE)
    ok(runtime.request(service, "POST", f"/start?workflow=rt-child-parent&id={execution_id}", {}))
    result = settled_result(runtime, NEW_STYLE_DATE, execution_id)
    assert result["ok"], result
    assert result["value"] == {"kids": [{"n": 0, "runs": 1}, {"n": 1, "runs": 1}]}
    view = ok(runtime.request(service, "GET", f"/describe?id={execution_id}"))
    kids = [f"{execution_id}.{n}-kid-{n}" for n in range(2)]
    assert [(c["execution_id"], c["status"]) for c in view["children"]] == [(k, "completed") for k in kids]
    for n, kid in enumerate(kids):
        child = ok(runtime.request(service, "GET", f"/describe?id={kid}"))
        assert child["status"] == "completed" and child["parent"]["execution_id"] == execution_id
        assert counters(runtime, NEW_STYLE_DATE, kid) == {f"pack-{n}": 1}


def test_lease_alarm_after_an_eviction(runtime: RealRuntime) -> None:
    """A step resets its object the way an eviction does (``ctx.abort()``); no request is sent
    to it afterwards: the lease alarm alone brings a fresh instance that resumes."""
    ids = {date: eid("evict", date) for date in DATES}
    for date, execution_id in ids.items():
        ok(
            runtime.request(
                runtime.service("scenarios", date), "POST", f"/start?workflow=rt-evict&id={execution_id}", {}
            )
        )
    for date, execution_id in ids.items():
        wait_counter(runtime, date, execution_id, "last", timeout=40)
        seen = counters(runtime, date, execution_id)
        assert seen == {"first": 1, "second:start": 2, "second:end": 1, "last": 1}, seen
        result = settled_result(runtime, date, execution_id)
        assert result["ok"] and result["value"] == {"second_attempt": 2}, result
        state = ok(runtime.request(runtime.service("scenarios", date), "GET", "/runtime"))
        assert state["constructed"][execution_id] >= 2, state


def test_keyed_steps_replayed_after_an_eviction(runtime: RealRuntime) -> None:
    """Keyed steps in the runtime: the first journaled as the keyed texts (held to the encoder's
    by test_step_envelope.py), a second reusing its key without running, and a fresh instance
    replaying both from the journal after the third step resets the object: each keyed side
    effect ran once, and the third's key survived its lost attempt."""
    service = runtime.service("scenarios", NEW_STYLE_DATE)
    execution_id = eid("keyed", NEW_STYLE_DATE)
    ok(runtime.request(service, "POST", f"/start?workflow=rt-keyed&id={execution_id}", {"order": 7}))
    wait_counter(runtime, NEW_STYLE_DATE, execution_id, "ship:end", timeout=40)
    result = settled_result(runtime, NEW_STYLE_DATE, execution_id)
    charged = {"n": 1, "key": "charge:7"}
    expected = {"charged": charged, "again": charged, "ship_attempt": 2}
    assert result["ok"] and result["value"] == expected, result
    seen = counters(runtime, NEW_STYLE_DATE, execution_id)
    assert seen == {"charge": 1, "ship:start": 2, "ship:end": 1}, seen
    state = ok(runtime.request(service, "GET", "/runtime"))
    assert state["constructed"][execution_id] >= 2, state
    steps = {e["name"]: e for e in ok(runtime.request(service, "GET", f"/journal?id={execution_id}"))}
    charge, again, ship = steps["charge"], steps["charge-again"], steps["ship"]
    assert charge["status"] == again["status"] == ship["status"] == "completed", steps
    assert charge["attempt"] == 1 and charge["idempotency_hash"].startswith("sha256:"), charge
    assert again["reused_from"] == "charge" and again["idempotency_hash"] == charge["idempotency_hash"], again
    assert ship["idempotency_hash"] != charge["idempotency_hash"] and ship["lost"] == 1, ship


def _torn_commits_until_killed(runtime: RealRuntime) -> threading.Thread:
    """Commits of 8 keys of 16 KiB and an alarm, all carrying one counter, back to back
    through the SQL journal (probes.py ``torn_run``), in a request the kill interrupts."""

    def run() -> None:
        with contextlib.suppress(OSError):
            runtime.request(
                runtime.service("scenarios", NEW_STYLE_DATE), "POST", "/probe/torn_run?id=torn&seconds=60"
            )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigkill_mid_step_and_during_a_durable_sleep(runtime: RealRuntime) -> None:
    """workerd is SIGKILLed while one execution is inside a step, another sleeps durably and a
    Durable Object commits through the SQL journal as fast as it can; after the restart no
    request reaches either execution object until their alarms have finished them, and the
    journal holds whole commits only (every key and the alarm from the same commit)."""
    kill_ids = {date: eid("kill", date) for date in DATES}
    nap_ids = {date: eid("nap", date) for date in DATES}
    for date in DATES:
        ok(
            runtime.request(
                runtime.service("scenarios", date), "POST", f"/start?workflow=rt-kill&id={kill_ids[date]}", {}
            )
        )
        nap = {"seconds": 6}
        ok(
            runtime.request(
                runtime.service("scenarios", date), "POST", f"/start?workflow=rt-nap&id={nap_ids[date]}", nap
            )
        )
    for date in DATES:
        wait_counter(runtime, date, kill_ids[date], "two:start")
        wait_counter(runtime, date, nap_ids[date], "before")
        wait_status(runtime, runtime.service("scenarios", date), f"/describe?id={nap_ids[date]}", "sleeping")
    for date in DATES:
        assert "after" not in counters(runtime, date, nap_ids[date]), "the nap ended before the kill"
    torn = _torn_commits_until_killed(runtime)
    time.sleep(1.5)
    runtime.kill()
    torn.join(timeout=30)
    runtime.start()
    for date in DATES:
        runtime.wait_ready(runtime.service("scenarios", date))
    state = ok(
        runtime.request(runtime.service("scenarios", NEW_STYLE_DATE), "POST", "/probe/torn_state?id=torn")
    )
    assert state["sentinel"] == "torn_state:reached"
    print(f"\ncommits through the SQL journal, read after the SIGKILL: {state}")
    assert state["whole"] and state["counters"][0] > 1, f"a torn commit after SIGKILL: {state}"
    for date in DATES:
        wait_counter(runtime, date, kill_ids[date], "three", timeout=60)
        wait_counter(runtime, date, nap_ids[date], "after", timeout=60)
    for date in DATES:
        state = ok(runtime.request(runtime.service("scenarios", date), "GET", "/runtime"))
        fetches = {k: v for k, v in state["handlers"].items() if "fetch" in k}
        assert fetches == {}, f"a request reached an execution object before its alarm finished it: {state}"
        assert any(k.startswith("alarm") for k in state["handlers"]), state
        kill_seen = counters(runtime, date, kill_ids[date])
        assert kill_seen == {"one": 1, "two:start": 2, "two:end": 1, "three": 1}, kill_seen
        assert counters(runtime, date, nap_ids[date]) == {"before": 1, "after": 1}
        kill_result = settled_result(runtime, date, kill_ids[date])
        assert kill_result["ok"] and kill_result["value"] == {"two_attempt": 2}, kill_result
        nap_result = settled_result(runtime, date, nap_ids[date])
        assert nap_result["ok"] and nap_result["value"] == "rested", nap_result


@pytest.mark.parametrize("date", DATES)
def test_handler_style_of_the_date(runtime: RealRuntime, date: str) -> None:
    ok(
        runtime.request(
            runtime.service("scenarios", date), "POST", f"/check/three_step_retry?id={eid('style', date)}"
        )
    )
    handlers = ok(runtime.request(runtime.service("scenarios", date), "GET", "/runtime"))["handlers"]
    on_fetch = sum(n for name, n in handlers.items() if name.startswith("on_fetch/"))
    if date != OLD_STYLE_DATE:
        assert handlers.get("fetch/1", 0) > 0 and on_fetch == 0, handlers
    else:
        # on_fetch delegates to fetch, so fetch counts its calls too. It declares
        # (request, *runtime_args), and this runtime passes (request, env, ctx) to that.
        assert handlers.get("on_fetch/3", 0) > 0 and on_fetch == handlers.get("fetch/1"), handlers


# -- the example Worker as shipped -------------------------------------------------------


@pytest.mark.parametrize("date", DATES)
def test_example_worker_as_shipped(runtime: RealRuntime, date: str) -> None:
    service, tag = runtime.service("example", date), str(time.monotonic_ns() % 10**9)
    assert "POST /orders" in ok(runtime.request(service, "GET", "/"))["routes"]
    small = {"order_id": f"s{tag}", "amount": 20, "items": [{"sku": "book", "quantity": 2}]}
    started = ok(runtime.request(service, "POST", "/orders", small), 201)
    assert started["created"] is True
    again = ok(runtime.request(service, "POST", "/orders", small), 200)
    assert again["created"] is False

    def result_of(order_id: str) -> Any:
        reply = runtime.request(service, "GET", f"/executions/order-{order_id}/result")
        return reply.body if reply.status == 200 else None

    done = poll(lambda: result_of(f"s{tag}"), timeout=30, what="small order done")
    assert done["ok"] and done["value"]["tracking"] == f"trk-s{tag}", done

    big = {"order_id": f"b{tag}", "amount": 5000, "items": [{"sku": "car"}]}
    ok(runtime.request(service, "POST", "/orders", big), 201)
    wait_status(runtime, service, f"/executions/order-b{tag}", "waiting")
    approval = {"approved": True, "by": "ceo"}
    ok(runtime.request(service, "POST", f"/executions/order-b{tag}/approval", approval), 202)
    approved = poll(lambda: result_of(f"b{tag}"), timeout=30, what="big order done")
    assert approved["ok"] and approved["value"]["approved_by"] == "ceo", approved

    rejected = {"order_id": f"r{tag}", "amount": 5000, "items": [{"sku": "car"}]}
    ok(runtime.request(service, "POST", "/orders", rejected), 201)
    wait_status(runtime, service, f"/executions/order-r{tag}", "waiting")
    rejection = {"approved": False, "by": "cfo"}
    ok(runtime.request(service, "POST", f"/executions/order-r{tag}/approval", rejection), 202)
    failed = poll(lambda: result_of(f"r{tag}"), timeout=30, what="rejected order settled")
    assert not failed["ok"] and failed["error"]["code"] == "non_retryable", failed
    journal = ok(runtime.request(service, "GET", f"/executions/order-r{tag}/journal"))["entries"]
    assert [e["name"] for e in journal if e.get("phase") == "compensation"] == ["refund", "release-inventory"]

    bad = runtime.request(service, "POST", "/orders", {"order_id": "x", "amount": -1, "items": []})
    assert bad.status == 400 and bad.body["error"]["code"] == "invalid_request", bad.text
    assert runtime.request(service, "GET", "/executions/nope-404").status == 404
    text_plain = {"content-type": "text/plain"}
    for reply, status, code in [
        (runtime.request(service, "POST", "/orders", raw=b"{not json"), 400, "invalid_json"),
        (runtime.request(service, "POST", "/orders", raw=b"{}", headers=text_plain), 415, None),
        (runtime.request(service, "GET", "/orders"), 405, "method_not_allowed"),
        (runtime.request(service, "GET", "/nowhere"), 404, "not_found"),
    ]:
        assert reply.status == status, reply.text
        assert code is None or reply.body["error"]["code"] == code, reply.text


def test_without_pydantic_bodies_are_refused(runtime: RealRuntime) -> None:
    """No pydantic in the Worker (none vendored): /execute must not accept a body unchecked."""
    for body in ({"workflow": "bare-noop", "execution_id": "bare-1"}, {"workflow": 5, "wait": "yes"}):
        reply = ok(runtime.request(f"bare-{NEW_STYLE_DATE}", "POST", "/execute?id=bare-1", body))
        assert reply["status"] == 500, reply
        assert reply["body"]["error"]["code"] == "dependency_missing", reply
        assert reply["body"]["error"]["dependency"] == "pydantic", reply


# -- where a step's time goes ----------------------------------------------------------------


def test_step_cost_breakdown(runtime: RealRuntime) -> None:
    """miniflare/realruntime/worker/bench.py, inside a Durable Object; prints the figures."""
    report = ok(
        runtime.request(
            runtime.service("scenarios", NEW_STYLE_DATE), "POST", "/bench?steps=100&id=bench-test"
        )
    )
    assert report["sentinel"] == "bench:reached"
    ms = report["ms_per_step_or_call"]
    print(f"\nreal-runtime step cost (ms, median of {report['rounds']} rounds of {report['steps']} steps):")
    for name, value in ms.items():
        print(f"  {name:24} {value:.3f}")
    print(f"  commits/step {report['commits_per_step']}, bytes/step {report['committed_bytes_per_step']}")
    print(f"  event-loop turns/step {report['loop_turns_per_step']}")
    assert report["commits_per_step"] > 0 and report["committed_bytes_per_step"] > 0
    # Storage and its JavaScript round trips cost something: the engine over the key-value
    # API is slower than over a dict.
    assert ms["engine_kv"] > ms["engine_memory"] > 0 and ms["engine_sql"] > 0, ms


def test_the_cpu_of_whole_executions_is_read_from_the_process() -> None:
    """``rt_driver.run_cpu`` (``python -m bench --real-runtime``'s CPU table), in small: every
    kind of request is answered, each execution through ``/run`` (the client's ``run``)
    completes, and the process's CPU is read for each."""
    report = rt_driver.run_cpu(require_kit().serve_args, executions=3, rounds=1)
    assert set(report["cpu_ms_per_request"]) == {"bare", "new_object", "storage_floor", "run_1", "run_10"}
    assert all(len(values) == 1 and values[0] >= 0 for values in report["all_rounds"].values()), report


def test_a_profile_of_executions_in_workerd_holds_both_sides_of_the_request() -> None:
    """``rt_driver.run_profile`` (``rt_driver.py profile``), in small: cProfile runs in the
    real runtime, and one profile holds the client's request, the execution object's
    handling of it and the engine's storage calls (the object runs in the Worker's isolate)."""
    stats = rt_driver.run_profile(require_kit().serve_args, executions=5, top=400, callers="_upsert")
    assert set(stats) == {"tottime", "cumulative", "callers"}
    for sort in ("tottime", "cumulative"):
        assert "function calls" in stats[sort] and "Ordered by" in stats[sort], stats[sort][:500]
        for where in ("client/_client.py", "cloudflare/_object.py", "cloudflare/_sql_storage.py"):
            assert f"workkit_workflow/{where}" in stats[sort], where
    # Who called the functions named: the SQL journal's upsert, from its commit's transaction.
    assert "was called by" in stats["callers"] and "_sql_storage.py" in stats["callers"], stats["callers"]
    assert "(_write)" in stats["callers"], stats["callers"]
