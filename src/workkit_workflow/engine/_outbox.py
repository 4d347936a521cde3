"""Delivering an outbox: records a journal observer wrote with the journal, sent elsewhere.

An execution has two outboxes, both journal observers (``_plugins``): its mail to
other objects (``_mail``) and the history projection's records for D1
(``workkit_workflow.history``). Each keeps its pending records in the execution's
storage under a key prefix, deletes them once they are settled, and delivers them
the same way, which :class:`Delivery` holds:

* one delivery task at a time (``kick`` and ``settle`` share it); a commit landing
  while it runs makes it look again before it concludes that nothing is left;
* records read in key order, a page of ``batch`` at a time, each page handed to
  the subclass's :meth:`Delivery._deliver_page`;
* while deliveries fail, exponential backoff (1s, 2s, 4s ... up to
  :data:`MAX_BACKOFF`) with the object's alarm brought forward to the retry, so a
  parked execution that sleeps for days still retries in time.

What a page's delivery is, and which alarm a write sets (``alarm_for``), is the
subclass's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._plugins import ObservedExecution
from ._ports import call_later

MAX_BACKOFF = 300.0
"""The longest wait, in seconds, between two failed deliveries."""

T = TypeVar("T")


class Delivery:
    """Single-flight, backed-off delivery of the records stored under one key prefix."""

    steers_kept_alarm = True
    """The journal observer's (``_plugins``): a subclass's ``alarm_for`` may bring a kept alarm forward."""
    kick_due = True
    """The journal observer's: every write kicks the delivery, unless a subclass knows better."""

    def __init__(
        self,
        core: ObservedExecution,
        *,
        record_prefix: str,
        batch: int,
        undelivered: bool,
        log: logging.Logger,
        what: str,
    ) -> None:
        self.core = core
        self.undelivered = undelivered
        """Whether records may wait in storage."""
        self._record_prefix = record_prefix
        self._batch = batch
        self._log = log
        self._what = what
        self._failures = 0
        self._retry_at = 0.0
        self._task: asyncio.Task[bool] | None = None
        self._again = False

    # -- for the subclass ------------------------------------------------------------

    async def _deliver_page(self, found: dict[str, str]) -> bool:
        """Deliver one page of pending records (key -> JSON text) and delete what was
        settled; True to go on with the next page, False to retry later."""
        raise NotImplementedError

    async def _stored(self) -> dict[str, str]:
        """The first records in storage, a page at most (a subclass that knows there are
        none may say so without reading)."""
        return await self.core.storage.list(prefix=self._record_prefix, limit=self._batch)

    def _page(self, stored: dict[str, str]) -> dict[str, str]:
        """The page to deliver, from the first records in storage (a subclass adds the
        ones it keeps in memory only)."""
        return stored

    async def restore(self) -> None:
        """Before the drive writes: put back what a crash left pending only in memory."""

    def aborted(self) -> None:
        """A write failed: the records it carried were not stored (a subclass that keeps
        some in memory forgets them)."""

    def _page_wanted(self, found: dict[str, str]) -> bool:
        """Whether to deliver this page now; False leaves it for a later delivery."""
        return True

    async def _delivered_all(self) -> None:
        """Nothing is pending any more: forget the failures."""
        self.undelivered = False
        self._failures = 0
        self._retry_at = 0.0

    def _retry_alarm(self) -> float:
        """When the next delivery may run: the retry, and never in the past."""
        return max(self._retry_at, self.core.now() + 1.0)

    # -- the JournalObserver hooks ---------------------------------------------------

    def kick(self) -> bool:
        """Deliver in the background (single-flight; backs off while deliveries fail).
        False: the writer need not let the event loop run for it (``JournalObserver``)."""
        if self._task is not None and not self._task.done():
            self._again = True
        elif self.undelivered and self.core.now() >= self._retry_at:
            self._task = self.core.spawn(self._deliver_loop())
        return False

    async def settle(self) -> bool:
        """Deliver now and wait for it; False if records are left for a later alarm.

        While deliveries are known to fail (backing off), returns at once: the alarm
        set for the retry comes back later, so nobody waits on a dead receiver.
        """
        if self.core.now() < self._retry_at:
            return False
        if self._task is not None and not self._task.done():
            self._again = True
        else:
            self._task = self.core.spawn(self._deliver_loop())
        task = self._task
        await asyncio.wait({task})
        return not task.cancelled() and task.exception() is None and task.result()

    # -- delivery ---------------------------------------------------------------------

    async def _deliver_loop(self) -> bool:
        while True:
            self._again = False
            ok = await self._deliver_once()
            if not ok or not self._again:
                return ok

    async def _deliver_once(self) -> bool:
        while True:
            found = self._page(await self._stored())
            if not found:
                if self._again:
                    return True  # a commit landed meanwhile: look again before concluding
                await self._delivered_all()
                return True
            if not self._page_wanted(found):
                return True
            if not await self._deliver_page(found):
                return False

    async def _within(self, work: Coroutine[Any, Any, T], seconds: float, who: str) -> T:
        """The result of ``work``, or TimeoutError once ``seconds`` passed without one.

        ``work`` is awaited in this task, and a timer on the core's clock (so tests on a
        virtual clock skip a hung receiver as they skip any other wait) cancels the task
        if it fires first: no task for the work, none for the timer and no
        ``asyncio.wait``, each a turn of the event loop or more (in Pyodide a turn is a
        JavaScript timer: about 0.1 ms in workerd). A clock without ``call_later`` (one a
        user wrote) gets a task that sleeps on it instead."""
        task = asyncio.current_task()
        assert task is not None, "a delivery runs in a task"
        cancelling = task.cancelling()
        fired = over = False

        def expire() -> None:
            nonlocal fired
            if not over:
                fired = True
                task.cancel()

        timer = call_later(self.core.clock, seconds, expire, self.core.spawn)
        try:
            return await work
        except asyncio.CancelledError:
            # Ours only if no one else cancelled the task meanwhile (as asyncio.timeout).
            if fired and task.uncancel() <= cancelling:
                raise TimeoutError(f"{who} did not answer within {seconds:g}s") from None
            raise
        finally:
            over = True
            timer.cancel()

    async def _back_off(self, why: str, *args: Any) -> None:
        """A delivery failed: log ``why % args``, wait longer, bring the alarm forward."""
        self._failures += 1
        delay = min(2.0 ** (self._failures - 1), MAX_BACKOFF)
        self._retry_at = self.core.now() + delay
        self._log.warning("workkit_workflow: " + why + "; next try in %.0fs", *args, delay)
        await self._alarm_no_later_than(self._retry_at)

    async def _alarm_no_later_than(self, at: float) -> None:
        """Bring the object's alarm forward to the retry (a parked execution may sleep
        for days). Not marked as ours: an early alarm only replays and re-parks, while
        clearing an alarm the engine set could strand the execution."""
        try:
            current = await self.core.storage.get_alarm()
            if current is None or current > at:
                await self.core.storage.set_alarm(at)
        except Exception:
            self._log.exception("workkit_workflow: could not set the %s retry alarm", self._what)
