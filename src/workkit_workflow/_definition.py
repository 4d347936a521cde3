"""Workflow definitions: the builder, the code-first decorator, and the registry.

A definition is code, not data: it lives at module level in the Worker and
registers itself by name, so a Durable Object that starts cold finds the
definition for an execution it has never seen in memory. The builder API is
sugar over the code-first form: both run through the same engine.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._durations import Duration, to_instant, to_seconds
from ._journal import encode_value, is_unicode
from ._retry import RetryPolicy
from ._values import to_data
from .errors import DefinitionError, SerializationError, UnknownWorkflowError

if TYPE_CHECKING:
    from ._context import CompensationContext, StepContext, WorkflowContext

StepHandler = Callable[[Any, Any, "StepContext"], Any]
"""A builder step: ``handler(input, prev, ctx)``, sync or async."""
IdempotencyKey = str | Callable[..., str]
CompensationHandler = Callable[["CompensationContext"], Any]
WorkflowFunction = Callable[["WorkflowContext", Any], Awaitable[Any]]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class StepOptions:
    """Per-step settings; ``None`` means "the workflow's"."""

    retry: RetryPolicy | None = None
    timeout: float | None = None
    idempotency_key: Callable[[StepContext], str] | str | None = None
    output: Any = None


DEFAULT_OPTIONS = StepOptions()


def make_options(
    *,
    retry: RetryPolicy | None,
    timeout: Duration | None,
    idempotency_key: Callable[[StepContext], str] | str | None,
    output: Any,
    where: str,
) -> StepOptions:
    if retry is None and timeout is None and idempotency_key is None and output is None:
        return DEFAULT_OPTIONS
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise DefinitionError(f"{where}: retry must be a RetryPolicy, got {type(retry).__name__}")
    if idempotency_key is not None and not (isinstance(idempotency_key, str) or callable(idempotency_key)):
        raise DefinitionError(f"{where}: idempotency_key must be a string or a callable")
    if isinstance(idempotency_key, str) and not (idempotency_key and is_unicode(idempotency_key)):
        raise DefinitionError(f"{where}: idempotency_key must be non-empty, valid Unicode text")
    seconds = None if timeout is None else to_seconds(timeout, what=f"{where}: timeout")
    return StepOptions(retry=retry, timeout=seconds, idempotency_key=idempotency_key, output=output)


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(f"{what} name must be a non-empty string, got {name!r}")
    if len(name) > 256:
        raise DefinitionError(f"{what} name is longer than 256 characters")
    if not is_unicode(name):
        # Names are journaled; a lone surrogate could never be stored.
        raise DefinitionError(f"{what} name {name!r} holds a lone surrogate (not valid Unicode)")
    return name


def check_default(default: Any, where: str) -> Any:
    """A wait's default is journaled when the wait times out: refuse one that
    could never be stored now, not when the timeout fires."""
    if default is MISSING:
        return default
    try:
        encode_value(to_data(default, what=f"{where}: default"), what=f"{where}: default")
    except SerializationError as exc:
        raise DefinitionError(exc.message) from None
    return default


@dataclass(frozen=True)
class _BuilderOp:
    kind: str  # step | sleep | sleep_until | wait
    name: str
    handler: StepHandler | None = None
    options: StepOptions = StepOptions()
    duration: float | None = None
    when: float | None = None
    event_type: str | None = None
    timeout: float | None = None
    default: Any = MISSING


class Workflow:
    """A named, durable workflow.

    Build it step by step::

        order_flow = (
            Workflow("order-flow", retry=RetryPolicy(max_attempts=3), timeout="10m")
            .step("reserve-inventory", reserve)
            .step("charge-card", charge, idempotency_key=lambda input, ctx: f"charge:{input['order_id']}")
            .on_failure(compensate)
        )

    or write it as one async function with :func:`workflow`. Each builder step
    gets ``(input, prev, ctx)``: the workflow input, the previous step's output
    and a :class:`~workkit_workflow.StepContext`. The result of the workflow is
    the last step's output.
    """

    def __init__(
        self,
        name: str,
        fn: WorkflowFunction | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: Duration | None = None,
        input_type: Any = None,
        register: bool = True,
    ) -> None:
        self.name = check_name(name, "workflow")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise DefinitionError("retry must be a RetryPolicy")
        self.retry: RetryPolicy = retry or RetryPolicy()
        self.timeout: float | None = (
            None if timeout is None else to_seconds(timeout, what=f"workflow {name!r}: timeout")
        )
        self.input_type = input_type
        self._fn = fn
        self._ops: list[_BuilderOp] = []
        self._compensation: CompensationHandler | None = None
        if register:
            REGISTRY.register(self)

    # -- builder -----------------------------------------------------------

    def step(
        self,
        name: str,
        handler: StepHandler,
        *,
        retry: RetryPolicy | None = None,
        timeout: Duration | None = None,
        idempotency_key: IdempotencyKey | None = None,
        output: Any = None,
    ) -> Workflow:
        """Append a step. ``idempotency_key`` is a string or ``(input, ctx) -> str``."""
        self._check_builder()
        check_name(name, "step")
        if not callable(handler):
            raise DefinitionError(f"step {name!r}: handler must be callable")
        key: Callable[[StepContext], str] | str | None = None
        if isinstance(idempotency_key, str) or idempotency_key is None:
            key = idempotency_key
        elif callable(idempotency_key):
            user_key = idempotency_key
            key = lambda ctx: user_key(ctx.input, ctx)  # noqa: E731
        options = make_options(
            retry=retry, timeout=timeout, idempotency_key=key, output=output, where=f"step {name!r}"
        )
        return self._append(_BuilderOp("step", name, handler=handler, options=options))

    def sleep(self, name: str, duration: Duration) -> Workflow:
        """Append a durable sleep: the execution parks and an alarm wakes it."""
        self._check_builder()
        seconds = to_seconds(duration, what=f"sleep {name!r}")
        return self._append(_BuilderOp("sleep", check_name(name, "sleep"), duration=seconds))

    def sleep_until(self, name: str, when: datetime | float) -> Workflow:
        """Append a durable sleep until an instant (aware datetime or epoch seconds)."""
        self._check_builder()
        instant = to_instant(when, what=f"sleep_until {name!r}")
        return self._append(_BuilderOp("sleep_until", check_name(name, "sleep"), when=instant))

    def wait_for_event(
        self,
        name: str,
        event_type: str,
        *,
        timeout: Duration | None = None,
        default: Any = MISSING,
    ) -> Workflow:
        """Append a wait for an external event; its payload becomes ``prev`` of the next step.

        Without ``default``, a timeout fails the step (and compensation runs).
        """
        self._check_builder()
        check_name(event_type, "event type")
        seconds = None if timeout is None else to_seconds(timeout, what=f"wait {name!r}: timeout")
        op = _BuilderOp(
            "wait",
            check_name(name, "wait"),
            event_type=event_type,
            timeout=seconds,
            default=check_default(default, f"wait {name!r}"),
        )
        return self._append(op)

    def on_failure(self, handler: CompensationHandler) -> Workflow:
        """Set the compensation handler: runs once when the execution fails for good or is cancelled."""
        if not callable(handler):
            raise DefinitionError("on_failure handler must be callable")
        self._compensation = handler
        return self

    def _check_builder(self) -> None:
        if self._fn is not None:
            raise DefinitionError(f"workflow {self.name!r} is code-first; it has no builder steps")

    def _append(self, op: _BuilderOp) -> Workflow:
        if any(existing.name == op.name for existing in self._ops):
            raise DefinitionError(f"workflow {self.name!r} already has a step named {op.name!r}")
        self._ops.append(op)
        return self

    # -- engine side ----------------------------------------------------------

    @property
    def compensation(self) -> CompensationHandler | None:
        return self._compensation

    @property
    def step_names(self) -> list[str]:
        return [op.name for op in self._ops]

    async def run(self, ctx: WorkflowContext, input: Any) -> Any:
        """Drive the workflow body over ``ctx`` (the engine calls this on every replay)."""
        if self._fn is not None:
            return await self._fn(ctx, input)
        if not self._ops:
            raise DefinitionError(f"workflow {self.name!r} has no steps")
        prev: Any = None
        for op in self._ops:
            if op.kind == "step":
                assert op.handler is not None
                prev = await ctx._builder_step(op.name, op.handler, prev, op.options)
            elif op.kind == "sleep":
                await ctx.sleep(op.name, op.duration or 0.0)
            elif op.kind == "sleep_until":
                await ctx.sleep_until(op.name, op.when or 0.0)
            else:
                assert op.event_type is not None
                prev = await ctx.wait_for_event(
                    op.name, op.event_type, timeout=op.timeout, default=op.default
                )
        return prev

    def as_cloudflare_workflow(
        self, class_name: str | None = None, *, native_retries: bool | None = None
    ) -> type:
        """This workflow as a Cloudflare Workflows entry point (a ``WorkflowEntrypoint``
        subclass). In the Worker's entry module, subclass it under wrangler's
        ``class_name`` (``class OrderFlow(order_flow.as_cloudflare_workflow()): pass``)
        or bind it to that name: ``OrderFlow = order_flow.as_cloudflare_workflow("OrderFlow")``."""
        from ._cfworkflows import entrypoint_class

        return entrypoint_class(self, class_name, native_retries=native_retries)

    def __repr__(self) -> str:
        kind = "code-first" if self._fn is not None else f"{len(self._ops)} steps"
        return f"Workflow({self.name!r}, {kind})"


def workflow(
    name: str,
    *,
    retry: RetryPolicy | None = None,
    timeout: Duration | None = None,
    input_type: Any = None,
    register: bool = True,
) -> Callable[[WorkflowFunction], Workflow]:
    """Define a code-first workflow: one async function over a :class:`WorkflowContext`::

        @workflow("approval")
        async def approval(ctx, input):
            quote = await ctx.step("quote", make_quote, input)
            decision = await ctx.wait_for_event("decision", "approved", timeout="7d")
            await ctx.sleep("cool-down", "1h")
            return await ctx.step("ship", ship, quote, decision)

    Use ``.on_failure(handler)`` on the result to add compensation.
    """

    def decorate(fn: WorkflowFunction) -> Workflow:
        if not inspect.iscoroutinefunction(fn):
            raise DefinitionError(f"workflow {name!r}: the function must be `async def`")
        return Workflow(name, fn, retry=retry, timeout=timeout, input_type=input_type, register=register)

    return decorate


class Registry:
    """Workflow definitions by name. A later definition with the same name replaces
    the earlier one (module reloads and tests redefine freely)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Workflow] = {}

    def register(self, definition: Workflow) -> None:
        self._by_name[definition.name] = definition

    def get(self, name: str) -> Workflow:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise UnknownWorkflowError(
                f"no workflow named {name!r} is registered in this Worker (known: {known}); "
                "import the module that defines it in the Worker's entry point",
                workflow=name,
            ) from None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def unregister(self, name: str) -> None:
        self._by_name.pop(name, None)


REGISTRY = Registry()
"""The process-wide registry that ``WorkflowExecutionDO`` resolves names in."""
