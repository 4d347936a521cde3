"""Clocks for the local runtime: the real one, and a virtual one that skips time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any

from .._ports import SystemClock

__all__ = ["SystemClock", "VirtualClock"]


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
        self._driver: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._timers, (self._now + seconds, next(self._seq), future))
        self._ensure_driver(loop)
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline passed."""
        self._set(self._now + max(seconds, 0.0))

    def _set(self, instant: float) -> None:
        self._now = max(self._now, instant)
        while self._timers and self._timers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._timers)
            if not future.done():
                future.set_result(None)

    def _ensure_driver(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            self._loop, self._driver, self._wakeup = loop, None, asyncio.Event()
        assert self._wakeup is not None
        self._wakeup.set()
        if self.auto_advance and (self._driver is None or self._driver.done()):
            self._driver = loop.create_task(self._drive(loop))

    async def _drive(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            self._timers = [t for t in self._timers if not t[2].done()]
            heapq.heapify(self._timers)
            if not self._timers:
                return
            await self._until_idle(loop)
            if self._timers and all(not t[2].done() for t in self._timers[:1]):
                self._set(self._timers[0][0])

    @staticmethod
    async def _until_idle(loop: asyncio.AbstractEventLoop) -> None:
        # Idle: after many turns, nothing is ready to run and no real timer is
        # pending. asyncio exposes no public probe for this, so read the
        # loop's queues where they exist (a test clock, not production code).
        while True:
            for _ in range(25):
                await asyncio.sleep(0)
            ready: Any = getattr(loop, "_ready", ())
            scheduled: Any = getattr(loop, "_scheduled", ())
            live = [h for h in scheduled if not h.cancelled()]
            if len(ready) == 0 and not live:
                return
            if live:
                await asyncio.sleep(0.001)
