"""The example Worker's HTTP API, independent of the runtime (no ``js``).

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

Request bodies are pydantic models in strict mode (no coercion: ``"12"`` is not
an amount, ``1`` is not ``true``), so a bad body is a 400 naming every field
at fault, as ``{"field": "items.0.quantity", "problem": "..."}``. On
Cloudflare, ``pywrangler`` vendors pydantic from the project's dependencies.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workkit_workflow import create_durable_workflow
from workkit_workflow.errors import WorkflowError

MAX_BODY_BYTES = 64_000
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,99}$"
_ID = re.compile(ID_PATTERN)
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


class _Body(BaseModel):
    # strict: JSON types as sent, no coercion; forbid: a misspelt field is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True)


class Item(_Body):
    sku: str = Field(pattern=ID_PATTERN)
    quantity: int = Field(default=1, ge=1, le=1000)


class Order(_Body):
    order_id: str = Field(pattern=ID_PATTERN)
    amount: Any
    """A JSON number (int or float), checked by :func:`_amount`: strict pydantic's
    ``float`` would accept NaN and infinities, which ``json.loads`` lets through."""
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    items: list[Item] = Field(min_length=1, max_length=100)


class Approval(_Body):
    approved: bool
    by: str = Field(min_length=1, max_length=200)
    event_id: str | None = Field(default=None, pattern=ID_PATTERN)


class Cancel(_Body):
    reason: str | None = Field(default=None, max_length=500)


def _validate(model: type[_Body], data: dict[str, Any]) -> Any:
    """``data`` as ``model``, or a 400 naming every field at fault."""
    where = _lone_surrogate_at(data)
    if where is not None:
        # pydantic-core cannot take such a string at all; say what is wrong with it.
        raise _fail(where, "holds a lone surrogate (such as \\ud800), which is not valid Unicode")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "problem": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ][:20]
        message = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise ApiError(400, "invalid_request", message, problems=problems) from None


def _lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string that is not valid Unicode (a JSON
    escape such as ``"\\ud800"`` makes one), or None."""
    if isinstance(value, str):
        return None if _is_unicode(value) else path or "(body)"
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        inner = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and not _is_unicode(key):
            return inner
        found = _lone_surrogate_at(item, inner)
        if found is not None:
            return found
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _amount(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail("amount", "must be a number")
    if not 0 < value <= 1_000_000:
        raise _fail("amount", "must be more than 0 and at most 1000000")
    return value


def parse_order(data: dict[str, Any]) -> dict[str, Any]:
    order: Order = _validate(Order, data)
    return {**order.model_dump(), "amount": _amount(order.amount)}


def parse_approval(data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    approval: Approval = _validate(Approval, data)
    return {"approved": approval.approved, "by": approval.by}, approval.event_id


def parse_cancel(data: dict[str, Any]) -> str | None:
    cancel: Cancel = _validate(Cancel, data)
    return cancel.reason


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
