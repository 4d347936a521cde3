"""The one module that touches Cloudflare's JavaScript world.

Everything here converts at the edge, once: ``undefined``/``null`` become
``None``, a ``Map`` from ``get([...])``/``list()`` becomes a dict, Python
dicts and lists become plain JS objects and arrays before they reach
``ctx.storage``, a stub or ``fetch``. No ``JsProxy`` crosses into the core.

Why convert explicitly: older ``workers`` SDKs (and workerd without the
SDK) hand Python containers to JavaScript unconverted, and then several
storage calls *silently* do nothing (``put(dict)`` writes nothing,
``delete(list)`` deletes nothing, ``list({"prefix": ...})`` ignores the
options); newer SDKs wrap ``ctx.storage`` and convert. A value that is
already a JS object passes through the newer wrapper unchanged, so explicit
conversion is right under both (see "Deploying to Cloudflare" in README.md).

``js``, ``pyodide`` and ``workers`` are imported only when running under
Pyodide, so ``import workkit_workflow`` works on CPython.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from ..engine._ports import WireRequest, WireResponse

IN_PYODIDE = sys.platform == "emscripten"


def _durable_object_base() -> type:
    # The runtime exports only subclasses of workers.DurableObject as Durable
    # Object classes; elsewhere (CPython, workerd without the SDK) the class
    # is a plain one.
    if not IN_PYODIDE:
        return object
    try:
        from workers import DurableObject
    except ImportError:
        return object
    return DurableObject  # type: ignore[no-any-return]


DurableObjectBase: type = _durable_object_base()


def base_takes_ctx_env(base: type) -> bool:
    """Whether ``base`` (the SDK's ``DurableObject``) has a constructor of its own, which
    takes ``(ctx, env)``; the April-2025 SDK's class has none."""
    return base is not object and getattr(base, "__init__", None) is not object.__init__


# -- values ------------------------------------------------------------------


def _jsnull() -> Any:
    # ``pyodide.ffi.jsnull`` exists from Pyodide 0.28 on; before, JS null
    # arrives as None.
    try:
        from pyodide.ffi import jsnull
    except ImportError:
        return None
    return jsnull


def unwrapped_env(env: Any) -> Any:
    """The runtime's ``env`` under the SDK's wrappers.

    The ``workers`` SDK wraps ``env`` once per class level of a ``DurableObject``
    subclass, so a subclass of ``WorkflowExecutionDO`` gets it wrapped twice, and the
    stubs of a doubly wrapped namespace binding refuse ``fetch`` ("fetch() takes 1
    positional argument but 2 were given", measured in workerd 1.20261117). The
    wrapper keeps the object it wraps as ``_env``; the runtime's own has none.
    """
    innermost = once_wrapped_env(env)
    inner = None if _is_js(innermost) else getattr(innermost, "_env", None)
    return innermost if inner is None else inner


def once_wrapped_env(env: Any) -> Any:
    """``env`` as the SDK means a handler to see it: under one of its wrappers, the innermost.

    A subclass of ``WorkflowExecutionDO`` (one that only sets ``lease``, say) gets ``env``
    wrapped once for each class level; through the outer wrappers, a namespace binding's
    stubs refuse ``fetch``. The innermost wrapper is the one the runtime's own ``env`` got
    first, what a direct subclass of ``DurableObject`` is given. An ``env`` under no wrapper
    (the local runtime's, an older SDK's) is returned as it is.
    """
    return _innermost_wrapper(env, "_env")


def once_wrapped_step(step: Any) -> Any:
    """A Workflows ``step`` under one of the SDK's step wrappers, the innermost.

    The SDK wraps ``run`` of every ``WorkflowEntrypoint`` subclass, and the wrapper wraps the
    step it passes on: a subclass that overrides ``run`` and calls ``super().run()`` hands
    the package a wrapper of a wrapper, whose ``do`` fails. The wrapper keeps the step it
    wraps as ``_js_step``; the engine's own step has none."""
    return _innermost_wrapper(step, "_js_step")


def _innermost_wrapper(value: Any, inner: str) -> Any:
    """The wrapper right around what ``value`` wraps, each wrapper keeping what it wraps as
    ``inner``; ``value`` itself when it wraps nothing. Only a Python object of the wrapper's
    own class counts as wrapped: any attribute of a JS RPC stub (a Workflows step) is
    another stub, never missing."""
    for _ in range(8):
        wrapped = None if _is_js(value) else getattr(value, inner, None)
        if wrapped is None or type(wrapped) is not type(value):
            return value
        value = wrapped
    return value


def _is_js(value: Any) -> bool:
    if not IN_PYODIDE:
        return False
    from pyodide.ffi import JsProxy

    return isinstance(value, JsProxy)


def to_py(value: Any) -> Any:
    """A JS value as plain Python: ``undefined``/``null`` → None, proxies converted."""
    if value is None or not IN_PYODIDE:
        return value
    from pyodide.ffi import JsProxy

    if value is _jsnull():
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


# -- requests and responses ----------------------------------------------------------


def headers_of(headers: Any) -> dict[str, str]:
    """Request/response headers (JS ``Headers`` or ``http.client.HTTPMessage``) as a
    dict with lower-case names."""
    if headers is None:
        return {}
    items = headers.items() if hasattr(headers, "items") else headers.entries()
    out: dict[str, str] = {}
    for pair in items:
        name, value = pair[0], pair[1]
        out[str(name).lower()] = str(value)
    return out


async def read_request(request: Any) -> WireRequest:
    """A ``workers.Request`` or JS ``Request`` as a plain WireRequest."""
    url = urlsplit(str(request.url))
    method = str(getattr(request.method, "value", request.method)).upper()
    body = b""
    if method not in ("GET", "HEAD"):
        text = to_py(await request.text())
        body = (text or "").encode()
    return WireRequest(
        method=method,
        path=url.path or "/",
        query=dict(parse_qsl(url.query)),
        body=body,
        headers=headers_of(getattr(request, "headers", None)),
    )


def make_response(response: WireResponse, headers: Mapping[str, str] | None = None) -> Any:
    """A JSON response object for the runtime (see :func:`make_text_response`)."""
    text = json.dumps(response.body, separators=(",", ":"))
    return make_text_response(response.status, text, {"content-type": "application/json", **(headers or {})})


async def serve_request(handle: Callable[[WireRequest], Awaitable[WireResponse]], request: Any) -> Any:
    """The runtime's response to its ``request``, served by ``handle``."""
    return make_response(await handle(await read_request(request)))


def make_text_response(status: int, text: str, headers: Mapping[str, str]) -> Any:
    """A response object for the runtime: ``workers.Response`` when the SDK is
    there, else a JS ``Response`` built with a JS init object (a plain dict
    would be ignored silently and give status 200)."""
    all_headers = dict(headers)
    try:
        from workers import Response
    except ImportError:
        from js import Response as JsResponse

        return JsResponse.new(text, to_js({"status": status, "headers": all_headers}))
    return Response(text, status=status, headers=all_headers)


# -- outbound HTTP (workkit_workflow.http) ---------------------------------------------


async def js_fetch(
    method: str, url: str, headers: Mapping[str, str], body: bytes | None
) -> tuple[int, dict[str, str], bytes]:
    """One request through the runtime's global ``fetch``. Workers have no
    XMLHttpRequest, so pyodide-http does nothing there; blocking code uses
    ``http.fetch_sync`` (``run_sync`` over this same ``fetch``) where the runtime
    has stack switching."""
    from js import fetch

    options: dict[str, Any] = {"method": method, "headers": to_js(dict(headers))}
    if body is not None:
        options["body"] = to_js(body)
    response = await fetch(url, **options)
    status = int(to_py(response.status))
    data = await response.arrayBuffer()
    return status, headers_of(response.headers), bytes(data.to_bytes())


# -- Cloudflare Workflows: the SDK's classes -----------------------------------------


def sdk_non_retryable_error() -> type[Exception]:
    if IN_PYODIDE:
        try:
            from workers.workflows import NonRetryableError as SdkNonRetryable
        except ImportError:
            pass
        else:
            return cast(type[Exception], SdkNonRetryable)
    # Same class name: the engine recognises either by name.
    from ..errors import NonRetryableError

    return NonRetryableError


def sdk_has_native_non_retryable() -> bool:
    """Whether the ``workers`` SDK turns a raised NonRetryableError into one the engine
    does not retry (workers-runtime-sdk >= 1.9.0). Unknown counts as no."""
    if not IN_PYODIDE:
        return False
    try:
        from workers import entrypoints
    except ImportError:
        return False
    if hasattr(entrypoints, "_wrap_js_workflow_step"):
        return True
    try:
        from importlib.metadata import version

        parts = [int(p) for p in re.findall(r"\d+", version("workers-runtime-sdk"))[:2]]
    except Exception:
        return False
    return parts >= [1, 9]


def workflow_entrypoint_base() -> type:
    if IN_PYODIDE:
        try:
            from workers import WorkflowEntrypoint
        except ImportError:
            pass
        else:
            return cast(type, WorkflowEntrypoint)
    return _PlainEntrypoint


class _PlainEntrypoint:
    """The base outside Pyodide (tests, type checks): same constructor as the SDK's."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


# -- Cloudflare Workflows: the value an entry point returns ------------------------------


def json_to_js(value: Any) -> Any:
    """JSON data as the same JS value (objects, arrays, ``null`` kept), for a value
    handed to the runtime unconverted: the built-in SDK passes what a workflow's
    ``run`` returns to JavaScript as is, and a Python dict there is a
    ``DataCloneError``. Through JSON text, a ``None`` inside becomes ``null``, not
    the ``undefined`` of ``to_js``, which a JSON round trip would drop."""
    if not IN_PYODIDE:
        return value
    from js import JSON

    return JSON.parse(json.dumps(value, separators=(",", ":")))


class _Rejection:
    """A thenable that rejects with one JavaScript error (see :func:`rejection_with`)."""

    def __init__(self, error: BaseException) -> None:
        self._error = error

    def then(self, resolve: Any, reject: Any) -> None:
        # Handed to JS, a JsException is the original JS error object again.
        reject(self._error)


def rejection_with(exc: BaseException) -> Any:
    """For an entry point to *return* so that the runtime's promise rejects with ``exc``
    itself, a JS error caught in Python; None when ``exc`` is no JS error (or outside
    Pyodide).

    Raised instead, it would reach JavaScript as a ``PythonError`` whose message is
    the traceback, and a returned JS promise is awaited in Python by the runtime's
    entry point glue (the same ``PythonError``). A Python object with a ``then``
    method is not awaitable in Python, and JavaScript adopts it as a thenable.
    """
    if not IN_PYODIDE:
        return None
    from pyodide.ffi import JsException

    if not isinstance(exc, JsException):
        return None
    return _Rejection(exc)
