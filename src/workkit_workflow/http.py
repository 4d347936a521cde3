"""Outbound HTTP from steps, with the step's idempotency key.

A step may run more than once (a retry, or an attempt lost when the object
died), so anything it sends to another system should carry a key that stays
the same across those runs. :func:`fetch` sends the current step's stable
``idempotency_key`` (see :class:`~workkit_workflow.StepContext`) as the
``Idempotency-Key`` header::

    from workkit_workflow import http

    async def charge(input, prev, ctx):
        response = await http.fetch(
            "https://payments.example/charges", method="POST", json={"amount": input["amount"]}
        )
        response.raise_for_status()
        return response.json()

Where it runs:

* On Cloudflare (Pyodide) the request goes through the runtime's async
  ``fetch``. Synchronous HTTP does not work in a Worker: there is no
  ``XMLHttpRequest``, so ``pyodide-http``'s patches are a no-op and
  ``urllib``/``requests`` time out (measured, see "Outbound HTTP from steps" in README.md).
* On CPython the request goes through a *transport*: pass ``transport=`` or
  install one with :func:`set_transport`; with ``httpx`` installed, it is used
  by default. Tests pass a fake transport.
"""

from __future__ import annotations

import importlib
import json as _json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .definitions._steps import current_step
from .errors import WorkflowError

IDEMPOTENCY_HEADER = "Idempotency-Key"


class HttpError(WorkflowError):
    """An HTTP response with an error status (from :meth:`HttpResponse.raise_for_status`).

    Retryable for 408, 425, 429 and 5xx; other 4xx fail the step at once.
    """

    code = "http_error"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    """Header names in lower case."""
    content: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.content)

    def raise_for_status(self) -> HttpResponse:
        if self.ok or 300 <= self.status < 400:
            return self
        error = HttpError(f"HTTP {self.status}: {self.text[:500]}", status=self.status)
        error.retryable = self.status in (408, 425, 429) or self.status >= 500
        raise error


Transport = Callable[[HttpRequest], Awaitable[HttpResponse]]
"""An async callable that performs one request."""

_transport: Transport | None = None


def set_transport(transport: Transport | None) -> None:
    """Install the default transport used where none is passed (``None``: the built-in)."""
    global _transport
    _transport = transport


async def _pyodide_transport(request: HttpRequest) -> HttpResponse:
    from .cloudflare import _workers as _cloudflare

    status, headers, content = await _cloudflare.js_fetch(
        request.method, request.url, request.headers, request.body
    )
    return HttpResponse(status, headers, content)


async def _httpx_transport(request: HttpRequest) -> HttpResponse:
    httpx: Any = importlib.import_module("httpx")
    async with httpx.AsyncClient() as client:
        response = await client.request(
            request.method, request.url, headers=dict(request.headers), content=request.body
        )
    return HttpResponse(
        response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content
    )


def _default_transport() -> Transport:
    if _transport is not None:
        return _transport
    from .cloudflare._workers import IN_PYODIDE

    if IN_PYODIDE:
        return _pyodide_transport
    try:
        importlib.import_module("httpx")
    except ImportError:
        raise RuntimeError(
            "workkit_workflow.http: no HTTP transport on CPython; install httpx or pass "
            "transport= (or call workkit_workflow.http.set_transport)"
        ) from None
    return _httpx_transport


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    body: bytes | str | None = None,
    idempotency_key: str | None = None,
    transport: Transport | None = None,
) -> HttpResponse:
    """Send one request; inside a step, with the step's ``Idempotency-Key``.

    ``idempotency_key`` overrides the step's key; outside a step and without
    one, no key is sent. ``json`` sets the body and ``content-type``.
    """
    if json is not None and body is not None:
        raise ValueError("give json= or body=, not both")
    sent = {str(k): str(v) for k, v in (headers or {}).items()}
    lower = {k.lower() for k in sent}
    payload: bytes | None = body.encode() if isinstance(body, str) else body
    if json is not None:
        payload = _json.dumps(json, separators=(",", ":")).encode()
        if "content-type" not in lower:
            sent["content-type"] = "application/json"
    if idempotency_key is None:
        step = current_step()
        idempotency_key = step.idempotency_key if step is not None else None
    if idempotency_key is not None and IDEMPOTENCY_HEADER.lower() not in lower:
        sent[IDEMPOTENCY_HEADER] = idempotency_key
    request = HttpRequest(method=method.upper(), url=url, headers=sent, body=payload)
    return await (transport or _default_transport())(request)


__all__ = [
    "IDEMPOTENCY_HEADER",
    "HttpError",
    "HttpRequest",
    "HttpResponse",
    "Transport",
    "fetch",
    "set_transport",
]
