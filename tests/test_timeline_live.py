"""The timeline page a developer keeps open: live refresh, outputs, and actions from the page.

Every test here drives headless Chromium over a real ``workkit-workflow serve``
subprocess and its local runtime file: it clicks the page's own buttons and
reads its DOM; screenshots land in ``WORKKIT_SCREENSHOT_DIR`` when it is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from _cdp import Browser
from workkit_workflow import create_durable_workflow
from workkit_workflow.history import LocalD1
from workkit_workflow.local import LocalNamespace

pytestmark = pytest.mark.browser

SRC = str(Path(__file__).resolve().parents[1] / "src")
PAUSE = 4.0
"""Real seconds the live workflow sleeps, so the page sees it change."""

APP = textwrap.dedent(
    f"""
    from workkit_workflow import workflow

    async def undo(ctx):
        await ctx.step("undo", lambda: {{"undone": True}})

    @workflow("page-approval")
    async def approval(ctx, input):
        sent = {{"sent": True, "note": "<b>not bold</b>", "lines": list(range(40))}}
        await ctx.step("request", lambda: sent)
        decision = await ctx.wait_for_event("await-approval", "approved")
        await ctx.step("apply", lambda: {{"applied": decision}})
        return {{"decision": decision}}

    approval.on_failure(undo)

    @workflow("page-live")
    async def live(ctx, input):
        await ctx.step("first", lambda: {{"n": 1}})
        await ctx.sleep("pause", {PAUSE})
        await ctx.step("second", lambda: {{"n": 2}})
        return "done"

    @workflow("page-big")
    async def big(ctx, input):
        await ctx.step("huge", lambda: "x" * 300_000)
        return None
    """
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("page_app")
    (folder / "page_app.py").write_text(APP)
    sys.path.insert(0, str(folder))
    return folder


def _populate(db: str, *, live: bool = False) -> None:
    import page_app

    async def go() -> None:
        history = LocalD1(db)
        async with LocalNamespace(db, env={"HISTORY_DB": history}) as ns:
            client = create_durable_workflow(ns, history=history)
            for n in (1, 2, 3):
                await client.run(page_app.approval, {"n": n}, execution_id=f"approval-{n}")
            await client.run(page_app.big, None, execution_id="big-1")
            if live:
                await client.run(page_app.live, None, execution_id="live-1")
            await ns.idle(timeout=2)
            await client.execution("approval-3").send_event("approved", True)
            await ns.idle(timeout=5)
        history.close()

    asyncio.run(go())


def _serve(app: Path, db: str, *extra: str) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "workkit_workflow.cli", "serve", "--db", db, "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        cwd=app,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving executions" in line, (line, process.stderr.read() if process.poll() else "")
        yield line.split(" on ", 1)[1].split()[0]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def owner(app: Path, tmp_path: Path) -> Iterator[str]:
    """``serve --app`` owning a runtime file: the page can act."""
    db = str(tmp_path / "workflows.db")
    _populate(db, live=True)
    yield from _serve(app, db, "--app", "page_app")


@pytest.fixture
def reader(app: Path, tmp_path: Path) -> Iterator[str]:
    """Plain ``serve``: read-only."""
    db = str(tmp_path / "workflows.db")
    _populate(db)
    yield from _serve(app, db)


def _keep(shot: Path) -> None:
    keep = os.environ.get("WORKKIT_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)


def _live_status(browser: Browser) -> str:
    return str(browser.eval("document.querySelector('#live h1 .badge').textContent"))


def test_a_running_execution_refreshes_in_place(owner: str, tmp_path: Path) -> None:
    with Browser() as browser:
        browser.goto(owner + "executions/live-1")
        assert _live_status(browser) == "sleeping"
        assert browser.eval("document.querySelector(\"#live [data-step='second']\")") is None
        browser.eval("window.sameDocument = 42")
        assert browser.text("#livemark") == "live"
        browser.wait_for("!!document.querySelector(\"#live [data-step='second']\")", timeout=PAUSE + 20)
        browser.wait_for("document.querySelector('#live h1 .badge').textContent === 'completed'")
        # The region was swapped by the script, not by loading the page again.
        assert browser.eval("window.sameDocument") == 42
        assert int(browser.eval("document.getElementById('live').getAttribute('data-swaps')")) >= 1
        # Settled: the page stops polling and says so.
        browser.wait_for("document.getElementById('livemark').textContent === ''")
        assert "done" in browser.text("#result")
        ticks = browser.eval("[...document.querySelectorAll('.tick span')].map(t => t.textContent)")
        assert ticks and all(len(t) >= 8 and t[2] == ":" for t in ticks), ticks
        _keep_shot(browser, tmp_path / "timeline-live-desktop.png")


def _keep_shot(browser: Browser, shot: Path) -> None:
    png = browser.screenshot(shot)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    _keep(shot)


def test_cancel_send_an_event_and_restart_from_the_page(owner: str, tmp_path: Path) -> None:
    with Browser() as browser:
        # cancel: compensation runs, the page shows it without a reload
        browser.goto(owner + "executions/approval-1")
        assert _live_status(browser) == "waiting"
        browser.fill("form[data-verb='cancel'] input[name='reason']", "changed <my> mind")
        browser.submit("form[data-verb='cancel']")
        browser.wait_for("document.getElementById('answer').textContent === 'Cancelled.'")
        browser.wait_for("document.querySelector('#live h1 .badge').textContent === 'cancelled'")
        assert "Cancelled (changed <my> mind)." in browser.text("#headline")
        browser.wait_for("document.querySelector(\"#live [data-step='undo']\") !== null")

        # a payload that is not JSON is refused in the page, before any request
        browser.goto(owner + "executions/approval-2")
        browser.fill("form[data-verb='event'] input[name='type']", "approved")
        browser.fill("form[data-verb='event'] textarea", "{nope")
        browser.submit("form[data-verb='event']")
        browser.wait_for("document.getElementById('answer').textContent.startsWith('The payload is not')")
        assert _live_status(browser) == "waiting"

        # send an event: the execution resumes and completes, its result shows
        browser.fill("form[data-verb='event'] textarea", json.dumps({"by": "ann", "ok": True}))
        browser.submit("form[data-verb='event']")
        browser.wait_for("document.getElementById('answer').textContent === 'Event delivered.'")
        browser.wait_for("document.querySelector('#live h1 .badge').textContent === 'completed'")
        assert '"by": "ann"' in browser.text("#result")

        # restart from a step: a new execution reuses what came before it
        browser.goto(owner + "executions/approval-3")
        options = browser.eval("[...document.querySelectorAll('[name=from_step] option')].map(o => o.text)")
        assert options == ["request", "await-approval", "apply"]
        browser.eval("document.querySelector('select[name=from_step]').value = 'apply'")
        browser.fill("form[data-verb='restart'] input[name='new_id']", "approval-3-again")
        browser.submit("form[data-verb='restart']")
        link = browser.wait_for("(document.getElementById('restarted') || {}).href")
        assert link.endswith("/executions/approval-3-again")
        browser.goto(link)
        browser.wait_for("document.querySelector('#live h1 .badge').textContent === 'completed'")
        assert "true" in browser.text("#result")

        # a refused action says why
        browser.eval("document.querySelector('select[name=from_step] option').value = 'no-such-step'")
        browser.submit("form[data-verb='restart']")
        browser.wait_for("document.getElementById('answer').className === 'err'")
        assert "no-such-step" in browser.text("#answer")
        _keep_shot(browser, tmp_path / "timeline-actions-desktop.png")


def test_outputs_are_collapsed_escaped_and_capped(owner: str, tmp_path: Path) -> None:
    with Browser() as browser:
        browser.goto(owner + "executions/approval-3")
        summary = browser.text("#live [data-step='request'] details.io summary")
        assert summary.startswith("output ") and "<b>not bold</b>" in summary
        assert browser.eval("document.querySelector('#live b') === null")  # shown, never interpreted
        assert browser.eval("[...document.querySelectorAll('details.io')].every(d => !d.open)")
        browser.eval("document.querySelector(\"#live [data-step='request'] details.io\").open = true")
        assert '"lines": [' in browser.text("#live [data-step='request'] details.io pre")

        browser.goto(owner + "executions/big-1")
        pre = browser.text("#live [data-step='huge'] details.io pre")
        assert 19_000 < len(pre) <= 20_000
        assert "showing 20.0 kB of 300.0 kB" in browser.text("#live [data-step='huge'] .cut")

        # narrow screen: nothing wider than the viewport but the tables' own scroll boxes
    with Browser(width=390, height=844, mobile=True) as phone:
        phone.goto(owner + "executions/approval-3")
        assert phone.eval("document.documentElement.scrollWidth") <= 390
        phone.eval("document.querySelector(\"#live [data-step='request'] details.io\").open = true")
        _keep_shot(phone, tmp_path / "timeline-mobile.png")
        phone.goto(owner)
        assert phone.eval("document.documentElement.scrollWidth") <= 390
        _keep_shot(phone, tmp_path / "index-mobile.png")


def test_read_only_serve_disables_the_actions_and_says_why(reader: str, tmp_path: Path) -> None:
    with Browser() as browser:
        browser.goto(reader + "executions/approval-1")
        assert browser.eval("document.querySelector('section.actions fieldset').disabled") is True
        assert "serve --app" in browser.text("#readonly")
        assert _live_status(browser) == "waiting"
        _keep_shot(browser, tmp_path / "timeline-readonly-desktop.png")


def test_another_site_cannot_send_commands_through_the_browser(owner: str) -> None:
    import urllib.error
    import urllib.request

    def post(origin: str | None) -> int:
        headers = {"content-type": "text/plain"}
        if origin is not None:
            headers["origin"] = origin
        target = owner + "api/executions/approval-1/cancel"
        request = urllib.request.Request(target, data=b'{"reason": "csrf"}', headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)

    assert post("https://evil.example") == 403
    assert post(owner.rstrip("/")) == 200  # the page's own origin
