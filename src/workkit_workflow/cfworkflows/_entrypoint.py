"""The Cloudflare Workflows backend: the same definitions on Cloudflare's native engine.

:func:`entrypoint_class` turns a :class:`~workkit_workflow.Workflow` into a
``workers.WorkflowEntrypoint`` subclass. Its ``run(event, step)`` drives the
*same* definition through a :class:`WorkflowContext` whose operations are mapped
onto the engine's ``step`` object by :class:`EngineRun`: a step is a ``step.do``,
a sleep a ``step.sleep``/``step.sleep_until``, a wait a ``step.wait_for_event``.
The engine is the journal: it caches step results by name and per-name count and
replays them when ``run`` starts again. The client half is ``_cfworkflows_client``.

What the engine decides, and how it maps (see "Two backends" in README.md):

* retries: ``RetryPolicy(max_attempts, initial_delay, backoff_multiplier)``
  becomes ``{"retries": {"limit": max_attempts - 1, "delay": "N seconds",
  "backoff": "exponential" | "constant"}}``; the engine doubles the delay, has
  no cap and no jitter.
* a non-retryable error reaches the engine as ``workers.workflows.NonRetryableError``
  (recognised by its class *name* from workers-runtime-sdk 1.9.0 on). On older
  SDKs every step gets ``retries.limit = 0`` and this module drives the attempts
  itself, with a durable ``step.sleep`` between them.
* a step that fails for good is followed by a small "failure record" step whose
  output is the structured error, so a replay sees the same error (the engine
  only replays an error's message).
* compensation (``on_failure``) runs inside ``run`` after a terminal failure, its
  steps journaled like any other; then ``run`` raises :class:`InstanceFailure`,
  whose text carries the structured failure to the client (the engine keeps only
  an error's message): the instance ends ``errored``.
* the engine pauses, restarts and terminates a running instance by throwing its
  own abort error into the pending ``step`` call: that is no failure (no
  compensation), and ``run`` hands that very error back, as the engine expects.
* ``run``'s result is converted to a JS value here: the SDK built into workerd
  hands it to JavaScript as is.

``js``/``pyodide``/``workers`` are imported lazily, only under Pyodide.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from typing import Any

from ..cloudflare._workers import (
    json_to_js,
    once_wrapped_step,
    rejection_with,
    sdk_has_native_non_retryable,
    workflow_entrypoint_base,
)
from ..definitions._contexts import CompensationContext, WorkflowContext
from ..definitions._retry import NO_RETRY
from ..definitions._values import to_data, validate
from ..definitions._workflow import CLOUDFLARE_WORKFLOWS, register_exporter
from ..engine import _journal as jn
from ..errors import (
    DefinitionError,
    StepFailedError,
)
from ._mapping import COMPENSATION_PREFIX, AnyWorkflow, _plain, is_engine_abort, json_output
from ._run import EngineRun
from ._undo import run_undos

log = logging.getLogger("workkit_workflow")

# -- the entry point ------------------------------------------------------------------------------


async def run_definition(
    definition: AnyWorkflow,
    event: Any,
    step: Any,
    *,
    native_retries: bool | None = None,
) -> Any:
    """Drive ``definition`` for one ``run(event, step)`` call of the engine."""
    native = sdk_has_native_non_retryable() if native_retries is None else native_retries
    event = _plain(event) or {}
    execution_id = str(event.get("instanceId") or "")
    value = to_data(event.get("payload"))
    if definition.input_type is not None:
        value = validate(definition.input_type, value, what="workflow input")
    main = EngineRun(
        step,
        execution_id=execution_id,
        workflow=definition.name,
        input=value,
        retry=definition.retry,
        native_retries=native,
    )
    ctx = WorkflowContext(main, execution_id, definition.name, value)
    try:
        result = await definition.run(ctx, value)
        return json_output(result, what="workflow result")
    except Exception as exc:
        # undo: steps with an undo handler need the compensation too.
        if (definition.compensation is None and not main.undoable) or is_engine_abort(exc):
            raise
        failed_step = exc.step if isinstance(exc, StepFailedError) else None
        error = (
            exc.error
            if isinstance(exc, StepFailedError)
            else dict(jn.serialize_error(exc, attempt=0, started_at=None, finished_at=None, retryable=False))
        )
        # Steps still running in other gather branches finish first, so the
        # outputs compensation sees are the same on every replay.
        await main.settle()
        await _compensate(definition, step, main, value, failed_step, error, native)
        raise


async def _compensate(
    definition: AnyWorkflow,
    step: Any,
    main: EngineRun,
    input: Any,
    failed_step: str | None,
    error: dict[str, Any],
    native: bool,
) -> None:
    handler = definition.compensation
    run = EngineRun(
        step,
        execution_id=main.execution_id,
        workflow=main.workflow,
        input=input,
        retry=NO_RETRY,
        native_retries=native,
        prefix=COMPENSATION_PREFIX,
    )
    ctx = CompensationContext(
        run,
        main.execution_id,
        main.workflow,
        input,
        status="failed",
        failed_step=failed_step,
        error=error,
        step_outputs=main.outputs,
    )
    try:
        ctx.undos = await run_undos(definition, run, main, error)
        if handler is None:
            return
        result = handler(ctx)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        # The instance ends errored with the original failure either way.
        log.error("compensation of %s failed: %r", main.execution_id, exc)


def failure_payload(exc: BaseException) -> dict[str, Any]:
    """The structured failure of an instance, as the engine keeps it (see :class:`InstanceFailure`).

    Same fields as the Durable Object backend's ``result().error``: the failed step's
    error ``code``, ``message``, ``failed_step``, ``step_attempt`` and the step's
    serialized ``error``.
    """
    if isinstance(exc, StepFailedError):
        return {
            "code": str(exc.error.get("code") or exc.code),
            "message": str(exc.error.get("message") or exc.message),
            "failed_step": exc.step,
            "step_attempt": exc.attempt,
            "error": exc.error,
        }
    error = dict(jn.serialize_error(exc, attempt=0, started_at=None, finished_at=None, retryable=False))
    return {
        "code": error["code"],
        "message": error["message"],
        "failed_step": None,
        "step_attempt": 0,
        "error": error,
    }


FAILURE_MARK = "workkit_workflow failure: "
"""Starts the text of :class:`InstanceFailure`; the JSON of the failure follows."""


class InstanceFailure(Exception):
    """What ``run`` raises when the definition fails: the structured failure as JSON.

    The engine keeps only an error's name and message, and a Python exception
    reaches it as a ``PythonError`` whose message is the formatted traceback,
    which ends with this exception's text. :func:`decode_failure` finds it there.
    """

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(FAILURE_MARK + jn.dumps(payload))
        self.payload = payload


def decode_failure(message: str) -> dict[str, Any] | None:
    """The failure :class:`InstanceFailure` put into an engine error's message, if any."""
    at = message.rfind(FAILURE_MARK)
    if at < 0:
        return None
    try:
        payload, _ = json.JSONDecoder().raw_decode(message, at + len(FAILURE_MARK))
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("code"), str):
        return None
    return payload


class _EntrypointBase:
    """Keeps the ``workers`` SDK from wrapping an entry point's ``run`` twice.

    The SDK's ``WorkflowEntrypoint.__init_subclass__`` wraps ``run`` (and ``__init__``)
    of every subclass, found by ``getattr``: the built-in SDK of workerd then wraps
    the *inherited*, already wrapped ``run`` of ``class OrderFlow(flow.as_cloudflare_workflow())``
    once more, and every ``step.do`` fails (a step wrapper around a step wrapper).
    Here a subclass keeps the wrapping of its base for what it does not define itself.
    """

    _workkit_entrypoint: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        own = set(cls.__dict__)
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_workkit_entrypoint"):
            return  # the generated class itself: wrapped once, as the SDK intends
        for name in ("run", "__init__"):
            if name not in own and name in cls.__dict__:
                delattr(cls, name)


def entrypoint_class(
    definition: AnyWorkflow,
    class_name: str | None = None,
    *,
    native_retries: bool | None = None,
) -> type:
    """A ``WorkflowEntrypoint`` subclass named ``class_name`` that runs ``definition``.

    The runtime finds the class by its ``__name__`` in the entry module: subclass it
    under wrangler's ``class_name`` (``class OrderFlow(order_flow.as_cloudflare_workflow()): ...``)
    or bind it to a variable of the same name:
    ``OrderFlow = order_flow.as_cloudflare_workflow("OrderFlow")``.
    """
    name = class_name or _class_name(definition.name)
    if not name.isidentifier():
        raise ValueError(f"class_name must be a Python identifier, got {name!r}")
    if getattr(definition, "concurrency", None) is not None:
        # Per-key concurrency limits need a coordinator object per key (engine._limits).
        raise DefinitionError(
            f"workflow {definition.name!r} has a concurrency Limit, which Cloudflare Workflows cannot "
            "express (it has account-level limits only): run it on the Durable Object backend"
        )
    if definition.timeout is not None:
        log.warning(
            "workflow %r has a timeout; Cloudflare Workflows does not enforce it (per-step timeouts apply)",
            definition.name,
        )

    async def run(self: Any, event: Any, step: Any) -> Any:
        # A subclass's own run, wrapped by the SDK too, passes its wrapped step on.
        step = once_wrapped_step(step)
        try:
            output = await run_definition(definition, event, step, native_retries=native_retries)
        except Exception as exc:
            if not is_engine_abort(exc):
                raise InstanceFailure(failure_payload(exc)) from exc
            # The engine tells a pause/terminate/restart from a failure by its own
            # error's message: hand that very error back.
            aborted = rejection_with(exc)
            if aborted is None:
                raise
            return aborted
        # Converted here: the built-in SDK hands run's result to JavaScript as is.
        return json_to_js(output)

    namespace = {
        "run": run,
        "__doc__": f"Cloudflare Workflows entry point of workflow {definition.name!r}.",
        "definition": definition,
        "_workkit_entrypoint": True,
    }
    return type(name, (_EntrypointBase, workflow_entrypoint_base()), namespace)


def _class_name(workflow_name: str) -> str:
    parts = re.split(r"[^0-9a-zA-Z]+", workflow_name)
    name = "".join(p[:1].upper() + p[1:] for p in parts if p)
    if not name or not name[0].isalpha():
        name = "Workflow" + name
    return name


# The definitions' plug-in hook: ``Workflow.as_cloudflare_workflow`` looks this exporter up.
register_exporter(CLOUDFLARE_WORKFLOWS, entrypoint_class)


__all__ = [
    "InstanceFailure",
    "decode_failure",
    "entrypoint_class",
    "failure_payload",
    "run_definition",
]
