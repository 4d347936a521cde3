"""Firing schedules: the Worker's ``scheduled`` handler and the local scheduler.

One firing of one schedule at ``now``:

1. read the schedule's record from its object (``schedule:<name>``): its last
   tick, and the ticks before it still owed (their start failed);
2. give up the owed ticks the catch-up policy no longer keeps due
   (``Schedule.owed_due``), try the others again, then compute the new due ticks
   (``Schedule.due``), oldest first;
3. start each tick's execution with the tick's id (``<name>:<UTC minute>``):
   ``/execute`` creates an id once, so a trigger delivered twice, or a firing
   retried after a crash, finds it (``existing``) instead of starting it again;
4. record each tick before starting the next (``POST /schedule``): a new tick
   advances ``last_tick`` to it, forward only, and is owed if its start failed;
   an owed tick that started is settled.

A tick whose start fails (its workflow is not registered, its input function
raises or its input is refused, storage is down) is reported (``Firing.error``
for the first, a warning logged for each) and does not hold back the ticks
after it, which start on time: the record moves past it and keeps it as owed, so
each later firing tries it again for as long as the catch-up policy keeps it due
(with ``"all"``, while it is among the ``max_catch_up`` most recent ticks), then
gives it up (``Firing.given_up``, logged). A schedule's very first tick is owed
the same way, not forgotten once it is more than a minute old. (Holding
``last_tick`` just before the failed tick instead would make every later firing
start the ticks after it again, and any of those whose execution was deleted in
the meantime, by a short ``retention``, would run twice.)

Crashes. Every tick is started before it is recorded, and a new schedule's
first firing records where it starts from (just before its first due tick)
before starting anything. So a crash before a tick's start, or before the record
of a failed start, loses nothing: the tick is still after ``last_tick``, and
the next firing treats it as missed (the catch-up policy decides). A crash, or a
failure of the record's object, between a tick's start and its record leaves
that one tick unrecorded, and the firing stops there (the ticks after it wait
for the next firing: none starts while the one before it is unrecorded); a start
that created the execution but whose answer was lost leaves the tick owed. The
next firing starts it again under the same id, which ``/execute`` finds: the
tick's execution is not deleted by its retention before the record has passed
it without owing it (``engine._retention``, for at most 7 days), so it runs
twice only if it was deleted all the same (``delete``, or that limit). A ``503
storage_unavailable`` from the record's object (it wrote nothing) is sent again
after a moment (``send_again``, as every client request is) before the firing
gives up.
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
from ._answers import raise_for, send_again, unavailable
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
    given_up: list[str] = field(default_factory=list)
    """Owed tick ids (their start failed before) that the catch-up policy no longer keeps due."""
    skipped_to: float | None = None
    """The last tick recorded, when the catch-up policy skipped ticks up to it."""
    error: WorkflowError | None = None
    """The firing's first failure: a tick's start, or reading or writing the record."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "started": self.started,
            "existing": self.existing,
            "given_up": self.given_up,
            "error": None if self.error is None else self.error.to_dict(),
        }


async def last_tick(namespace: Namespace, schedule: str) -> float | None:
    """The last tick recorded for ``schedule`` (``None`` before its first firing)."""
    value = (await read_record(namespace, schedule))["last_tick"]
    return None if value is None else float(value)


async def read_record(namespace: Namespace, schedule: str) -> dict[str, Any]:
    """``schedule``'s record: ``last_tick``, ``owed`` (a list of ticks) and ``fired``."""
    body = raise_for(await _request(namespace, schedule, "GET"))
    record: dict[str, Any] = body["schedule"]
    return {**record, "owed": [float(t) for t in record.get("owed") or []]}


async def _request(namespace: Namespace, schedule: str, method: str, body: Any = None) -> Any:
    request = (schedule_object(schedule), method, "/schedule", body)
    response = await namespace.request(*request)
    # The object wrote nothing: the same request again is safe (see _answers).
    return await send_again(namespace, *request) if unavailable(response) else response


class _Record:
    """One schedule's record as this firing moves it."""

    def __init__(self, namespace: Namespace, schedule: str, last: float | None) -> None:
        self.namespace = namespace
        self.schedule = schedule
        self.last = last

    async def write(
        self,
        advance_to: float | None = None,
        *,
        started: int = 0,
        owe: Iterable[float] = (),
        settle: Iterable[float] = (),
    ) -> None:
        """Send one advance (``None``: ``last_tick`` stays); raises if it was not recorded."""
        to = self.last if advance_to is None else advance_to
        assert to is not None  # a record with owed ticks has a last tick; the first write names one
        body = {"advance_to": to, "started": started, "owe": list(owe), "settle": list(settle)}
        raise_for(await _request(self.namespace, self.schedule, "POST", body))
        self.last = to if self.last is None else max(self.last, to)


async def fire_schedule(client: DurableWorkflows, schedule: Schedule, now: float) -> Firing:
    """Fire one schedule at ``now`` (epoch seconds); see the module docstring."""
    firing = Firing(schedule.name)
    try:
        stored = await read_record(client.namespace, schedule.name)
        last = None if stored["last_tick"] is None else float(stored["last_tick"])
        record = _Record(client.namespace, schedule.name, last)
        retry, give_up = schedule.owed_due(stored["owed"], now)
        if give_up:
            firing.given_up = [tick_id(schedule.name, t) for t in give_up]
            log.warning("workkit_workflow: schedule %r gave up ticks %s", schedule.name, firing.given_up)
            await record.write(settle=give_up)
        for tick in retry:
            created = await _start(client, schedule, tick, firing)
            if created is not None:
                await record.write(started=int(created), settle=[tick])
        ticks, advance_to = schedule.due(last, now)
        if last is None and ticks:
            # A new schedule: record where it starts from before starting anything, so
            # a crash before its first tick is recorded still leaves that tick due.
            await record.write(ticks[0] - 1)
        for tick in ticks:
            created = await _start(client, schedule, tick, firing)
            if created is None:
                await record.write(tick, owe=[tick])
            else:
                await record.write(tick, started=int(created), settle=[tick])
        if advance_to is not None and (record.last is None or advance_to > record.last):
            if not ticks:
                firing.skipped_to = advance_to
            await record.write(advance_to)
    except Exception as exc:
        # The record is behind: the next firing starts from where it is (module docstring).
        _failed(firing, exc, None)
    return firing


async def _start(client: DurableWorkflows, schedule: Schedule, tick: float, firing: Firing) -> bool | None:
    """Start one tick's execution: whether this created it, or ``None`` if the start failed."""
    try:
        handle = await client.start(
            schedule.workflow, schedule.input_for(tick), execution_id=tick_id(schedule.name, tick)
        )
    except Exception as exc:
        _failed(firing, exc, tick)
        return None
    (firing.started if handle.created else firing.existing).append(handle.execution_id)
    return handle.created


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
        """Every firing so far that started, found or gave up an execution, or failed."""

    @property
    def schedules(self) -> list[Schedule]:
        return SCHEDULES.all() if self._schedules is None else self._schedules

    async def fire(self) -> list[Firing]:
        """Fire every schedule once, now (what a trigger does)."""
        done = await fire_schedules(self.client, self.clock.now(), self.schedules)
        self.firings.extend(f for f in done if f.started or f.existing or f.given_up or f.error)
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
