"""The alarm: the lease that resumes a running execution if its object dies, the
wake-up of a parked one, and the backoff after failures.

The alarm handler never raises, except :class:`AlarmNotSet` when it could not
durably set the next alarm: then the runtime's own alarm retry is the only
wake-up left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import _journal as jn
from ._runner import Runner
from ._signals import AlarmNotSet, ControlSignal, StorageFailure
from ._state import ExecutionState

log = logging.getLogger("workkit_workflow")

DEFAULT_LEASE = 5.0
"""Seconds a running phase's alarm is set ahead: if the object dies mid-step,
this alarm resumes the execution at most this long afterwards. While the
runner is alive the alarm renews it when it fires (one write per lease period,
none per step), so a short lease costs long steps a write every few seconds
and buys prompt recovery after a crash."""


class AlarmBackoff:
    """After a failure, the next alarm is set after a delay that grows with
    consecutive failures (the runtime's own retries are few).

    The execution's driver is its backoff (a base class of ``Driver``, not an object of
    its own: one object less kept per execution in flight)."""

    execution: ExecutionState

    def __init__(self) -> None:
        self.alarm_failures = 0
        """Consecutive failures: the next delay is two to the power of it, in seconds."""
        self.alarm_unset = False
        """The runner ended without being able to set its next alarm."""

    async def retry_later(self, exc: BaseException) -> bool:
        """Set an alarm after the backoff; False when even that write failed."""
        self.alarm_failures += 1
        delay = min(2.0**self.alarm_failures, 300.0)
        log.warning("workkit_workflow: alarm failed (%r); retrying in %.0fs", exc, delay)
        try:
            await self.execution.storage.set_alarm(self.execution.now() + delay)
        except Exception:
            log.exception("workkit_workflow: could not set the retry alarm")
            return False
        return True


@dataclass
class Alarms:
    """The alarm handler of one execution."""

    execution: ExecutionState
    runner: Runner
    backoff: AlarmBackoff
    lease: float

    async def alarm(self) -> None:
        """Resume whatever is due.

        Failures set the next alarm here, because the runtime retries a raising
        handler only a few times and then drops the alarm for good. The one
        exception: when no next alarm could be stored, :class:`AlarmNotSet` is
        raised, since the runtime's retry is then the only wake-up left.
        """
        try:
            await self._on_alarm()
        except ControlSignal as exc:
            if not isinstance(exc, StorageFailure):
                raise
            if not await self.backoff.retry_later(exc):
                raise AlarmNotSet("could not set the next alarm after a storage failure") from exc
        except Exception as exc:
            if not await self.backoff.retry_later(exc):
                raise AlarmNotSet(f"could not set the next alarm after {exc!r}") from exc
        if self.backoff.alarm_unset:
            self.backoff.alarm_unset = False
            raise AlarmNotSet("the runner could not set its next alarm")

    async def _on_alarm(self) -> None:
        execution = self.execution
        execution.fault("in_alarm")
        if self.runner.active:
            # The runner is alive in this instance: renew its lease.
            await execution.storage.set_alarm(execution.now() + self.lease)
            return
        if execution.observers and await self._only_observer_is_due():
            # An alarm brought forward to retry an observer's delivery (the mail
            # outbox, the history projection) while the execution is parked:
            # deliver, re-arm, do not replay the workflow.
            assert execution.state is not None
            await execution.settle_observers()
            await execution.storage.set_alarm(execution.observed_alarm(execution.state.get("wake_at")))
            return
        await self.runner.drive_here()

    async def _only_observer_is_due(self) -> bool:
        """Parked (or paused), not cancelled, its wake-up still ahead and no event waiting."""
        execution = self.execution
        await execution.ensure_loaded()
        state = execution.state
        parked = ("sleeping", "waiting", "paused")  # paused: control (engine/_control.py)
        if state is None or state["phase"] != "main" or state["status"] not in parked:
            return False
        wake_at = state.get("wake_at")
        if wake_at is not None and wake_at <= execution.now():
            return False
        return not await execution.storage.list(prefix=jn.INBOX, limit=1)
