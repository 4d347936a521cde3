"""Schedules: cron ticks start executions, once per tick, with a catch-up policy
for ticks missed while nothing ran (both local storages, virtual clock)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from workkit_workflow import REGISTRY, Schedule, Scheduler, run_schedules, workflow
from workkit_workflow.client._schedules import fire_schedules, last_tick, read_record
from workkit_workflow.definitions._schedule import SCHEDULES, tick_id
from workkit_workflow.engine._ports import KEEP_ALARM, WireResponse
from workkit_workflow.errors import ExecutionNotFoundError, InvalidOptionError, TransportError
from workkit_workflow.testing import WorkflowTestEnv

HOUR = 3600.0
START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC).timestamp()


@workflow("scheduled-report")
async def report(ctx: Any, input: Any) -> Any:
    return await ctx.step("build", lambda: input)


def hourly(catch_up: str = "latest", **options: Any) -> Schedule:
    return Schedule("hourly", cron="0 * * * *", workflow=report, catch_up=catch_up, register=False, **options)  # type: ignore[arg-type]


def at(hours: float) -> float:
    return START + hours * HOUR


def ids(*hours: int) -> list[str]:
    return [tick_id("hourly", at(h)) for h in hours]


async def move_to(env: WorkflowTestEnv, instant: float) -> None:
    await env.clock.sleep(instant - env.clock.now())


async def run_scheduler(env: WorkflowTestEnv, schedule: Schedule, until: float) -> list[str]:
    """Run a scheduler until ``until``, then stop it (the outage starts); the ids it started."""
    scheduler = Scheduler(env.client, env.clock, [schedule])
    task = asyncio.ensure_future(scheduler.run())
    await move_to(env, until)
    await env.settle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return [i for firing in scheduler.firings for i in firing.started]


@pytest.fixture
def clock_at_start(env: WorkflowTestEnv) -> WorkflowTestEnv:
    env.clock._set(at(0) - 30 * 60)  # 23:30, half an hour before the first tick
    return env


# -- catch-up over a simulated outage ----------------------------------------------------


@pytest.mark.parametrize(
    ("catch_up", "options", "after_outage"),
    [
        ("latest", {}, [7]),
        ("all", {}, [3, 4, 5, 6, 7]),
        ("all", {"max_catch_up": 2}, [6, 7]),
        ("none", {}, []),
    ],
)
async def test_ticks_missed_during_an_outage_follow_the_catch_up_policy(
    clock_at_start: WorkflowTestEnv, catch_up: str, options: dict[str, Any], after_outage: list[int]
) -> None:
    env = clock_at_start
    schedule = hourly(catch_up, **options)
    # Up: ticks 00:00, 01:00, 02:00 run on time.
    assert await run_scheduler(env, schedule, at(2.5)) == ids(0, 1, 2)
    # Down from 02:30 to 07:20 (the process is gone), then up again until 08:30.
    await env.restart()
    await move_to(env, at(7) + 20 * 60)
    started = await run_scheduler(env, schedule, at(8.5))
    assert started == ids(*after_outage, 8)
    assert await last_tick(env.ns, "hourly") == at(8)
    for execution_id in started:
        result = await env.result(env.client.execution(execution_id))
        assert result.ok


async def test_a_new_schedule_does_not_start_ticks_from_before_it_existed(
    clock_at_start: WorkflowTestEnv,
) -> None:
    env = clock_at_start
    await move_to(env, at(5) + 10 * 60)
    # "all", but nothing was missed: the schedule did not exist before.
    assert await run_scheduler(env, hourly("all"), at(6.5)) == ids(6)


async def test_input_can_be_computed_from_the_tick(clock_at_start: WorkflowTestEnv) -> None:
    env = clock_at_start
    schedule = Schedule(
        "daily",
        cron="@daily",
        workflow="scheduled-report",
        input=lambda t: {"day": t.isoformat()},
        register=False,
    )
    scheduler = Scheduler(env.client, env.clock, [schedule])
    await move_to(env, at(0))
    [firing] = await scheduler.fire()
    assert firing.started == ["daily:2026-11-30T00:00Z"]
    result = await env.result(env.client.execution(firing.started[0]))
    assert result.value == {"day": "2026-11-30T00:00:00+00:00"}


# -- duplicates -------------------------------------------------------------------------


async def test_a_trigger_delivered_twice_starts_one_execution(clock_at_start: WorkflowTestEnv) -> None:
    env = clock_at_start
    schedule = hourly("all")
    await move_to(env, at(1))
    first, second = await asyncio.gather(
        fire_schedules(env.client, at(1), [schedule]), fire_schedules(env.client, at(1), [schedule])
    )
    created = first[0].started + second[0].started
    assert created == ids(1)
    again = await fire_schedules(env.client, at(1) + 5, [schedule])
    assert again[0].started == [] and again[0].existing == []


class DropsAdvance:
    """A namespace that loses the first ``POST /schedule`` recording ``tick`` (the firing
    crashed after starting it, before recording it), or, given ``refusals``, answers it
    that many times with 503 ``storage_unavailable`` (its storage failed for a moment)."""

    def __init__(self, inner: Any, tick: float, *, refusals: int = 0) -> None:
        self.inner = inner
        self.tick = tick
        self.refusals = refusals
        self.dropped = 1 if refusals else 0

    async def request(
        self, name: str, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None
    ) -> WireResponse:
        if path == "/schedule" and method == "POST" and body["advance_to"] == self.tick:
            if self.refusals:
                self.refusals -= 1
                error = {"code": "storage_unavailable", "message": "try again", "retryable": True}
                return WireResponse(503, {"error": error})
            if not self.dropped:
                self.dropped += 1
                raise TransportError("connection lost")
        return await self.inner.request(name, method, path, body, query)


async def test_a_firing_that_crashed_before_recording_is_repeated_without_duplicates(
    clock_at_start: WorkflowTestEnv,
) -> None:
    env = clock_at_start
    flaky = DropsAdvance(env.ns, at(0))
    schedule = hourly("all")
    await move_to(env, at(0))
    [crashed] = await fire_schedules(flaky, at(0), [schedule])
    assert crashed.started == ids(0) and crashed.error is not None
    # A new schedule records where it starts from before its first tick starts.
    assert await last_tick(env.ns, "hourly") == at(0) - 1
    [retried] = await fire_schedules(flaky, at(0) + 20, [schedule])
    assert retried.started == [] and retried.existing == ids(0) and retried.error is None
    assert await last_tick(env.ns, "hourly") == at(0)


@workflow("scheduled-brief", retention="10m")
async def brief(ctx: Any, input: Any) -> Any:
    return await ctx.step("build", lambda: BRIEF_RUNS.append(ctx.execution_id) or "ok")


BRIEF_RUNS: list[str] = []


async def test_a_tick_kept_briefly_is_not_deleted_before_its_schedule_records_it(
    clock_at_start: WorkflowTestEnv,
) -> None:
    env = clock_at_start
    BRIEF_RUNS.clear()
    schedule = Schedule("brief", cron="0 * * * *", workflow=brief, catch_up="all", register=False)
    await fire_schedules(env.client, at(0) - 60, [schedule])  # its record, from 23:59
    await move_to(env, at(0))
    flaky = DropsAdvance(env.ns, at(0))
    [crashed] = await fire_schedules(flaky, at(0), [schedule])  # started, not recorded
    assert crashed.started == ["brief:2026-11-30T00:00Z"] and crashed.error is not None
    await move_to(env, at(0) + 1800)  # its 10-minute retention is long past
    await env.settle()
    tick = env.client.execution("brief:2026-11-30T00:00Z")
    assert await tick.status() == "completed"  # kept: deleted now, the next firing would rerun it
    [next_hour] = await fire_schedules(env.client, at(1), [schedule])
    assert next_hour.existing == ["brief:2026-11-30T00:00Z"]
    assert next_hour.started == ["brief:2026-11-30T01:00Z"]
    assert BRIEF_RUNS == ["brief:2026-11-30T00:00Z", "brief:2026-11-30T01:00Z"]  # each once
    await move_to(env, at(1) + 1800)  # recorded now: both go at their next alarm
    await env.settle()
    for execution_id in ("brief:2026-11-30T00:00Z", "brief:2026-11-30T01:00Z"):
        with pytest.raises(ExecutionNotFoundError):
            await env.client.execution(execution_id).status()


class LosesAnswer:
    """A namespace that creates ``execution_id`` but loses ``/execute``'s answer."""

    def __init__(self, inner: Any, execution_id: str) -> None:
        self.inner = inner
        self.execution_id = execution_id

    async def request(
        self, name: str, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None
    ) -> WireResponse:
        response = await self.inner.request(name, method, path, body, query)
        if path == "/execute" and name == self.execution_id:
            raise TransportError("connection lost")
        return response


async def test_a_tick_owed_after_its_answer_was_lost_is_kept_until_found(
    clock_at_start: WorkflowTestEnv,
) -> None:
    env = clock_at_start
    BRIEF_RUNS.clear()
    schedule = Schedule("brief", cron="0 * * * *", workflow=brief, catch_up="all", register=False)
    await fire_schedules(env.client, at(0) - 60, [schedule])
    await move_to(env, at(0))
    # The tick's execution is created, but the firing sees a failed start: it owes the tick.
    [lost] = await fire_schedules(LosesAnswer(env.ns, "brief:2026-11-30T00:00Z"), at(0), [schedule])
    assert lost.started == [] and lost.error is not None
    assert await read_record(env.ns, "brief") == {"last_tick": at(0), "fired": 0, "owed": [at(0)]}
    await move_to(env, at(0) + 1800)  # its 10-minute retention is long past: kept, as owed
    await env.settle()
    assert await env.client.execution("brief:2026-11-30T00:00Z").status() == "completed"
    [next_hour] = await fire_schedules(env.client, at(1), [schedule])
    assert next_hour.existing == ["brief:2026-11-30T00:00Z"]
    assert next_hour.started == ["brief:2026-11-30T01:00Z"] and next_hour.error is None
    assert await read_record(env.ns, "brief") == {"last_tick": at(1), "fired": 1, "owed": []}
    await env.settle()
    assert BRIEF_RUNS == ["brief:2026-11-30T00:00Z", "brief:2026-11-30T01:00Z"]  # each once


async def test_an_id_shaped_like_a_tick_without_a_schedule_is_deleted_on_time(env: WorkflowTestEnv) -> None:
    handle = await env.run(brief, None, execution_id="nobody:2026-11-30T00:00Z")
    assert (await env.result(handle)).ok
    await move_to(env, env.clock.now() + 660)
    await env.settle()
    with pytest.raises(ExecutionNotFoundError):
        await handle.status()


async def test_a_crash_between_two_ticks_leaves_only_the_unrecorded_one_to_repeat(
    clock_at_start: WorkflowTestEnv,
) -> None:
    env = clock_at_start
    schedule = hourly("all")
    await move_to(env, at(0))
    await fire_schedules(env.client, at(0), [schedule])
    # Three ticks to catch up; the firing crashes after starting 02:00, before recording it.
    await move_to(env, at(3))
    [crashed] = await fire_schedules(DropsAdvance(env.ns, at(2)), at(3), [schedule])
    assert crashed.started == ids(1, 2) and crashed.error is not None
    assert await last_tick(env.ns, "hourly") == at(1)  # 01:00 was recorded before 02:00 started
    [retried] = await fire_schedules(env.client, at(3) + 20, [schedule])
    assert retried.existing == ids(2) and retried.started == ids(3) and retried.error is None
    assert await last_tick(env.ns, "hourly") == at(3)


async def test_a_tick_whose_record_is_refused_for_a_moment_runs_once(clock_at_start: WorkflowTestEnv) -> None:
    env = clock_at_start
    BRIEF_RUNS.clear()
    schedule = Schedule("short", cron="0 * * * *", workflow=brief, catch_up="all", register=False)
    await move_to(env, at(0) - 60)
    await fire_schedules(env.client, at(0) - 60, [schedule])
    await move_to(env, at(0))
    # The tick starts; its record is refused once (503): sent again, it is recorded, so the
    # next firing does not start the tick again after its execution was deleted.
    [first] = await fire_schedules(DropsAdvance(env.ns, at(0), refusals=1), at(0), [schedule])
    assert first.started == ["short:2026-11-30T00:00Z"] and first.error is None
    await move_to(env, at(1))
    await env.settle()
    with pytest.raises(ExecutionNotFoundError):
        await env.client.execution("short:2026-11-30T00:00Z").status()
    [second] = await fire_schedules(env.client, at(1), [schedule])
    assert second.started == ["short:2026-11-30T01:00Z"]
    await env.settle()
    assert BRIEF_RUNS == ["short:2026-11-30T00:00Z", "short:2026-11-30T01:00Z"]


async def test_the_record_never_moves_back(env: WorkflowTestEnv) -> None:
    name = "schedule:hourly"
    assert (await env.ns.request(name, "POST", "/schedule", {"advance_to": at(5)})).body["advanced"]
    moved = await env.ns.request(name, "POST", "/schedule", {"advance_to": at(3)})
    assert moved.body == {"schedule": {"last_tick": at(5), "fired": 0, "owed": []}, "advanced": False}


async def test_a_record_written_by_version_1_is_read_and_advanced(env: WorkflowTestEnv) -> None:
    name = "schedule:hourly"
    await env.ns.request(name, "GET", "/schedule")
    v1 = json.dumps({"v": 1, "last_tick": at(2), "fired": 3, "updated_at": 1.0})
    env.ns.backend.commit(name, {"schedule": v1}, [], KEEP_ALARM)
    assert await read_record(env.ns, "hourly") == {"last_tick": at(2), "fired": 3, "owed": []}
    body = {"advance_to": at(3), "owe": [at(3)]}
    moved = await env.ns.request(name, "POST", "/schedule", body)
    assert moved.body == {"schedule": {"last_tick": at(3), "fired": 3, "owed": [at(3)]}, "advanced": True}
    # A tick is owed only by the advance that passes it; settling is idempotent.
    late = {"advance_to": at(3), "owe": [at(1)], "settle": [at(3)], "started": 1}
    settled = await env.ns.request(name, "POST", "/schedule", late)
    assert settled.body == {"schedule": {"last_tick": at(3), "fired": 4, "owed": []}, "advanced": False}


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"advance_to": "soon"},
        {"advance_to": -1},
        {"advance_to": 1, "started": True},
        {"advance_to": 1, "owe": 1},
        {"advance_to": 1, "settle": ["1"]},
        {"advance_to": 1, "owe": [float("inf")]},
    ],
)
async def test_a_malformed_advance_is_refused(env: WorkflowTestEnv, body: Any) -> None:
    response = await env.ns.request("schedule:x", "POST", "/schedule", body)
    assert response.status == 400 and response.body["error"]["code"] == "invalid_request"
    assert (await env.ns.request("schedule:x", "GET", "/schedule")).body["schedule"]["last_tick"] is None


async def test_a_new_schedules_failed_first_tick_is_started_at_the_next_tick(
    clock_at_start: WorkflowTestEnv,
) -> None:
    env = clock_at_start
    schedule = Schedule("later", cron="0 * * * *", workflow="not-yet-defined", catch_up="all", register=False)
    await move_to(env, at(0) + 5)
    [failed] = await fire_schedules(env.client, at(0) + 5, [schedule])
    assert failed.error is not None and failed.error.code == "unknown_workflow"
    assert await read_record(env.ns, "later") == {"last_tick": at(0), "fired": 0, "owed": [at(0)]}

    @workflow("not-yet-defined")
    async def defined(ctx: Any, input: Any) -> str:
        return "ok"

    try:
        # Deployed half an hour later; the next trigger is at 01:00, long after the minute
        # a new schedule looks back.
        await move_to(env, at(1))
        [fired] = await fire_schedules(env.client, at(1), [schedule])
        assert fired.started == ["later:2026-11-30T00:00Z", "later:2026-11-30T01:00Z"]
        assert await read_record(env.ns, "later") == {"last_tick": at(1), "fired": 2, "owed": []}
    finally:
        REGISTRY.unregister("not-yet-defined")


async def test_a_new_schedule_that_crashes_before_recording_its_failed_first_tick_still_owes_it(
    clock_at_start: WorkflowTestEnv,
) -> None:
    env = clock_at_start
    schedule = hourly("all", input=no_data_at_two)
    await move_to(env, at(2) + 5)
    # The first tick's start fails and the firing crashes before recording that.
    [crashed] = await fire_schedules(DropsAdvance(env.ns, at(2)), at(2) + 5, [schedule])
    assert crashed.started == [] and crashed.error is not None
    assert await last_tick(env.ns, "hourly") == at(2) - 1  # recorded before anything started
    await move_to(env, at(3))
    [later] = await fire_schedules(env.client, at(3), [schedule])
    assert later.started == ids(3) and "no data for 02:00" in str(later.error)
    assert await read_record(env.ns, "hourly") == {"last_tick": at(3), "fired": 1, "owed": [at(2)]}


async def test_a_tick_that_cannot_start_is_tried_again(clock_at_start: WorkflowTestEnv) -> None:
    env = clock_at_start
    schedule = Schedule("later", cron="0 * * * *", workflow="not-yet-defined", register=False)
    await move_to(env, at(0))
    [failed] = await fire_schedules(env.client, at(0), [schedule])
    assert failed.error is not None and failed.error.code == "unknown_workflow"

    @workflow("not-yet-defined")
    async def defined(ctx: Any, input: Any) -> str:
        return "ok"

    try:
        # A new schedule's first tick stays owed: the next trigger, more than the minute a
        # new schedule looks back later, still starts it.
        [fired] = await fire_schedules(env.client, at(0) + 90, [schedule])
        assert fired.started == ["later:2026-11-30T00:00Z"]
        assert await last_tick(env.ns, "later") == at(0)
    finally:
        REGISTRY.unregister("not-yet-defined")


def no_data_at_two(tick: datetime) -> Any:
    if tick.hour == 2:
        raise ValueError("no data for 02:00")
    return {"h": tick.hour}


async def test_a_tick_that_keeps_failing_does_not_hold_back_the_later_ones(
    clock_at_start: WorkflowTestEnv,
) -> None:
    env = clock_at_start
    BRIEF_RUNS.clear()
    schedule = Schedule(
        "short",
        cron="0 * * * *",
        workflow=brief,
        input=no_data_at_two,
        catch_up="all",
        max_catch_up=3,
        register=False,
    )
    firings = []
    for hour in range(7):
        await move_to(env, at(hour))
        await env.settle()
        [firing] = await fire_schedules(env.client, at(hour), [schedule])
        firings.append(firing)
    short = [f"short:2026-11-30T0{h}:00Z" for h in range(7)]
    # Each tick starts at its own hour, once (its execution is deleted ten minutes after it
    # ends, so a tick started again would run again); 02:00 fails at each firing while it is
    # among the three most recent ticks, then is given up.
    assert [f.started for f in firings] == [[short[0]], [short[1]], [], *[[short[h]] for h in (3, 4, 5, 6)]]
    assert [f.existing for f in firings] == [[]] * 7
    assert [f.error is not None for f in firings] == [False, False, True, True, True, False, False]
    assert all("no data for 02:00" in str(f.error) for f in firings[2:5])
    assert [f.given_up for f in firings] == [[]] * 5 + [[short[2]], []]
    record = await read_record(env.ns, "short")
    assert record["last_tick"] == at(6) and record["owed"] == []
    await env.settle()
    assert [short[h] for h in (0, 1, 3, 4, 5, 6)] == BRIEF_RUNS


async def test_a_failed_tick_is_owed_across_a_crash_and_started_once_it_can(
    clock_at_start: WorkflowTestEnv,
) -> None:
    env = clock_at_start
    flaky = {"02": True}

    def fails_until_fixed(tick: datetime) -> Any:
        if tick.hour == 2 and flaky["02"]:
            raise ValueError("no data for 02:00 yet")
        return {"h": tick.hour}

    schedule = hourly("all", input=fails_until_fixed)
    for hour in (0, 1):
        await move_to(env, at(hour))
        await fire_schedules(env.client, at(hour), [schedule])
    await move_to(env, at(3))
    # 02:00 and 03:00 are due; 02:00 fails and is recorded as owed; the firing crashes after
    # starting 03:00, before recording it.
    [crashed] = await fire_schedules(DropsAdvance(env.ns, at(3)), at(3), [schedule])
    assert crashed.started == ids(3) and "no data for 02:00" in str(crashed.error)
    assert await read_record(env.ns, "hourly") == {"last_tick": at(2), "fired": 2, "owed": [at(2)]}
    # The next trigger: 02:00 still fails, 03:00 is found and recorded.
    [retried] = await fire_schedules(env.client, at(3) + 60, [schedule])
    assert retried.started == [] and retried.existing == ids(3) and retried.error is not None
    assert await read_record(env.ns, "hourly") == {"last_tick": at(3), "fired": 2, "owed": [at(2)]}
    # The data arrives: 02:00 starts at the next firing, late, and 04:00 on time.
    flaky["02"] = False
    await move_to(env, at(4))
    [fixed] = await fire_schedules(env.client, at(4), [schedule])
    assert fixed.started == ids(2, 4) and fixed.error is None
    assert await read_record(env.ns, "hourly") == {"last_tick": at(4), "fired": 4, "owed": []}


@pytest.mark.parametrize(
    ("catch_up", "kept_until"),
    [("all", at(5) + 1), ("latest", at(1) - 1), ("none", at(0) + 59)],
)
def test_an_owed_tick_is_kept_while_the_catch_up_policy_would_start_it(
    catch_up: str, kept_until: float
) -> None:
    schedule = hourly(catch_up, max_catch_up=6)
    assert schedule.owed_due([at(0)], kept_until) == ([at(0)], [])
    later = schedule.next_tick(kept_until) if catch_up == "all" else kept_until + 1
    assert schedule.owed_due([at(0)], later) == ([], [at(0)])


# -- the Worker's scheduled handler -------------------------------------------------------


async def test_on_scheduled_fires_registered_schedules_at_the_triggers_time(env: WorkflowTestEnv) -> None:
    Schedule("worker-nightly", cron="0 3 * * *", workflow=report, input={"n": 1})
    try:
        tick = datetime(2026, 11, 30, 3, 0, tzinfo=UTC).timestamp()
        controller = SimpleNamespace(cron="0 3 * * *", scheduledTime=tick * 1000, type="scheduled")
        report_ = await run_schedules(env.ns, controller)
        mine = [r for r in report_ if r["schedule"] == "worker-nightly"]
        assert mine == [
            {
                "schedule": "worker-nightly",
                "started": [schedule_id := "worker-nightly:2026-11-30T03:00Z"],
                "existing": [],
                "given_up": [],
                "error": None,
            }
        ]
        # Cloudflare may deliver the same trigger again: nothing new starts.
        again = [r for r in await run_schedules(env.ns, controller) if r["schedule"] == "worker-nightly"]
        assert again[0]["started"] == [] and again[0]["error"] is None
        assert (await env.result(env.client.execution(schedule_id))).value == {"n": 1}
    finally:
        SCHEDULES.unregister("worker-nightly")


# -- definitions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "says"),
    [
        ("0 0 * * * *", "has 6 fields"),
        ("* * * *", "has 4 fields"),
        ("", "non-empty"),
        (None, "non-empty"),
        ("61 * * * *", "invalid: Bad minute"),
        ("*/0 * * * *", "invalid"),
        ("0 0 30 2 *", "invalid"),
        ("0 25 * * *", "invalid: Bad hour"),
        ("0 0 * * FUNDAY", "invalid"),
        ("@every_minute", "has 1 fields"),
    ],
)
def test_a_bad_cron_is_refused_when_the_schedule_is_defined(cron: Any, says: str) -> None:
    with pytest.raises(InvalidOptionError, match=says) as caught:
        Schedule("bad", cron=cron, workflow=report, register=False)
    assert caught.value.details["cron"] == cron
    assert "bad" not in [s.name for s in SCHEDULES.all()]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"catch_up": "some"}, "catch_up must be one of"),
        ({"max_catch_up": 0}, "max_catch_up"),
        ({"max_catch_up": 10_000}, "max_catch_up"),
        ({"name": "has space"}, "schedule name"),
        ({"name": "x" * 101}, "schedule name"),
        ({"name": "limit:x"}, "schedule name"),
        ({"name": "schedule:x"}, "schedule name"),
        ({"workflow": 42}, "workflow must be"),
    ],
)
def test_bad_schedule_options_are_refused(options: dict[str, Any], says: str) -> None:
    arguments: dict[str, Any] = {"name": "ok", "cron": "@hourly", "workflow": report, "register": False}
    with pytest.raises(Exception, match=says):
        Schedule(**{**arguments, **options})


@pytest.mark.parametrize("name", ["limit", "schedule"])
def test_a_schedule_whose_tick_ids_would_name_the_librarys_own_objects_is_refused(name: str) -> None:
    # Its ticks would be "limit:<minute>" or "schedule:<minute>": the names of a limit's
    # coordinator and of a schedule's record, which no execution id may take.
    with pytest.raises(InvalidOptionError, match="reserved") as caught:
        Schedule(name, cron="@hourly", workflow=report, register=False)
    assert caught.value.details["schedule"] == name
    assert name not in [s.name for s in SCHEDULES.all()]


@pytest.mark.parametrize("name", ["limits", "limit-report", "schedules", "my-schedule", "Limit"])
def test_a_schedule_name_that_only_looks_reserved_is_accepted(name: str) -> None:
    schedule = Schedule(name, cron="@hourly", workflow=report, register=False)
    assert tick_id(schedule.name, 0) == f"{name}:1970-01-01T00:00Z"


def test_aliases_and_spacing_normalise_to_five_fields() -> None:
    assert Schedule("a", cron="@daily", workflow=report, register=False).cron == "0 0 * * *"
    assert Schedule("b", cron=" 0   3 * *  MON ", workflow=report, register=False).cron == "0 3 * * MON"


def test_a_step_over_a_one_value_range_means_that_value() -> None:
    # cronsim 2.8 alone reads "1-1/2" as "1-7/2" (Mon, Wed, Fri, Sun); cron means Monday.
    schedule = Schedule("mondays", cron="0 0 * * 1-1/2", workflow=report, register=False)
    assert schedule.cron == "0 0 * * 1"
    tuesday = datetime(2023, 11, 14, 22, 0, tzinfo=UTC).timestamp()
    assert schedule.next_tick(tuesday) == datetime(2023, 11, 20, tzinfo=UTC).timestamp()


def test_the_readme_schedules_example_runs_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    match = re.search(r"<!-- schedules-example -->\n```python\n(.*?)```", readme, re.S)
    assert match is not None
    (tmp_path / "example.py").write_text(match.group(1))
    src = str(Path(__file__).parents[1] / "src")
    run = subprocess.run(
        [sys.executable, str(tmp_path / "example.py")],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == (
        "[['nightly-report:2026-01-01T03:00Z'], ['nightly-report:2026-01-02T03:00Z'], "
        "['nightly-report:2026-01-03T03:00Z']]"
    )


async def test_an_input_function_that_raises_fails_that_firing_only(clock_at_start: WorkflowTestEnv) -> None:
    env = clock_at_start

    def broken(tick: datetime) -> Any:
        raise KeyError("region")

    bad = Schedule("broken", cron="0 * * * *", workflow=report, input=broken, register=False)
    await move_to(env, at(0))
    failed, fired = await fire_schedules(env.client, at(0), [bad, hourly()])
    assert failed.error is not None and failed.error.code == "schedule_failed"
    assert "KeyError" in failed.error.message
    assert fired.started == ids(0)
    assert await read_record(env.ns, "broken") == {"last_tick": at(0), "fired": 0, "owed": [at(0)]}


async def test_a_trigger_between_the_ticks_starts_from_where_it_fired(
    clock_at_start: WorkflowTestEnv,
) -> None:
    # Triggers every 5 minutes, a schedule at minute 7: each tick starts at the next
    # trigger after it (late), none is lost.
    env = clock_at_start
    schedule = Schedule("at-seven", cron="7 * * * *", workflow=report, register=False)
    started = []
    for minutes in range(0, 135, 5):  # 00:00 to 02:10
        [firing] = await fire_schedules(env.client, at(0) + minutes * 60, [schedule])
        started += firing.started
    assert started == [
        "at-seven:2026-11-30T00:07Z",
        "at-seven:2026-11-30T01:07Z",
        "at-seven:2026-11-30T02:07Z",
    ]
