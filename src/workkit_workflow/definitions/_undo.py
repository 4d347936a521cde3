"""Per-step undo handlers: what a step declares, and what its undo receives.

A step given ``undo=`` is undone when its execution fails for good or is
cancelled: the engine's compensation phase runs the undo of every completed and
every in-doubt step, last started first, each as a journaled compensation step
with its own retry policy and timeout.

The compensation phase does not re-run the workflow body, so it must find each
undo handler again from code after the object restarted. A builder step's
undo lives in the definition (found by step name). A code-first
``ctx.step(..., undo=fn)`` is journaled with ``fn``'s qualified name
(``module:qualname``) and resolved by it, so ``fn`` must be reachable by that
name: a module-level function (or a class attribute), never a lambda or a
function defined inside another. Replaying the body in a no-op mode to collect
the handlers was the alternative; it would re-run the body's own code between
operations and could not pass waits or sleeps that never finished.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from ..errors import DefinitionError, SerializationError
from ._durations import Duration, to_seconds
from ._json import encode_value, loads
from ._retry import RetryPolicy
from ._values import to_data

MAX_UNDO_INPUT_BYTES: Final = 65_536
"""Largest journaled input of a code-first step with an undo (its ``args`` as JSON):
it is stored in the step's journal entry next to the output, so it is kept small."""


@dataclass(frozen=True)
class StepUndo:
    """What an undo handler receives: the step to undo and why.

    ``undo(info)`` may be sync or async; :func:`~workkit_workflow.current_step`
    gives it the undo's own step context (its own idempotency key)."""

    step: str
    """The name of the step being undone."""
    status: Literal["completed", "in_doubt"]
    """``completed``, or ``in_doubt``: its attempt started and never journaled an
    outcome, so it may or may not have had its effect."""
    output: Any
    """The step's journaled output; ``None`` when in doubt."""
    input: Any
    """The step's arguments: for ``ctx.step(name, fn, *args)`` the ``args`` as a
    list (journaled JSON); for a builder step the workflow input."""
    idempotency_key: str | None
    """The key the step's attempts ran with: look the effect up by it."""
    error: dict[str, Any] | None
    """Why the execution is undone: the failure (code, message, ...) or the cancel."""
    reason: Literal["failed", "cancelled"]
    attempt: int
    """The step's last attempt number."""
    execution_id: str
    workflow: str


UndoHandler = Callable[[StepUndo], Any]


@dataclass(frozen=True)
class UndoSpec:
    """A step's undo: the handler, its retry and timeout, and how to find it again."""

    handler: UndoHandler
    retry: RetryPolicy | None
    """``None``: the workflow's retry policy."""
    timeout: float | None
    ref: str | None
    """``module:qualname`` of a code-first handler; ``None`` for a builder step's
    (found in the definition by step name)."""
    args: list[Any] | None = None
    """A code-first step's arguments as JSON data, journaled with the step."""

    def record(self, key: str | None) -> dict[str, Any]:
        """What the step's journal entry keeps for its undo: with the idempotency
        key, for code-first the name, arguments, retry policy and timeout."""
        record: dict[str, Any] = {"ref": self.ref, "key": key}
        if self.ref is not None:
            record.update(
                args=self.args,
                retry=None if self.retry is None else self.retry.to_dict(),
                timeout=self.timeout,
            )
        return record


class UndoNotFoundError(DefinitionError):
    """The compensation phase could not find a step's undo handler in the code
    (the deployed code no longer has it under the name it was journaled with)."""

    code = "undo_not_found"


def make_undo(
    handler: UndoHandler | None,
    *,
    retry: RetryPolicy | None,
    timeout: Duration | None,
    where: str,
    by_name: bool,
) -> UndoSpec | None:
    """Check a step's undo options; ``by_name``: the handler must resolve by qualified name."""
    if handler is None:
        if retry is not None or timeout is not None:
            raise DefinitionError(f"{where}: undo_retry and undo_timeout need an undo handler")
        return None
    if not callable(handler):
        raise DefinitionError(f"{where}: undo must be callable")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise DefinitionError(f"{where}: undo_retry must be a RetryPolicy, got {type(retry).__name__}")
    seconds = None if timeout is None else to_seconds(timeout, what=f"{where}: undo_timeout")
    ref = handler_ref(handler, where) if by_name else None
    return UndoSpec(handler, retry, seconds, ref)


_CHECKED: dict[str, Any] = {}


def handler_ref(handler: UndoHandler, where: str) -> str:
    """``module:qualname`` of ``handler``, checked to resolve back to it."""
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        raise DefinitionError(
            f"{where}: the undo handler of a ctx.step must be a module-level function (or a class "
            f"attribute), not {qualname or handler!r}: the compensation phase finds it again by its "
            "qualified name after the object restarts"
        )
    ref = f"{module}:{qualname}"
    if _CHECKED.get(ref) is handler:
        return ref
    try:
        found = resolve_undo(ref)
    except UndoNotFoundError:
        found = None
    if found is not handler:
        raise DefinitionError(f"{where}: the undo handler's qualified name {ref!r} does not lead back to it")
    _CHECKED[ref] = handler
    return ref


def resolve_undo(ref: str) -> UndoHandler:
    """The handler journaled as ``module:qualname``."""
    module_name, _, qualname = ref.partition(":")
    try:
        target: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UndoNotFoundError(
            f"undo handler {ref!r} is not in this Worker's code ({exc})", handler=ref
        ) from None
    if not callable(target):
        raise UndoNotFoundError(f"undo handler {ref!r} is not callable", handler=ref)
    return target  # type: ignore[no-any-return]


def undo_input(spec: UndoSpec, args: tuple[Any, ...], *, where: str) -> UndoSpec:
    """``spec`` carrying the step's ``args`` as checked JSON data (SerializationError if
    they cannot be journaled, here at the call rather than when the step starts)."""
    what = f"{where}: arguments journaled for its undo"
    text = encode_value(to_data(list(args), what=what), what=what)
    size = len(text.encode("utf-8"))
    if size > MAX_UNDO_INPUT_BYTES:
        raise SerializationError(
            f"{what} are {size} bytes as JSON; the limit is {MAX_UNDO_INPUT_BYTES}: "
            "pass ids rather than documents to a step with an undo",
            what=what,
            size=size,
            limit=MAX_UNDO_INPUT_BYTES,
        )
    return replace(spec, args=loads(text))
