"""The example Worker's ``/ui``: the page's data and actions sit behind ``API_TOKEN``,
and the token never appears in the HTML (the page keeps what the user typed in
sessionStorage). Runs worker/app.py against the real execution object locally."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import pytest_asyncio

from workkit_workflow import create_durable_workflow
from workkit_workflow.engine._ports import WireRequest
from workkit_workflow.history import LocalD1
from workkit_workflow.local import LocalNamespace, VirtualClock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "worker"))

import app
import order_flow  # noqa: F401  (registers the "order" workflow)

TOKEN = "s3cret-token-for-ui"
AUTH = {"authorization": f"Bearer {TOKEN}"}
BIG_ORDER = {"order_id": "ui", "amount": 2000, "items": [{"sku": "book-1", "quantity": 1}]}


def request(
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> WireRequest:
    raw = b"" if body is None else json.dumps(body).encode()
    sent = {"content-type": "application/json"} if raw else {}
    return WireRequest(
        method=method, path=path, body=raw, headers={**sent, **(headers or {})}, query=query or {}
    )


@pytest_asyncio.fixture
async def env() -> AsyncIterator[SimpleNamespace]:
    d1 = LocalD1()
    async with LocalNamespace(clock=VirtualClock(), env={"HISTORY_DB": d1}) as ns:
        env = SimpleNamespace(WORKFLOW_DO=ns, HISTORY_DB=d1, API_TOKEN=TOKEN)
        status, _ = await app.handle(request("POST", "/orders", BIG_ORDER, AUTH), env)
        assert status == 201
        await ns.idle()
        yield env


async def test_without_the_token_the_page_comes_without_its_data(env: Any) -> None:
    status, html = await app.page(request("GET", "/ui/executions/order-ui"), env)
    assert status == 200 and isinstance(html, str)
    assert "id='tokenform'" in html and "order-ui" not in html and "reserve-inventory" not in html
    assert "data-load='1'" in html  # the script fetches the data with the token
    # the data itself (the fragment the script fetches) needs the token
    status, body = await app.page(request("GET", "/ui/executions/order-ui", query={"fragment": "1"}), env)
    assert status == 401 and isinstance(body, dict)
    wrong = {"authorization": "Bearer nope"}
    status, body = await app.page(request("GET", "/ui/executions/order-ui", headers=wrong), env)
    assert status == 401


async def test_with_the_token_the_page_shows_outputs_and_offers_actions(env: Any) -> None:
    status, html = await app.page(request("GET", "/ui/executions/order-ui", headers=AUTH), env)
    assert status == 200 and isinstance(html, str)
    assert TOKEN not in html
    assert "data-api='/ui/api'" in html and "id='tokenform'" in html
    assert "<section class='actions'><fieldset>" in html  # enabled
    assert "data-step='reserve-inventory'" in html and "details class='io'" in html
    status, fragment = await app.page(
        request("GET", "/ui/executions/order-ui", headers=AUTH, query={"fragment": "1"}), env
    )
    assert status == 200 and isinstance(fragment, str)
    assert fragment.startswith("<div id='state' data-settled='0'>") and "<html" not in fragment


async def test_the_actions_need_the_token_and_act(env: Any) -> None:
    path = "/ui/api/executions/order-ui"
    event = {"type": "approval", "payload": {"approved": True, "by": "ann"}}
    status, body = await app.page(request("POST", f"{path}/event", event), env)
    assert status == 401 and body["error"]["code"] == "unauthorized"

    status, body = await app.page(request("POST", f"{path}/event", event, AUTH), env)
    assert (status, body) == (200, {"accepted": True})
    client = create_durable_workflow(env.WORKFLOW_DO)
    result = await client.execution("order-ui").result(timeout=60)
    assert result.ok, result

    restart = {"from_step": "ship", "execution_id": "order-ui-again"}
    status, body = await app.page(request("POST", f"{path}/restart", restart, AUTH), env)
    assert (status, body) == (200, {"execution_id": "order-ui-again"})
    assert (await client.execution("order-ui-again").result(timeout=60)).ok

    status, body = await app.page(request("POST", f"{path}/cancel", {"reason": "late"}, AUTH), env)
    assert (status, body) == (200, {"cancelled": False})  # it had completed


async def test_bad_actions_get_clear_4xx_answers(env: Any) -> None:
    path = "/ui/api/executions/order-ui"
    cases = [
        ("POST", f"{path}/explode", {}, 404),
        ("POST", f"{path}/event", {"payload": 1}, 400),  # no type
        ("POST", f"{path}/event", {"type": "x", "extra": 1}, 400),
        ("POST", f"{path}/restart", {"from_step": "nope"}, 400),
        ("POST", "/ui/api/executions/bad id/cancel", {}, 404),
        ("GET", f"{path}/cancel", None, 405),
    ]
    for method, target, body, expected in cases:
        status, answer = await app.page(request(method, target, body, AUTH), env)
        assert status == expected, (target, answer)
        assert isinstance(answer, dict) and answer["error"]["message"], answer


# -- in a browser: the token typed once, kept in the tab, sent with every request -------------


class _Site:
    """worker/app.py behind a local HTTP server, its runtime on a loop of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="worker-site", daemon=True)
        self.thread.start()
        self.d1 = LocalD1()
        self.ns = LocalNamespace(None, env={"HISTORY_DB": self.d1})
        self.env = SimpleNamespace(WORKFLOW_DO=self.ns, HISTORY_DB=self.d1, API_TOKEN=TOKEN)
        self.run(self.ns.start())
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, name="worker-http", daemon=True).start()
        self.address = f"http://127.0.0.1:{self.server.server_port}"

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.run(self.ns.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
        self.d1.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                wire = WireRequest(
                    method=self.command,
                    path=url.path,
                    query=dict(parse_qsl(url.query)),
                    body=self.rfile.read(length) if length else b"",
                    headers={k.lower(): v for k, v in self.headers.items()},
                )
                if app.is_page(wire):
                    status, answer = site.run(app.page(wire, site.env))
                else:
                    status, answer = site.run(app.handle(wire, site.env))
                html = isinstance(answer, str)
                payload = (answer if html else json.dumps(answer)).encode()
                self.send_response(status)
                self.send_header("content-type", "text/html; charset=utf-8" if html else "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


@pytest.fixture
def site() -> Iterator[_Site]:
    served = _Site()
    try:
        status, _ = served.run(app.handle(request("POST", "/orders", BIG_ORDER, AUTH), served.env))
        assert status == 201
        served.run(served.ns.idle(timeout=10))
        yield served
    finally:
        served.close()


@pytest.mark.browser
def test_the_page_asks_for_the_token_once_and_acts_with_it(site: _Site, tmp_path: Path) -> None:
    from _cdp import Browser

    with Browser(width=390, height=844, mobile=True) as browser:
        browser.goto(site.address + "/ui/executions/order-ui")
        assert browser.eval("!!document.getElementById('tokenform')")
        assert browser.eval('document.querySelector("[data-step]")') is None  # no data without it
        _keep_shot(browser, tmp_path / "worker-ui-locked-mobile.png")

        browser.fill("#tokenform input[name='token']", TOKEN)
        browser.submit("#tokenform")
        browser.wait_for("!!document.querySelector(\"#live [data-step='reserve-inventory']\")")
        assert browser.eval("sessionStorage.getItem('workkit-workflow-token')") == TOKEN
        assert not browser.eval(f"document.documentElement.outerHTML.includes({json.dumps(TOKEN)})")
        assert browser.text("#live h1 .badge") == "waiting"

        browser.fill("form[data-verb='event'] input[name='type']", "approval")
        browser.fill("form[data-verb='event'] textarea", json.dumps({"approved": True, "by": "ann"}))
        browser.submit("form[data-verb='event']")
        browser.wait_for("document.getElementById('answer').textContent === 'Event delivered.'")
        browser.wait_for("document.querySelector('#live h1 .badge').textContent === 'completed'")
        assert '"payment"' in browser.text("#result") and '"reservation"' in browser.text("#result")

        # another page of the same tab: the kept token loads its data directly
        browser.goto(site.address + "/ui")
        browser.wait_for("!!document.querySelector(\"#live a[href='/ui/executions/order-ui']\")")
        _keep_shot(browser, tmp_path / "worker-ui-index-mobile.png")


def _keep_shot(browser: Any, shot: Path) -> None:
    png = browser.screenshot(shot)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("WORKKIT_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)
