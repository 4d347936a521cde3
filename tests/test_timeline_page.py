"""The timeline page: what a person sees for a failed-and-compensated execution."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from test_history_projection import Runtime, order_flow
from workkit_workflow import create_durable_workflow
from workkit_workflow.history import HistoryQuery, LocalD1
from workkit_workflow.history.page import history_page, render_execution_page, render_index
from workkit_workflow.local import LocalNamespace

ROOT = Path(__file__).parents[1]


async def populate(rt: Runtime) -> None:
    failed = await rt.client.run(order_flow(), {"order_id": "o-1"}, execution_id="order-failed")
    await failed.result(timeout=3600)
    ok = await rt.client.run(order_flow(ship_fails=False), {"order_id": "o-2"}, execution_id="order-ok")
    await ok.result(timeout=3600)
    await rt.drained(["order-failed", "order-ok"])


@pytest.fixture
async def query() -> Any:
    rt = Runtime()
    await populate(rt)
    yield HistoryQuery(rt.d1)
    await rt.close()


async def test_the_execution_page_tells_the_story(query: HistoryQuery) -> None:
    html = render_execution_page(await query.get_execution("order-failed"))
    assert "Failed at step &#x27;ship&#x27; (attempt 1): non_retryable: address rejected by carrier." in html
    assert "Compensation ran and completed" in html
    for step in ("reserve", "charge", "ship", "refund", "release"):
        assert f"data-step='{step}'" in html
    assert "attempt 1: failed after 0ms: ConnectionError: card network timeout" in html
    assert re.search(r"backoff [\d.]+m?s before attempt 2", html)  # jittered
    assert html.index("<h2>Steps</h2>") < html.index("<h2>Compensation")
    # One inline script (live refresh, actions), nothing fetched from elsewhere.
    assert html.count("<script") == 1 and "<script src" not in html


async def test_the_index_lists_and_filters(query: HistoryQuery) -> None:
    status, html = await history_page(query, "/")
    assert status == 200
    assert html.index("order-ok") < html.index("order-failed") or "order-failed" in html
    assert "/executions/order-failed" in html
    status, html = await history_page(query, "/", {"status": "failed"})
    assert "order-failed" in html and "/executions/order-ok" not in html
    status, html = await history_page(query, "/executions/order-ok")
    assert status == 200 and "Completed in" in html
    assert (await history_page(query, "/executions/nope"))[0] == 404
    assert (await history_page(query, "/", {"cursor": "!!"}))[0] == 400
    assert (await history_page(query, "/elsewhere"))[0] == 404
    status, html = await history_page(query, "/history/executions/order-ok", base="/history")
    assert status == 200 and "href='/history/executions/" not in html


async def test_error_messages_are_escaped() -> None:
    d1 = LocalD1()
    async with LocalNamespace(None, env={"HISTORY_DB": d1}) as ns:
        from workkit_workflow import NonRetryableError, Workflow

        def evil(input: Any, prev: Any, ctx: Any) -> None:
            raise NonRetryableError("<script>alert(1)</script>")

        flow = Workflow("escape-check").step("evil", evil)
        client = create_durable_workflow(ns, history=d1)
        await (await client.run(flow, None, execution_id="esc-1")).result(timeout=5)
        await ns.idle()
        assert client.history is not None
        page = await client.history.list_executions()
        html = render_index(page) + render_execution_page(await client.history.get_execution("esc-1"))
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# -- the dev server and a real browser ----------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _require_chromium() -> str:
    found = _chromium()
    if found is None:
        if os.environ.get("WORKKIT_REQUIRE_BROWSER") == "1":
            pytest.fail("headless Chromium is required (apt-get install -y chromium)")
        pytest.skip("headless Chromium not installed (apt-get install -y chromium)")
    return found


def _browser(chromium: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def served(tmp_path: Path) -> Any:
    """``workkit-workflow serve`` over a runtime file holding both executions."""
    import asyncio

    db = str(tmp_path / "workflows.db")

    async def make() -> None:
        rt = Runtime(db, d1=LocalD1(db))
        await populate(rt)
        await rt.close()
        rt.d1.close()

    asyncio.run(make())
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "workkit_workflow.cli", "serve", "--db", db, "--port", "0"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert "serving executions" in line, line
            yield line.split(" on ", 1)[1].split()[0]
        finally:
            server.terminate()
            server.wait(timeout=10)


def test_the_dev_server_serves_both_pages(served: str) -> None:
    with urllib.request.urlopen(served) as response:
        assert response.status == 200
        assert "order-failed" in response.read().decode()
    with urllib.request.urlopen(served + "executions/order-failed") as response:
        assert "Compensation ran and completed" in response.read().decode()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(served + "executions/nope")
    assert missing.value.code == 404
    missing.value.close()


@pytest.mark.browser
def test_headless_chromium_shows_a_failed_and_compensated_execution(served: str, tmp_path: Path) -> None:
    chromium = _require_chromium()
    page = served + "executions/order-failed"
    started = time.monotonic()
    dom = _browser(chromium, "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert "Failed at step 'ship' (attempt 1): non_retryable: address rejected by carrier." in text
    assert "Compensation ran and completed: the effects were undone." in text
    assert "attempt 1: failed after 0ms: ConnectionError: card network timeout" in text
    for step in ("reserve", "charge", "ship", "refund", "release"):
        assert f'data-step="{step}"' in text
    shot = tmp_path / "timeline.png"
    result = _browser(chromium, f"--screenshot={shot}", "--window-size=1200,900", page)
    assert result.returncode == 0, result.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    keep = os.environ.get("WORKKIT_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "timeline.png")
    assert time.monotonic() - started < 60


# -- odd stored data never breaks the page ----------------------------------------------------


def _odd_history(status: str = "running", **times: float) -> Any:
    from workkit_workflow.history._query import ExecutionHistory, ExecutionRecord, StepRecord

    t0 = 1_767_225_600.0
    record = ExecutionRecord(
        execution_id="odd-<script>",
        workflow="w<b>",
        status=status,
        phase="main",
        created_at=t0,
        updated_at=t0,
        started_at=t0,
        input={"html": "</pre><script>alert(1)</script>"},
    )
    steps = [
        StepRecord("main", 0, "huge", "step", "completed", 1, started_at=t0, finished_at=t0 + 1),
        StepRecord(
            "main",
            1,
            "far<i>",
            "sleep",
            "sleeping",
            0,
            started_at=times.get("start", t0 + 1),
            wake_at=times.get("wake", 1e300),
        ),
        StepRecord("main", 2, "maybe", "step", "in_doubt", 1, started_at=t0 + 2, attempt_started_at=t0 + 2),
        StepRecord("main", 3, "left", "wait", "abandoned", 0, started_at=t0 + 2, event_type="ok"),
        StepRecord("main", 4, "weird", "step", "we<ird>", 1, started_at=times.get("weird", t0)),
    ]
    return ExecutionHistory(record, steps, [])


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "times",
    [
        {},
        {"start": 1e300},
        {"start": float("inf"), "wake": float("inf")},
        {"start": -1e20, "weird": 1e18},
        {"start": 1_767_225_600.0 + 3 * 86400 * 365},
    ],
)
def test_odd_stored_data_renders_escaped_and_bounded(times: dict[str, float]) -> None:
    from workkit_workflow.history.page import Outcomes

    outputs = {("main", 0): "<x>" * 1_000_000, ("main", 1): _deep(100_000)}
    outcomes = Outcomes(outputs, has_result=True, result={"</details>": "<b>"})
    for fragment in ("", "1", "main"):
        html = render_execution_page(_odd_history(**times), outcomes=outcomes, fragment=fragment)
        assert "<script>alert" not in html and "<b>" not in html and "<i>" not in html
        assert "nan%" not in html.lower() and "inf%" not in html.lower()
        assert len(html) < 200_000  # a 3 MB output is cut to what a page can hold
    assert "showing 20.0 kB of 3.0 MB" in html
    assert "in doubt" in html and "abandoned" in html


async def test_a_cancelled_execution_shows_its_sleep_abandoned() -> None:
    from workkit_workflow import Workflow
    from workkit_workflow.history.page import client_outcomes

    d1 = LocalD1()
    async with LocalNamespace(None, env={"HISTORY_DB": d1}) as ns:
        flow = Workflow("nap").step("first", lambda i, p, c: {"n": 1}).sleep("nap", 3600)
        client = create_durable_workflow(ns, history=d1)
        handle = await client.run(flow, None, execution_id="nap-1")
        await ns.idle(timeout=5)
        await handle.cancel("enough")
        await ns.idle(timeout=5)
        assert client.history is not None
        history = await client.history.get_execution("nap-1")
        html = render_execution_page(history, outcomes=await client_outcomes(client, "nap-1"))
    assert "data-step='nap' data-status='abandoned'" in html
    # main's wording ("abandoned: the execution ended ...") or the journal-aware one
    assert "abandoned: the execution ended" in html or "sleep abandoned" in html
    assert "&quot;n&quot;: 1" in html  # the first step's output


def test_plain_serve_reads_a_runtime_file_without_history_and_writes_nothing(tmp_path: Path) -> None:
    # It created the seven wf_* tables in the file (and then showed none of its
    # executions); it reads what list and show read, and leaves the file as it was.
    import asyncio
    import hashlib
    import sqlite3

    from workkit_workflow import Workflow, create_durable_workflow
    from workkit_workflow.local import LocalNamespace

    db = str(tmp_path / "plain.db")
    flow = Workflow("plain-serve").step("only", lambda i, p, c: {"ok": True})

    async def make() -> None:
        async with LocalNamespace(db) as ns:  # no HISTORY_DB: no history tables
            await (await create_durable_workflow(ns).run(flow, None, execution_id="plain-1")).result(
                timeout=10
            )

    asyncio.run(make())
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def snapshot() -> tuple[set[str], str]:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        return tables, hashlib.sha256(Path(db).read_bytes()).hexdigest()

    before = snapshot()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "workkit_workflow.cli", "serve", "--db", db, "--port", "0"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert "serving executions" in line, line
            address = line.split(" on ", 1)[1].split()[0]
            with urllib.request.urlopen(address) as response:
                assert "plain-1" in response.read().decode()
            with urllib.request.urlopen(address + "executions/plain-1") as response:
                assert "only" in response.read().decode()
        finally:
            server.terminate()
            server.wait(timeout=10)
    assert snapshot() == before
    assert not any(name.startswith("wf_") for name in before[0])
