"""The one module that touches Cloudflare's JavaScript world.

Everything here converts at the edge, once: ``undefined``/``null`` become
``None``, a ``Map`` from ``list()`` becomes a dict, Python dicts and lists
become JS objects and arrays before they reach ``ctx.storage`` (older
``workers`` SDKs pass Python containers through unconverted, and several
storage calls then *silently* do nothing; newer ones convert them; explicit
conversion is right under both). No ``JsProxy`` crosses into the core.

``js``, ``pyodide`` and ``workers`` are imported only when running under
Pyodide, so ``import workkit_workflow`` works on CPython.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ._ports import KEEP_ALARM, Clock, Storage, SystemClock, WireRequest, WireResponse
from .errors import TransportError

IN_PYODIDE = sys.platform == "emscripten"
INTERNAL_ORIGIN = "https://workkit-workflow.internal"


def _durable_object_base() -> type:
    # The runtime exports only subclasses of workers.DurableObject as Durable
    # Object classes; elsewhere the class is a plain one.
    if not IN_PYODIDE:
        return object
    try:
        from workers import DurableObject
    except ImportError:
        return object
    return DurableObject  # type: ignore[no-any-return]


DurableObjectBase: type = _durable_object_base()


# -- values ------------------------------------------------------------------


def to_py(value: Any) -> Any:
    """A JS value as plain Python: ``undefined``/``null`` → None, proxies converted."""
    if value is None:
        return None
    if IN_PYODIDE:
        from pyodide.ffi import JsProxy, jsnull

        if value is jsnull:
            return None
        if isinstance(value, JsProxy):
            return value.to_py()
    return value


def to_js(value: Any) -> Any:
    """A Python dict/list as a JS object/array (dicts as plain objects, not Maps)."""
    if not IN_PYODIDE:
        return value
    from js import Object
    from pyodide.ffi import to_js as _to_js

    return _to_js(value, dict_converter=Object.fromEntries)


def _text_map(value: Any) -> dict[str, str]:
    converted = to_py(value)
    if converted is None:
        return {}
    if not isinstance(converted, dict):
        raise TypeError(f"expected a Map from storage, got {type(converted).__name__}")
    return {str(k): v for k, v in converted.items() if isinstance(v, str)}


# -- storage -------------------------------------------------------------------


class DurableObjectStorage:
    """The Storage port over ``ctx.storage`` of a SQLite-backed Durable Object.

    Values are JSON text, the one value type that round-trips exactly (floats
    like ``2.0`` come back as ints otherwise). ``commit`` issues its put,
    delete and alarm calls without an ``await`` between them, which Cloudflare
    coalesces into one atomic write; sizes are checked before (a batch with an
    oversize value is otherwise half-written).
    """

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    async def get(self, key: str) -> str | None:
        value = to_py(await self._storage.get(key))
        return value if isinstance(value, str) else None

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        if not keys:
            return {}
        return _text_map(await self._storage.get(to_js(list(keys))))

    async def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, str]:
        options: dict[str, Any] = {}
        if prefix is not None:
            options["prefix"] = prefix
        if start is not None:
            options["start"] = start
        if end is not None:
            options["end"] = end
        if limit is not None:
            options["limit"] = limit
        if reverse:
            options["reverse"] = True
        result = await (self._storage.list(to_js(options)) if options else self._storage.list())
        return _text_map(result)

    async def commit(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> None:
        pending = []
        if puts:
            pending.append(self._storage.put(to_js(dict(puts))))
        if deletes:
            pending.append(self._storage.delete(to_js(list(deletes))))
        if alarm is not KEEP_ALARM:
            if alarm is None:
                pending.append(self._storage.deleteAlarm())
            else:
                pending.append(self._storage.setAlarm(int(alarm * 1000)))
        for promise in pending:
            await promise

    async def get_alarm(self) -> float | None:
        value = to_py(await self._storage.getAlarm())
        return None if value is None else float(value) / 1000.0

    async def set_alarm(self, at: float | None) -> None:
        if at is None:
            await self._storage.deleteAlarm()
        else:
            await self._storage.setAlarm(int(at * 1000))


class CloudflareHost:
    """What a Durable Object's ``ctx`` gives the engine."""

    is_workkit_host = True
    faults = None

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.storage: Storage = DurableObjectStorage(ctx.storage)
        self.clock: Clock = SystemClock()
        name = None
        try:
            name = to_py(ctx.id.name)
        except AttributeError:
            name = None
        self.object_name: str | None = name if isinstance(name, str) else None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return asyncio.ensure_future(coro)


def host_from_ctx(ctx: Any) -> CloudflareHost:
    return CloudflareHost(ctx)


# -- requests and responses ----------------------------------------------------------


async def read_request(request: Any) -> WireRequest:
    """A ``workers.Request`` or JS ``Request`` as a plain WireRequest."""
    url = urlsplit(str(request.url))
    method = str(getattr(request.method, "value", request.method)).upper()
    body = b""
    if method not in ("GET", "HEAD"):
        text = to_py(await request.text())
        body = (text or "").encode()
    return WireRequest(method=method, path=url.path or "/", query=dict(parse_qsl(url.query)), body=body)


def make_response(response: WireResponse) -> Any:
    text = json.dumps(response.body, separators=(",", ":"))
    headers = {"content-type": "application/json"}
    try:
        from workers import Response
    except ImportError:
        from js import Response as JsResponse

        return JsResponse.new(text, to_js({"status": response.status, "headers": headers}))
    return Response(text, status=response.status, headers=headers)


# -- the namespace, from a Worker ---------------------------------------------------


class DurableObjectNamespaceClient:
    """The client's Namespace port over a ``DurableObjectNamespace`` binding."""

    def __init__(self, binding: Any) -> None:
        self._binding = binding

    async def request(
        self,
        name: str,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> WireResponse:
        stub = self._binding.get(self._binding.idFromName(name))
        url = INTERNAL_ORIGIN + path + ("?" + urlencode(dict(query)) if query else "")
        init: dict[str, Any] = {"method": method, "headers": {"content-type": "application/json"}}
        if body is not None:
            init["body"] = json.dumps(body, separators=(",", ":"))
        try:
            response = await stub.fetch(url, to_js(init))
            status = int(to_py(response.status))
            text = to_py(await response.text()) or ""
        except Exception as exc:
            raise TransportError(f"the execution object did not answer: {exc}") from None
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            raise TransportError(
                f"the execution object answered {status} with non-JSON: {text[:200]!r}"
            ) from None
        return WireResponse(status, payload)


def namespace_from_binding(binding: Any) -> DurableObjectNamespaceClient:
    if not hasattr(binding, "idFromName"):
        raise TypeError(
            "create_durable_workflow() needs a Durable Object namespace binding (env.WORKFLOW_DO) "
            f"or a workkit_workflow.local.LocalNamespace, got {type(binding).__name__}"
        )
    return DurableObjectNamespaceClient(binding)
