"""``WorkflowExecutionDO``: the Durable Object that holds one execution.

Routes (JSON in, JSON out; errors are ``{"error": {"code", "message", ...}}``):

==========  =========  ===============================================
route       method     does
==========  =========  ===============================================
/execute    POST       create the execution (idempotent by id), drive it
/status     GET, POST  the status view
/result     GET        the outcome once settled (``?wait=seconds``)
/cancel     POST       request cancellation (compensation runs unless
                       ``compensate`` is false)
/pause      POST       pause: no new operation starts
/unpause    POST       continue a paused execution
/delete     POST       delete a finished execution's storage now
/event      POST       deliver an external event (``/resume`` is an alias)
/journal    GET        every journal entry (``?undo_keys=1``: with the undos' keys)
/meta       GET        input, timings, attempts
/state      GET        live state set by ``ctx.set_state`` (``?key=``)
/version    POST       move an unfinished execution to another deployed version
/schedule   GET, POST  a schedule's record (last tick, owed ticks); POST advances it (schedules)
/limit      GET, POST  a concurrency key's slots; acquire / release
/wake       POST       a queued execution asks its coordinator again
==========  =========  ===============================================

The same class runs on Cloudflare (it subclasses ``workers.DurableObject``
when that module exists) and in the local runtime.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable
from typing import Any

from ..definitions._durations import to_seconds
from ..engine._alarms import DEFAULT_LEASE
from ..engine._execution import ExecutionCore
from ..engine._ports import RUN_REQUEST, Host, Namespace, StorageReadError, WireRequest, WireResponse
from ..engine._signals import StorageFailure
from ..errors import (
    ExecutionConflictError,
    ExecutionNotFoundError,
    InvalidRequestError,
    SerializationError,
    UnknownWorkflowError,
    WorkflowError,
)
from . import _workers as _cloudflare
from ._host import host_from_ctx
from ._namespace import namespace_from_binding
from ._side_objects import SIDE_ROUTES, SideObjects

log = logging.getLogger("workkit_workflow")

_STATUS_BY_ERROR: dict[type[WorkflowError], int] = {
    InvalidRequestError: 400,
    UnknownWorkflowError: 404,
    ExecutionNotFoundError: 404,
    ExecutionConflictError: 409,
    SerializationError: 413,
}


def error_response(exc: WorkflowError) -> WireResponse:
    status = exc.details.get("status") if isinstance(exc.details.get("status"), int) else None
    if status is None and isinstance(exc, SerializationError) and "size" not in exc.details:
        status = 400  # not JSON (NaN, 1e400, a lone surrogate): malformed, not too large
    if status is None:
        status = next((code for cls, code in _STATUS_BY_ERROR.items() if isinstance(exc, cls)), 400)
    body = {k: v for k, v in exc.to_dict().items() if k != "status" or not isinstance(v, int)}
    return WireResponse(status, {"error": body})


_WIRE = __name__.rpartition(".")[0] + "._wire"


def _wire_module() -> Any:
    """The request bodies' models (``_wire``, which needs pydantic: reads work without it),
    looked up where the import system keeps it once imported: an import statement run in
    a function goes through the import machinery's Python at every call (twice for each
    ``/execute``)."""
    wire = sys.modules.get(_WIRE)
    if wire is None:
        from . import _wire as wire
    return wire


class ExecutionObject:
    """The runtime-independent request handling of one execution object."""

    def __init__(self, host: Host, *, lease: float = DEFAULT_LEASE, **options: Any) -> None:
        self.host = host
        self.core = ExecutionCore(host, lease=lease, faults=getattr(host, "faults", None), **options)
        self._side: SideObjects | None = None

    @property
    def side(self) -> SideObjects:
        """Schedules and concurrency limits, made on first use (a request to an
        execution never needs them)."""
        if self._side is None:
            self._side = SideObjects(self.host, self.core)
        return self._side

    async def handle(self, request: WireRequest) -> WireResponse:
        try:
            answer = self._route(request)
            if answer is not None:
                return await answer
            # /execute: this frame awaits the run itself (the runner drives in this
            # request's task unless one is active), so a request driving an execution
            # holds this frame and the run's, no task of its own, and not the request.
            created, run = await self._start(request)
            if run is not None:
                request = RUN_REQUEST
                await run
            view = await self.core.view()
            return WireResponse(201 if created else 200, {"execution": view, "created": created})
        except WorkflowError as exc:
            return error_response(exc)
        except (StorageFailure, StorageReadError) as exc:
            # Nothing was written; the caller may retry the request as it is.
            what = exc.what
            log.warning(
                "workkit_workflow: storage %s failed serving %s %s: %r",
                what,
                request.method,
                request.path,
                exc.cause,
            )
            return WireResponse(
                503,
                {
                    "error": {
                        "code": "storage_unavailable",
                        "message": f"storage {what} failed: {exc.cause}",
                        "retryable": True,
                    }
                },
            )
        except Exception as exc:
            # A bug must not take the object down or leak a traceback to callers.
            log.exception("workkit_workflow: unexpected error serving %s %s", request.method, request.path)
            return WireResponse(
                500,
                {"error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}},
            )

    def _route(self, request: WireRequest) -> Awaitable[WireResponse] | None:
        """The coroutine that answers ``request``, awaited by ``handle`` directly: a
        plain function, so a request in flight holds one frame less. None for a
        valid ``/execute``, which ``handle`` answers itself."""
        path = "/" + request.path.strip("/").split("/")[-1] if request.path.strip("/") else "/"
        method = request.method.upper()
        refused = _refuse(path, method)
        if refused is not None:
            return _answer(refused)
        if path in SIDE_ROUTES:  # schedules, concurrency limits: see _side_objects
            return self.side.handle(path, request)
        if method == "POST" and path in ("/execute", "/cancel", "/event", "/resume", "/version"):
            # pydantic validates bodies; reads (GET) work without it.
            try:
                _wire_module()  # importable, or refused here
            except ImportError as exc:
                if exc.name != "pydantic":
                    raise
                return _answer(_no_pydantic())
        if path == "/execute":
            return None
        if path in _CONTROL:
            return self._control(path)
        return self._operate(path, request)

    async def _operate(self, path: str, request: WireRequest) -> WireResponse:
        """The routes not answered by ``handle`` (``/execute``), ``_control`` or the side
        objects. ``_route`` checked that the ones with a body can import ``_wire`` (pydantic)."""
        core = self.core
        if path == "/status":
            return WireResponse(200, {"execution": await core.status()})
        if path == "/result":
            wait = _float_param(request, "wait", 0.0, maximum=60.0)
            return WireResponse(200, {"result": await core.result(wait)})
        if path == "/cancel":
            wire = _wire_module()
            cancel = wire.parse(wire.CancelBody, request.body)
            view, changed = await core.cancel(cancel.reason, cancel.compensate)
            return WireResponse(200, {"execution": view, "cancelled": changed})
        if path in ("/event", "/resume"):
            wire = _wire_module()
            event = wire.parse(wire.EventBody, request.body)
            outcome = await core.send_event(event.type, event.payload, event.id)
            return WireResponse(202 if outcome["accepted"] else 200, outcome)
        if path == "/journal":  # ?undo_keys=1: with the undos' keys, for a restart (client._restart)
            return WireResponse(200, {"entries": await core.journal(request.query.get("undo_keys") == "1")})
        if path == "/state":
            return WireResponse(200, await core.live_state(request.query.get("key")))
        if path == "/version":  # versions
            wire = _wire_module()
            moved = wire.parse(wire.VersionBody, request.body)
            meta, changed = await core.move_to_version(moved.version)
            return WireResponse(200, {"version": meta.get("version"), "moved": changed})
        return WireResponse(200, {"meta": await core.meta()})

    async def _control(self, path: str) -> WireResponse:
        """Pause, continue, delete (``engine/_control.py``); no body."""
        core = self.core
        if path == "/pause":
            view, changed = await core.pause()
            return WireResponse(200, {"execution": view, "paused": changed})
        if path == "/unpause":
            view, changed = await core.unpause()
            return WireResponse(200, {"execution": view, "unpaused": changed})
        return WireResponse(200, await core.delete())

    def _start(self, request: WireRequest) -> Awaitable[tuple[bool, Awaitable[None] | None]]:
        """The engine's ``start`` (``execute`` up to the wait) for a validated body. A
        plain function: the parsed body is not kept while the execution runs."""
        wire = _wire_module()
        body = wire.parse(wire.ExecuteBody, request.body)
        name = self.host.object_name
        if name is not None and name != body.execution_id:
            raise InvalidRequestError(
                f"execution_id {body.execution_id!r} does not match this object ({name!r})"
            )
        restart = body.restart.model_dump() if body.restart is not None else None
        start: Awaitable[tuple[bool, Awaitable[None] | None]] = self.core.start(
            workflow=body.workflow,
            input=body.input,
            execution_id=body.execution_id,
            wait=body.wait,
            restart=restart,
            parent=body.parent.model_dump() if body.parent is not None else None,
            version=body.version,
        )
        return start

    async def alarm(self) -> None:
        if await self.side.alarm():
            return
        await self.core.alarm()


ROUTES = {
    "/execute": ("POST",),
    "/status": ("GET", "POST"),
    "/result": ("GET", "POST"),
    "/cancel": ("POST",),
    "/event": ("POST",),
    "/resume": ("POST",),
    "/pause": ("POST",),
    "/unpause": ("POST",),
    "/delete": ("POST",),
    "/journal": ("GET", "POST"),
    "/meta": ("GET", "POST"),
    "/state": ("GET", "POST"),
    "/version": ("POST",),
    **SIDE_ROUTES,
}
"""The routes and the methods each accepts."""


_CONTROL = ("/pause", "/unpause", "/delete")


def _refuse(path: str, method: str) -> WireResponse | None:
    """404 for an unknown route, 405 for a method it does not accept."""
    if path not in ROUTES:
        return WireResponse(
            404,
            {"error": {"code": "not_found", "message": f"no route {path!r}", "routes": sorted(ROUTES)}},
        )
    if method not in ROUTES[path]:
        return WireResponse(
            405,
            {
                "error": {
                    "code": "method_not_allowed",
                    "message": f"{path} accepts {', '.join(ROUTES[path])}, not {method}",
                }
            },
        )
    return None


async def _answer(response: WireResponse) -> WireResponse:
    return response


def _no_pydantic() -> WireResponse:
    """What a body-carrying request gets where pydantic is missing: refused, never
    accepted unvalidated."""
    return WireResponse(
        500,
        {
            "error": {
                "code": "dependency_missing",
                "message": (
                    "request bodies are validated with pydantic, which this Worker cannot import: "
                    "deploy with pywrangler (it vendors the package's dependencies) or vendor pydantic"
                ),
                "dependency": "pydantic",
                "retryable": False,
            }
        },
    )


def _float_param(request: WireRequest, name: str, default: float, *, maximum: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequestError(f"query parameter {name!r} must be a number") from None
    if not 0.0 <= value <= maximum:
        raise InvalidRequestError(f"query parameter {name!r} must be between 0 and {maximum:g}")
    return value


def _binding(env: Any, name: str) -> Any:
    if env is None:
        return None
    if isinstance(env, dict):
        return env.get(name)
    # On Cloudflare a missing binding is an AttributeError (or undefined, i.e. None).
    return getattr(env, name, None)


def _peers(env: Any, name: str | None) -> Namespace | None:
    """The namespace binding ``name`` of ``env`` as a Namespace port, if bound."""
    binding = _binding(_cloudflare.unwrapped_env(env), name) if name else None
    if binding is None:
        return None
    try:
        return namespace_from_binding(binding)
    except TypeError:
        log.error("workkit_workflow: env.%s is not a Durable Object namespace binding", name)
        return None


class WorkflowExecutionDO(_cloudflare.DurableObjectBase):  # type: ignore[misc,valid-type]
    """The Durable Object class to bind as ``WORKFLOW_DO``.

    Re-export it from your Worker's entry module under this exact name::

        from workkit_workflow import WorkflowExecutionDO
    """

    lease: float = DEFAULT_LEASE
    """Seconds the running-execution alarm is set ahead (see ``DEFAULT_LEASE``)."""

    retention: float | str | None = None
    """How long a finished execution keeps its storage before the object deletes it
    (seconds or a duration such as ``"30d"``), for workflows that set no ``retention``
    of their own; None keeps it for good. Set it on a subclass."""

    history_binding: str | None = "HISTORY_DB"
    """The ``env`` binding of the D1 database that receives the history projection, if bound."""

    namespace_binding: str | None = "WORKFLOW_DO"
    """The ``env`` binding of this class's own namespace, through which an execution
    reaches other executions (child workflows); ``None`` turns that off."""

    def __init__(self, ctx: Any, env: Any) -> None:
        # A subclass's env comes wrapped once per class level: self.env gets it as a direct
        # subclass of the SDK's DurableObject would (its bindings' stubs then fetch).
        env = _cloudflare.once_wrapped_env(env)
        # The SDK's DurableObject keeps ctx and env from mid-2025 on; the April-2025 SDK's
        # has no constructor, and object's takes no arguments.
        if _cloudflare.base_takes_ctx_env(_cloudflare.DurableObjectBase):
            super().__init__(ctx, env)
        self.ctx = ctx
        self.env = env
        host: Host = ctx if getattr(ctx, "is_workkit_host", False) else host_from_ctx(ctx)
        if getattr(host, "peers", None) is None:
            host.peers = _peers(env, self.namespace_binding)
        history = _binding(env, self.history_binding) if self.history_binding else None
        retention = None if self.retention is None else to_seconds(self.retention, what="retention")
        self._object = ExecutionObject(host, lease=self.lease, history=history, retention=retention)

    def fetch(self, request: Any) -> Awaitable[Any]:
        # Not async: the local runtime's request is served by the handler's coroutine itself.
        if isinstance(request, WireRequest):
            return self._object.handle(request)
        return _cloudflare.serve_request(self._object.handle, request)

    async def alarm(self, alarm_info: Any = None) -> None:
        await self._object.alarm()

    # From 2025-08-14 the runtime calls fetch / alarm with as many arguments as they declare.
    # Earlier dates call on_fetch / on_alarm: today's runtime passes (request, env, ctx) to a
    # handler declaring *args, the April-2025 one passes (request, undefined, undefined)
    # whatever it declares; these ignore the extras. They delegate: an override is honoured.
    async def on_fetch(self, request: Any, *_runtime_args: Any) -> Any:
        return await self.fetch(request)

    async def on_alarm(self, alarm_info: Any = None, *_runtime_args: Any) -> None:
        await self.alarm(alarm_info)
