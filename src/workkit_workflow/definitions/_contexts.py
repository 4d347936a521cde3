"""The contexts user code receives: per step, per workflow body, per compensation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..errors import DefinitionError
from ._durations import Duration, plain_seconds, to_instant, to_seconds
from ._live_state import state_text
from ._retry import RetryPolicy
from ._steps import (
    DEFAULT_OPTIONS,
    MAX_KEY_CHARS,
    MISSING,
    StepContext,
    StepHandler,
    StepOptions,
    check_default,
    check_event_type,
    check_name,
    keyed_options,
    make_options,
)
from ._undo import UndoHandler, make_undo, undo_input


class Operations(Protocol):
    """The port a context drives its durable operations through: implemented by the
    engine's phase runner and by each backend's run (e.g. Cloudflare Workflows)."""

    def step(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...] | None, options: StepOptions
    ) -> Awaitable[Any]:
        """The step ``name``: its journaled output, else what ``fn(*args)`` returns (a
        code-first step), or with ``args`` None, ``fn(ctx)`` given the attempt's
        :class:`StepContext` (a builder's step). The call is made only when the step
        runs (``PlainCall``), not when the journal answers."""
        ...

    def sleep(self, name: str, *, until: float | None, duration: float | None) -> Awaitable[None]: ...

    def wait(self, name: str, event_type: str, *, timeout: float | None, default: Any) -> Awaitable[Any]: ...

    def set_state(self, key: str, text: str) -> Awaitable[None]: ...

    def child(self, name: str, workflow: str, input: Any, execution_id: str | None) -> Awaitable[Any]: ...


class WorkflowContext:
    """The handle a code-first workflow drives its durable operations through.

    Operations are identified by the order in which the workflow calls them
    (and their names, checked on replay). Only ``await`` these operations (or
    ``asyncio.gather`` over them) in the workflow body: anything else is not
    journaled and runs again on every replay.
    """

    _takes_undo = True
    """Whether ``step(..., undo=)`` is allowed: not in compensation, which nothing undoes."""

    def __init__(self, run: Operations, execution_id: str, workflow: str, input: Any) -> None:
        self._run = run
        self.execution_id = execution_id
        self.workflow = workflow
        self.input = input

    def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
        timeout: Duration | None = None,
        idempotency_key: str | Callable[[StepContext], str] | None = None,
        output: Any = None,
        undo: UndoHandler | None = None,
        undo_retry: RetryPolicy | None = None,
        undo_timeout: Duration | None = None,
    ) -> Awaitable[Any]:
        """Run ``fn(*args)`` as a journaled step and return its output.

        ``fn`` may be sync or async; :func:`current_step` gives it its
        :class:`StepContext`. On replay the journaled output is returned
        without calling ``fn``. ``output`` (a pydantic model or type)
        validates the output on first run and on replay.

        ``undo(info: StepUndo)`` runs if the execution then fails or is
        cancelled (see the README's "Undo handlers"); it must be a module-level
        function, and ``args`` are journaled for it (at most 64 KiB of JSON).
        """
        if not (type(name) is str and name.isascii() and 0 < len(name) <= 256 and not name.isspace()):
            check_name(name, "step")  # the usual name passes ``check_name``'s first test, spelt out
        if (
            retry is None
            and timeout is None
            and output is None
            and undo is None
            and undo_retry is None
            and undo_timeout is None
        ):
            if idempotency_key is None:
                # The usual call: nothing to check, so no message to prepare (the hot path).
                return self._run.step(name, fn, args, DEFAULT_OPTIONS)
            if (
                type(idempotency_key) is str
                and idempotency_key.isascii()
                and 0 < len(idempotency_key) <= MAX_KEY_CHARS
            ):
                options = keyed_options(idempotency_key)  # the next most usual: a key of its own
                return self._run.step(name, fn, args, options)
        where = f"step {name!r}"
        if undo is not None and not self._takes_undo:
            raise DefinitionError(f"{where}: a compensation step cannot have an undo handler")
        spec = make_undo(undo, retry=undo_retry, timeout=undo_timeout, where=where, by_name=True)
        options = make_options(
            retry=retry,
            timeout=timeout,
            idempotency_key=idempotency_key,
            output=output,
            where=where,
            undo=None if spec is None else undo_input(spec, args, where=where),
        )
        return self._run.step(name, fn, args, options)

    def _builder_step(
        self, name: str, handler: StepHandler, prev: Any, options: StepOptions
    ) -> Awaitable[Any]:
        input = self.input
        return self._run.step(name, lambda ctx: handler(input, prev, ctx), None, options)

    def sleep(self, name: str, duration: Duration) -> Awaitable[None]:
        """Sleep durably: the execution parks and an alarm wakes it (at most 365 days)."""
        check_name(name, "sleep")
        seconds = plain_seconds(duration)
        if seconds is None:  # anything but a number of seconds in range: checked, with its message
            seconds = to_seconds(duration, what=f"sleep {name!r}")
        return self._run.sleep(name, until=None, duration=seconds)

    def sleep_until(self, name: str, when: datetime | float) -> Awaitable[None]:
        """Sleep durably until an aware datetime or epoch seconds."""
        check_name(name, "sleep")
        return self._run.sleep(name, until=to_instant(when, what=f"sleep_until {name!r}"), duration=None)

    def wait_for_event(
        self, name: str, event_type: str, *, timeout: Duration | None = None, default: Any = MISSING
    ) -> Awaitable[Any]:
        """Wait durably for an external event of ``event_type`` and return its payload.

        An event sent before the wait is kept and consumed here. Without
        ``default``, a timeout raises :class:`~workkit_workflow.errors.StepFailedError`.
        """
        check_name(name, "wait")
        check_event_type(event_type)
        seconds = None if timeout is None else to_seconds(timeout, what=f"wait {name!r}: timeout")
        if default is not MISSING:  # the message is built only for a default to check
            default = check_default(default, f"wait {name!r}")
        return self._run.wait(name, event_type, timeout=seconds, default=default)

    def child(
        self,
        workflow: Any,
        input: Any = None,
        *,
        execution_id: str | None = None,
        name: str | None = None,
    ) -> Awaitable[Any]:
        """Run another workflow as a child execution, in its own object, and return its result.

        ``workflow`` is a :class:`Workflow` or a registered name. The child's id
        is ``execution_id``, else derived from this execution's id and the
        operation, so a replay never starts a second child. The parent parks
        until the child settles; a child that fails, is cancelled or cannot
        start raises :class:`~workkit_workflow.errors.StepFailedError` (its
        ``error`` holds the child's). Cancelling the parent cancels its running
        children. ``name`` (default: the workflow's name) identifies the
        operation in the journal.
        """
        target = workflow if isinstance(workflow, str) else getattr(workflow, "name", None)
        if not isinstance(target, str):
            raise DefinitionError(f"child workflow must be a Workflow or a workflow name, got {workflow!r}")
        check_name(target, "child workflow")
        op_name = check_name(name if name is not None else target, "child")
        return self._run.child(op_name, target, input, execution_id)

    def set_state(self, key: str, value: Any) -> Awaitable[None]:
        """Publish ``value`` under ``key`` for any caller to read (``handle.state()``).

        Journaled: on replay it writes nothing, and the stored value is readable
        as soon as the call returns. ``value`` must be JSON data (or a pydantic
        model) of at most 128 KiB serialized, else
        :class:`~workkit_workflow.errors.SerializationError`, raised here.
        """
        check_name(key, "state key")
        return self._run.set_state(key, state_text(key, value))


@dataclass(frozen=True)
class InDoubtStep:
    """A step whose attempt started but never journaled an outcome: the object
    died during it, then the execution was cancelled or failed before it ran
    again. It may have had its effect; undo it if it did (its idempotency key
    is the one the attempt sent)."""

    name: str
    op: int
    """Its position in the workflow's operations."""
    attempt: int
    idempotency_key: str | None
    started_at: float | None
    """When the in-doubt attempt started (epoch seconds)."""


class CompensationContext(WorkflowContext):
    """What ``on_failure`` receives: the failure, the input, the outputs to undo.

    Its ``step`` journals compensation work, so a crash during compensation
    resumes it without repeating finished undo steps. Compensation steps make
    a single attempt unless given a ``retry``.
    """

    def __init__(
        self,
        run: Operations,
        execution_id: str,
        workflow: str,
        input: Any,
        *,
        status: str,
        failed_step: str | None,
        error: dict[str, Any] | None,
        step_outputs: dict[str, Any],
        in_doubt_steps: list[InDoubtStep] | None = None,
    ) -> None:
        super().__init__(run, execution_id, workflow, input)
        self.status = status
        """``failed`` or ``cancelled``."""
        self.failed_step = failed_step
        self.error = error
        """The failed step's SerializedStepError (code, message, retryable, attempt, timing)."""
        self.step_outputs = step_outputs
        """Outputs of the steps that succeeded, by step name."""
        self.in_doubt_steps = list(in_doubt_steps or [])
        """Steps that may have had their effect without journaling it (the object
        died during their attempt), in operation order: undo them too if needed."""
        self.undos: list[dict[str, Any]] = []
        """The outcome of each step's undo handler (they run before this handler),
        last started first: ``step``, ``step_status``, ``status``, ``attempts``, ``error``."""

    _takes_undo = False

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"
