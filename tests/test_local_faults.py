"""The local runtime under storage faults and over long sessions: no hot loops, no leaks."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import sqlite3
import tracemalloc
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from workkit_workflow import WorkflowExecutionDO, create_durable_workflow, workflow
from workkit_workflow.engine._ports import KEEP_ALARM
from workkit_workflow.local import LocalNamespace, SqliteBackend, VirtualClock

_names = itertools.count()

EXECUTIONS = 4


class DiskFull:
    """Every commit fails with SQLite's disk-full error while ``full`` says so.

    A safety valve ends the outage after ``limit`` failed commits, so a runtime
    that spins (time never advances) finishes and fails the assertions instead
    of hanging the test.
    """

    def __init__(self, ns: LocalNamespace, clock: VirtualClock, *, limit: int = 3000) -> None:
        self.clock = clock
        self.real = ns.backend.commit
        self.until: float | None = None
        self.limit = limit
        self.failed = 0
        ns.backend.commit = self.commit  # type: ignore[method-assign]

    def fail_for(self, seconds: float) -> None:
        self.until = self.clock.now() + seconds

    @property
    def full(self) -> bool:
        return self.until is not None and self.clock.now() < self.until and self.failed < self.limit

    def commit(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str], alarm: Any) -> None:
        if self.full:
            self.failed += 1
            raise sqlite3.OperationalError("database or disk is full")
        self.real(obj, puts, deletes, alarm)


def counting_object(deliveries: Counter[str]) -> type:
    class Counting(WorkflowExecutionDO):  # type: ignore[misc]
        async def alarm(self, alarm_info: Any = None) -> None:
            deliveries[self.ctx.name] += 1
            await super().alarm(alarm_info)

    return Counting


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_full_disk_does_not_spin_the_alarm_loop(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")
    effects: Counter[str] = Counter()
    deliveries: Counter[str] = Counter()

    @workflow(f"disk-full-{next(_names)}")
    async def flow(ctx: Any, input: Any) -> str:
        await ctx.step("a", lambda: effects.update([f"a{input}"]))
        await ctx.sleep("nap", 1.0)
        await ctx.step("b", lambda: effects.update([f"b{input}"]))
        return "done"

    clock = VirtualClock()
    path = None if backend == "memory" else str(tmp_path / "full.db")
    ns = LocalNamespace(path, clock, object_class=counting_object(deliveries), seed=0)
    disk = DiskFull(ns, clock)
    try:
        client = create_durable_workflow(ns)
        handles = [await client.run(flow, n, execution_id=f"x{n}") for n in range(EXECUTIONS)]
        assert [await h.status() for h in handles] == ["sleeping"] * EXECUTIONS
        disk.fail_for(2.0)  # the naps end one second into the outage
        await clock.sleep(600)
        results = [await h.result(timeout=0) for h in handles]
    finally:
        await ns.close()
    assert disk.failed > 0 and disk.failed < disk.limit, disk.failed
    # Held back 2, then 4 s: a few deliveries per execution, not thousands.
    assert sum(deliveries.values()) <= 6 * EXECUTIONS, deliveries
    assert [r.status for r in results] == ["completed"] * EXECUTIONS
    assert effects == Counter({f"{s}{n}": 1 for n in range(EXECUTIONS) for s in "ab"})


async def test_a_held_alarm_waits_with_a_growing_delay(caplog: pytest.LogCaptureFixture) -> None:
    """The runtime's own bookkeeping write fails: the alarm comes back after 2, 4, 8 s..."""
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")
    times: list[float] = []

    class Probe:
        def __init__(self, ctx: Any, env: Any) -> None:
            self.ctx = ctx

        async def alarm(self, info: Mapping[str, Any]) -> None:
            times.append(self.ctx.clock.now())

    clock = VirtualClock()
    ns = LocalNamespace(None, clock, object_class=Probe, seed=1)
    ns.backend.commit("o", {}, (), clock.now())
    disk = DiskFull(ns, clock)
    disk.fail_for(20.0)
    start = clock.now()
    try:
        await ns.start()
        await clock.sleep(100)
    finally:
        await ns.close()
    gaps = [b - a for a, b in itertools.pairwise([start, *times])]
    assert len(times) == 5, gaps  # at 0, ~2, ~6, ~14 (all failing), ~30 (the disk is back)
    for gap, base in zip(gaps[1:], [2, 4, 8, 16], strict=True):
        assert base <= gap <= base * 1.25 + 1e-9
    assert ns.backend.alarms() == {}


@pytest.mark.parametrize("rows", [2, 200])  # one INSERT statement; a transaction
def test_sqlite_commit_reports_the_real_error_when_the_disk_is_full(tmp_path: Path, rows: int) -> None:
    backend = SqliteBackend(str(tmp_path / "tiny.db"))
    try:
        backend.commit("o", {"k": "v"}, (), None)
        # Cap the file at its current size: the next growth fails with SQLITE_FULL,
        # after which SQLite has already rolled the transaction back.
        pages = backend.connection.execute("PRAGMA page_count").fetchone()[0]
        backend.connection.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            backend.commit("o", {f"k{n}": "x" * (200_000 // rows) for n in range(rows)}, (), KEEP_ALARM)
        assert backend.list("o", None, None, None, None, False) == {"k": "v"}
        backend.connection.execute("PRAGMA max_page_count = 1073741823")
        backend.commit("o", {"k2": "w"}, (), 5.0)  # the connection is usable again
        assert backend.get_alarm("o") == 5.0
    finally:
        backend.close()


# -- idle eviction ----------------------------------------------------------------------


async def _run_many(ns: LocalNamespace, count: int, steps: int, tag: str) -> None:
    @workflow(f"many-{tag}-{next(_names)}")
    async def flow(ctx: Any, input: Any) -> int:
        for n in range(steps):
            await ctx.step(f"s{n}", lambda n=n: n)
        return steps

    client = create_durable_workflow(ns)
    for n in range(count):
        handle = await client.run(flow, {}, execution_id=f"{tag}-{n}")
        assert (await handle.result(timeout=0)).ok


class Tracked(WorkflowExecutionDO):  # type: ignore[misc]
    """Remembers every instance weakly, to tell whether evicted ones are freed."""

    instances: weakref.WeakSet[Any] = weakref.WeakSet()

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        Tracked.instances.add(self)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_idle_objects_are_evicted_and_memory_stays_flat(backend: str, tmp_path: Path) -> None:
    clock = VirtualClock()
    path = None if backend == "memory" else str(tmp_path / "many.db")
    ns = LocalNamespace(path, clock, synchronous="OFF", object_class=Tracked)
    try:
        await _run_many(ns, 20, 20, "warm")
        await clock.sleep(11)
        assert ns.live_objects() == []
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            await _run_many(ns, 150, 20, "load")
            assert len(ns.live_objects()) > 0  # finished a moment ago: still warm
            await clock.sleep(11)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert ns.live_objects() == []
        assert len(Tracked.instances) == 0, "evicted objects are still referenced"
        if backend == "sqlite":
            # The memory backend *is* the database and grows with it; over SQLite
            # nothing of 150 finished executions may stay in memory.
            growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
            assert growth < 500_000, growth
    finally:
        await ns.close()


async def test_an_object_is_never_evicted_while_it_has_work(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")
    release = asyncio.Event()
    effects: Counter[str] = Counter()

    async def slow() -> str:
        effects["slow"] += 1
        await release.wait()
        return "ok"

    @workflow(f"busy-{next(_names)}")
    async def flow(ctx: Any, input: Any) -> str:
        await ctx.step("slow", slow)
        await ctx.sleep("nap", 30.0)
        return "done"

    clock = VirtualClock()
    ns = LocalNamespace(None, clock, idle_eviction=5.0)
    try:
        handle = await create_durable_workflow(ns).start(flow, {}, execution_id="busy")
        while not effects["slow"]:
            await asyncio.sleep(0)
        await _run_many(ns, 1, 1, "quick")  # an idle neighbour: evictions are due
        clock.advance(60)  # far past the idle limit while the step runs
        for _ in range(100):
            await asyncio.sleep(0)
        assert ns.live_objects() == ["busy"]
        release.set()
        await clock.sleep(3)  # the step finishes; the object parks until its alarm
        assert await handle.status() == "sleeping"  # a request: the object is warm again
        await clock.sleep(6)  # idle for more than 5 s since: gone
        assert ns.live_objects() == []
        await clock.sleep(60)
        assert (await handle.result(timeout=0)).ok
    finally:
        await ns.close()
    assert effects["slow"] == 1


async def test_idle_eviction_can_be_turned_off() -> None:
    clock = VirtualClock()
    ns = LocalNamespace(None, clock, idle_eviction=None)
    try:
        await _run_many(ns, 3, 2, "kept")
        await clock.sleep(3600)
        assert ns.live_objects() == ["kept-0", "kept-1", "kept-2"]
    finally:
        await ns.close()
    with pytest.raises(ValueError, match="idle_eviction"):
        LocalNamespace(None, idle_eviction=-1.0)


async def test_an_object_is_evicted_after_the_idle_time_not_before() -> None:
    clock = VirtualClock()
    ns = LocalNamespace(None, clock)  # the default: about 10 s, as on Cloudflare
    try:
        await _run_many(ns, 1, 2, "timed")
        await clock.sleep(9)
        assert ns.live_objects() == ["timed-0"]
        await create_durable_workflow(ns).execution("timed-0").status()  # used again: warm again
        await clock.sleep(9)
        assert ns.live_objects() == ["timed-0"]
        await clock.sleep(2)
        assert ns.live_objects() == []
    finally:
        await ns.close()
