"""A step as its code sees it: the options it runs with and the context of its attempt.

Shared by the definitions (builder and code-first), the engine and the backends;
it depends on nothing above it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DefinitionError, SerializationError
from ._durations import Duration, to_seconds
from ._json import encode_value, is_unicode
from ._retry import RetryPolicy
from ._undo import UndoSpec
from ._values import to_data

FirstAttempt = tuple[str, str, str, str, int, Any, "str | None"]
"""A new step's first attempt, as the engine hands it to the step's code: ``(execution_id,
workflow, step, journal prefix, position, input, key)``, ``key`` the step's own idempotency
key or None for the derived one. :func:`current_step` builds its :class:`StepContext` when
the code asks: most steps never do, and the context and its derived key cost a tenth of the
engine's step (``run_new_step``)."""

_CURRENT_STEP: contextvars.ContextVar[StepContext | FirstAttempt | None] = contextvars.ContextVar(
    "workkit_workflow_step", default=None
)


@dataclass(frozen=True, init=False)
class StepContext:
    """What a running step attempt knows about itself."""

    execution_id: str
    workflow: str
    step: str
    attempt: int
    """1 for the first attempt; a lost attempt (the object died mid-step) counts."""
    idempotency_key: str
    """Stable across retries and restarts: send it to external systems to dedupe."""
    input: Any = field(repr=False, default=None)

    def __init__(
        self,
        execution_id: str,
        workflow: str,
        step: str,
        attempt: int,
        idempotency_key: str,
        input: Any = None,
    ) -> None:
        # One is built per attempt: filling the instance's dict directly costs less than
        # half of the frozen dataclass's __init__ (one object.__setattr__ per field).
        fields = self.__dict__
        fields["execution_id"] = execution_id
        fields["workflow"] = workflow
        fields["step"] = step
        fields["attempt"] = attempt
        fields["idempotency_key"] = idempotency_key
        fields["input"] = input


def derived_idempotency_key(execution_id: str, prefix: str, op: int, name: str) -> str:
    """A step's idempotency key when its options give none: derived from its position (the
    journal ``prefix`` and ``op``) and name, so the same at every attempt and never journaled."""
    return f"{execution_id}:{prefix}{op}:{name}"


def first_attempt_context(first: FirstAttempt) -> StepContext:
    """The context of a new step's first attempt (:data:`FirstAttempt`), with its own key or
    the derived one."""
    execution_id, workflow, step, prefix, op, input, key = first
    if key is None:
        key = derived_idempotency_key(execution_id, prefix, op, step)
    return StepContext(execution_id, workflow, step, 1, key, input)


class PlainCall:
    """A code-first step's call, ``fn(*args)``, as the engine runs a step: given the
    attempt's context, which the code reads with ``current_step()``. Made only when the
    step runs, not when it is replayed (``Operations.step``). One object to hold while the
    step runs, where a partial is two (with its arguments' tuple) and a lambda three (with
    a cell for each of ``fn`` and ``args``): at thousands of executions in flight, every
    object a step holds is walked by the garbage collector."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args

    def __call__(self, _ctx: StepContext) -> Any:
        return self.fn(*self.args)


def plain_call(fn: Callable[..., Any], args: tuple[Any, ...] | None) -> Callable[[StepContext], Any]:
    """A step's call as the engine makes it: ``fn`` itself, given the context, if ``args``
    is None (a builder's handler), else ``fn(*args)`` (:class:`PlainCall`)."""
    return fn if args is None else PlainCall(fn, args)


def current_step() -> StepContext | None:
    """The step attempt this code runs in, if any (e.g. for HTTP helpers). Within one
    attempt, each call may return a new context, always an equal one."""
    step = _CURRENT_STEP.get()
    if isinstance(step, tuple):
        return first_attempt_context(step)
    return step


StepHandler = Callable[[Any, Any, StepContext], Any]
"""A builder step: ``handler(input, prev, ctx)``, sync or async."""


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
    undo: UndoSpec | None = None
    """Run when the execution fails or is cancelled after this step completed (or
    was left in doubt); see ``_undo``."""


DEFAULT_OPTIONS = StepOptions()


MAX_KEY_CHARS = 4096
"""The longest idempotency key a step takes, in characters. The key is journaled with each
attempt's start, and one near a stored value's limit (``engine._journal.MAX_VALUE_BYTES``) left
the step unable to start: the drive failed at every wake-up. No outside system takes a key
anywhere near this long (Stripe's longest is 255)."""


def keyed_options(key: str) -> StepOptions:
    """``make_options(idempotency_key=key)`` for a ``key`` that passes its checks (a step whose
    only option is its key, the usual keyed step; a non-empty ASCII key of at most
    ``MAX_KEY_CHARS`` characters needs none), its fields filled directly: a quarter of the
    frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field), and none of the
    checks."""
    options: StepOptions = object.__new__(StepOptions)
    options.__dict__.update(retry=None, timeout=None, idempotency_key=key, output=None, undo=None)
    return options


def make_options(
    *,
    retry: RetryPolicy | None,
    timeout: Duration | None,
    idempotency_key: Callable[[StepContext], str] | str | None,
    output: Any,
    where: str,
    undo: UndoSpec | None = None,
) -> StepOptions:
    if retry is None and timeout is None and idempotency_key is None and output is None and undo is None:
        return DEFAULT_OPTIONS
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise DefinitionError(f"{where}: retry must be a RetryPolicy, got {type(retry).__name__}")
    if idempotency_key is not None and not (isinstance(idempotency_key, str) or callable(idempotency_key)):
        raise DefinitionError(f"{where}: idempotency_key must be a string or a callable")
    if isinstance(idempotency_key, str):
        if not (idempotency_key and is_unicode(idempotency_key)):
            raise DefinitionError(f"{where}: idempotency_key must be non-empty, valid Unicode text")
        if len(idempotency_key) > MAX_KEY_CHARS:
            limit, got = MAX_KEY_CHARS, len(idempotency_key)
            raise DefinitionError(f"{where}: idempotency_key must be at most {limit} characters, got {got}")
    seconds = None if timeout is None else to_seconds(timeout, what=f"{where}: timeout")
    return StepOptions(
        retry=retry, timeout=seconds, idempotency_key=idempotency_key, output=output, undo=undo
    )


CHILD_EVENT_PREFIX = "child:"
"""Event types starting with this are reserved: a child workflow's outcome, sent to its
parent by the child's object (``engine._children``). A body cannot wait for one, and a
client cannot send one: it would end the parent's child operation with a forged result."""


def reserved_event_type(event_type: object) -> str | None:
    """Why ``event_type`` is reserved (``CHILD_EVENT_PREFIX``), or None if it is not."""
    if isinstance(event_type, str) and event_type.startswith(CHILD_EVENT_PREFIX):
        return (
            f"event type {event_type!r} is reserved: types starting with {CHILD_EVENT_PREFIX!r} "
            "are child workflows' outcomes, sent by their objects"
        )
    return None


def check_event_type(event_type: object) -> str:
    """An event type a body may wait for."""
    name = check_name(event_type, "event type")
    reserved = reserved_event_type(name)
    if reserved is not None:
        raise DefinitionError(reserved)
    return name


def check_name(name: object, what: str) -> str:
    if type(name) is str and name.isascii() and 0 < len(name) <= 256 and not name.isspace():
        return name  # the usual name, checked without the calls below (every operation's)
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
