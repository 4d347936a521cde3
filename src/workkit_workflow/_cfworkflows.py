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

import asyncio
import inspect
import json
import logging
import math
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from . import _journal as jn
from ._cloudflare import (
    json_to_js,
    rejection_with,
    sdk_has_native_non_retryable,
    sdk_non_retryable_error,
    to_py,
    workflow_entrypoint_base,
)
from ._context import _CURRENT_STEP, CompensationContext, StepContext, WorkflowContext
from ._definition import MISSING, StepOptions, Workflow
from ._journal import Status
from ._retry import NO_RETRY, RetryPolicy
from ._values import to_data, validate
from .errors import (
    SerializationError,
    StepFailedError,
    TransportError,
    WaitTimeoutError,
)

if TYPE_CHECKING:
    from ._run import PhaseRun

log = logging.getLogger("workkit_workflow")

AnyWorkflow: TypeAlias = "Workflow"  # type: ignore[type-arg]
"""A definition of any input type (``Workflow`` was generic when this was written)."""

MAX_STEP_OUTPUT = 1 << 20
"""The engine's limit on one step's result (and on an event payload): 1 MiB."""
MAX_STEP_NAME = 256
MAX_WAIT = "365 days"
"""What an unbounded ``wait_for_event`` asks the engine for (its default is 24 hours)."""
COMPENSATION_PREFIX = "compensation: "
FAILURE_SUFFIX = " (failure)"

# -- mapping: durations, retry policies, statuses ------------------------------------


def format_duration(seconds: float) -> str:
    """A duration as the engine's string form (``"10 seconds"``), never a bare number.

    The engine's duration strings have whole units only, so a fraction of a
    second rounds *up* (a wait is never shorter than asked).
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be finite and non-negative, got {seconds!r}")
    whole = math.ceil(seconds - 1e-9)
    return "1 second" if whole == 1 else f"{whole} seconds"


def step_config(policy: RetryPolicy, timeout: float | None, *, native_retries: bool) -> dict[str, Any]:
    """The ``step.do`` config for a retry policy and a per-attempt timeout.

    ``limit`` counts retries after the first attempt. With ``native_retries``
    off (old SDKs), the engine makes one attempt and this module retries.
    """
    limit = policy.max_attempts - 1 if native_retries else 0
    retries: dict[str, Any] = {
        "limit": limit,
        "delay": format_duration(policy.initial_delay),
        "backoff": "constant" if policy.backoff_multiplier == 1.0 else "exponential",
    }
    config: dict[str, Any] = {"retries": retries}
    if timeout is not None:
        config["timeout"] = format_duration(max(timeout, 1.0))
    return config


STATUS_MAP: dict[str, Status] = {
    "queued": "pending",
    "unknown": "pending",
    "running": "running",
    "waitingForPause": "running",
    "waiting": "waiting",
    "paused": "waiting",
    "complete": "completed",
    "errored": "failed",
    "terminated": "cancelled",
}
"""Engine instance status → ours. ``waiting`` covers both a sleep and an event wait
(the engine does not say which); ``paused`` waits for an operator's ``resume``."""

TERMINAL_ENGINE = frozenset({"complete", "errored", "terminated"})


def map_status(engine_status: str) -> Status:
    try:
        return STATUS_MAP[engine_status]
    except KeyError:
        raise TransportError(f"the Workflows engine reported an unknown status {engine_status!r}") from None


def json_output(value: Any, *, what: str, limit: int = MAX_STEP_OUTPUT) -> Any:
    """``value`` as plain JSON data (tuples become lists) within the engine's size limit."""
    text = jn.encode_value(to_data(value), what=what)
    size = len(text.encode())
    if size > limit:
        raise SerializationError(
            f"{what} is {size} bytes as JSON; Cloudflare Workflows stores at most {limit} bytes per step",
            what=what,
            size=size,
            limit=limit,
        )
    return jn.loads(text)


# -- the SDK (its JS-facing parts live in the Cloudflare adapter) --------------------------


def _plain(value: Any) -> Any:
    value = to_py(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# -- the run adapter ----------------------------------------------------------------------------


class EngineRun:
    """Runs a phase's durable operations on the engine's ``step`` object.

    It has the three methods :class:`WorkflowContext` calls on the DO engine's
    ``PhaseRun`` (``step``, ``sleep``, ``wait``), so the definition's code is
    the same. Operation names are made unique per occurrence *when called*
    (``charge``, ``charge #2``...), in call order, which is deterministic, so
    ``asyncio.gather`` fan-out never shares a name.
    """

    def __init__(
        self,
        step: Any,
        *,
        execution_id: str,
        workflow: str,
        input: Any,
        retry: RetryPolicy,
        native_retries: bool,
        prefix: str = "",
    ) -> None:
        self.engine = step
        self.execution_id = execution_id
        self.workflow = workflow
        self.input = input
        self.retry = retry
        self.native_retries = native_retries
        self.prefix = prefix
        self._outputs: dict[int, tuple[str, Any]] = {}
        self._next_op = 0
        self._running = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._seen: dict[str, int] = {}
        self._errors: dict[str, dict[str, Any]] = {}
        self._attempts: dict[str, int] = {}

    def _label(self, name: str) -> str:
        n = self._seen.get(name, 0) + 1
        self._seen[name] = n
        label = self.prefix + (name if n == 1 else f"{name} #{n}")
        if len(label) + len(FAILURE_SUFFIX) > MAX_STEP_NAME:
            raise SerializationError(
                f"operation name {label!r} is too long for Cloudflare Workflows "
                f"(at most {MAX_STEP_NAME - len(FAILURE_SUFFIX)} characters here)"
            )
        return label

    # -- steps ---------------------------------------------------------------

    @property
    def outputs(self) -> dict[str, Any]:
        """Outputs of the steps that completed, by name, in call order (for compensation)."""
        return {name: output for _, (name, output) in sorted(self._outputs.items())}

    async def settle(self) -> None:
        """Wait for the steps still running (siblings of a failed ``gather`` branch)."""
        while self._running:
            self._quiet.clear()
            await self._quiet.wait()

    def step(
        self, name: str, call: Callable[[StepContext], Any], options: StepOptions
    ) -> Coroutine[Any, Any, Any]:
        op = self._next_op
        self._next_op += 1
        return self._step(op, self._label(name), name, call, options)

    async def _step(
        self, op: int, label: str, name: str, call: Callable[[StepContext], Any], options: StepOptions
    ) -> Any:
        self._running += 1
        try:
            return await self._step_body(op, label, name, call, options)
        finally:
            self._running -= 1
            if not self._running:
                self._quiet.set()

    async def _step_body(
        self, op: int, label: str, name: str, call: Callable[[StepContext], Any], options: StepOptions
    ) -> Any:
        policy = options.retry or self.retry
        attempt = 1
        current = label
        while True:
            try:
                output = await self._attempt(current, label, name, call, options, policy, attempt)
            except Exception as exc:
                if is_engine_abort(exc):
                    raise
                error = await self._failure_record(current, exc)
                retry_left = attempt < policy.max_attempts
                if self.native_retries or not error.get("retryable") or not retry_left:
                    raise StepFailedError(
                        f"step {name!r} failed: {error.get('message', '')}",
                        step=name,
                        attempt=int(error.get("attempt") or attempt),
                        error=error,
                    ) from None
                # Old SDK: the engine made one attempt; wait durably, then the next.
                delay = policy.base_delay(attempt)
                if delay > 0:
                    await self.engine.sleep(f"{label} (retry {attempt})", format_duration(delay))
                attempt += 1
                current = f"{label} (attempt {attempt})"
                continue
            self._outputs[op] = (name, output)
            return validate(options.output, output, what=f"output of {name!r}")

    async def _attempt(
        self,
        current: str,
        label: str,
        name: str,
        call: Callable[[StepContext], Any],
        options: StepOptions,
        policy: RetryPolicy,
        first_attempt: int,
    ) -> Any:
        calls = 0
        self._attempts[current] = first_attempt - 1
        key_cache: list[str] = []

        async def callback(ctx: Any = None) -> Any:
            nonlocal calls
            calls += 1
            engine_attempt = _engine_attempt(ctx)
            attempt = first_attempt + (engine_attempt or calls) - 1
            self._attempts[current] = attempt
            started = time.time()
            token = None
            try:
                if not key_cache:
                    bare = StepContext(self.execution_id, self.workflow, name, attempt, "", self.input)
                    key_cache.append(self._idempotency_key(label, options, bare))
                step_ctx = StepContext(
                    self.execution_id, self.workflow, name, attempt, key_cache[0], self.input
                )
                token = _CURRENT_STEP.set(step_ctx)
                value = call(step_ctx)
                if inspect.isawaitable(value):
                    value = await value
                return json_output(value, what=f"output of step {name!r}")
            except Exception as exc:
                retryable = jn.is_retryable(exc, policy.non_retryable) and attempt < policy.max_attempts
                self._errors[current] = dict(
                    jn.serialize_error(
                        exc,
                        attempt=attempt,
                        started_at=started,
                        finished_at=time.time(),
                        retryable=retryable,
                    )
                )
                if not jn.is_retryable(exc, policy.non_retryable) and self.native_retries:
                    raise sdk_non_retryable_error()(str(exc) or type(exc).__name__) from exc
                raise
            finally:
                if token is not None:
                    _CURRENT_STEP.reset(token)

        config = step_config(policy, options.timeout, native_retries=self.native_retries)
        run_step = self.engine.do(current, config=config)(callback)
        return _plain(await run_step())

    def _idempotency_key(self, label: str, options: StepOptions, ctx: StepContext) -> str:
        spec = options.idempotency_key
        if spec is None:
            return f"{self.execution_id}:{label}"
        if isinstance(spec, str):
            return spec
        try:
            key = spec(ctx)
        except Exception as exc:
            raise SerializationError(f"idempotency_key of step {ctx.step!r} raised: {exc!r}") from None
        if not isinstance(key, str) or not key:
            raise SerializationError(f"idempotency_key of step {ctx.step!r} must return a non-empty str")
        return key

    async def _failure_record(self, current: str, exc: Exception) -> dict[str, Any]:
        """Journal the structured error of a step that failed for good.

        The engine replays a failed step's error as a bare message; this step's
        cached output replays the full error (code, retryable, attempt...).
        """
        known = self._errors.pop(current, None)
        attempts = self._attempts.pop(current, 0)

        async def record(ctx: Any = None) -> Any:
            if known is not None:
                return known
            # The engine failed the step itself (a timeout), or a replay lost the memory.
            return {
                "code": "step_failed",
                "message": str(exc) or type(exc).__name__,
                "type": type(exc).__name__,
                "retryable": False,
                "attempt": attempts,
            }

        config = {"retries": {"limit": 0, "delay": "1 second", "backoff": "constant"}}
        run_record = self.engine.do(current + FAILURE_SUFFIX, config=config)(record)
        return cast(dict[str, Any], _plain(await run_record()))

    # -- sleeps and waits -------------------------------------------------------

    def sleep(self, name: str, *, until: float | None, duration: float | None) -> Coroutine[Any, Any, None]:
        return self._sleep(self._label(name), until, duration)

    async def _sleep(self, label: str, until: float | None, duration: float | None) -> None:
        if until is not None:
            # The engine refuses an instant in the past (and a replay after the
            # sleep ended would meet one): such a sleep is over, nothing to journal.
            if until <= time.time():
                return
            await self.engine.sleep_until(label, datetime.fromtimestamp(until, tz=UTC))
            return
        await self.engine.sleep(label, format_duration(duration or 0.0))

    def wait(
        self, name: str, event_type: str, *, timeout: float | None, default: Any
    ) -> Coroutine[Any, Any, Any]:
        return self._wait(self._label(name), name, event_type, timeout, default)

    async def _wait(self, label: str, name: str, event_type: str, timeout: float | None, default: Any) -> Any:
        limit = MAX_WAIT if timeout is None else format_duration(max(timeout, 1.0))
        try:
            event = _plain(await self.engine.wait_for_event(label, event_type, timeout=limit))
        except Exception as exc:
            if is_engine_abort(exc):
                raise
            # The engine's only other failure here is the timeout (replayed as such).
            if default is not MISSING:
                return to_data(default)
            error = dict(
                jn.serialize_error(
                    WaitTimeoutError(f"no {event_type!r} event arrived before the wait's timeout"),
                    attempt=1,
                    started_at=None,
                    finished_at=None,
                    retryable=False,
                )
            )
            raise StepFailedError(
                f"step {name!r} failed: {error['message']}", step=name, attempt=1, error=error
            ) from exc
        return event.get("payload") if isinstance(event, dict) else event


ENGINE_ABORT = "Aborting engine:"
"""How the engine's abort errors begin (terminate, pause, restart, delete...)."""


def is_engine_abort(exc: BaseException) -> bool:
    """Whether ``exc`` is the engine aborting the run (it throws into the pending
    ``step`` call on terminate, pause or restart), not a failure of the workflow.

    The engine itself tells these apart by message only (its ``isAbortError``), so
    this does too: such an error must not count as a step failure, end a wait as
    a timeout, or run compensation.
    """
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) else str(exc)
    return ENGINE_ABORT in text


def _engine_attempt(ctx: Any) -> int | None:
    ctx = _plain(ctx)
    if isinstance(ctx, dict):
        attempt = ctx.get("attempt")
        if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1:
            return attempt
    return None


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
    ctx = WorkflowContext(cast("PhaseRun", main), execution_id, definition.name, value)
    try:
        result = await definition.run(ctx, value)
        return json_output(result, what="workflow result")
    except Exception as exc:
        if definition.compensation is None or is_engine_abort(exc):
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
    assert handler is not None
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
        cast("PhaseRun", run),
        main.execution_id,
        main.workflow,
        input,
        status="failed",
        failed_step=failed_step,
        error=error,
        step_outputs=main.outputs,
    )
    try:
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
    if definition.timeout is not None:
        log.warning(
            "workflow %r has a timeout; Cloudflare Workflows does not enforce it (per-step timeouts apply)",
            definition.name,
        )

    async def run(self: Any, event: Any, step: Any) -> Any:
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


__all__ = [
    "EngineRun",
    "InstanceFailure",
    "decode_failure",
    "entrypoint_class",
    "failure_payload",
    "format_duration",
    "is_engine_abort",
    "json_output",
    "map_status",
    "step_config",
]
