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

from ..errors import DefinitionError, UnknownWorkflowError, VersionUnavailableError
from . import _steps
from ._durations import Duration, to_instant, to_seconds
from ._limit import Limit
from ._retry import DEFAULT_MAX_RECOVERIES, RetryPolicy, check_max_recoveries
from ._steps import DEFAULT_OPTIONS, MISSING, StepOptions, check_default, check_name, make_options
from ._undo import UndoHandler, UndoSpec, make_undo
from ._versions import DEFAULT_VERSION, check_version

if TYPE_CHECKING:
    from ._contexts import CompensationContext, WorkflowContext
    from ._steps import StepContext, StepHandler

IdempotencyKey = str | Callable[..., str]
CompensationHandler = Callable[["CompensationContext"], Any]
WorkflowFunction = Callable[["WorkflowContext", Any], Awaitable[Any]]


@dataclass(frozen=True)
class _BuilderOp:
    kind: str  # step | sleep | sleep_until | wait | child
    name: str
    handler: StepHandler | None = None
    options: StepOptions = DEFAULT_OPTIONS
    duration: float | None = None
    when: float | None = None
    event_type: str | None = None
    timeout: float | None = None
    default: Any = MISSING
    child: str | None = None
    """A child operation's workflow name."""
    child_input: Callable[[Any, Any], Any] | None = None
    """A child operation's ``(input, prev) -> child input``."""


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

    ``version`` (default ``"1"``) labels this definition: several versions of
    one name can be registered side by side; a new execution runs the newest
    (the one registered last) and keeps its version for its whole life.
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
        version: str = DEFAULT_VERSION,
        retention: Duration | None = None,
        concurrency: Limit | None = None,
        max_recoveries: int | None = DEFAULT_MAX_RECOVERIES,
    ) -> None:
        self.name = check_name(name, "workflow")
        self.version = check_version(version, f"workflow {name!r}")
        if concurrency is not None and not isinstance(concurrency, Limit):
            raise DefinitionError("concurrency must be a Limit")
        self.concurrency = concurrency
        """Per-key concurrency limit (``engine._limits``), if any."""
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise DefinitionError("retry must be a RetryPolicy")
        self.retry: RetryPolicy = retry or RetryPolicy()
        self.timeout: float | None = (
            None if timeout is None else to_seconds(timeout, what=f"workflow {name!r}: timeout")
        )
        self.retention: float | None = (
            None if retention is None else to_seconds(retention, what=f"workflow {name!r}: retention")
        )
        """How long a finished execution keeps its storage (None: the execution object's default)."""
        self.max_recoveries = check_max_recoveries(max_recoveries, name)  # engine._recoveries
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
        undo: UndoHandler | None = None,
        undo_retry: RetryPolicy | None = None,
        undo_timeout: Duration | None = None,
    ) -> Workflow:
        """Append a step. ``idempotency_key`` is a string or ``(input, ctx) -> str``.

        ``undo(info: StepUndo)`` undoes the step if the execution then fails or is
        cancelled: last started first, with ``undo_retry`` (default: the
        workflow's policy) and ``undo_timeout``, before ``on_failure``.
        """
        self._check_builder()
        check_name(name, "step")
        where = f"step {name!r}"
        spec = make_undo(undo, retry=undo_retry, timeout=undo_timeout, where=where, by_name=False)
        if not callable(handler):
            raise DefinitionError(f"step {name!r}: handler must be callable")
        key: Callable[[StepContext], str] | str | None = None
        if isinstance(idempotency_key, str) or idempotency_key is None:
            key = idempotency_key
        elif callable(idempotency_key):
            user_key = idempotency_key
            key = lambda ctx: user_key(ctx.input, ctx)  # noqa: E731
        options = make_options(
            retry=retry, timeout=timeout, idempotency_key=key, output=output, where=where, undo=spec
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
        seconds = None if timeout is None else to_seconds(timeout, what=f"wait {name!r}: timeout")
        op = _BuilderOp(
            "wait",
            check_name(name, "wait"),
            event_type=_steps.check_event_type(event_type),
            timeout=seconds,
            default=check_default(default, f"wait {name!r}"),
        )
        return self._append(op)

    def child(
        self, name: str, workflow: Workflow | str, input: Callable[[Any, Any], Any] | None = None
    ) -> Workflow:
        """Append a child workflow (see ``WorkflowContext.child``); its result becomes
        ``prev`` of the next step. ``input(input, prev)`` makes the child's input (default:
        this workflow's input); it runs on every replay, so keep it a pure function."""
        self._check_builder()
        target = workflow.name if isinstance(workflow, Workflow) else workflow
        check_name(target, "child workflow")
        if input is not None and not callable(input):
            raise DefinitionError(f"child {name!r}: input must be callable as input(input, prev)")
        return self._append(_BuilderOp("child", check_name(name, "child"), child=target, child_input=input))

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

    def undo_for(self, step: str) -> UndoSpec | None:
        """The undo a builder step declares (code-first undos are found by name)."""
        return next((op.options.undo for op in self._ops if op.name == step and op.kind == "step"), None)

    @property
    def step_names(self) -> list[str]:
        return [op.name for op in self._ops]

    def run(self, ctx: WorkflowContext, input: Any) -> Awaitable[Any]:
        """Drive the workflow body over ``ctx`` (the engine calls this on every replay).

        A code-first body's own coroutine is returned, not awaited in another one: a frame
        less for every execution in flight."""
        if self._fn is not None:
            return self._fn(ctx, input)
        return self._run_ops(ctx, input)

    async def _run_ops(self, ctx: WorkflowContext, input: Any) -> Any:
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
            elif op.kind == "child":
                child_input = input if op.child_input is None else op.child_input(input, prev)
                prev = await ctx.child(op.child, child_input, name=op.name)
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
        return exporter(CLOUDFLARE_WORKFLOWS)(self, class_name, native_retries=native_retries)

    def __repr__(self) -> str:
        kind = "code-first" if self._fn is not None else f"{len(self._ops)} steps"
        return f"Workflow({self.name!r}, version={self.version!r}, {kind})"


def workflow(
    name: str,
    *,
    retry: RetryPolicy | None = None,
    timeout: Duration | None = None,
    input_type: Any = None,
    register: bool = True,
    version: str = DEFAULT_VERSION,
    retention: Duration | None = None,
    concurrency: Limit | None = None,
    max_recoveries: int | None = DEFAULT_MAX_RECOVERIES,
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
        return Workflow(
            name,
            fn,
            retry=retry,
            timeout=timeout,
            input_type=input_type,
            register=register,
            version=version,
            retention=retention,
            concurrency=concurrency,
            max_recoveries=max_recoveries,
        )

    return decorate


class Registry:
    """Workflow definitions by name and version.

    The *newest* version of a name is the one registered last. Registering a
    name and version again replaces that definition and makes it the newest
    (module reloads and tests redefine freely)."""

    def __init__(self) -> None:
        # name -> version -> definition; each inner dict is in registration order.
        self._by_name: dict[str, dict[str, Workflow]] = {}

    def register(self, definition: Workflow) -> None:
        versions = self._by_name.setdefault(definition.name, {})
        versions.pop(definition.version, None)
        versions[definition.version] = definition

    def get(self, name: str, version: str | None = None) -> Workflow:
        """The definition of ``name`` in ``version``, or its newest without one.

        :class:`UnknownWorkflowError` when no version of ``name`` is registered,
        :class:`VersionUnavailableError` (a subclass) when others are."""
        versions = self._by_name.get(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise UnknownWorkflowError(
                f"no workflow named {name!r} is registered in this Worker (known: {known}); "
                "import the module that defines it in the Worker's entry point",
                workflow=name,
            )
        if version is None:
            return next(reversed(versions.values()))
        try:
            return versions[version]
        except KeyError:
            deployed = list(versions)
            raise VersionUnavailableError(
                f"workflow {name!r} has no version {version!r} in this Worker "
                f"(deployed: {', '.join(map(repr, deployed))})",
                workflow=name,
                version=version,
                deployed=deployed,
            ) from None

    def names(self) -> list[str]:
        return sorted(name for name, versions in self._by_name.items() if versions)

    def versions(self, name: str) -> list[str]:
        """The registered versions of ``name``, oldest registration first (the last is the newest)."""
        return list(self._by_name.get(name, {}))

    def unregister(self, name: str, version: str | None = None) -> None:
        """Remove ``version`` of ``name``, or every version of it."""
        if version is None:
            self._by_name.pop(name, None)
            return
        versions = self._by_name.get(name, {})
        versions.pop(version, None)
        if not versions:
            self._by_name.pop(name, None)


REGISTRY = Registry()
"""The process-wide registry that ``WorkflowExecutionDO`` resolves names in."""

Exporter = Callable[..., type]
"""Turns a :class:`Workflow` into another engine's entry point: ``exporter(workflow, *args, **options)``."""

CLOUDFLARE_WORKFLOWS = "cloudflare-workflows"

_EXPORTERS: dict[str, Exporter] = {}


def register_exporter(target: str, export: Exporter) -> None:
    """Plug-in hook for backends: the definitions never import a backend; a backend
    registers its exporter here when it is imported (``workkit_workflow/__init__``
    imports every backend it ships)."""
    _EXPORTERS[target] = export


def exporter(target: str) -> Exporter:
    try:
        return _EXPORTERS[target]
    except KeyError:
        raise DefinitionError(f"no exporter for {target!r} is registered; import its backend") from None
