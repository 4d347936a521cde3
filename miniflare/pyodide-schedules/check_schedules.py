"""Run under real Pyodide by tests/test_schedule_pyodide.py: cronsim loads, and a
schedule's ticks come out as on CPython. Prints a sentinel after the last check."""

import sys
from datetime import UTC, datetime

from workkit_workflow import Schedule, workflow
from workkit_workflow.definitions._schedule import tick_id


@workflow("pyodide-report")
async def report(ctx, input):
    return input


async def main():
    schedule = Schedule("nightly", cron="0 3 * * *", workflow=report, catch_up="all", register=False)
    now = datetime(2026, 11, 30, 3, 0, 20, tzinfo=UTC).timestamp()
    ticks, record = schedule.due(now - 3 * 86400, now)
    ids = [tick_id("nightly", t) for t in ticks]
    assert ids == [
        "nightly:2026-11-28T03:00Z",
        "nightly:2026-11-29T03:00Z",
        "nightly:2026-11-30T03:00Z",
    ], ids
    assert record == ticks[-1]
    assert schedule.next_tick(now) == datetime(2026, 12, 1, 3, tzinfo=UTC).timestamp()
    refused = ""
    try:
        Schedule("bad", cron="61 * * * *", workflow=report, register=False)
    except ValueError as exc:
        refused = str(exc)
    assert "Bad minute" in refused, refused or "a bad cron was accepted"
    print(f"SCHEDULES-OK python {sys.version_info[0]}.{sys.version_info[1]} {sys.platform}")
