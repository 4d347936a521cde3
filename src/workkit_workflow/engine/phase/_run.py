"""One phase of an execution (the workflow body, or its compensation) over the journal.

The body is re-executed from the top on every drive. Each durable operation
(step, sleep, wait) gets a position in call order; a position the journal has
finished returns its recorded output, anything else runs and is journaled.
When every operation in flight is parked (a retry wait, a sleep, a wait for an
event) the phase *suspends*: the body is unwound and the execution object sets
an alarm for the earliest wake-up. Nothing waits in memory for time to pass.

:class:`PhaseRun` is that driver and the bookkeeping the operations share
(positions, parking, the checks and journal records common to every kind);
the operations themselves live in ``_step``, ``_sleep`` and ``_wait``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ...definitions._retry import RetryPolicy
from ...errors import ReplayMismatchError, StepFailedError, WorkflowTimeoutError
from .. import _journal as jn
from .._children import ChildOwners
from .._pages import JournalWindow
from .._pause import is_paused
from .._signals import Abort, ControlSignal, Stop, Suspend
from .._state import ExecutionState
from ._outcome import Outcome, Parked, finished_outcome, parked_outcome


def identity_mismatch(op: int, entry: dict[str, Any], kind: str, name: str) -> ReplayMismatchError | None:
    """The error when the journal's entry at ``op`` is not this operation (kind and
    name), else None. The engine's replay and the pre-deploy replay check share it."""
    if entry.get("kind") == kind and entry.get("name") == name:
        return None
    return ReplayMismatchError(
        f"replay met {kind} {name!r} at operation #{op}, but the journal recorded "
        f"{entry.get('kind')} {entry.get('name')!r} there: the workflow code changed "
        "under a running execution",
        position=op,
        expected={"kind": entry.get("kind"), "name": entry.get("name")},
        found={"kind": kind, "name": name},
    )


class PhaseRun:
    """Drives one phase body over the journal entries of that phase."""

    def __init__(
        self,
        execution: ExecutionState,
        *,
        prefix: str,
        entries: dict[int, dict[str, Any]],
        retry: RetryPolicy,
        deadline: float | None,
    ) -> None:
        self.execution = execution
        self.execution_id = execution.execution_id
        self.workflow_name = execution.workflow_name
        """Fixed for the execution's life: read once here, not per step."""
        self.prefix = prefix
        self.entries = entries
        self.retry = retry
        self.deadline = deadline
        self.next_op = 0
        self.active = 0
        self.parked: dict[int, Parked] = {}
        self.generation = 0
        self.stopping = False
        self.suspended = False
        self.current: dict[int, str] = {}
        self.child_owners: ChildOwners | None = None  # made by its first child start (_child)
        self._runner: asyncio.Task[Any] | None = None
        """The task running the body (:meth:`execute`), while it runs."""
        self._parked_at_suspend: list[Parked] | None = None
        """What was parked when the idle check unwound the body (:meth:`_suspend`)."""
        self._quiet: asyncio.Future[None] | None = None
        """Made while ``execute`` waits for the operations still running to finish."""
        self._idle_check: asyncio.Task[None] | None = None

    # -- driving -------------------------------------------------------------

    async def execute(self, body: Coroutine[Any, Any, Any]) -> Outcome:
        """Run ``body`` until it ends or everything in flight is parked.

        The body runs in this task: no task, future or callback is held
        for as long as it runs, each of which every garbage collection would walk. When
        the idle check finds everything in flight parked, it cancels this task
        (:meth:`_suspend`), and the cancellation, the phase's own, is taken back here."""
        task = asyncio.current_task()
        if task is None:  # driven outside any task (no runtime does so): in one of its own
            return await self.execution.spawn(self.execute(body))  # type: ignore[no-any-return]
        self._runner = task
        value: Any = None
        error: BaseException | None = None
        try:  # in a context of its own, as a task of its own would give it (``deferring``)
            value = await self.execution.deferring(body)
        except (Exception, ControlSignal, asyncio.CancelledError) as exc:
            error = exc  # (an exit, an interrupt or a closed coroutine goes straight up)
        finally:
            self._runner = None
        parked = self._parked_at_suspend
        if isinstance(error, asyncio.CancelledError) and task.cancelling() > (parked is not None):
            raise error  # this task was cancelled (its object died), not only the body
        if parked is not None:
            task.uncancel()
            _abandon(self.parked)
            if isinstance(error, (asyncio.CancelledError, Suspend)):
                return parked_outcome(parked)
        else:  # a task the body started last gets its first turn before the phase settles
            await asyncio.sleep(0)
        # Siblings of a failed branch (asyncio.gather does not cancel them) finish
        # and journal their outputs before the phase settles.
        loop = asyncio.get_running_loop()
        while self.active:
            self._quiet = loop.create_future()
            await self._quiet
        self._quiet = None
        self.suspended = True
        _abandon(self.parked)
        if isinstance(self.entries, JournalWindow):
            await self.entries.finish()  # the end checks (and settles) what was never reached
        return finished_outcome(value, error, self.entries, self.next_op, self.execution.now())

    def _suspend(self) -> None:
        """Everything in flight is parked: unwind the body (:meth:`execute`), its wake-ups
        recorded first (unwinding it removes the parked operations)."""
        assert self._runner is not None
        self._parked_at_suspend = list(self.parked.values())
        self.suspended = True
        self._runner.cancel()

    def stop(self) -> None:
        """Cancellation: parked operations end now, running steps finish first."""
        self.stopping = True
        for parked in list(self.parked.values()):
            if not parked.future.done():
                parked.future.set_exception(Stop())

    def deliver(self, event_type: str) -> None:
        """An event arrived while this phase runs: wake the waits for its type."""
        if is_paused(self.execution.state):
            return  # kept in the inbox: the waits take it once the execution continues
        for parked in list(self.parked.values()):
            if parked.event_type == event_type and not parked.future.done():
                parked.future.set_result(None)

    def wake_parked(self) -> None:
        """The execution continues after a pause: every parked operation checks again
        (a timer that came due while paused fires now; one not yet due parks again)."""
        for parked in list(self.parked.values()):
            if not parked.future.done():
                parked.future.set_result(None)

    async def hold(self, op: int) -> None:
        """The pause gate, before an operation starts (control: pause/continue).

        While the execution is paused the operation parks with no wake-up and no
        event: once everything in flight is parked the phase suspends, and the
        execution parks without an alarm. A running step is not interrupted; it
        finishes and is journaled, and the next operation is held here.
        """
        while is_paused(self.execution.state):
            await self.park(op, wake_at=None, event_type=None)

    # -- bookkeeping ------------------------------------------------------------

    def allocate(self) -> int:
        if self.suspended:
            raise Suspend()
        op = self.next_op
        self.next_op += 1
        return op

    def enter(self, op: int, name: str) -> None:
        """The operation at ``op`` starts (each operation calls ``leave`` when it ends)."""
        self.active += 1
        self.generation += 1
        self.current[op] = name
        # ``_quiet`` is not touched here: its one waiter (``execute``) makes it before
        # each wait, and ``leave``/``park`` resolve it when nothing is left running.

    def leave(self, op: int) -> None:
        self.active -= 1
        self.generation += 1
        self.current.pop(op, None)
        # Checked here, not by calling both (every step of a sequential body ends here).
        if self.active == 0 and (self._quiet is not None or self.parked):
            self._quieted()
            self._maybe_idle()

    def went_by(self, op: int, entry: dict[str, Any] | None) -> None:
        """The finished operation at ``op`` was replayed as it was reached (a step replayed
        from memory, with no ``enter``/``leave``): it counts as the body moving on for the
        idle check, and a paged journal forgets it now (as its next page read would).
        ``entry`` is None for an entry read from its text (already forgotten)."""
        self.generation += 1
        if self.parked:
            self._maybe_idle()
        # The entry is a completed step's (``replayed_step``): unless an undo needs it at the
        # phase's end, nothing reads it again.
        if entry is not None and type(self.entries) is JournalWindow and not entry.get("undo"):
            self.entries.release(op)

    def completed(self, op: int, record: dict[str, Any]) -> None:
        """The step at ``op`` completed with ``record`` (its write deferred), or the child at
        ``op`` finished. A journal window does not keep it: as for a step replayed in passing
        (:meth:`went_by`), nothing reads a finished operation's entry again unless an undo
        needs it at the phase's end, so a long execution in flight holds no entry per
        operation it ran."""
        if type(self.entries) is JournalWindow and not record.get("undo"):
            self.entries.release(op)  # its running entry, as went_by forgets a replayed one
        else:
            self.entries[op] = record

    def _quieted(self) -> None:
        """Nothing is running now: wake ``execute`` if it waits for that."""
        if self._quiet is not None and not self._quiet.done():
            self._quiet.set_result(None)

    def _maybe_idle(self) -> None:
        if self.active == 0 and self.parked and (self._idle_check is None or self._idle_check.done()):
            self._idle_check = self.execution.spawn(self._confirm_idle())

    async def _confirm_idle(self) -> None:
        # A finished gather branch reaches its parent a few loop turns later;
        # give the body those turns to start its next operation.
        generation = self.generation
        for _ in range(8):
            await asyncio.sleep(0)
        if self._runner is None or self._parked_at_suspend is not None:
            return  # the body ended, or is unwinding already
        if self.generation == generation and self.active == 0 and self.parked:
            self._suspend()
        elif self.active == 0 and self.parked:
            self._maybe_idle_later()

    def _maybe_idle_later(self) -> None:
        self._idle_check = self.execution.spawn(self._confirm_idle())

    async def park(self, op: int, *, wake_at: float | None, event_type: str | None) -> None:
        """Wait for ``wake_at`` or an event; the phase suspends if all in flight is parked."""
        if self.stopping:
            raise Stop()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        parked = Parked(op, wake_at, event_type, future)
        self.parked[op] = parked
        self.active -= 1
        self.generation += 1
        timer = None
        if wake_at is not None:
            timer = self.execution.spawn(self._ring(parked))
        if self.active == 0:
            self._quieted()
        self._maybe_idle()
        try:
            await future
        finally:
            self.parked.pop(op, None)
            self.active += 1
            self.generation += 1
            if timer is not None:
                timer.cancel()

    async def _ring(self, parked: Parked) -> None:
        assert parked.wake_at is not None
        await self.execution.clock.sleep(parked.wake_at - self.execution.now())
        if not parked.future.done() and not is_paused(self.execution.state):
            parked.future.set_result(None)

    async def wait_until(self, op: int, name: str, at: float, attempt: int) -> None:
        """Park until ``at`` (or the deadline), checking cancellation and the deadline."""
        while True:
            await self.hold(op)
            now = self.execution.now()
            if at <= now:
                if self.deadline is not None and now > self.deadline:
                    self.check_continue(name, attempt)  # passed while it could not end (paused)
                return
            self.check_continue(name, attempt)
            wake = at if self.deadline is None else min(at, self.deadline)
            await self.park(op, wake_at=wake, event_type=None)

    # -- checks and records shared by the operations --------------------------------

    def check_continue(self, name: str, attempt: int = 0) -> None:
        # Cancellation stops the main phase; the compensation it triggers must still run.
        if self.stopping or (self.execution.cancel_requested and self.prefix == jn.MAIN):
            self.stopping = True
            raise Stop()
        if self.deadline is not None and self.execution.now() >= self.deadline:
            raise Abort(
                WorkflowTimeoutError("the workflow ran past its timeout", deadline=self.deadline),
                step=name,
                attempt=attempt,
                compensate=True,
            )

    async def replayed(self, op: int, kind: str, name: str) -> dict[str, Any] | None:
        """The journal's entry at ``op``, if any, checked to be this operation (a long
        journal is read a page at a time as operations reach it: ``_pages``)."""
        if isinstance(self.entries, JournalWindow) and not self.entries.ready(op):
            await self.entries.reach(op)
        return self.replayed_read(op, kind, name)

    def is_read(self, op: int) -> bool:
        """Whether ``op``'s page of the journal is in memory: then :meth:`replayed_read`
        gives what :meth:`replayed` would, without a coroutine (the step's hot path)."""
        return not isinstance(self.entries, JournalWindow) or self.entries.ready(op)

    def replayed_read(self, op: int, kind: str, name: str) -> dict[str, Any] | None:
        entry = self.entries.get(op)
        if entry is not None and (entry.get("kind") != kind or entry.get("name") != name):
            self.check_identity(op, entry, kind, name)
        return entry

    def check_identity(self, op: int, entry: dict[str, Any], kind: str, name: str) -> None:
        mismatch = identity_mismatch(op, entry, kind, name)
        if mismatch is not None:
            raise Abort(mismatch, step=name, attempt=int(entry.get("attempt", 0)), compensate=False)

    def record(self, op: int, record: dict[str, Any]) -> tuple[str, str]:
        key = jn.op_key(self.prefix, op)
        text = jn.encode_record(key, record, what=f"journal entry of {record['name']!r}")
        self.entries[op] = record  # only an entry that can be written: none is left in memory alone
        return key, text

    def failed(self, entry: dict[str, Any]) -> StepFailedError:
        error = entry.get("error") or {}
        return StepFailedError(
            f"step {entry['name']!r} failed: {error.get('message', '')}",
            step=entry["name"],
            attempt=int(entry.get("attempt", 0)),
            error=error,
        )

    async def fail(self, op: int, entry: dict[str, Any], error: dict[str, Any]) -> StepFailedError:
        record = {**entry, "status": "failed", "error": error, "finished_at": self.execution.now()}
        record.pop("idempotency_key", None)
        key, text = self.record(op, record)
        await self.execution.write({key: text})
        return self.failed(record)


def _abandon(parked: dict[int, Parked]) -> None:
    """The body's run is over (ended, or unwound to park): what is still parked was
    awaited in a task the body made and did not await (its own operations are unwound
    by now). Each ends as asyncio ends abandoned work, cancelled: a ``Suspend`` raised
    into it was never retrieved (logged when the task was collected), and one never
    resolved kept the run alive in a task pending for good."""
    for parked_op in list(parked.values()):
        if not parked_op.future.done():
            parked_op.future.cancel()
