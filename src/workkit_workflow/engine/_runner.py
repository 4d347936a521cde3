"""The single runner of one execution, and the park/wake protocol.

One runner drives an execution at a time in an object instance. A *signal* is
whatever can give a parked or parking execution new work: an event, a cancel.
Another request may run at every ``await`` (storage awaits included), so the
runner can be anywhere in its park when a signal arrives. The protocol that
makes every acknowledged signal observed by a runner:

1. A signal calls :meth:`Runner.signal` in the same synchronous block in which
   it issues its storage write, and writes the alarm it returns: unchanged
   while a runner is driving (that runner sees the signal before it parks),
   due *now* while the runner parks or when none runs, so that a crash before
   any runner acts still leaves a wake-up.
2. After its write, the signal calls :meth:`Runner.wake`: it starts a runner
   unless one is active. A request that waits for the execution to be driven
   (``/execute``, the alarm) calls :meth:`Runner.drive_here` instead: it drives
   in the request's own task unless a runner is active, else waits for that one.
3. The runner calls :meth:`Runner.mark` before it reads storage. When it parks
   it writes the alarm :meth:`Runner.park_alarm` returns (now if a signal came
   since its mark, else its wake-up time); after that write it drives again if
   :attr:`Runner.signalled`, else it ends, with no ``await`` between that check
   and its end.

So a signal issued before the mark is in what the runner reads; one issued
while it drives is seen at the park; one issued while it parks is seen after
the park's write, or the runner has ended and ``wake`` starts the next. In
every case an alarm due now (or the running lease) is stored until a runner
has acted on the signal. Nothing here awaits: each method is one step of the
event loop, which is what makes the reasoning above hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol

from ._ports import KEEP_ALARM, PLAIN_CONTEXT


class Body(Protocol):
    """What a runner runs: ``drive`` is one run, which calls :meth:`Runner.finished`
    in its last step; ``spawn`` makes it a task of the object; ``failure`` is what
    those waiting for a run that raised ``exc`` must raise (None: they just go on)."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def drive(self) -> Coroutine[Any, Any, None]: ...

    def failure(self, exc: BaseException) -> BaseException | None: ...


class Runner:
    """Single-flight driver of one execution with a signal counter."""

    def __init__(self, body: Body) -> None:
        self._body = body
        """Kept as itself, not as two bound methods: each object an execution object
        keeps is walked by every full garbage collection."""
        self._task: asyncio.Task[Any] | None = None
        """The task the runner drives in (its own, or the request's that drives here),
        until the run has ended (an idle object keeps no task)."""
        self._end: _End | None = None
        """Who waits for the active run to end; for a task of its own, also its done
        callback. Made for a run driven here only once someone waits for it."""
        self._signals = 0
        self._mark = 0
        self.parking = False
        """The runner decided to park: its park write is issued or about to be."""

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def driving(self) -> bool:
        """Active and not parking: it will look at the signals before it parks."""
        return self.active and not self.parking

    @property
    def signalled(self) -> bool:
        """A signal arrived since the runner's last :meth:`mark`."""
        return self._signals != self._mark

    def signal(self, now: float) -> Any:
        """Count a signal; returns the alarm its write must set."""
        self._signals += 1
        return KEEP_ALARM if self.driving else now

    def wake(self) -> None:
        """Start a runner, as a task of its own, unless one is active."""
        if not self.active:
            self.parking = False
            task = self._task = self._body.spawn(self._body.drive())
            self._end = _End(self)
            task.add_done_callback(self._end, context=PLAIN_CONTEXT)

    def drive_here(self) -> Awaitable[None]:
        """What a request that waits for the execution to be driven awaits, at once and
        in its own task: the run itself, driven in that task, unless a runner is
        active; else a future settled once the active one has ended (:meth:`ended`).

        A run driven here needs no task, future or done callback of its own: each
        would be held, and walked by every garbage collection, for as long as it runs.
        The request's task is the runner's from this call on, so no other request
        starts one meanwhile; if that task ends without driving, it is no longer active.
        Cancelling that task stops the run (only an eviction does, which stops every
        task of the object; the lease alarm resumes the execution), where cancelling a
        request that waits for a runner task leaves the runner running (:meth:`ended`)."""
        task = asyncio.current_task()
        if self.active or task is None:
            self.wake()
            ended = self.ended()
            assert ended is not None
            return ended
        self.parking = False
        self._task = task
        self._end = None
        return self._body.drive()

    def finished(self, exc: BaseException | None) -> None:
        """The body's run ends: called in its last step, with what it raises (None if
        nothing). The runner is inactive from here and who waits for the run is told.
        (A runner task of its own is done in this same step; its done callback, which
        does the same, covers a task cancelled before its run began.)"""
        task = self._task
        if task is None or task is not asyncio.current_task():
            return
        end = self._end
        self._task = self._end = None
        if end is not None:
            end.settle(None if exc is None else self._body.failure(exc))

    def ended(self) -> asyncio.Future[None] | None:
        """A future settled once the active run has ended, with the body's ``failure``
        for it if any; None when no runner is active. Cancelling the future (its waiter
        gave up) leaves the runner running, as cancelling the request that woke it must."""
        task = self._task
        if task is None or task.done():
            return None
        waiter: asyncio.Future[None] = task.get_loop().create_future()
        if self._end is None:
            self._end = _End(self)
        self._end.append(waiter)
        return waiter

    def mark(self) -> None:
        """The runner is about to read storage: later signals are new to it."""
        self._mark = self._signals
        self.parking = False

    def park_alarm(self, wake_at: float | None, now: float) -> float | None:
        """The runner parks: the alarm its park write sets."""
        self.parking = True
        return now if self.signalled else wake_at


class _End(list["asyncio.Future[None]"]):
    """The futures waiting for one run to end (the list); for a runner task of its
    own, also that task's done callback, which lets the runner forget the task."""

    __slots__ = ("runner",)

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner

    def __call__(self, task: asyncio.Task[None]) -> None:
        runner = self.runner
        if runner._end is self:  # not replaced by a runner woken since
            runner._task = runner._end = None
        # Read even when the run's own end (``Runner.finished``) has told the waiters:
        # a task whose exception nobody reads is reported when it is collected.
        exc = asyncio.CancelledError() if task.cancelled() else task.exception()
        if self:
            self.settle(None if exc is None else runner._body.failure(exc))

    def settle(self, failure: BaseException | None) -> None:
        for waiter in self:
            if waiter.done():
                continue
            if failure is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(failure)
        self.clear()
