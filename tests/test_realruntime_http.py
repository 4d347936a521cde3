"""Blocking HTTP from steps: ``workkit_workflow.http.fetch_sync``, ``urllib`` and ``requests``
inside a real Python Durable Object, and the runtime facts they rest on.

The real-runtime tests serve ``miniflare/pyodide-http-probe/probe_entry.py`` in the kit's
workerd (``../shared/runtime``) beside a loopback HTTP server that records every request it
gets; a test passes only if the call reached that server. They run at the compatibility date of
``wrangler.toml`` and at the kit's newest date. requests, urllib3, idna, charset-normalizer,
certifi and pyodide-http are pure-Python wheels that ``pip download`` fetches into ``.cache/``
(the runtime has no packages of its own); like the kit, their absence skips the tier here and
fails it under ``WORKKIT_REQUIRE_RUNTIME=1``.

The facts test pins what the support depends on and what ``pyodide-http`` does there (nothing:
no ``XMLHttpRequest``), so a runtime change that breaks either is noticed. The tests without a
marker cover ``fetch_sync`` on CPython.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workkit_workflow import http
from workkit_workflow.cloudflare import _workers as _cloudflare

from _runtime_kit import ROOT, require_kit

sys.path.insert(0, str(ROOT / "miniflare" / "pyodide-http-probe"))
import probe_driver
from probe_driver import Recorder


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    with Recorder().running() as server:
        yield server


@pytest.fixture(scope="module")
def tls_recorder() -> Iterator[Recorder]:
    with Recorder(tls=True).running() as server:
        yield server


def _wheels_or_skip() -> None:
    try:
        probe_driver.fetch_wheels()
    except Exception as exc:
        if os.environ.get("WORKKIT_REQUIRE_RUNTIME") == "1":
            pytest.fail(f"WORKKIT_REQUIRE_RUNTIME=1 but the probe's wheels cannot be fetched: {exc}")
        pytest.skip(f"the probe's wheels cannot be fetched (pip download): {exc}")


@pytest.fixture(scope="module", params=["wrangler-date", "newest-date"])
def probe_worker(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(base URL of the probe Worker, compatibility date)."""
    kit = require_kit()
    _wheels_or_skip()
    if request.param == "wrangler-date":
        date, flags = probe_driver.DATE, probe_driver.FLAGS
    else:
        date, flags = kit.newest_date, kit.newest_flags
    with (
        tempfile.TemporaryDirectory() as folder,
        probe_driver.workerd(kit.serve_args, Path(folder), flags=flags, date=date) as base,
    ):
        yield base, date


def _probe(base: str, route: str, server: Recorder, tls: Recorder, **params: str) -> dict[str, Any]:
    server.clear()
    tls.clear()
    return probe_driver.probe(base, route, server.url, tls=tls.url, **params)


@pytest.mark.realruntime
def test_blocking_clients_in_steps_reach_the_server(
    probe_worker: tuple[str, str], recorder: Recorder, tls_recorder: Recorder
) -> None:
    base, date = probe_worker
    execution_id = f"http-steps-{date}"
    result = _probe(base, "/engine", recorder, tls_recorder, id=execution_id)
    steps = ["urllib", "requests", "fetch_sync", "requests_https", "fetch_sync_https"]
    assert result == {
        "status": "completed",
        "value": {step: f"reached step_{step}" for step in steps},
        "error": None,
    }, result
    assert recorder.seen == ["step_urllib", "step_requests", "step_fetch_sync"]
    assert tls_recorder.seen == ["step_requests_https", "step_fetch_sync_https"]
    headers = {**recorder.headers, **tls_recorder.headers}
    keys = {step: headers[f"step_{step}"].get("idempotency-key") for step in steps}
    assert keys == {step: f"{execution_id}:j:{n}:{step}" for n, step in enumerate(steps)}
    # Each client used its own stack: urllib its sockets, requests urllib3's fetch path.
    assert headers["step_urllib"]["user-agent"].startswith("Python-urllib/")
    assert headers["step_requests"]["user-agent"].startswith("python-requests/")


@pytest.mark.realruntime
def test_a_blocked_call_leaves_the_object_serving(probe_worker: tuple[str, str], recorder: Recorder) -> None:
    """While fetch_sync waits 2 s in a Durable Object, the same object answers another request."""
    base, _ = probe_worker
    recorder.clear()
    slow: dict[str, Any] = {}

    def call_slow() -> None:
        slow.update(probe_driver.probe(base, "/slow", recorder.url + "?probe=slow&delay=2"))

    thread = threading.Thread(target=call_slow)
    thread.start()
    try:
        poll_until = time.monotonic() + 10
        while "slow" not in recorder.seen and time.monotonic() < poll_until:
            time.sleep(0.02)
        assert recorder.seen == ["slow"], "the slow call never reached the server"
        pong = probe_driver.probe(base, "/ping", None)
    finally:
        thread.join(timeout=30)
    assert slow["ms"] >= 2000, slow
    assert pong["pong"] < slow["done"], (pong, slow)


@pytest.mark.realruntime
def test_a_step_timeout_ends_a_blocked_call(probe_worker: tuple[str, str], recorder: Recorder) -> None:
    base, date = probe_worker
    recorder.clear()
    result = probe_driver.probe(
        base, "/timeout", recorder.url + "?probe=timeout&delay=3", id=f"http-timeout-{date}"
    )
    assert recorder.seen == ["timeout"]
    assert (result["status"], result["error"]["code"]) == ("failed", "step_timeout"), result
    assert result["error"]["error"]["duration_ms"] < 2000, result
    assert result["ms"] < 3000, result


def _reached(name: str) -> dict[str, Any]:
    return {"ok": True, "value": {"status": 200, "body": f"reached {name}"}}


@pytest.mark.realruntime
@pytest.mark.parametrize("route", ["/probe", "/probe-do"])
def test_runtime_facts(
    probe_worker: tuple[str, str], recorder: Recorder, tls_recorder: Recorder, route: str
) -> None:
    """What exists and what fails, in a Worker's and a Durable Object's fetch handler."""
    base, _ = probe_worker
    result = _probe(base, route, recorder, tls_recorder)
    env = result["environment"]["value"]
    assert (env["platform"], env["XMLHttpRequest"], env["fetch"]) == ("emscripten", False, True), env
    assert env["WebAssembly.Suspending"] and env["WebAssembly.promising"], env
    for where in ("handler", "asyncio_task"):
        seen = result[where]
        assert seen["can_run_sync"] == {"ok": True, "value": True}, (where, seen)
        for name in ("run_sync_fetch", "urlopen_unpatched", "requests_unpatched", "fetch_sync"):
            assert seen[name] == _reached(name), (where, name, seen[name])
        assert seen["urlopen_refused"]["error"].startswith("URLError:"), seen["urlopen_refused"]
    # HTTPS: the runtime's fetch (requests, fetch_sync) works; urllib's socket path sends the
    # request (the server gets it) and then loses the response.
    https = result["https"]
    for name in ("https_requests", "https_fetch_sync"):
        assert https[name] == _reached(name), (name, https[name])
    for name in ("https_urlopen", "https_urlopen_default"):
        assert https[name] == {
            "ok": False,
            "error": "RemoteDisconnected: Remote end closed connection without response",
        }, (name, https[name])
    assert sorted(tls_recorder.seen) == sorted(https)
    patched = result["pyodide_http"]
    # pyodide-http patches only where there is an XMLHttpRequest: here it does nothing...
    assert patched["pyodide_http_patch_all"] == {"ok": True, "value": {"should_patch": False}}
    assert patched["urlopen_after_patch_all"] == _reached("urlopen_after_patch_all")
    assert patched["requests_after_patch_all"] == _reached("requests_after_patch_all")
    # ...and its own transport cannot start.
    assert patched["pyodide_http_core_send"]["error"].startswith(
        "ImportError: cannot import name 'crossOriginIsolated'"
    ), patched["pyodide_http_core_send"]
    assert sorted(recorder.seen) == sorted(
        ["js_fetch_await"]
        + 2 * ["run_sync_fetch", "urlopen_unpatched", "requests_unpatched", "fetch_sync"]
        + ["urlopen_after_patch_all", "requests_after_patch_all"]
    )


# -- CPython -----------------------------------------------------------------------------


def test_fetch_sync_on_cpython_sends_key_and_body(recorder: Recorder) -> None:
    recorder.clear()
    response = http.fetch_sync(
        recorder.url + "?probe=cpython", method="post", json={"a": 1}, idempotency_key="k-1", timeout=10
    )
    assert (response.status, response.text) == (200, "reached cpython")
    assert recorder.headers["cpython"]["idempotency-key"] == "k-1"
    assert recorder.headers["cpython"]["content-type"] == "application/json"
    assert json.loads(recorder.bodies["cpython"]) == {"a": 1}


def test_fetch_sync_on_cpython_returns_error_statuses(recorder: Recorder) -> None:
    response = http.fetch_sync(recorder.url + "?probe=failing&status=503", timeout=10)
    assert response.status == 503
    with pytest.raises(http.HttpError) as raised:
        response.raise_for_status()
    assert raised.value.retryable


def test_fetch_sync_without_stack_switching_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a Pyodide where pyodide.ffi has no usable run_sync (here: none at all).
    monkeypatch.setattr(_cloudflare, "IN_PYODIDE", True)
    assert not http.sync_http_available()
    with pytest.raises(http.SyncHttpUnavailableError) as raised:
        http.fetch_sync("http://127.0.0.1:9/never")
    assert raised.value.code == "sync_http_unavailable"
    assert not raised.value.retryable


def test_idempotency_headers_outside_a_step() -> None:
    assert http.idempotency_headers() == {}
    assert http.idempotency_headers("k") == {"Idempotency-Key": "k"}
