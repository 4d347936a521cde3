"""The local runtime's emulation of Durable Object alarms and restarts."""

from __future__ import annotations

import itertools
from typing import Any

from workkit_workflow.engine._ports import WireRequest, WireResponse
from workkit_workflow.local import LocalNamespace, VirtualClock


class AlarmProbe:
    """A bare object class that records alarm deliveries and fails on demand."""

    deliveries: list[tuple[float, dict[str, Any]]] = []
    fail_times = 0

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx

    async def fetch(self, request: WireRequest) -> WireResponse:
        await self.ctx.storage.set_alarm(self.ctx.clock.now() + 10.0)
        return WireResponse(200, {"ok": True})

    async def alarm(self, info: dict[str, Any]) -> None:
        AlarmProbe.deliveries.append((self.ctx.clock.now(), dict(info)))
        assert await self.ctx.storage.get_alarm() is None  # cleared while the handler runs
        if AlarmProbe.fail_times > 0:
            AlarmProbe.fail_times -= 1
            raise RuntimeError("handler failed")


async def test_alarm_retries_with_backoff_then_drops() -> None:
    AlarmProbe.deliveries, AlarmProbe.fail_times = [], 100
    clock = VirtualClock()
    async with LocalNamespace(clock=clock, object_class=AlarmProbe) as ns:
        start = clock.now()
        await ns.request("o", "POST", "/arm")
        await clock.sleep(600)
        times = [t - start for t, _ in AlarmProbe.deliveries]
        assert len(times) == 7  # the first delivery and 6 retries, then dropped
        assert times[0] == 10.0
        gaps = [b - a for a, b in itertools.pairwise(times)]
        for gap, base in zip(gaps, [2, 4, 8, 16, 32, 64], strict=True):
            assert base <= gap <= base * 1.25
        assert [info["retryCount"] for _, info in AlarmProbe.deliveries] == list(range(7))
        assert AlarmProbe.deliveries[1][1]["isRetry"] is True


async def test_a_handler_that_recovers_stops_the_retries() -> None:
    AlarmProbe.deliveries, AlarmProbe.fail_times = [], 2
    clock = VirtualClock()
    async with LocalNamespace(clock=clock, object_class=AlarmProbe) as ns:
        await ns.request("o", "POST", "/arm")
        await clock.sleep(600)
        assert len(AlarmProbe.deliveries) == 3


async def test_reopening_delivers_alarms_that_were_pending(tmp_path: Any) -> None:
    AlarmProbe.deliveries, AlarmProbe.fail_times = [], 0
    path = str(tmp_path / "a.db")
    clock = VirtualClock()
    first = LocalNamespace(path, clock, object_class=AlarmProbe)
    await first.request("o", "POST", "/arm")
    await first.close()  # the process "dies" before the alarm is due
    assert AlarmProbe.deliveries == []
    clock.advance(60)
    async with LocalNamespace(path, clock, object_class=AlarmProbe) as second:
        await second.start()
        await clock.sleep(1)
        assert len(AlarmProbe.deliveries) == 1


def test_changing_one_objects_alarm_writes_one_page(tmp_path: Any) -> None:
    """With thousands of objects, an alarm change is one page of the log, not two or three."""
    from workkit_workflow.local._backends import SqliteBackend

    backend = SqliteBackend(str(tmp_path / "alarms.db"), synchronous="NORMAL")
    try:
        for i in range(3000):
            backend.commit(f"obj-{i:05d}", {}, (), 1_000_000.0 + i)
        backend.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        backend.commit("obj-01234", {}, (), 2_000_000.0)
        _, frames, _ = backend.connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames == 1
        assert backend.get_alarm("obj-01234") == 2_000_000.0
        assert backend.get_alarm("obj-01235") == 1_000_000.0 + 1235
    finally:
        backend.close()
