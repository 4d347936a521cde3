"""The pre-deploy replay check: does the current code replay a stored journal?

The workflow body runs over :class:`ReplayOnly`, an ``Operations`` port that
runs no step handler, sleeps no time and waits for no event: each operation
must be the journal's next entry (the engine's own identity check,
:func:`~workkit_workflow.engine.phase._run.identity_mismatch`) and returns what
the journal recorded. The check of one execution ends well ("replays") when the
body reaches an operation the journal does not have yet, or the journal's
unfinished tail (a step still running, a sleep or wait still pending): from
there the new code runs for real. It ends badly at the first mismatch, when the
body returns while the journal has operations left (a step was removed), or
when the body raises something the journal does not explain. The journal
explains a step's recorded failure, and the execution's own: an execution that
failed because its body raised replays when the body raises an error of the
same type and code after the journal's last operation.

Only the main phase is checked: compensation runs once and starts from its own
journal, which a failed or cancelled execution may not have yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..definitions._contexts import WorkflowContext
from ..definitions._steps import StepOptions
from ..definitions._values import validate
from ..definitions._workflow import Registry, Workflow
from ..errors import ReplayMismatchError, StepFailedError, UnknownWorkflowError
from . import _journal as jn
from ._export import StoredJournal
from .phase._run import identity_mismatch

Outcome = Literal["replays", "mismatch", "error", "unavailable"]

BODY_TIMEOUT: Final = 30.0
"""Seconds the body may take in all: it awaits nothing real here, so only a body
that awaits something besides its operations comes near it."""

_FINISHED: Final = frozenset({"completed", "failed"})


class _Stop(BaseException):
    """Ends the check inside the body. A BaseException so the workflow's
    ``except Exception`` cannot swallow it."""

    def __init__(self, mismatch: ReplayMismatchError | None = None) -> None:
        super().__init__()
        self.mismatch = mismatch


@dataclass(frozen=True)
class ReplayReport:
    """What the check found for one execution; ``ok`` unless the code would not replay it."""

    execution_id: str
    workflow: str
    version: str
    outcome: Outcome
    replayed: int
    """Operations of the journal the code met and matched."""
    mismatch: ReplayMismatchError | None = None
    """At the first mismatch: ``position``, ``expected`` and ``found`` (kind and name;
    ``found`` is ``{"kind": None, "name": None}`` when the code ends there)."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "replays"

    def describe(self) -> str:
        """One line for people: "replays (3 operations)" or what went wrong where."""
        if self.outcome == "replays":
            return f"replays ({self.replayed} operation{'s' if self.replayed != 1 else ''})"
        if self.mismatch is not None:
            details = self.mismatch.details
            expected, found = details["expected"], details["found"]
            calls = (
                "the code ends there"
                if found["kind"] is None
                else f"the code calls {found['kind']} {found['name']!r}"
            )
            return (
                f"MISMATCH at operation #{details['position']}: the journal has "
                f"{expected['kind']} {expected['name']!r}, {calls}"
            )
        return f"{self.outcome.upper()}: {self.error}"

    def to_dict(self) -> dict[str, Any]:
        found = None if self.mismatch is None else self.mismatch.details
        return {
            "execution_id": self.execution_id,
            "workflow": self.workflow,
            "version": self.version,
            "ok": self.ok,
            "outcome": self.outcome,
            "replayed": self.replayed,
            "mismatch": None
            if found is None
            else {"op": found["position"], "expected": found["expected"], "found": found["found"]},
            "error": self.error,
            "message": self.describe(),
        }


class ReplayOnly:
    """The ``Operations`` port of the check: the journal answers, no handler runs."""

    def __init__(self, entries: dict[int, dict[str, Any]]) -> None:
        self.entries = entries
        self.next_op = 0
        self.matched = 0

    def step(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...] | None, options: StepOptions
    ) -> Any:
        return self._replay(self._allocate(), "step", name, options.output)

    def sleep(self, name: str, *, until: float | None, duration: float | None) -> Any:
        return self._replay(self._allocate(), "sleep", name, None)

    def wait(self, name: str, event_type: str, *, timeout: float | None, default: Any) -> Any:
        return self._replay(self._allocate(), "wait", name, None)

    def child(self, name: str, workflow: str, input: Any, execution_id: str | None) -> Any:
        # A child operation replays its journaled result (or its failure), like a step.
        return self._replay(self._allocate(), "child", name, None)

    def set_state(self, key: str, text: str) -> Any:
        # A journaled ``state`` operation: its key must match; the value is not compared
        # (replay never rewrites it). Its position is taken at the call, as every other's.
        return self._replay(self._allocate(), "state", key, None)

    def _allocate(self) -> int:
        # At the call, as the engine does, so positions follow call order under gather.
        op = self.next_op
        self.next_op += 1
        return op

    async def _replay(self, op: int, kind: str, name: str, output_type: Any) -> Any:
        entry = self.entries.get(op)
        if entry is None:
            raise _Stop()  # past the journal: from here the new code runs for real
        mismatch = identity_mismatch(op, entry, kind, name)
        if mismatch is not None:
            raise _Stop(mismatch)
        if entry.get("status") not in _FINISHED:
            raise _Stop()  # the journal's unfinished tail
        self.matched += 1
        if entry["status"] == "failed":
            error = entry.get("error") or {}
            raise StepFailedError(
                f"step {name!r} failed: {error.get('message', '')}",
                step=name,
                attempt=int(entry.get("attempt", 0)),
                error=error,
            )
        if kind in ("sleep", "state"):
            return None
        return validate(output_type, entry.get("output"), what=f"output of {name!r}")

    def leftover(self) -> ReplayMismatchError | None:
        """The mismatch when the body returned before the journal's last operation."""
        entry = self.entries.get(self.next_op)
        if entry is None:
            return None
        return ReplayMismatchError(
            f"the code ended before operation #{self.next_op}, but the journal recorded "
            f"{entry.get('kind')} {entry.get('name')!r} there",
            position=self.next_op,
            expected={"kind": entry.get("kind"), "name": entry.get("name")},
            found={"kind": None, "name": None},
        )


def _recorded_raise(state: Mapping[str, Any], exc: Exception) -> bool:
    """Whether the execution failed because its body raised what ``exc`` is: the state's
    error, with no failed step, has the type and code the engine records for ``exc``.

    The message is not compared: it is text for people, often carrying values (an id, an
    amount), and rewording it changes nothing a replay depends on."""
    error = state.get("error")
    if (
        state.get("status") != "failed"
        or state.get("failed_step") is not None
        or not isinstance(error, Mapping)
    ):
        return False
    raised = jn.serialize_error(exc, attempt=1, started_at=None, finished_at=None, retryable=False)
    return error.get("type") == raised["type"] and error.get("code") == raised["code"]


async def check_journal(
    definition: Workflow, journal: StoredJournal, *, timeout: float = BODY_TIMEOUT
) -> ReplayReport:
    """Replay ``journal``'s main phase against ``definition`` without running a handler."""
    ops = ReplayOnly(journal.main)
    input = journal.meta.get("input")
    ctx = WorkflowContext(ops, journal.execution_id, definition.name, input)

    def report(outcome: Outcome, **found: Any) -> ReplayReport:
        return ReplayReport(
            journal.execution_id, definition.name, definition.version, outcome, ops.matched, **found
        )

    async def body() -> Any:
        value = input
        if definition.input_type is not None:
            value = validate(definition.input_type, value, what="workflow input")
            ctx.input = value
        return await definition.run(ctx, value)

    limit = asyncio.timeout(timeout)
    try:
        async with limit:
            await asyncio.ensure_future(body())  # its own task, as under wait_for
    except _Stop as stop:
        return report("replays") if stop.mismatch is None else report("mismatch", mismatch=stop.mismatch)
    except StepFailedError:
        # A failure the journal recorded, which the body let through: it replays
        # (unless operations follow it in the journal, checked below).
        pass
    except Exception as exc:
        # A TimeoutError is the limit's only if it expired: a body may raise its own.
        if limit.expired():
            return report("error", error=f"the body did not reach its next operation within {timeout:g}s")
        if not _recorded_raise(journal.state, exc):
            return report("error", error=f"the body raised {type(exc).__name__}: {exc}")
        # The execution's recorded failure, raised again: it replays if raised where the
        # recorded one was, after the journal's last operation (checked below).
    leftover = ops.leftover()
    return report("replays") if leftover is None else report("mismatch", mismatch=leftover)


async def check_stored(
    registry: Registry, journal: StoredJournal, *, version: str | None = None
) -> ReplayReport:
    """Check ``journal`` against the definition its meta names in ``registry``
    (or ``version`` of it): "unavailable" when this code does not have it."""
    wanted = version or journal.version
    try:
        definition = registry.get(journal.workflow, wanted)
    except UnknownWorkflowError as exc:
        return ReplayReport(
            journal.execution_id, journal.workflow, wanted, "unavailable", 0, error=exc.message
        )
    return await check_journal(definition, journal)
