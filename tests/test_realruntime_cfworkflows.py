"""The Cloudflare Workflows backend on Cloudflare's own local Workflows engine, in the newest workerd.

The Worker (``miniflare/cfworkflows-real/worker/``) is the README's usage: each workflow is
a ``WorkflowEntrypoint`` in the recommended subclass form (one in the assignment form), and
every call goes through ``create_durable_workflow(self.env.<BINDING>)``, i.e. the runtime's
built-in ``workers`` SDK wrapping the unmodified local engine (miniflare's
``binding.worker.js``). Each scenario asserts sentinels the steps recorded in the Worker
(``/marks``), so a scenario cannot pass without its steps having run. Sleeps and retry
delays are real time (about 1 s each).

Runs at the README's compatibility date (2025-09-20, Pyodide bundle of the kit, legacy
``step.do`` signature) and at the newest date the binary accepts (implicit-dependency
``step.do``, preserved non-retryable messages).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from _runtime_kit import ROOT, SHARED_RUNTIME, Kit, require_kit

HARNESS = ROOT / "miniflare" / "cfworkflows-real"
sys.path.insert(0, str(HARNESS))
import runtime as cfw  # noqa: E402

pytestmark = pytest.mark.realruntime

ENGINE_CACHE = ROOT / ".cache" / "cfworkflows-engine"
README_DATE = "2025-09-20"
"""The compatibility date of the README's wrangler config."""


def engine_files() -> Path:
    """Cloudflare's local Workflows engine, extracted once into ``.cache`` (idempotent, one
    extractor at a time). Unavailable: skip, or fail under ``WORKKIT_REQUIRE_RUNTIME=1``."""
    ENGINE_CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(ENGINE_CACHE.with_name(ENGINE_CACHE.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((ENGINE_CACHE / name).exists() for name in cfw.ENGINE_FILES):
            return ENGINE_CACHE
        script = SHARED_RUNTIME / "cfworkflows" / "fetch_engine.sh"
        scratch = ENGINE_CACHE.with_name(ENGINE_CACHE.name + ".tmp")
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            run = subprocess.run(
                ["bash", str(script), str(scratch)], capture_output=True, text=True, timeout=300
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _unavailable(f"fetch_engine.sh could not run: {exc}")
        if run.returncode != 0:
            _unavailable(f"fetch_engine.sh failed:\n{(run.stdout + run.stderr)[-3000:]}")
        shutil.rmtree(ENGINE_CACHE, ignore_errors=True)
        scratch.rename(ENGINE_CACHE)
        return ENGINE_CACHE


def _unavailable(reason: str) -> NoReturn:
    what = f"Cloudflare's local Workflows engine is unavailable: {reason}"
    if os.environ.get("WORKKIT_REQUIRE_RUNTIME") == "1":
        pytest.fail(f"WORKKIT_REQUIRE_RUNTIME=1 but {what}")
    pytest.skip(what)


def settings(kit: Kit, which: str) -> cfw.Settings:
    if which == "readme":
        # The README's wrangler flags (python_workflows is implied from this date) plus the
        # kit's flag that loads its locally built Pyodide bundle.
        return cfw.Settings(README_DATE, ("python_workers", "python_workers_development"))
    return cfw.Settings(kit.newest_date, (*kit.newest_flags, "python_workflows"))


@pytest.fixture(scope="module", params=["readme", "newest"])
def worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[cfw.Runtime]:
    kit = require_kit()
    engine = engine_files()
    folder = tmp_path_factory.mktemp(f"cfw-{request.param}")
    serve = kit.serve_args(Path("CONFIG"))
    serve.remove("CONFIG")
    rt = cfw.start(serve, engine, settings(kit, request.param), folder=folder)
    try:
        yield rt
    finally:
        rt.stop()


# -- helpers --------------------------------------------------------------------------


def call(rt: cfw.Runtime, path: str, **query: Any) -> Any:
    """A route's answer; a raised error becomes an assertion with its structured fields."""
    answer = rt.post(path, **query)
    assert "ok" in answer, f"{path} {query} raised {answer['raised']}\n{rt.log()[-3000:]}"
    return answer["ok"]


def raised(rt: cfw.Runtime, path: str, **query: Any) -> dict[str, Any]:
    answer = rt.post(path, **query)
    assert "raised" in answer, f"{path} {query} did not raise: {answer}"
    return dict(answer["raised"])


def marks(rt: cfw.Runtime, execution_id: str) -> dict[str, Any]:
    """The sentinels of one instance's steps: ``{step: {"calls": n, "value": ...}}``."""
    prefix = execution_id + ":"
    return {k[len(prefix) :]: v for k, v in call(rt, "/marks").items() if k.startswith(prefix)}


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def result(rt: cfw.Runtime, flow: str, execution_id: str, timeout: float = 30.0) -> dict[str, Any]:
    return dict(call(rt, "/result", flow=flow, id=execution_id, timeout=timeout))


def start(rt: cfw.Runtime, flow: str, execution_id: str, input: Any = None) -> None:
    started = call(rt, "/start", flow=flow, id=execution_id, input=input)
    assert started == {"execution_id": execution_id, "created": True}


_ids = iter(range(1_000_000))


def new_id(name: str) -> str:
    # Unique per test run: the engine's storage lives in the run's folder.
    return f"{name}-{next(_ids)}"


# -- scenarios ----------------------------------------------------------------------------


def test_the_runtime_under_test(worker: cfw.Runtime) -> None:
    """The kit's Pyodide, and the built-in SDK without native NonRetryableError: the
    backend's own retry loop (one engine attempt per step, durable sleeps between) is
    the path these scenarios cover. A newer SDK that changes it fails here first."""
    ping = call(worker, "/ping")
    assert ping["python"].startswith("3.14.")
    assert ping["native_non_retryable"] is False


def test_assignment_form_completes_with_its_output(worker: cfw.Runtime) -> None:
    eid = new_id("plain")
    start(worker, "plain", eid, {"name": "ada"})
    done = result(worker, "plain", eid)
    # A dict result (None inside kept as null): the runtime's built-in SDK hands run's
    # result to JavaScript unconverted, so an unconverted dict ended the instance errored.
    value = {"greeting": "hello ada", "nothing": None}
    assert done == {"ok": True, "status": "completed", "value": value, "error": None}
    assert marks(worker, eid)["hello"]["calls"] == 1
    described = call(worker, "/describe", flow="plain", id=eid)
    assert (described["status"], described["engine_status"]) == ("completed", "complete")
    assert described["output"] == value


def test_subclass_form_retries_a_step_on_the_engine(worker: cfw.Runtime) -> None:
    eid = new_id("retry")
    start(worker, "retry", eid, {"order": 7})
    done = result(worker, "retry", eid)
    assert done["ok"], done
    assert done["value"] == {"flaky": {"attempt": 3, "key": f"{eid}:flaky"}, "order": 7}
    seen = marks(worker, eid)
    # The engine made three attempts (the attempt numbers came from its ctx), then one finish.
    assert seen["flaky"] == {"calls": 3, "value": 3}
    assert seen["finish"]["calls"] == 1


def test_non_retryable_failure_runs_compensation_and_reports_its_code(worker: cfw.Runtime) -> None:
    eid = new_id("saga")
    start(worker, "saga", eid, {"order": 9})
    done = result(worker, "saga", eid)
    assert (done["ok"], done["status"]) == (False, "failed")
    error = done["error"]
    assert error["code"] == "non_retryable", error
    assert error["failed_step"] == "charge"
    assert error["error"]["code"] == "non_retryable"
    assert error["error"]["message"] == "card declined"
    assert "Traceback" not in str(error)
    seen = marks(worker, eid)
    assert seen["charge"]["calls"] == 1, "a NonRetryableError was retried"
    assert seen["release"]["calls"] == 1
    assert seen["release"]["value"] == {
        "failed_step": "charge",
        "code": "non_retryable",
        "outputs": {"reserve": {"reserved": 9}},
    }


def test_sleep_is_durable_and_its_status_is_mapped(worker: cfw.Runtime) -> None:
    eid = new_id("nap")
    began = time.monotonic()
    start(worker, "nap", eid)
    wait_until("the step before the sleep", lambda: "before" in marks(worker, eid))
    asleep = call(worker, "/describe", flow="nap", id=eid)
    assert "after" not in marks(worker, eid)
    # Measured: the local engine never sets its `waiting` status (production documents
    # it for a sleep or an event wait): a sleeping instance reports `running`.
    assert (asleep["engine_status"], asleep["status"]) == ("running", "running")
    done = result(worker, "nap", eid)
    assert done["value"] == {"slept": True, "prev": 1.0}
    assert time.monotonic() - began >= 2.0
    assert marks(worker, eid)["after"]["calls"] == 1


def test_events_before_and_after_the_wait_and_a_timeout_with_default(worker: cfw.Runtime) -> None:
    eid = new_id("approval")
    start(worker, "approval", eid)
    # Sent at once: the instance has not reached its wait for "first" yet.
    assert call(worker, "/event", flow="approval", id=eid, type="first", payload={"n": 1}) == {"sent": True}
    wait_until("the step after the first event", lambda: "between" in marks(worker, eid))
    assert marks(worker, eid)["between"]["value"] == {"n": 1}
    time.sleep(1.0)  # now blocked in the wait for "second"
    waiting = call(worker, "/describe", flow="approval", id=eid)
    assert (waiting["engine_status"], waiting["status"]) == ("running", "running")
    call(worker, "/event", flow="approval", id=eid, type="second", payload=[2, "two"])
    done = result(worker, "approval", eid)
    assert done["value"] == {"first": {"n": 1}, "second": [2, "two"], "third": "no third"}
    assert marks(worker, eid)["ready"]["calls"] == 1


def test_terminate_cancels_a_sleeping_instance(worker: cfw.Runtime) -> None:
    eid = new_id("long")
    start(worker, "long", eid)
    wait_until("the first step", lambda: "started" in marks(worker, eid))
    assert call(worker, "/cancel", flow="long", id=eid) == {"cancelled": True}
    wait_until("terminated", lambda: call(worker, "/status", flow="long", id=eid)["status"] == "cancelled")
    done = result(worker, "long", eid)
    assert (done["ok"], done["status"], done["error"]["code"]) == (False, "cancelled", "cancelled")
    assert call(worker, "/cancel", flow="long", id=eid) == {"cancelled": False}
    time.sleep(0.5)
    seen = marks(worker, eid)
    assert "never" not in seen
    assert "compensated" not in seen, "on_failure ran on terminate (the README says it does not)"


def test_pause_holds_a_sleeping_instance_and_unpause_resumes_it(worker: cfw.Runtime) -> None:
    eid = new_id("nap")
    start(worker, "nap", eid)
    wait_until("the step before the sleep", lambda: "before" in marks(worker, eid))
    call(worker, "/pause", flow="nap", id=eid)
    # The engine pauses by throwing its abort error into the pending sleep; run hands
    # that error back, else the engine took it for a failure and the instance errored.
    paused = wait_until(
        "paused",
        lambda: (d := call(worker, "/describe", flow="nap", id=eid))["engine_status"] != "running" and d,
        timeout=5.0,
    )
    assert (paused["engine_status"], paused["status"]) == ("paused", "paused"), paused
    time.sleep(2.5)  # longer than the sleep: a paused instance does not go on
    assert call(worker, "/status", flow="nap", id=eid) == {"status": "paused"}
    assert "after" not in marks(worker, eid)
    call(worker, "/unpause", flow="nap", id=eid)
    done = result(worker, "nap", eid)
    assert done["value"] == {"slept": True, "prev": 1.0}
    seen = marks(worker, eid)
    # Resumed by a replay: the step before the sleep came from the engine's cache.
    assert (seen["before"]["calls"], seen["after"]["calls"]) == (1, 1)


def test_restart_runs_the_instance_again_from_the_start(worker: cfw.Runtime) -> None:
    """``CountFlow`` overrides ``run`` and calls ``super().run()``: the SDK wraps both, and its
    steps still run (the step the package gets is wrapped once)."""
    eid = new_id("count")
    start(worker, "count", eid)
    first = result(worker, "count", eid)
    assert first["value"] == 1, first
    assert call(worker, "/restart", flow="count", id=eid) == {"execution_id": eid}
    wait_until("the second run", lambda: marks(worker, eid)["count"]["calls"] == 2)
    done = wait_until("completed again", lambda: (r := result(worker, "count", eid))["value"] == 2 and r)
    assert done["status"] == "completed"
    assert marks(worker, eid)["run"]["calls"] >= 2  # through the subclass's own run


@pytest.mark.parametrize(("from_step", "kind"), [("after", "step"), ("nap", "sleep")])
def test_restart_from_a_step_keeps_the_steps_before_it(
    worker: cfw.Runtime, from_step: str, kind: str
) -> None:
    """The engine's ``restart({from: {name, count, type}})``: types ``do`` and ``sleep``."""
    eid = new_id("nap")
    start(worker, "nap", eid)
    assert result(worker, "nap", eid)["value"] == {"slept": True, "prev": 1.0}
    call(worker, "/restart", flow="nap", id=eid, from_step=from_step, kind=kind)
    wait_until("the second run of 'after'", lambda: marks(worker, eid)["after"]["calls"] == 2)
    seen = marks(worker, eid)
    assert (seen["before"]["calls"], seen["after"]["calls"]) == (1, 2), seen


def test_restart_of_a_sleeping_instance_starts_it_over(worker: cfw.Runtime) -> None:
    eid = new_id("long")
    start(worker, "long", eid)
    wait_until("the first step", lambda: "started" in marks(worker, eid))
    call(worker, "/restart", flow="long", id=eid)
    wait_until("the first step again", lambda: marks(worker, eid)["started"]["calls"] == 2)
    assert call(worker, "/status", flow="long", id=eid) == {"status": "running"}
    assert call(worker, "/cancel", flow="long", id=eid) == {"cancelled": True}
    assert "compensated" not in marks(worker, eid), "on_failure ran on restart or terminate"


def test_step_output_over_1_mib_fails_without_retries(worker: cfw.Runtime) -> None:
    eid = new_id("big")
    start(worker, "big", eid)
    done = result(worker, "big", eid)
    assert (done["ok"], done["status"]) == (False, "failed")
    assert done["error"]["code"] == "serialization_error", done["error"]
    assert done["error"]["failed_step"] == "big"
    assert marks(worker, eid)["big"]["calls"] == 1, "an oversize output was retried"


def test_oversize_input_and_event_are_refused_before_the_engine(worker: cfw.Runtime) -> None:
    eid = new_id("plain")
    refused = raised(worker, "/start", flow="plain", id=eid, input={"name": "x" * (1 << 20)})
    assert refused["code"] == "serialization_error"
    assert raised(worker, "/status", flow="plain", id=eid)["code"] == "execution_not_found"
    start(worker, "approval", eid)
    big = raised(worker, "/event", flow="approval", id=eid, type="first", payload="y" * (1 << 20))
    assert big["code"] == "serialization_error"
    call(worker, "/cancel", flow="approval", id=eid)


def test_a_second_start_of_an_id_returns_the_existing_instance(worker: cfw.Runtime) -> None:
    eid = new_id("plain")
    start(worker, "plain", eid, {"name": "bo"})
    again = call(worker, "/start", flow="plain", id=eid, input={"name": "bo"})
    assert again == {"execution_id": eid, "created": False}
    assert result(worker, "plain", eid)["value"]["greeting"] == "hello bo"
    assert marks(worker, eid)["hello"]["calls"] == 1
