"""Which definition an execution runs, and what happens when this Worker lacks it.

An execution runs the workflow name and version in its meta (the default
version for executions stored before versions existed). When this Worker has
no such definition (a deploy removed the workflow or that version) the
execution neither fails nor runs other code: it is *blocked*. Its state says
why (``blocked``: reason, the versions deployed, since when, the next try),
its status is ``blocked`` (unless it is already cancelled or failed and waits
to compensate), and its alarm tries again after a backoff
(:func:`retry_delay`), so it carries on by itself once the definition is back.
The user may also move it to a deployed version (:meth:`VersionMoves.move`):
its journal then replays against that version's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..definitions._versions import check_version, version_of
from ..definitions._workflow import Registry, Workflow
from ..errors import DefinitionError, ExecutionConflictError, InvalidRequestError, UnknownWorkflowError
from . import _journal as jn
from ._runner import Runner
from ._signals import StorageFailure
from ._state import ExecutionState

BLOCKED_FIRST_RETRY: Final = 5.0
BLOCKED_MAX_RETRY: Final = 60.0
"""A blocked execution tries again after 5 s, doubling to at most 60 s: a deploy
that brings its version back is picked up within a minute, and a long-blocked
execution costs one small write a minute."""


def retry_delay(tries: int) -> float:
    """Seconds before the ``tries``-th attempt (1-based) of a blocked execution."""
    return float(min(BLOCKED_MAX_RETRY, BLOCKED_FIRST_RETRY * 2.0 ** max(tries - 1, 0)))


async def resolve(execution: ExecutionState, registry: Registry, runner: Runner) -> Workflow | None:
    """The definition the execution runs, or None after recording it as blocked.

    The blocked write sets the alarm as a park does (now if a signal came since
    the runner's mark), so the caller drives again when :attr:`Runner.signalled`.
    """
    meta, state = execution.require()
    name = str(meta["workflow"])
    try:
        return registry.get(name, version_of(meta))
    except UnknownWorkflowError as exc:
        previous = state.get("blocked") or {}
        tries = int(previous.get("tries", 0)) + 1
        now = execution.now()
        retry_at = now + retry_delay(tries)
        blocked = {
            "reason": exc.code,  # unknown_workflow | version_unavailable
            "message": exc.message,
            "workflow": name,
            "version": version_of(meta),
            "deployed": registry.versions(name),
            "since": previous.get("since", now),
            "tries": tries,
            "retry_at": retry_at,
        }
        changes: dict[str, Any] = {"blocked": blocked, "wake_at": retry_at}
        if state["phase"] == "main" and state["status"] not in jn.TERMINAL:
            changes["status"] = "blocked"
        await execution.write_state(changes, alarm=runner.park_alarm(retry_at, now))
        return None


@dataclass
class VersionMoves:
    """The request that moves an unfinished execution to another deployed version."""

    execution: ExecutionState
    registry: Registry
    runner: Runner

    async def move(self, version: str) -> tuple[dict[str, Any], bool]:
        """Run the execution on ``version`` from its next replay on.

        Returns ``(meta, changed)``; ``changed`` is False when it already runs it.
        The journal is kept: the new code replays it, and a step it does not
        recognise fails the execution with ``replay_mismatch`` (run
        ``check-replay`` first). A running step finishes under the old code.
        """
        try:
            check_version(version, "move")
        except DefinitionError as exc:
            raise InvalidRequestError(exc.message, field="version") from None
        execution = self.execution
        await execution.ensure_loaded()
        meta, state = execution.require()
        self.registry.get(str(meta["workflow"]), version)  # VersionUnavailableError if not here
        if state["phase"] == "done":
            raise ExecutionConflictError(
                f"the execution is {state['status']}; only an unfinished one moves to another version",
                status=state["status"],
            )
        current = version_of(meta)
        if current == version:
            return meta, False
        moved = [*(meta.get("moved") or []), {"from": current, "to": version, "at": execution.now()}]
        new_meta = {**meta, "version": version, "moved": moved}
        text = jn.encode_record(jn.META, new_meta, what="execution meta")
        # The cache changes before the write is issued, as ``write_state`` does, so a
        # request interleaving at the await sees the new version.
        execution.meta = new_meta
        try:
            # A signal to the runner (see ``_runner``): whoever drives next reads the new version.
            await execution.write({jn.META: text}, alarm=self.runner.signal(execution.now()))
        except StorageFailure:
            if execution.meta is new_meta:
                execution.meta = meta
            raise
        self.runner.wake()
        return new_meta, True
