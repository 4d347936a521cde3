"""The example Worker's HTTP API (worker/app.py) on CPython, against the real
WorkflowExecutionDO in a LocalNamespace: the full order flow with approval, and
4xx JSON for every kind of bad input. ``test_workerd_worker.py`` serves the same
module from a real Python Worker in workerd."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio

from workkit_workflow.engine._ports import WireRequest
from workkit_workflow.local import LocalNamespace, VirtualClock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "worker"))

import app
import order_flow  # noqa: F401

ORDER = {"order_id": "o-1", "amount": 25.5, "items": [{"sku": "book-1", "quantity": 2}]}


@pytest_asyncio.fixture
async def env() -> AsyncIterator[SimpleNamespace]:
    async with LocalNamespace(clock=VirtualClock()) as ns:
        yield SimpleNamespace(WORKFLOW_DO=ns)


def request(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> WireRequest:
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    sent = {"content-type": "application/json"} if raw else {}
    return WireRequest(method=method, path=path, body=raw, headers={**sent, **(headers or {})})


async def call(env: Any, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    status, payload = await app.handle(request(method, path, body, **kw), env)
    return status, json.loads(json.dumps(payload))  # what crosses the wire


async def settled(env: Any, execution_id: str) -> dict[str, Any]:
    from workkit_workflow import create_durable_workflow

    await create_durable_workflow(env.WORKFLOW_DO).execution(execution_id).result(timeout=60)
    return (await call(env, "GET", f"/executions/{execution_id}"))[1]["execution"]


async def test_small_order_completes(env: Any) -> None:
    status, body = await call(env, "POST", "/orders", ORDER)
    assert status == 201 and body["created"] and body["execution"]["execution_id"] == "order-o-1"
    assert (await settled(env, "order-o-1"))["status"] == "completed"
    status, body = await call(env, "POST", "/orders", ORDER)
    assert status == 200 and not body["created"]  # idempotent per order_id
    status, result = await call(env, "GET", "/executions/order-o-1/result")
    assert result["ok"] and result["value"]["tracking"] == "trk-o-1"
    status, journal = await call(env, "GET", "/executions/order-o-1/journal")
    assert [e["name"] for e in journal["entries"]] == ["reserve-inventory", "charge-card", "ship"]


async def test_large_order_waits_for_approval_then_ships(env: Any) -> None:
    await call(env, "POST", "/orders", {**ORDER, "order_id": "big", "amount": 5000})
    await env.WORKFLOW_DO.idle()
    status, body = await call(env, "GET", "/executions/order-big")
    assert body["execution"]["status"] == "waiting" and body["execution"]["waiting_for"] == ["approval"]
    status, body = await call(env, "GET", "/executions/order-big/result")
    assert status == 409 and body["error"]["code"] == "execution_not_finished"
    approval = {"approved": True, "by": "ana", "event_id": "appr-1"}
    status, body = await call(env, "POST", "/executions/order-big/approval", approval)
    assert status == 202 and body == {"accepted": True}
    assert (await settled(env, "order-big"))["status"] == "completed"
    status, result = await call(env, "GET", "/executions/order-big/result")
    assert result["value"]["approved_by"] == "ana"


async def test_rejected_order_is_compensated(env: Any) -> None:
    await call(env, "POST", "/orders", {**ORDER, "order_id": "no", "amount": 2000})
    await env.WORKFLOW_DO.idle()
    await call(env, "POST", "/executions/order-no/approval", {"approved": False, "by": "bob"})
    view = await settled(env, "order-no")
    assert view["status"] == "failed" and view["compensation"]["status"] == "completed"
    _, journal = await call(env, "GET", "/executions/order-no/journal")
    names = [e["name"] for e in journal["entries"] if e["phase"] == "compensation"]
    assert names == ["refund", "release-inventory"]


async def test_cancel_a_waiting_order(env: Any) -> None:
    await call(env, "POST", "/orders", {**ORDER, "order_id": "c", "amount": 3000})
    await env.WORKFLOW_DO.idle()
    status, body = await call(env, "POST", "/executions/order-c/cancel", {"reason": "customer"})
    assert status == 200 and body == {"cancelled": True}
    assert (await settled(env, "order-c"))["status"] == "cancelled"


BAD_ORDERS = [
    ({}, "order_id"),
    ({**ORDER, "order_id": ""}, "order_id"),
    ({**ORDER, "order_id": "has space"}, "order_id"),
    ({**ORDER, "amount": "12"}, "amount"),
    ({**ORDER, "amount": True}, "amount"),
    ({**ORDER, "amount": -1}, "amount"),
    ({**ORDER, "amount": 1e9}, "amount"),
    ({**ORDER, "currency": "euro"}, "currency"),
    ({**ORDER, "items": []}, "items"),
    ({**ORDER, "items": [{"sku": "a", "quantity": 0}]}, "items.0.quantity"),
    ({**ORDER, "items": [{"sku": "a", "color": "red"}]}, "items.0.color"),
    ({**ORDER, "extra": 1}, "extra"),
]


@pytest.mark.parametrize(("body", "field"), BAD_ORDERS)
async def test_bad_orders_get_400_with_the_field(env: Any, body: Any, field: str) -> None:
    status, payload = await call(env, "POST", "/orders", body)
    assert status == 400, payload
    assert payload["error"]["code"] == "invalid_request"
    assert payload["error"]["problems"][0]["field"] == field


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("POST", "/orders", b"{not json", None, 400, "invalid_json"),
        ("POST", "/orders", b"[1, 2]", None, 400, "invalid_request"),
        (
            "POST",
            "/orders",
            b'{"order_id": "x"}',
            {"content-type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        ("POST", "/orders", b"x" * 70_000, None, 413, "too_large"),
        ("GET", "/orders", None, None, 405, "method_not_allowed"),
        ("GET", "/nowhere", None, None, 404, "not_found"),
        ("GET", "/executions/bad%20id", None, None, 400, "invalid_request"),
        ("GET", "/executions/nobody", None, None, 404, "execution_not_found"),
        ("POST", "/executions/nobody/approval", {"approved": "yes", "by": "x"}, None, 400, "invalid_request"),
        (
            "POST",
            "/executions/nobody/approval",
            {"approved": True, "by": "x"},
            None,
            404,
            "execution_not_found",
        ),
        ("POST", "/executions/nobody/cancel", {"reason": 5}, None, 400, "invalid_request"),
    ],
)
async def test_bad_requests_get_4xx_json(
    env: Any, method: str, path: str, body: Any, headers: Any, status: int, code: str
) -> None:
    got, payload = await call(env, method, path, body, headers=headers)
    assert (got, payload["error"]["code"]) == (status, code), payload
    assert isinstance(payload["error"]["message"], str)


async def test_bearer_token_guards_everything_but_the_index(env: Any) -> None:
    env.API_TOKEN = "s3cret"
    assert (await call(env, "GET", "/"))[0] == 200
    status, body = await call(env, "POST", "/orders", ORDER)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, _ = await call(env, "POST", "/orders", ORDER, headers={"authorization": "Bearer nope"})
    assert status == 401
    status, _ = await call(env, "POST", "/orders", ORDER, headers={"authorization": "Bearer s3cret"})
    assert status == 201
    # (let it finish: closing the namespace mid-step leaves an un-awaited step coroutine)
    assert (await settled_with_token(env, "order-o-1"))["status"] == "completed"


async def settled_with_token(env: Any, execution_id: str) -> dict[str, Any]:
    from workkit_workflow import create_durable_workflow

    await create_durable_workflow(env.WORKFLOW_DO).execution(execution_id).result(timeout=60)
    auth = {"authorization": "Bearer s3cret"}
    return (await call(env, "GET", f"/executions/{execution_id}", headers=auth))[1]["execution"]


async def test_the_timeline_page_is_served_under_ui() -> None:
    from workkit_workflow.history import LocalD1

    d1 = LocalD1()
    async with LocalNamespace(clock=VirtualClock(), env={"HISTORY_DB": d1}) as ns:
        env = SimpleNamespace(WORKFLOW_DO=ns, HISTORY_DB=d1)
        await call(env, "POST", "/orders", {**ORDER, "order_id": "ui", "amount": 2000})
        await ns.idle()
        await call(env, "POST", "/executions/order-ui/approval", {"approved": False, "by": "bob"})
        assert (await settled(env, "order-ui"))["status"] == "failed"
        await ns.idle()
        status, html = await app.page(request("GET", "/ui/executions/order-ui"), env)
        assert status == 200 and isinstance(html, str)
        assert "order-ui" in html and "Compensation" in html and "FAILED" in html.upper()
        status, index = await app.page(request("GET", "/ui"), env)
        assert status == 200 and isinstance(index, str) and "order-ui" in index
        status, missing = await app.page(request("GET", "/ui/executions/nope"), env)
        assert status == 404 and "nope" in str(missing)


async def test_the_timeline_page_needs_the_history_binding(env: Any) -> None:
    status, body = await app.page(request("GET", "/ui"), env)
    assert status == 404 and isinstance(body, dict)
    assert body["error"]["code"] == "history_not_configured"
    status, body = await app.page(request("POST", "/ui"), env)
    assert status == 405
