"""The example Worker's HTTP API, independent of the runtime (no ``js``, no pydantic).

=====================================  ======  ==========================================
route                                  method  does
=====================================  ======  ==========================================
/                                      GET     this table, as JSON
/orders                                POST    start the order flow (idempotent per order_id)
/executions/{id}                       GET     status
/executions/{id}/journal               GET     every journaled step, sleep and wait
/executions/{id}/result                GET     the outcome, once settled
/executions/{id}/cancel                POST    cancel (compensation runs)
/executions/{id}/approval              POST    the manager's decision: resumes the wait
/ui, /ui/executions/{id}               GET     the timeline page (HTML; needs the HISTORY_DB binding)
/ui/api/executions/{id}/{action}       POST    the page's cancel, event and restart
=====================================  ======  ==========================================

Every answer is JSON; errors are ``{"error": {"code", "message", ...}}`` with a
4xx status for bad input. With the secret ``API_TOKEN`` set, every route but
``/`` needs ``Authorization: Bearer <API_TOKEN>``.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from workkit_workflow import create_durable_workflow
from workkit_workflow.errors import WorkflowError

MAX_BODY_BYTES = 64_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,99}$")
_STATUS_BY_CODE = {
    "invalid_request": 400,
    "execution_not_found": 404,
    "unknown_workflow": 404,
    "execution_conflict": 409,
    "execution_not_finished": 409,
    "serialization_error": 413,
    "transport_error": 502,
}
ROUTES = {
    "POST /orders": "start the order flow",
    "GET /executions/{id}": "status",
    "GET /executions/{id}/journal": "journal",
    "GET /executions/{id}/result": "outcome once settled",
    "POST /executions/{id}/cancel": "cancel",
    "POST /executions/{id}/approval": "approve or reject a waiting order",
    "GET /ui": "executions, as an HTML timeline (needs HISTORY_DB)",
}

Answer = tuple[int, dict[str, Any]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": code, "message": message, **details}}


def _fail(field: str, problem: str) -> ApiError:
    return ApiError(
        400,
        "invalid_request",
        f"{field}: {problem}",
        problems=[{"field": field, "problem": problem}],
    )


# -- validation ---------------------------------------------------------------


def _json_body(request: Any) -> dict[str, Any]:
    body: bytes = request.body or b""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"request body is over {MAX_BODY_BYTES} bytes")
    content_type = str(request.headers.get("content-type", "")).split(";")[0].strip().lower()
    if body and content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        data = json.loads(body or b"{}")
    except RecursionError:
        # 64 KB of "[[[..." nests deeper than the decoder's recursion limit.
        raise ApiError(400, "invalid_json", "request body nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _fail("(body)", "must be a JSON object")
    return data


def _only(data: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise _fail(extra[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _text(data: Mapping[str, Any], field: str, *, required: bool = True, pattern: Any = None) -> Any:
    value = data.get(field)
    if value is None:
        if required:
            raise _fail(field, "is required")
        return None
    if not isinstance(value, str) or not value or len(value) > 200:
        raise _fail(field, "must be a non-empty string of at most 200 characters")
    if not _is_unicode(value):
        raise _fail(field, "holds a lone surrogate (such as \\ud800), which is not valid Unicode")
    if pattern is not None and not pattern.match(value):
        raise _fail(field, "may hold letters, digits and . _ : - (at most 100)")
    return value


def _is_unicode(text: str) -> bool:
    # A JSON escape such as "\\ud800" gives a lone surrogate, which is no text.
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_order(data: Mapping[str, Any]) -> dict[str, Any]:
    _only(data, {"order_id", "amount", "currency", "items"})
    order_id = _text(data, "order_id", pattern=_ID)
    amount = data.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount):
        raise _fail("amount", "must be a number")
    if not 0 < amount <= 1_000_000:
        raise _fail("amount", "must be more than 0 and at most 1000000")
    currency = data.get("currency", "EUR")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise _fail("currency", "must be a three-letter code such as EUR")
    items = data.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= 100:
        raise _fail("items", "must be a list of 1 to 100 items")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"sku", "quantity"}:
            raise _fail(f"items.{i}", "must be an object with sku and quantity")
        _text(item, "sku", pattern=_ID)
        quantity = item.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 1000:
            raise _fail(f"items.{i}.quantity", "must be an integer from 1 to 1000")
    return {"order_id": order_id, "amount": amount, "currency": currency, "items": items}


def parse_approval(data: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    _only(data, {"approved", "by", "event_id"})
    approved = data.get("approved")
    if not isinstance(approved, bool):
        raise _fail("approved", "must be true or false")
    by = _text(data, "by")
    event_id = _text(data, "event_id", required=False, pattern=_ID)
    return {"approved": approved, "by": by}, event_id


def parse_cancel(data: Mapping[str, Any]) -> str | None:
    _only(data, {"reason"})
    reason = data.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500 or not _is_unicode(reason)):
        raise _fail("reason", "must be a valid Unicode string of at most 500 characters")
    return reason


# -- auth -----------------------------------------------------------------------


def check_token(request: Any, env: Any) -> None:
    expected = getattr(env, "API_TOKEN", None)
    if not isinstance(expected, str) or not expected:
        return  # no secret configured: the API is open (local development)
    given = str(request.headers.get("authorization", ""))
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <API_TOKEN>")


# -- routing --------------------------------------------------------------------


async def handle(request: Any, env: Any) -> Answer:
    """Serve one request: ``request`` has method, path, query, headers (lower-case
    names) and body (bytes); ``env`` has ``WORKFLOW_DO`` and maybe ``API_TOKEN``."""
    try:
        return await _route(request, env)
    except ApiError as exc:
        return exc.status, exc.body
    except WorkflowError as exc:
        return _workflow_error(exc)


def _workflow_error(exc: WorkflowError) -> Answer:
    status = exc.details.get("status")
    if not isinstance(status, int) or not 400 <= status < 600:
        status = _STATUS_BY_CODE.get(exc.code, 400)
    return status, {"error": {k: v for k, v in exc.to_dict().items() if k != "status"}}


async def _route(request: Any, env: Any) -> Answer:
    method = str(request.method).upper()
    parts = [p for p in str(request.path).split("/") if p]
    if not parts:
        return 200, {"service": "workkit-workflow example", "routes": ROUTES}
    check_token(request, env)
    workflows = create_durable_workflow(env.WORKFLOW_DO)
    if parts == ["orders"]:
        _allow(method, "POST")
        order = parse_order(_json_body(request))
        handle = await workflows.start("order", order, execution_id=f"order-{order['order_id']}")
        view = await handle.describe()
        return (201 if handle.created else 200), {"execution": view, "created": handle.created}
    if parts[0] == "executions" and 2 <= len(parts) <= 3:
        execution_id = parts[1]
        if not _ID.match(execution_id):
            raise _fail("execution id", "may hold letters, digits and . _ : - (at most 100)")
        action = parts[2] if len(parts) == 3 else None
        execution = workflows.execution(execution_id)
        if action is None:
            _allow(method, "GET")
            return 200, {"execution": await execution.describe()}
        if action == "journal":
            _allow(method, "GET")
            return 200, {"entries": await execution.journal()}
        if action == "result":
            _allow(method, "GET")
            result = await execution.result(timeout=0)
            if result.ok:
                return 200, {"ok": True, "status": result.status, "value": result.value}
            assert result.error is not None
            return 200, {"ok": False, "status": result.status, "error": result.error.to_dict()}
        if action == "cancel":
            _allow(method, "POST")
            reason = parse_cancel(_json_body(request))
            return 200, {"cancelled": await execution.cancel(reason)}
        if action == "approval":
            _allow(method, "POST")
            payload, event_id = parse_approval(_json_body(request))
            accepted = await execution.resume("approval", payload, event_id=event_id)
            return 202, {"accepted": accepted}
    raise ApiError(404, "not_found", f"no route {method} {request.path}", routes=sorted(ROUTES))


def is_page(request: Any) -> bool:
    path = str(request.path)
    return path == "/ui" or path.startswith("/ui/")


async def page(request: Any, env: Any) -> tuple[int, str | dict[str, Any]]:
    """The timeline pages under ``/ui``: HTML (a str), or a JSON answer (a dict).

    ``GET /ui...`` pages; with ``API_TOKEN`` set, a browser first gets the page
    without its data, and the page's script fetches the data with the token the
    user typed (kept in the tab's sessionStorage, never in the HTML).
    ``POST /ui/api/executions/{id}/{cancel|event|restart}`` are the page's
    actions (bodies as ``workkit-workflow serve --app`` takes them)."""
    try:
        if str(request.path).startswith("/ui/api/"):
            return await _ui_action(request, env)
        _allow(str(request.method).upper(), "GET")
        query = dict(request.query)
        history = getattr(env, "HISTORY_DB", None)
        if history is None:
            raise ApiError(
                404, "history_not_configured", "bind a D1 database as HISTORY_DB to see the timeline"
            )
        from workkit_workflow.history import HistoryQuery
        from workkit_workflow.history.page import Actions, client_outcomes, history_page, render_locked

        needs_token = bool(getattr(env, "API_TOKEN", None))
        if needs_token and not request.headers.get("authorization") and "fragment" not in query:
            return 200, render_locked(base="/ui")
        check_token(request, env)
        _check_cursor(query.get("cursor"))
        workflows = create_durable_workflow(env.WORKFLOW_DO)

        async def outcomes(execution_id: str) -> Any:
            return await client_outcomes(workflows, execution_id)

        actions = Actions("/ui/api", token=needs_token)
        return await history_page(
            HistoryQuery(history), str(request.path), query, base="/ui", outcomes=outcomes, actions=actions
        )
    except ApiError as exc:
        return exc.status, exc.body


async def _ui_action(request: Any, env: Any) -> tuple[int, dict[str, Any]]:
    from workkit_workflow.history.page import parse_action, perform_action

    check_token(request, env)
    _allow(str(request.method).upper(), "POST")
    parts = [p for p in str(request.path).split("/") if p]  # ui, api, executions, {id}, {verb}
    if len(parts) != 5 or parts[2] != "executions" or not _ID.match(parts[3]):
        raise ApiError(404, "not_found", f"no route POST {request.path}")
    try:
        action = parse_action(parts[4], _json_body(request))
        return 200, await perform_action(create_durable_workflow(env.WORKFLOW_DO), parts[3], action)
    except WorkflowError as exc:
        return _workflow_error(exc)


MAX_CURSOR = 512
_CURSOR = re.compile(r"[A-Za-z0-9_\-]*")


def _check_cursor(cursor: str | None) -> None:
    """Cursors this API hands out are short URL-safe base64; anything else is
    refused before it is decoded (a 3,000-deep "[[[..." must not reach the decoder)."""
    if cursor is not None and (len(cursor) > MAX_CURSOR or not _CURSOR.fullmatch(cursor)):
        raise _fail("cursor", "is not one this API returned")


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise ApiError(405, "method_not_allowed", f"use {allowed}, not {method}")
