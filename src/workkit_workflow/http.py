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

:func:`fetch_sync` is the blocking form, for step code (or libraries) that
cannot await; :func:`idempotency_headers` gives the key as a header for
``requests`` or ``urllib`` calls made directly.

Where it runs:

* On Cloudflare (Pyodide) :func:`fetch` goes through the runtime's async
  ``fetch``. :func:`fetch_sync` waits for the same ``fetch`` through Pyodide's
  stack switching (``pyodide.ffi.run_sync``, WebAssembly JSPI); where the
  runtime does not offer it, it raises :class:`SyncHttpUnavailableError`
  (check with :func:`sync_http_available`). There is no ``XMLHttpRequest`` in
  a Worker, so ``pyodide-http`` patches nothing; measured, see "Outbound HTTP
  from steps" in README.md.
* On CPython :func:`fetch` goes through a *transport*: pass ``transport=`` or
  install one with :func:`set_transport`; with ``httpx`` installed, it is used
  by default. :func:`fetch_sync` uses the standard library's ``urllib``.
"""

from __future__ import annotations

import importlib
import json as _json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

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


class SyncHttpUnavailableError(WorkflowError):
    """:func:`fetch_sync` was called where a blocking call cannot wait for the runtime's
    ``fetch`` (a Pyodide without stack switching, or a synchronous JS callback)."""

    code = "sync_http_unavailable"
    retryable = False


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


def _build_request(
    url: str,
    method: str,
    headers: Mapping[str, str] | None,
    json: Any,
    body: bytes | str | None,
    idempotency_key: str | None,
) -> HttpRequest:
    if json is not None and body is not None:
        raise ValueError("give json= or body=, not both")
    sent = {str(k): str(v) for k, v in (headers or {}).items()}
    lower = {k.lower() for k in sent}
    payload: bytes | None = body.encode() if isinstance(body, str) else body
    if json is not None:
        payload = _json.dumps(json, separators=(",", ":")).encode()
        if "content-type" not in lower:
            sent["content-type"] = "application/json"
    if IDEMPOTENCY_HEADER.lower() not in lower:
        sent.update(idempotency_headers(idempotency_key))
    return HttpRequest(method=method.upper(), url=url, headers=sent, body=payload)


def idempotency_headers(idempotency_key: str | None = None) -> dict[str, str]:
    """``{"Idempotency-Key": <the current step's key>}`` (or ``idempotency_key``), for
    calls made with ``requests`` or ``urllib`` directly; ``{}`` outside a step."""
    if idempotency_key is None:
        step = current_step()
        idempotency_key = step.idempotency_key if step is not None else None
    return {} if idempotency_key is None else {IDEMPOTENCY_HEADER: idempotency_key}


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
    request = _build_request(url, method, headers, json, body, idempotency_key)
    return await (transport or _default_transport())(request)


def _run_sync() -> Callable[[Awaitable[Any]], Any] | None:
    """Pyodide's ``run_sync`` when this call stack can use it, else ``None``."""
    try:
        ffi: Any = importlib.import_module("pyodide.ffi")
    except ImportError:
        return None
    can_run_sync = getattr(ffi, "can_run_sync", None)
    if can_run_sync is None or not can_run_sync():
        return None
    return cast(Callable[[Awaitable[Any]], Any], ffi.run_sync)


def sync_http_available() -> bool:
    """Whether :func:`fetch_sync` can work here (always on CPython; on Pyodide, when
    the runtime enables stack switching for the current call)."""
    from .cloudflare._workers import IN_PYODIDE

    return not IN_PYODIDE or _run_sync() is not None


def _urllib_send(request: HttpRequest, timeout: float | None) -> HttpResponse:
    # Imported here: a Worker that never calls fetch_sync does not pay for urllib at start-up.
    import urllib.error
    import urllib.request

    sent = urllib.request.Request(
        request.url, data=request.body, headers=dict(request.headers), method=request.method
    )
    try:
        with urllib.request.urlopen(sent, timeout=timeout) as reply:
            status, headers, content = reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as exc:  # an error status is a response, as in fetch()
        status, headers, content = exc.code, exc.headers, exc.read()
    return HttpResponse(status, {k.lower(): v for k, v in headers.items()}, content)


def fetch_sync(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    body: bytes | str | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> HttpResponse:
    """:func:`fetch`, blocking: for step code that cannot await.

    On Pyodide it waits for the runtime's ``fetch`` with ``pyodide.ffi.run_sync``,
    which suspends only the calling stack: the object keeps serving other requests
    meanwhile, and a step's ``timeout=`` still ends the attempt (both measured in
    workerd 1.20261117.1). Where that is not possible it raises
    :class:`SyncHttpUnavailableError`. ``timeout`` is not applied there (use the
    step's). On CPython it uses ``urllib`` with ``timeout`` seconds.
    """
    from .cloudflare._workers import IN_PYODIDE

    request = _build_request(url, method, headers, json, body, idempotency_key)
    if not IN_PYODIDE:
        return _urllib_send(request, timeout)
    run_sync = _run_sync()
    if run_sync is None:
        raise SyncHttpUnavailableError(
            "fetch_sync needs stack switching (pyodide.ffi.can_run_sync() is false here); "
            "use `await http.fetch(...)`",
            url=url,
        )
    return cast(HttpResponse, run_sync(_pyodide_transport(request)))


__all__ = [
    "IDEMPOTENCY_HEADER",
    "HttpError",
    "HttpRequest",
    "HttpResponse",
    "SyncHttpUnavailableError",
    "Transport",
    "fetch",
    "fetch_sync",
    "idempotency_headers",
    "set_transport",
    "sync_http_available",
]
