"""workkit_workflow.http on CPython with a fake transport: the step's stable
Idempotency-Key on every attempt, overrides, JSON bodies, error statuses."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from workkit_workflow import RetryPolicy, Workflow, http
from workkit_workflow.http import HttpError, HttpRequest, HttpResponse
from workkit_workflow.testing import WorkflowTestEnv


class Recorder:
    def __init__(self, status: int = 200) -> None:
        self.requests: list[HttpRequest] = []
        self.status = status

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        return HttpResponse(self.status, {"content-type": "application/json"}, b'{"ok":true}')


async def test_outside_a_step_no_key_unless_given() -> None:
    recorder = Recorder()
    response = await http.fetch("https://x.example/a", transport=recorder)
    assert response.ok and response.json() == {"ok": True}
    assert http.IDEMPOTENCY_HEADER not in recorder.requests[0].headers
    await http.fetch("https://x.example/a", idempotency_key="k-1", json=[1], transport=recorder)
    sent = recorder.requests[1]
    assert sent.headers == {"content-type": "application/json", "Idempotency-Key": "k-1"}
    assert sent.body == b"[1]" and sent.method == "GET"


async def test_every_attempt_of_a_step_sends_the_same_key() -> None:
    recorder = Recorder()
    calls: Counter[str] = Counter()

    async def charge(input: Any, prev: Any, ctx: Any) -> Any:
        calls["charge"] += 1
        response = await http.fetch(
            "https://pay.example/charge", method="post", json=input, transport=recorder
        )
        if calls["charge"] < 3:
            raise ConnectionError("lost the answer")
        return response.json()

    flow = Workflow("http-key-flow").step(
        "charge", charge, retry=RetryPolicy(max_attempts=3, initial_delay=1.0)
    )
    env = WorkflowTestEnv()
    try:
        result = await env.result(await env.run(flow, {"amount": 3}))
    finally:
        await env.close()
    assert result.ok
    keys = {r.headers["Idempotency-Key"] for r in recorder.requests}
    assert len(recorder.requests) == 3 and len(keys) == 1 and next(iter(keys))
    assert all(r.method == "POST" and r.body == b'{"amount":3}' for r in recorder.requests)


async def test_caller_headers_win_and_both_bodies_are_refused() -> None:
    recorder = Recorder()
    await http.fetch(
        "https://x.example",
        headers={"Content-Type": "application/merge-patch+json", "idempotency-key": "mine"},
        json={},
        idempotency_key="other",
        transport=recorder,
    )
    assert recorder.requests[0].headers == {
        "Content-Type": "application/merge-patch+json",
        "idempotency-key": "mine",
    }
    with pytest.raises(ValueError, match="not both"):
        await http.fetch("https://x.example", json={}, body="x", transport=recorder)


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (409, False), (429, True), (503, True)])
def test_raise_for_status(status: int, retryable: bool) -> None:
    with pytest.raises(HttpError) as info:
        HttpResponse(status, {}, b"nope").raise_for_status()
    assert info.value.retryable is retryable and info.value.details["status"] == status
    assert HttpResponse(204, {}).raise_for_status().ok


async def test_default_transport_on_cpython(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(201)
    http.set_transport(recorder)
    try:
        assert (await http.fetch("https://x.example")).status == 201
    finally:
        http.set_transport(None)
    import importlib

    real = importlib.import_module

    def no_httpx(name: str, *args: Any) -> Any:
        if name == "httpx":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_httpx)
    with pytest.raises(RuntimeError, match="install httpx or pass"):
        await http.fetch("https://x.example")
