"""The run adapter: a phase's durable operations on the engine's ``step`` object."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, cast

from ..cloudflare._workers import (
    sdk_non_retryable_error,
)
from ..definitions._retry import RetryPolicy
from ..definitions._steps import _CURRENT_STEP, MAX_KEY_CHARS, MISSING, StepContext, StepOptions, plain_call
from ..definitions._values import to_data, validate
from ..engine import _journal as jn
from ..errors import (
    DefinitionError,
    SerializationError,
    StepFailedError,
    WaitTimeoutError,
)
from ._mapping import (
    FAILURE_SUFFIX,
    MAX_STEP_NAME,
    MAX_WAIT,
    _plain,
    format_duration,
    is_engine_abort,
    json_output,
    step_config,
)
from ._mapping import (
    engine_attempt as attempt_of,
)

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
        self.undoable: dict[int, tuple[str, str, Any, StepOptions]] = {}
        """Completed steps with an undo: ``op -> (name, label, output, options)`` (see ``_undo``)."""
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
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...] | None, options: StepOptions
    ) -> Coroutine[Any, Any, Any]:
        op = self._next_op
        self._next_op += 1
        return self._step(op, self._label(name), name, plain_call(fn, args), options)

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
            if options.undo is not None:
                self.undoable[op] = (name, label, output, options)
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
            engine_attempt = attempt_of(ctx)
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
        if len(key) > MAX_KEY_CHARS:
            raise SerializationError(
                f"idempotency_key of step {ctx.step!r} must return at most {MAX_KEY_CHARS} characters, "
                f"got {len(key)}"
            )
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

    def set_state(self, key: str, text: str) -> Coroutine[Any, Any, None]:
        raise DefinitionError(
            f"ctx.set_state({key!r}, ...) is not available on the Cloudflare Workflows backend: "
            "it has no way for a caller to read an instance's values while it runs; "
            "run this workflow on the Durable Object backend to use live state",
            backend="cloudflare-workflows",
        )

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

    # -- child workflows ----------------------------------------------------------

    def child(
        self, name: str, workflow: str, input: Any, execution_id: str | None
    ) -> Coroutine[Any, Any, Any]:
        return self._child(name)

    async def _child(self, name: str) -> Any:
        # A Workflows instance cannot be woken by another one's completion without
        # an event the child sends by hand: the Durable Object backend has children.
        raise DefinitionError(
            f"child workflow {name!r}: the Cloudflare Workflows backend has no child workflows; "
            "run this workflow on the Durable Object backend (WorkflowExecutionDO), or start the "
            "other instance in a step and wait for an event it sends",
            code="unsupported_on_backend",
        )
