"""The local namespace's background loop: alarm delivery (with the runtime's
retries and the hold-back of alarms storage cannot update) and idle eviction."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..engine._ports import Cancellable, Clock, call_later
from ._backends import Backend
from ._host import LocalHost, ObjectEvicted, SimulatedCrash

log = logging.getLogger("workkit_workflow.local")

ALARM_RETRIES = 6

HOLD_MAX_DELAY = 64.0
"""Longest in-memory hold of an alarm storage could not update (the runtime's last retry gap)."""

EVICTION_BATCH = 0.05
"""An object may stay up to this fraction of ``idle_eviction`` longer, so one scan evicts many."""


def _spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """The task a clock without ``call_later`` sleeps in until the loop's planned look."""
    return asyncio.get_running_loop().create_task(coro)


@dataclass
class _Hold:
    """An alarm storage could not reschedule or clear: not delivered before ``until``."""

    failures: int
    until: float


class AlarmLoop:
    """The background loop of a :class:`~workkit_workflow.local.LocalNamespace` (its base
    class): the attributes below are the namespace's."""

    clock: Clock
    backend: Backend
    deliver_alarms: bool
    idle_eviction: float | None
    _rng: random.Random
    _live: dict[str, LocalHost]
    _alarm_loop: asyncio.Task[None] | None
    _alarm_event: asyncio.Event | None
    _retries: dict[str, int]
    _holds: dict[str, _Hold]
    _planned: float | None
    _look: Cancellable | None
    _looking: bool
    _eviction_due: float | None
    _closed: bool
    _instance: Callable[[str], LocalHost]
    evict: Callable[[str], None]

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError("this LocalNamespace is closed")
        loop = asyncio.get_running_loop()
        if self.deliver_alarms and (
            self._alarm_loop is None or self._alarm_loop.done() or self._alarm_loop.get_loop() is not loop
        ):
            self._alarm_event = asyncio.Event()
            self._alarm_loop = loop.create_task(self._background())

    async def start(self) -> None:
        """Start delivering alarms (also done by the first request)."""
        self._start()

    def _wake(self) -> None:
        if self._alarm_event is not None:
            self._alarm_event.set()

    def _object_idle(self, since: float) -> None:
        # Only an eviction before the loop's next planned look moves that look (to it):
        # not a scan of every alarm after every request.
        if self.idle_eviction is None:
            return
        deadline = since + self.idle_eviction
        if self._eviction_due is None or deadline < self._eviction_due:
            self._eviction_due = deadline
        self._plan(deadline)

    def _alarm_recorded(self, obj: str, at: float | None) -> None:
        # Storage took a new alarm for ``obj`` (``at``; None: removed): whatever it
        # could not record before is superseded, and the disk works again.
        self._holds.pop(obj, None)
        live = self._live.get(obj)
        if live is not None:
            live.alarm_written = True
        # An alarm before the loop's next planned look brings that look forward to it; a
        # later one, or a removed one, needs nothing (a look that finds nothing due plans
        # the next). Not a look now: each reads every stored alarm.
        if at is not None:
            self._plan(at)

    def _plan(self, at: float) -> None:
        """Have the loop look at the stored alarms by ``at``: its planned look, moved
        earlier if it comes later (or there is none), with no look before then. The look
        is a timer that wakes the loop; while the loop looks, it plans its next look itself."""
        if self._alarm_event is None or self._looking:
            return
        planned = self._planned
        if planned is not None and planned <= at:
            return
        self._unplan()
        now = self.clock.now()
        if at <= now:
            self._wake()
            return
        self._planned = at
        self._look = call_later(self.clock, at - now, self._wake, _spawn)

    async def _background(self) -> None:
        assert self._alarm_event is not None
        while not self._closed:
            self._alarm_event.clear()
            self._unplan()
            self._looking = True
            now = self.clock.now()
            try:
                fired, next_alarm = self._deliver_due(now)
            except Exception as exc:
                # Storage unreadable for a moment: look again shortly, not in a hot loop.
                log.warning("cannot read pending alarms: %r", exc)
                fired, next_alarm = False, now + 1.0
            if fired:
                self._looking = False
                await asyncio.sleep(0)
                continue
            wake_at = [t for t in (next_alarm, self._evict_idle(now)) if t is not None]
            self._looking = False
            if wake_at:
                self._plan(min(wake_at))
            try:
                await self._alarm_event.wait()
            finally:
                self._unplan()

    def _unplan(self) -> None:
        if self._look is not None:
            self._look.cancel()
        self._look = self._planned = None

    def _deliver_due(self, now: float) -> tuple[bool, float | None]:
        """Fire every due alarm; return whether any fired and when the next is due."""
        stored = self.backend.alarms()
        for obj in [o for o in self._holds if o not in stored]:
            del self._holds[obj]
        due: list[tuple[float, str]] = []
        upcoming: float | None = None
        for obj, at in stored.items():
            live = self._live.get(obj)
            if live is not None and live.alarm_task is not None and not live.alarm_task.done():
                continue  # its handler still runs (only the objects with an alarm are looked at)
            hold = self._holds.get(obj)
            at = at if hold is None else max(at, hold.until)
            if at <= now:
                due.append((at, obj))
            elif upcoming is None or at < upcoming:
                upcoming = at
        for _, obj in sorted(due):
            self._fire(obj)
        return bool(due), upcoming

    def _evict_idle(self, now: float) -> float | None:
        """Evict objects idle for ``idle_eviction``; return when the next one would be."""
        if self.idle_eviction is None or self._eviction_due is None:
            return None
        if now < self._eviction_due:
            return self._eviction_due  # no scan of every live object on every wake-up
        soonest: float | None = None
        for name, live in list(self._live.items()):
            if live.busy():
                continue
            deadline = live.idle_since + self.idle_eviction
            if deadline <= now:
                log.debug("evicting idle object %s", name)
                self.evict(name)
            elif soonest is None or deadline < soonest:
                soonest = deadline
        if soonest is not None:
            # Evict in batches: objects that finish moments apart go in one scan.
            soonest = max(soonest, now + self.idle_eviction * EVICTION_BATCH)
        self._eviction_due = soonest
        return soonest

    def _fire(self, obj: str) -> None:
        live = self._instance(obj)
        scheduled = self.backend.get_alarm(obj)
        # getAlarm() is None inside the handler, but the alarm stays stored until the
        # handler succeeds: a process killed mid-handler gets it again on restart.
        live.alarm_task = live.spawn(self._run_alarm(live, obj, scheduled))
        live.alarm_task.add_done_callback(lambda task: self._unstarted_alarm(task, obj, scheduled))

    def _unstarted_alarm(self, task: asyncio.Task[None], obj: str, scheduled: float | None) -> None:
        live = self._live.get(obj)
        if live is not None and live.alarm_task is task:
            live.alarm_task = None  # an idle object keeps no finished handler
        # An object killed before its alarm handler's first step never ran it:
        # Cloudflare retries that alarm, so the emulation must not drop it.
        if task.cancelled() and not self._closed and self.backend.get_alarm(obj) is None:
            self._reschedule(obj, self._retries.get(obj, 0), scheduled)

    async def _run_alarm(self, live: LocalHost, obj: str, scheduled: float | None) -> None:
        retry = self._retries.get(obj, 0)
        live.in_alarm_handler = True
        live.alarm_written = False
        try:
            await live.instance.alarm({"retryCount": retry, "isRetry": retry > 0})
        except (ObjectEvicted, SimulatedCrash, asyncio.CancelledError):
            # The object died mid-handler: Cloudflare retries the alarm.
            self._reschedule(obj, retry, scheduled)
            raise
        except Exception as exc:
            log.warning("alarm handler of %s raised %r", obj, exc)
            self._reschedule(obj, retry, scheduled)
            return
        finally:
            live.in_alarm_handler = False
            # An alarm set while the handler ran is due for delivery now.
            self._wake()
        # An alarm written while the handler ran stays, as on Cloudflare, even when it
        # names the same instant as the one delivered (a virtual clock that did not move).
        unchanged = not live.alarm_written and self.backend.get_alarm(obj) == scheduled
        if unchanged and not self._record(obj, None):
            return  # still stored: delivered again once the hold expires
        self._retries.pop(obj, None)

    def _reschedule(self, obj: str, retry: int, scheduled: float | None) -> None:
        unchanged = self.backend.get_alarm(obj) in (None, scheduled)
        if retry >= ALARM_RETRIES:
            log.warning("alarm of %s dropped after %d retries", obj, retry)
            self._retries.pop(obj, None)
            if unchanged:
                self._record(obj, None)
            return
        if unchanged:
            delay = 2.0 ** (retry + 1) * (1.0 + self._rng.uniform(0.0, 0.25))
            self._record(obj, self.clock.now() + delay)
        self._retries[obj] = retry + 1
        self._wake()

    def _record(self, obj: str, alarm: float | None) -> bool:
        """Store the runtime's own change to ``obj``'s alarm; hold the alarm back if storage fails."""
        try:
            self.backend.commit(obj, {}, (), alarm)
        except Exception as exc:
            self._hold(obj, exc, alarm)
            return False
        self._holds.pop(obj, None)
        return True

    def _hold(self, obj: str, exc: Exception, wanted: float | None) -> None:
        # The stored alarm still says "due": without this, the loop would deliver
        # it again at once, and again, for as long as the disk stays full.
        previous = self._holds.get(obj)
        failures = 1 if previous is None else previous.failures + 1
        delay = min(2.0**failures, HOLD_MAX_DELAY) * (1.0 + self._rng.uniform(0.0, 0.25))
        until = max(self.clock.now() + delay, wanted or 0.0)
        self._holds[obj] = _Hold(failures, until)
        log.warning(
            "cannot update the alarm of %s (%r); delivering it again in %.1f s",
            obj,
            exc,
            until - self.clock.now(),
        )
        self._wake()
