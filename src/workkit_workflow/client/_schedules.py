"""Firing schedules: the Worker's ``scheduled`` handler and the local scheduler.

One firing of one schedule at ``now``:

1. read the schedule's last tick from its object (``schedule:<name>``);
2. compute the due ticks and apply the catch-up policy (``Schedule.due``);
3. start each due tick's execution, oldest first, with the tick's id
   (``<name>:<UTC minute>``): ``/execute`` creates an id once, so a trigger
   delivered twice, or a firing retried after a crash, starts nothing twice;
4. advance the last tick, forward only.

A crash between 3 and 4 leaves the record behind: the next firing computes the
same ticks and their ids, so nothing is lost and nothing runs twice. A tick
whose start fails (its workflow is not registered, its input function raises,
storage is down) does not hold back the later ones, which start on time; the
record then moves only to just before it (one second before the tick: everything
earlier started), so the next firing tries it again, and finds the later ones
started (``existing``), for as long as the catch-up policy still keeps it due.
That holds for a schedule's very first tick too: a failed one is recorded as
owed, not forgotten once it is more than a minute old.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..definitions._schedule import SCHEDULES, Schedule, schedule_object, tick_id
from ..engine._ports import Clock, Namespace
from ..errors import WorkflowError
from ._answers import raise_for
from ._client import DurableWorkflows, create_durable_workflow

log = logging.getLogger("workkit_workflow")


@dataclass
class Firing:
    """What one firing of one schedule did."""

    schedule: str
    started: list[str] = field(default_factory=list)
    """Tick execution ids this firing created."""
    existing: list[str] = field(default_factory=list)
    """Tick execution ids that already existed (a duplicate trigger, a retried firing)."""
    skipped_to: float | None = None
    """The last tick recorded, when the catch-up policy skipped ticks up to it."""
    error: WorkflowError | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "started": self.started,
            "existing": self.existing,
            "error": None if self.error is None else self.error.to_dict(),
        }


async def last_tick(namespace: Namespace, schedule: str) -> float | None:
    """The last tick recorded for ``schedule`` (``None`` before its first firing)."""
    body = raise_for(await namespace.request(schedule_object(schedule), "GET", "/schedule"))
    value = body["schedule"]["last_tick"]
    return None if value is None else float(value)


async def fire_schedule(client: DurableWorkflows, schedule: Schedule, now: float) -> Firing:
    """Fire one schedule at ``now`` (epoch seconds); see the module docstring."""
    firing = Firing(schedule.name)
    namespace = client.namespace
    try:
        last = await last_tick(namespace, schedule.name)
        ticks, record = schedule.due(last, now)
        if record is None:
            return firing
        failed: float | None = None
        for tick in ticks:
            try:
                handle = await client.start(
                    schedule.workflow, schedule.input_for(tick), execution_id=tick_id(schedule.name, tick)
                )
            except Exception as exc:
                # The later ticks still start; this one stays owed (see the module docstring).
                _failed(firing, exc, tick)
                failed = tick if failed is None else failed
                continue
            (firing.started if handle.created else firing.existing).append(handle.execution_id)
        if not ticks:
            firing.skipped_to = record
        advance_to = (max(record, ticks[-1]) if ticks else record) if failed is None else failed - 1
        if last is not None and advance_to <= last:
            return firing  # nothing started before the first failed tick: the record stays
        body = {"advance_to": advance_to, "started": len(firing.started)}
        raise_for(await namespace.request(schedule_object(schedule.name), "POST", "/schedule", body))
    except Exception as exc:
        _failed(firing, exc, None)
    return firing


def _failed(firing: Firing, exc: Exception, tick: float | None) -> None:
    """Report a failure of the firing (the first one is its ``error``), or of one tick's start:
    a bug in the schedule's input function is reported as a failed start."""
    where = "" if tick is None else f" (tick {tick_id(firing.schedule, tick)})"
    log.warning("workkit_workflow: schedule %r did not fire%s: %r", firing.schedule, where, exc)
    if firing.error is None and isinstance(exc, WorkflowError):
        firing.error = exc
    elif firing.error is None:
        problem = f"{type(exc).__name__}: {exc}"
        firing.error = WorkflowError(problem, code="schedule_failed", schedule=firing.schedule)


async def fire_schedules(
    binding: Any, now: float, schedules: Iterable[Schedule] | None = None
) -> list[Firing]:
    """Fire every schedule (default: all registered) at ``now``; one failing schedule
    does not stop the others."""
    client = binding if isinstance(binding, DurableWorkflows) else create_durable_workflow(binding)
    chosen = SCHEDULES.all() if schedules is None else list(schedules)
    return list(await asyncio.gather(*(fire_schedule(client, s, now) for s in chosen)))


async def run_schedules(binding: Any, controller: Any = None) -> list[dict[str, Any]]:
    """The body of a Worker's ``scheduled`` handler: fire every registered schedule at
    the trigger's ``scheduledTime``::

        class Default(WorkerEntrypoint):
            async def scheduled(self, controller, env=None, ctx=None):
                await run_schedules(self.env.WORKFLOW_DO, controller)

    Every schedule is considered on every trigger, whatever its cron: a schedule
    whose tick is not due starts nothing. So ``[triggers] crons`` needs only to
    fire at least as often as the schedules' ticks (one ``"* * * * *"`` does).
    """
    scheduled_ms = getattr(controller, "scheduledTime", None) if controller is not None else None
    now = time.time() if scheduled_ms is None else float(scheduled_ms) / 1000.0
    return [firing.to_dict() for firing in await fire_schedules(binding, now)]


class Scheduler:
    """The local runtime's stand-in for Cron Triggers: fires the schedules at each
    of their ticks on ``clock`` (a :class:`~workkit_workflow.local.VirtualClock`
    skips straight to the next tick)."""

    def __init__(self, binding: Any, clock: Clock, schedules: Sequence[Schedule] | None = None) -> None:
        self.client = binding if isinstance(binding, DurableWorkflows) else create_durable_workflow(binding)
        self.clock = clock
        self._schedules = None if schedules is None else list(schedules)
        self.firings: list[Firing] = []
        """Every firing so far that started or found an execution, or failed."""

    @property
    def schedules(self) -> list[Schedule]:
        return SCHEDULES.all() if self._schedules is None else self._schedules

    async def fire(self) -> list[Firing]:
        """Fire every schedule once, now (what a trigger does)."""
        done = await fire_schedules(self.client, self.clock.now(), self.schedules)
        self.firings.extend(f for f in done if f.started or f.existing or f.error)
        return done

    async def run(self) -> None:
        """Fire now (catching up on missed ticks), then at every tick, until cancelled."""
        while True:
            try:
                await self.fire()
            except Exception:
                # Each schedule's WorkflowError is already reported in its Firing; anything
                # else must not end the loop: the next tick tries again.
                log.exception("workkit_workflow: firing schedules failed")
            schedules = self.schedules
            if not schedules:
                return
            now = self.clock.now()
            await self.clock.sleep(min(s.next_tick(now) for s in schedules) - now)
