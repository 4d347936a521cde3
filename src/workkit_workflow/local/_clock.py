"""Clocks for the local runtime: the real one, and a virtual one that skips time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections.abc import Callable
from typing import Any

from ..engine._ports import Cancellable, SystemClock

__all__ = ["SystemClock", "VirtualClock"]

REAL_TIMER_HORIZON = 0.05
"""Real timers due within this many seconds count as work still in flight."""


class VirtualClock:
    """A clock tests control: time moves only when nothing else can run.

    With ``auto_advance`` (the default), whenever every task on the event loop
    is blocked, the clock jumps to the earliest pending ``sleep`` deadline: a
    workflow that sleeps for a week, or backs off between retries, finishes
    at once. ``advance(seconds)`` moves it by hand.
    """

    def __init__(self, start: float = 1_767_225_600.0, *, auto_advance: bool = True) -> None:
        self._now = float(start)
        self.auto_advance = auto_advance
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await self._timer(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Cancellable:
        """``callback`` once the clock passed ``seconds`` from now, with no task of its own
        (a timeout); ``cancel()`` what it returns to drop it."""
        if seconds <= 0:
            return asyncio.get_running_loop().call_soon(callback)
        future = self._timer(seconds)
        future.add_done_callback(lambda done: None if done.cancelled() else callback())
        return future

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        """A future resolved once the clock passed ``seconds`` (> 0) from now."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._timers, (self._now + seconds, next(self._seq), future))
        if self.auto_advance:
            _LoopDriver.of(loop).add(self)
        return future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline passed."""
        self._set(self._now + max(seconds, 0.0))

    def _set(self, instant: float) -> None:
        self._now = max(self._now, instant)
        while self._timers and self._timers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._timers)
            if not future.done():
                future.set_result(None)

    def _next_deadline(self) -> float | None:
        while self._timers and self._timers[0][2].done():
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None


async def _until_idle(loop: asyncio.AbstractEventLoop) -> None:
    # Idle: after many turns, nothing is ready to run and no real timer is due
    # in the next few milliseconds (real I/O-like waits finish first; a real
    # timeout far away does not hold virtual time back). asyncio exposes no
    # public probe for this, so read the loop's queues where they exist (a
    # test clock, not production code).
    while True:
        for _ in range(25):
            await asyncio.sleep(0)
        ready: Any = getattr(loop, "_ready", ())
        scheduled: Any = getattr(loop, "_scheduled", ())
        soon = loop.time() + REAL_TIMER_HORIZON
        due = [h for h in scheduled if not h.cancelled() and h.when() <= soon]
        if len(ready) == 0 and not due:
            return
        if due:
            await asyncio.sleep(0.001)


class _LoopDriver:
    """One per event loop: when the loop is idle, every virtual clock on it jumps
    to its earliest sleeper. (A driver per clock would livelock: each would see
    the other's driver as work still to do.)"""

    _drivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopDriver] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.clocks: weakref.WeakSet[VirtualClock] = weakref.WeakSet()
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _LoopDriver:
        driver = cls._drivers.get(loop)
        if driver is None:
            driver = cls._drivers[loop] = cls(loop)
        return driver

    def add(self, clock: VirtualClock) -> None:
        self.clocks.add(clock)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._drive())

    async def _drive(self) -> None:
        while any(clock._next_deadline() is not None for clock in list(self.clocks)):
            await _until_idle(self.loop)
            for clock in list(self.clocks):
                deadline = clock._next_deadline()
                if deadline is not None and clock.auto_advance:
                    clock._set(deadline)
