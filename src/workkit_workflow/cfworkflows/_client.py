"""The client side of the Cloudflare Workflows backend.

``create_durable_workflow(env.ORDER_FLOW)`` on a Workflows binding returns a
:class:`WorkflowsClient`; its handles have the interface of
:class:`~workkit_workflow.ExecutionHandle`, mapped onto the instance API
(``create``/``get``, ``status``, ``terminate``, ``sendEvent``, ``restart``,
``pause``/``resume``). Calls use the JS method names and convert arguments and
results here, so the raw binding and the SDK's wrapper both work.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import uuid
from collections.abc import Mapping
from typing import Any

from ..client._bodies import check_timeout
from ..client._client import DurableWorkflows, ExecutionHandle, WorkflowResult, register_backend
from ..definitions._values import validate
from ..definitions._workflow import Workflow
from ..engine._journal import Status
from ..engine._ports import WireResponse
from ..errors import (
    ExecutionFailedError,
    ExecutionNotFinishedError,
    ExecutionNotFoundError,
    InvalidRequestError,
    TransportError,
    WorkflowError,
)
from ._control import no_delete, refuse_finished, restart_from
from ._entrypoint import decode_failure
from ._mapping import TERMINAL_ENGINE, AnyWorkflow, _plain, json_output, map_status

_INSTANCE_ID = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]{0,99}")
"""What a Workflows instance id may be."""

# -- the client ------------------------------------------------------------------------------------


def is_workflows_binding(binding: Any) -> bool:
    """A Workflows binding (``create``/``get``), as opposed to a DO namespace."""
    kind = type(binding).__name__
    if kind == "_WorkflowBindingWrapper":
        return True
    if kind in ("_DurableObjectNamespaceWrapper", "LocalNamespace"):
        return False
    constructor = None
    try:
        constructor = str(binding.constructor.name)
    except Exception:
        constructor = None
    if constructor in ("WorkflowImpl", "Workflow", "WorkflowBinding"):
        return True
    if constructor == "DurableObjectNamespace":
        return False

    def has(attr: str) -> bool:
        return callable(getattr(binding, attr, None))

    return has("create") and has("get") and not has("idFromName") and not has("request")


async def _settle(value: Any) -> Any:
    """``value`` awaited until it is no longer awaitable.

    The binding's methods return a promise, but the ``workers`` SDK built into
    workerd wraps the instance's ``status``/``terminate``/``restart``/``pause``/
    ``resume`` in ``async def``s that return the JS promise un-awaited: one await
    gives another awaitable. The PyPI SDK and the raw binding resolve in one.
    """
    while inspect.isawaitable(value):
        value = await value
    return value


async def _call(promise: Any) -> Any:
    return _plain(await _settle(promise))


class _NoNamespace:
    """The Namespace port a Workflows client does not have."""

    async def request(
        self,
        name: str,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> WireResponse:
        raise TransportError("a Cloudflare Workflows client has no Durable Object namespace")


class WorkflowsHandle(ExecutionHandle):
    """One Workflows instance, with the interface of :class:`ExecutionHandle`.

    ``journal()`` is empty: the binding does not expose step history (see the
    Cloudflare dashboard or ``wrangler workflows instances describe``).
    ``cancel`` terminates the instance, without compensation.
    """

    def __init__(self, binding: Any, execution_id: str, *, created: bool | None = None) -> None:
        super().__init__(_NoNamespace(), execution_id, created=created)
        self._binding = binding
        self._instance: Any = None

    async def _get(self) -> Any:
        if self._instance is None:
            try:
                self._instance = await _settle(self._binding.get(self.execution_id))
            except Exception as exc:
                raise ExecutionNotFoundError(
                    f"no Workflows instance {self.execution_id!r}: {exc}", execution_id=self.execution_id
                ) from None
        return self._instance

    async def engine_status(self) -> dict[str, Any]:
        """The instance's ``status()`` as the engine reports it (``status``, ``error``, ``output``)."""
        instance = await self._get()
        try:
            raw = await _call(instance.status())
        except Exception as exc:
            raise ExecutionNotFoundError(
                f"no Workflows instance {self.execution_id!r}: {exc}", execution_id=self.execution_id
            ) from None
        if not isinstance(raw, dict) or not isinstance(raw.get("status"), str):
            raise TransportError(f"unexpected instance status {raw!r}")
        return raw

    async def status(self) -> Status:
        return map_status((await self.engine_status())["status"])

    async def describe(self) -> dict[str, Any]:
        raw = await self.engine_status()
        status = map_status(raw["status"])
        return {
            "execution_id": self.execution_id,
            "backend": "cf-workflows",
            "status": status,
            "engine_status": raw["status"],
            "error": _error_dict(raw.get("error")) if raw.get("error") is not None else None,
            "output": raw.get("output"),
        }

    async def journal(self) -> list[dict[str, Any]]:
        await self.engine_status()
        return []

    async def meta(self) -> dict[str, Any]:
        raw = await self.engine_status()
        return {
            "execution_id": self.execution_id,
            "backend": "cf-workflows",
            "engine_status": raw["status"],
        }

    async def state(self, key: str | None = None, default: Any = None) -> Any:
        raise InvalidRequestError(
            "Cloudflare Workflows has no live state: an instance's values cannot be read while it "
            "runs (ctx.set_state fails there too); use the Durable Object backend"
        )

    async def cancel(self, reason: str | None = None, *, compensate: bool = True) -> bool:
        """Terminate the instance. The engine runs nothing after ``terminate()``, so the
        compensation handler does not run, whatever ``compensate`` says."""
        raw = await self.engine_status()
        if raw["status"] in TERMINAL_ENGINE:
            return False
        await _call((await self._get()).terminate())
        return True

    async def send_event(self, event_type: str, payload: Any = None, *, event_id: str | None = None) -> bool:
        """Deliver an event (``event_id`` is not deduplicated by the engine)."""
        from ..cloudflare._workers import to_js

        data = json_output(payload, what="event payload")
        await _call((await self._get()).sendEvent(to_js({"type": event_type, "payload": data})))
        return True

    async def pause(self) -> bool:
        """The engine's ``pause()``; False if the instance was paused already."""
        raw = await self.engine_status()
        refuse_finished(self.execution_id, raw["status"])
        if raw["status"] == "paused":
            return False
        await _call((await self._get()).pause())
        return True

    async def unpause(self) -> bool:
        """The engine's ``resume()`` of a paused instance (``resume`` here sends an event);
        False if it was not paused."""
        raw = await self.engine_status()
        if raw["status"] not in ("paused", "waitingForPause"):
            return False
        await _call((await self._get()).resume())
        return True

    async def delete(self) -> None:
        """Not available: the engine keeps an instance for the account's retention period."""
        raise no_delete(self.execution_id)

    async def restart(self, from_step: str | None = None, *, kind: str = "step", occurrence: int = 1) -> None:
        """Run the instance again from the start, or from the ``occurrence``-th ``kind``
        named ``from_step`` (the engine's ``restart({from: {name, count, type}})``)."""
        instance = await self._get()
        if from_step is None:
            await _call(instance.restart())
            return
        from ..cloudflare._workers import to_js

        await _call(instance.restart(to_js(restart_from(from_step, kind, occurrence))))

    async def result(self, timeout: float | None = None) -> WorkflowResult[Any]:
        timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.05
        while True:
            raw = await self.engine_status()
            if raw["status"] in TERMINAL_ENGINE:
                return self._result(raw)
            if deadline is not None and loop.time() >= deadline:
                raise ExecutionNotFinishedError(
                    f"execution {self.execution_id!r} is still {map_status(raw['status'])}",
                    execution_id=self.execution_id,
                    status=map_status(raw["status"]),
                )
            wait = pause if deadline is None else min(pause, max(deadline - loop.time(), 0.0))
            await asyncio.sleep(wait)
            pause = min(pause * 2, 2.0)

    def _result(self, raw: dict[str, Any]) -> WorkflowResult[Any]:
        status = map_status(raw["status"])
        if status == "completed":
            return WorkflowResult(ok=True, status=status, value=raw.get("output"))
        failure = _failure(raw.get("error")) if status == "failed" else None
        if failure is None:
            failure = {"code": status, "message": status, "failed_step": None, "step_attempt": 0}
            failure["error"] = _error_dict(raw.get("error")) if raw.get("error") is not None else None
        step = failure.get("failed_step")
        where = f"step {step!r}" if step else "the workflow"
        error = ExecutionFailedError(
            f"{where} {status}: {failure.get('message', status)}",
            code=str(failure["code"]),
            execution_id=self.execution_id,
            status=status,
            failed_step=step if isinstance(step, str) else None,
            step_attempt=int(failure.get("step_attempt") or 0),
            error=failure.get("error"),
            compensation=None,
            journal=[],
        )
        return WorkflowResult(ok=False, status=status, error=error)

    def __repr__(self) -> str:
        return f"WorkflowsHandle({self.execution_id!r})"


def _engine_error(error: Any) -> tuple[str, str]:
    # Older type definitions say a string, newer ones {name, message}.
    if isinstance(error, dict):
        return str(error.get("name") or "Error"), str(error.get("message") or "")
    return "Error", str(error)


def _failure(error: Any) -> dict[str, Any] | None:
    """The structured failure ``run`` left in the engine's error (see ``InstanceFailure``),
    with the same fields as the Durable Object backend's result; None for an error the
    engine made itself."""
    if error is None:
        return None
    return decode_failure(_engine_error(error)[1])


def _error_dict(error: Any) -> dict[str, Any]:
    failure = _failure(error)
    if failure is not None and isinstance(failure.get("error"), dict):
        return dict(failure["error"])
    name, message = _engine_error(error)
    return {"code": name, "name": name, "message": message}


class WorkflowsClient(DurableWorkflows):
    """Start and look up instances of one Workflows binding (``env.ORDER_FLOW``).

    The binding is bound to one definition, so ``workflow`` serves only to
    validate the input against its ``input_type``.
    """

    def __init__(self, binding: Any) -> None:
        super().__init__(_NoNamespace())
        self.binding = binding

    async def run(
        self,
        workflow: AnyWorkflow | str,
        input: Any = None,
        *,
        execution_id: str | None = None,
        wait: bool = True,
        version: str | None = None,
    ) -> ExecutionHandle:
        """Create the instance ``execution_id`` (a duplicate id returns the existing one).

        ``wait`` is accepted for compatibility; the engine always runs the
        instance on its own.
        """
        from ..cloudflare._workers import to_js

        _no_version(version)
        if isinstance(workflow, Workflow) and workflow.input_type is not None:
            input = validate(workflow.input_type, input, what="workflow input")
        params = json_output(input, what="workflow input")
        execution_id = str(uuid.uuid4()) if execution_id is None else execution_id
        if not isinstance(execution_id, str) or not _INSTANCE_ID.fullmatch(execution_id):
            raise InvalidRequestError(
                "a Workflows instance id is 1-100 characters of letters, digits, '-' and '_' "
                f"(not starting with '-'), got {execution_id!r}",
                execution_id=execution_id if isinstance(execution_id, str) else repr(execution_id),
                field="execution_id",
            )
        options: dict[str, Any] = {"id": execution_id}
        if params is not None:
            options["params"] = params
        try:
            instance = await _settle(self.binding.create(to_js(options)))
        except Exception as exc:
            # A duplicate id is refused: if the instance exists, this is that start.
            existing = WorkflowsHandle(self.binding, execution_id, created=False)
            try:
                await existing.engine_status()
            except WorkflowError:
                raise TransportError(f"could not create Workflows instance {execution_id!r}: {exc}") from None
            return existing
        handle = WorkflowsHandle(self.binding, execution_id, created=True)
        handle._instance = instance
        return handle

    async def start(
        self,
        workflow: AnyWorkflow | str,
        input: Any = None,
        *,
        execution_id: str | None = None,
        version: str | None = None,
    ) -> ExecutionHandle:
        return await self.run(workflow, input, execution_id=execution_id, wait=False, version=version)

    def execution(self, execution_id: str) -> ExecutionHandle:
        if not isinstance(execution_id, str) or not execution_id:
            raise InvalidRequestError("execution_id must be a non-empty string")
        return WorkflowsHandle(self.binding, execution_id)

    async def restart(
        self,
        execution_id: str,
        *,
        from_step: str | None = None,
        kind: str = "step",
        occurrence: int = 1,
        new_execution_id: str | None = None,
        input: Any = None,
        wait: bool = True,
        version: str | None = None,
    ) -> ExecutionHandle:
        """Restart the instance itself, under the same id and input: from its beginning,
        or from the ``occurrence``-th ``kind`` named ``from_step`` (earlier steps keep
        their cached results)."""
        _no_version(version)
        if new_execution_id is not None or input is not None:
            raise InvalidRequestError(
                "Cloudflare Workflows restarts an instance in place, under the same id and input: "
                "new_execution_id and input are not supported"
            )
        handle = WorkflowsHandle(self.binding, execution_id)
        await handle.restart(from_step, kind=kind, occurrence=occurrence)
        return handle


def _no_version(version: str | None) -> None:
    if version is not None:
        raise InvalidRequestError(
            "a Workflows binding runs the code deployed under it: version= is for the Durable Object backend"
        )


# The client's plug-in hook: create_durable_workflow serves Workflows bindings with this client.
register_backend("cf-workflows", is_workflows_binding, WorkflowsClient)


__all__ = ["WorkflowsClient", "WorkflowsHandle", "is_workflows_binding"]
