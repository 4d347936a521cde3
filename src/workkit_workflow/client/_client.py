"""The client a Worker uses to start and inspect executions.

``create_durable_workflow(env.WORKFLOW_DO)`` wraps the namespace binding; each
call is one ``fetch`` to the execution's Durable Object (``idFromName`` of the
execution id).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from ..definitions._json import encode_value
from ..definitions._steps import reserved_event_type
from ..definitions._workflow import Workflow
from ..engine._export import make_export
from ..engine._journal import Status
from ..engine._ports import Namespace, WireResponse
from ..errors import (
    ExecutionConflictError,
    ExecutionFailedError,
    ExecutionNotFinishedError,
    ExecutionNotFoundError,
    InvalidRequestError,
)
from ._answers import raise_for, send_again, unavailable
from ._bodies import check_id, check_timeout, execute_body
from ._restart import check_compensation_ended, check_cut, check_restarted, restart_records

if TYPE_CHECKING:
    from ..history import HistoryQuery

T = TypeVar("T")

RESULT_POLL = 25.0
"""Seconds one ``/result`` long-poll waits before the client asks again."""


@dataclass(frozen=True)
class WorkflowResult(Generic[T]):
    """The outcome of a settled execution: ``ok`` and ``value``, or ``error``."""

    ok: bool
    status: Status
    value: T | None = None
    error: ExecutionFailedError | None = None

    def unwrap(self) -> T:
        """The value, or raise the ExecutionFailedError."""
        if self.ok:
            return cast(T, self.value)
        assert self.error is not None
        raise self.error


def _resolve(binding: Any) -> Namespace:
    if callable(getattr(binding, "request", None)) and not hasattr(binding, "idFromName"):
        return cast(Namespace, binding)
    from ..cloudflare._namespace import namespace_from_binding

    return namespace_from_binding(binding)


class ExecutionHandle:
    """One execution, by id. Cheap to create; every method is one request."""

    def __init__(self, namespace: Namespace, execution_id: str, *, created: bool | None = None) -> None:
        self._ns = namespace
        self.execution_id = execution_id
        self.created = created
        """Whether ``run`` created this execution (False: it already existed)."""

    async def _call(
        self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        try:
            response = await self._ns.request(self.execution_id, method, path, body, query)
        except TypeError:
            if path == "/event":  # a payload JSON cannot encode: say so, as for NaN
                encode_value(body.get("payload"), what=f"payload of event {body.get('type')!r}")
            raise
        if unavailable(response):
            response = await send_again(self._ns, self.execution_id, method, path, body, query)
        return raise_for(response)

    async def status(self) -> Status:
        """``queued | pending | running | sleeping | waiting | paused | blocked | completed | failed |
        cancelled`` (``queued``: waiting for a slot of its concurrency limit)."""
        return cast(Status, (await self.describe())["status"])

    async def describe(self) -> dict[str, Any]:
        """The full status view: status, timings, wake-up, error, compensation, running steps."""
        return cast(dict[str, Any], (await self._call("GET", "/status"))["execution"])

    async def journal(self) -> list[dict[str, Any]]:
        """Every journal entry: steps, sleeps, waits, then compensation steps."""
        return cast(list[dict[str, Any]], (await self._call("GET", "/journal"))["entries"])

    async def meta(self) -> dict[str, Any]:
        """Input, workflow, creation, start and finish times, attempts."""
        return cast(dict[str, Any], (await self._call("GET", "/meta"))["meta"])

    async def state(self, key: str | None = None, default: Any = None) -> Any:
        """The live state the workflow published with ``ctx.set_state``: every key as a
        dict, or with ``key`` that key's value (``default`` if it was never set).
        Readable while the execution runs and after it settles."""
        if key is None:
            return cast(dict[str, Any], (await self._call("GET", "/state"))["state"])
        body = await self._call("GET", "/state", query={"key": key})
        return body["value"] if body.get("found") else default

    async def cancel(self, reason: str | None = None, *, compensate: bool = True) -> bool:
        """Request cancellation; returns False if the execution had already finished.

        ``compensate=False`` terminates it: the compensation handler (and undo
        handlers) do not run (status ``cancelled``, error code ``terminated``), nor
        those of the child workflows it still waits for, which are terminated too.
        """
        body = await self._call("POST", "/cancel", {"reason": reason, "compensate": compensate})
        return bool(body["cancelled"])

    async def pause(self) -> bool:
        """Pause: no new operation starts until :meth:`unpause` (a running step finishes).
        Returns False if it was paused already."""
        return bool((await self._call("POST", "/pause"))["paused"])

    async def unpause(self) -> bool:
        """Continue a paused execution (not :meth:`resume`, which delivers an event).
        Returns False if it was not paused."""
        return bool((await self._call("POST", "/unpause"))["unpaused"])

    async def delete(self) -> None:
        """Delete a finished execution's storage now; its history rows stay. A running
        execution is refused (:class:`~workkit_workflow.errors.ExecutionConflictError`)."""
        await self._call("POST", "/delete")

    async def move_to_version(self, version: str) -> bool:
        """Run this unfinished execution on another deployed ``version`` of its workflow
        from its next replay on (a blocked one carries on at once). Its journal is kept
        and replayed by that version's code: run ``check-replay`` against it first.
        Returns False when it already runs that version."""
        return bool((await self._call("POST", "/version", {"version": version}))["moved"])

    async def export(self) -> dict[str, Any]:
        """The execution as a JSON-able document (format version, meta with workflow,
        version and input, state, journal entries) for ``workkit-workflow check-replay
        --journal FILE`` or :func:`workkit_workflow.testing.check_replay`."""
        meta = await self.meta()
        entries = await self.journal()
        state = await self.describe()
        return make_export(meta, state, entries)

    async def send_event(self, event_type: str, payload: Any = None, *, event_id: str | None = None) -> bool:
        """Deliver an external event; returns False for a duplicate ``event_id``."""
        reserved = reserved_event_type(event_type)
        if reserved is not None:
            raise InvalidRequestError(reserved, field="type")
        body: dict[str, Any] = {"type": event_type, "payload": payload}
        if event_id is not None:
            body["id"] = event_id
        return bool((await self._call("POST", "/event", body))["accepted"])

    async def resume(self, event_type: str, payload: Any = None, *, event_id: str | None = None) -> bool:
        """Resume an execution waiting for ``event_type`` (same as :meth:`send_event`)."""
        return await self.send_event(event_type, payload, event_id=event_id)

    async def result(self, timeout: float | None = None) -> WorkflowResult[Any]:
        """Wait for the execution to settle (compensation included) and return its outcome.

        ``timeout`` bounds the wait in seconds (``None``: no bound; ``0``: do not
        wait); past it, :class:`~workkit_workflow.errors.ExecutionNotFinishedError`.
        """
        remaining = check_timeout(timeout)
        while True:
            chunk = RESULT_POLL if remaining is None else min(RESULT_POLL, remaining)
            body = (await self._call("GET", "/result", query={"wait": f"{chunk:g}"}))["result"]
            if body.get("settled"):
                return _result_from(body)
            if remaining is not None:
                remaining -= chunk
                if remaining <= 0:
                    state = body["status"]
                    if state in ("cancelled", "failed"):
                        state += ", its compensation still running"
                    raise ExecutionNotFinishedError(
                        f"execution {self.execution_id!r} is still {state}",
                        execution_id=self.execution_id,
                        status=body["status"],
                    )

    def __repr__(self) -> str:
        return f"ExecutionHandle({self.execution_id!r})"


def _result_from(body: dict[str, Any]) -> WorkflowResult[Any]:
    status = cast(Status, body["status"])
    if body.get("ok"):
        return WorkflowResult(ok=True, status=status, value=body.get("value"))
    error = body.get("error") or {}
    step = body.get("failed_step")
    where = f"step {step!r}" if step else "the workflow"
    message = f"{where} {status}: {error.get('message', status)}"
    failure = ExecutionFailedError(
        message,
        code=str(error.get("code", status)),
        execution_id=body["execution_id"],
        status=status,
        failed_step=step,
        step_attempt=int(body.get("step_attempt") or 0),
        error=error or None,
        compensation=body.get("compensation"),
        journal=body.get("journal") or [],
    )
    return WorkflowResult(ok=False, status=status, error=failure)


class DurableWorkflows:
    """Start and look up executions through a Durable Object namespace."""

    def __init__(self, namespace: Namespace, history: HistoryQuery | None = None) -> None:
        self.namespace = namespace
        self.history = history
        """Queries over the history projection (``history=`` of ``create_durable_workflow``), or None."""

    async def run(
        self,
        workflow: Workflow | str,
        input: Any = None,
        *,
        execution_id: str | None = None,
        wait: bool = True,
        version: str | None = None,
    ) -> ExecutionHandle:
        """Start ``workflow`` with ``input`` (or find the execution if the id exists).

        With ``wait=True`` the object drives the execution during this call
        until it finishes or parks (sleep, wait, retry backoff); correctness
        never depends on it: the object's alarm carries the execution on.
        The execution runs ``version``, else the version of the ``Workflow``
        given, else (a name) the newest version registered in the object's Worker.
        """
        # Only None asks for a new id: "" is an invalid id, not a request for a random one.
        execution_id = check_id(str(uuid.uuid4()) if execution_id is None else execution_id)
        # The body is passed, not kept in this frame while the execution runs.
        try:
            response = await self.namespace.request(
                execution_id, "POST", "/execute", execute_body(workflow, input, execution_id, wait, version)
            )
        except TypeError:
            # An input JSON cannot encode (bytes, a set): a SerializationError, as for NaN.
            body = execute_body(workflow, input, execution_id, wait, version)
            encode_value(body["input"], what="workflow input")
            raise
        if unavailable(response):
            body = execute_body(workflow, input, execution_id, wait, version)
            response = await send_again(self.namespace, execution_id, "POST", "/execute", body)
        return self._started(execution_id, response)

    async def start(
        self,
        workflow: Workflow | str,
        input: Any = None,
        *,
        execution_id: str | None = None,
        version: str | None = None,
    ) -> ExecutionHandle:
        """Start without waiting: the object's alarm drives the execution."""
        return await self.run(workflow, input, execution_id=execution_id, wait=False, version=version)

    def _started(self, execution_id: str, response: WireResponse) -> ExecutionHandle:
        # The request is awaited by the caller itself: one coroutine less per execution
        # being started (each is walked by every garbage collection while it waits).
        payload = raise_for(response)
        return ExecutionHandle(self.namespace, execution_id, created=bool(payload.get("created")))

    def execution(self, execution_id: str) -> ExecutionHandle:
        """A handle on an existing execution (no request is made)."""
        return ExecutionHandle(self.namespace, check_id(execution_id))

    async def _made_restart(self, execution_id: str, cut: dict[str, Any]) -> ExecutionHandle | None:
        """The handle of execution ``execution_id`` if it exists and is the restart ``cut``."""
        handle = self.execution(execution_id)
        try:
            check_restarted(await handle.meta(), cut)
        except (ExecutionNotFoundError, ExecutionConflictError):
            return None
        return handle

    async def restart(
        self,
        execution_id: str,
        *,
        from_step: str,
        kind: str = "step",
        occurrence: int = 1,
        new_execution_id: str | None = None,
        input: Any = None,
        wait: bool = True,
        version: str | None = None,
    ) -> ExecutionHandle:
        """Start a new execution that reuses the journal of ``execution_id`` up to
        (not including) the ``occurrence``-th operation of ``kind`` (``"step"``,
        ``"sleep"`` or ``"wait"``) named ``from_step``, and runs from there.

        Use it after fixing a bug: finished steps before the cut are not run
        again; their idempotency keys stay recorded. The new execution's meta
        records where it came from; the source execution is left as it is. It
        runs ``version`` of the workflow, else the newest registered. A carried step
        keeps its undo and its key; a step the source's compensation undid is not
        carried (the README's "Restart and undo handlers").
        """
        check_cut(kind, occurrence)
        new_id = check_id(str(uuid.uuid4()) if new_execution_id is None else new_execution_id)
        cut = {"execution_id": execution_id, "from_step": from_step, "kind": kind, "occurrence": occurrence}
        source = self.execution(execution_id)
        meta = await source.meta()
        try:
            check_compensation_ended(await source.describe())  # read before the journal: it is final
            # With the undos' keys (which ``journal()`` leaves out): the undo of a step carried
            # over is given the key the step ran with, as in the source.
            journal = await source._call("GET", "/journal", query={"undo_keys": "1"})
            kept, idempotent = restart_records(journal["entries"], from_step, kind, occurrence)
        except (ExecutionConflictError, InvalidRequestError):
            # Asked again after its answer was lost, this restart may exist already and its
            # source have begun compensating since: the restart made is the answer.
            if new_execution_id is not None and (made := await self._made_restart(new_id, cut)):
                return made
            raise
        body = {
            "workflow": meta["workflow"],
            "input": meta.get("input") if input is None else input,
            "execution_id": new_id,
            "wait": wait,
            "restart": cut | {"entries": kept, "idempotent": idempotent},
        }
        if version is not None:
            body["version"] = version
        try:
            response = await self.namespace.request(new_id, "POST", "/execute", body)
        except TypeError:
            encode_value(body["input"], what="workflow input")  # as in run
            raise
        if unavailable(response):
            response = await send_again(self.namespace, new_id, "POST", "/execute", body)
        handle = self._started(new_id, response)
        if not handle.created:
            check_restarted(await handle.meta(), body["restart"])
        return handle


BindingDetector = Callable[[Any], bool]
ClientFactory = Callable[[Any], "DurableWorkflows"]

DURABLE_OBJECT = "durable-object"

_BACKENDS: dict[str, tuple[BindingDetector, ClientFactory]] = {}


def register_backend(name: str, detect: BindingDetector, client: ClientFactory) -> None:
    """Plug-in hook for backends: ``create_durable_workflow`` hands a binding that
    ``detect`` recognises (or any binding, with ``backend=name``) to ``client``.
    The generic client never imports a backend; a backend registers itself when
    imported (``workkit_workflow/__init__`` imports every backend it ships)."""
    _BACKENDS[name] = (detect, client)


def create_durable_workflow(
    binding: Any, *, history: Any = None, backend: str | None = None
) -> DurableWorkflows:
    """The client for a ``WorkflowExecutionDO`` namespace: ``env.WORKFLOW_DO`` in a
    Worker, or a :class:`workkit_workflow.local.LocalNamespace` locally; or, for a
    Cloudflare Workflows binding (``env.ORDER_FLOW``), a client over its instances.

    ``history``: the D1 binding of the history projection (``env.HISTORY_DB``,
    or a :class:`workkit_workflow.history.LocalD1` locally), queried through
    ``client.history``. ``backend`` (``"durable-object"`` or ``"cf-workflows"``)
    overrides the detection of the binding's kind."""
    if backend is not None and backend != DURABLE_OBJECT and backend not in _BACKENDS:
        names = " or ".join(repr(name) for name in (DURABLE_OBJECT, *_BACKENDS))
        raise InvalidRequestError(f"unknown backend {backend!r}; use {names}")
    if backend != DURABLE_OBJECT:
        for name, (detect, client) in _BACKENDS.items():
            if backend == name or (backend is None and detect(binding)):
                return client(binding)
    query = None
    if history is not None:
        from ..history import HistoryQuery

        query = HistoryQuery(history)
    return DurableWorkflows(_resolve(binding), query)


__all__ = ["DurableWorkflows", "ExecutionHandle", "WorkflowResult", "create_durable_workflow"]
