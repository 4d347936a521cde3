"""The local runtime's emulation of Durable Object alarms and restarts."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

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


class EchoObject:
    """A bare object class that answers each request with what it was sent, decoded."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx

    async def fetch(self, request: WireRequest) -> WireResponse:
        sent = json.loads(request.body) if request.body else None
        return WireResponse(200, {"sent": sent, "answer": EchoObject.answer})

    answer: Any = None


async def test_bodies_cross_as_json_text_both_ways() -> None:
    """A request's body reaches the object as JSON bytes and its answer comes back as a copy
    through JSON text, as across Cloudflare's process boundary: tuples become lists, keys
    text, the caller's value is not the object's; what the package's compact codec refuses
    (NaN, a lone surrogate) crosses as ``json`` writes it."""
    ns = LocalNamespace(object_class=EchoObject, deliver_alarms=False)
    try:
        kept = {"list": [1, 2]}
        EchoObject.answer = {"tuple": (1, "two"), 3: kept, "nan": float("nan"), "lone": "\ud800"}
        sent = {"n": 1.5, "t": ("a",), "text": "é\ud800", "inf": float("inf")}
        response = await ns.request("echo", "POST", "/anything", sent)
        assert response.body["sent"]["t"] == ["a"] and response.body["sent"]["text"] == "é\ud800"
        assert response.body["sent"]["n"] == 1.5 and response.body["sent"]["inf"] == float("inf")
        answer = response.body["answer"]
        assert answer["tuple"] == [1, "two"] and answer["3"] == {"list": [1, 2]}
        assert answer["nan"] != answer["nan"] and answer["lone"] == "\ud800"
        answer["3"]["list"].append(3)
        assert kept == {"list": [1, 2]}  # a copy, not the object's own value
        EchoObject.answer = {"plain": [True, None, 0.1]}
        plain = await ns.request("echo", "GET", "/anything")
        assert plain.body == {"sent": None, "answer": {"plain": [True, None, 0.1]}}
        EchoObject.answer = {"not json": object()}
        with pytest.raises(TypeError):
            await ns.request("echo", "GET", "/anything")
    finally:
        EchoObject.answer = None
        await ns.close()
