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
   unless one is active.
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
from collections.abc import Coroutine
from typing import Any, Protocol

from ._ports import KEEP_ALARM, PLAIN_CONTEXT


class Body(Protocol):
    """What a runner runs: ``drive`` is one run, ``spawn`` makes it a task of the
    object; ``failure`` is what those waiting for an ended run must raise (None: they
    just go on)."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def drive(self) -> Coroutine[Any, Any, None]: ...

    def failure(self, run: asyncio.Task[None]) -> BaseException | None: ...


class Runner:
    """Single-flight driver of one execution with a signal counter."""

    def __init__(self, body: Body) -> None:
        self._body = body
        """Kept as itself, not as two bound methods: each object an execution object
        keeps is walked by every full garbage collection."""
        self._task: asyncio.Task[None] | None = None
        """The runner task, until it has ended (an idle object keeps no finished task)."""
        self._end: _End | None = None
        """The done callback of ``_task``, with who waits for it (:meth:`until_ended`)."""
        self._signals = 0
        self._mark = 0
        self.parking = False
        """The runner decided to park: its park write is issued or about to be."""

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The active runner, if any (a request may wait for it to end)."""
        return self._task if self.active else None

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

    def wake(self) -> asyncio.Task[None]:
        """Start a runner unless one is active; returns the active one."""
        if self._task is None or self._task.done():
            self.parking = False
            task = self._task = self._body.spawn(self._body.drive())
            self._end = _End(self)
            task.add_done_callback(self._end, context=PLAIN_CONTEXT)
        return self._task

    def until_ended(self) -> asyncio.Future[None]:
        """Start a runner unless one is active; a future settled once it has ended,
        with the body's ``failure`` for it if any. Cancelling the future (its waiter
        gave up) leaves the runner running, as cancelling the request that woke it must."""
        waiter: asyncio.Future[None] = self.wake().get_loop().create_future()
        assert self._end is not None
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
    """The done callback of one runner task: it settles the futures waiting for
    that task (the list) and lets the runner forget the task."""

    __slots__ = ("runner",)

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner

    def __call__(self, task: asyncio.Task[None]) -> None:
        runner = self.runner
        if runner._end is self:  # not replaced by a runner woken since
            runner._task = runner._end = None
        failure = runner._body.failure(task) if self else None
        for waiter in self:
            if waiter.done():
                continue
            if failure is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(failure)
        self.clear()
