"""Measurements of the engine on the local runtime's SQLite storage."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workkit_workflow import create_durable_workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.local import LocalNamespace, SqliteBackend, VirtualClock

from . import _workflows as wf


class Engine:
    """One LocalNamespace on a SQLite file; runs an N-step workflow to completion.

    The runtime's default interleaving (``interleave="storage"``: every storage
    await may let another request run), so the figure is what an application gets.
    ``history=True`` adds the history projection (a local D1 next to the file).
    """

    def __init__(
        self,
        path: str,
        synchronous: str,
        *,
        history: bool = False,
        clock: Any = None,
        seed: int | None = None,
        interleave: str = "storage",
    ) -> None:
        env = None
        self.history = history
        if history:
            from workkit_workflow.history import LocalD1

            # The same synchronous setting as the object's storage: the same durable work.
            self.d1: Any = LocalD1(path + ".d1", synchronous=synchronous)
            env = {"HISTORY_DB": self.d1}
        # ``clock`` and ``seed``: a clock that ticks per reading and a fixed interleaving make a
        # run's work the same from run to run (``bench._instructions``); the timed cells use neither.
        # ``interleave="none"``: no write lets the loop run anything else (bench._instructions).
        self.ns = LocalNamespace(
            path, clock, synchronous=synchronous, env=env, seed=seed, interleave=interleave
        )
        self.client = create_durable_workflow(self.ns)
        self._runs = 0
        self.last_writes = 0
        """Storage writes of the last run."""
        self.last_bytes = 0
        """Bytes the last run wrote to storage (keys and values, as ``stats.bytes_written``)."""

    def wal_files(self) -> dict[str, tuple[str, Any]]:
        """The SQLite files this system writes, by name: path and the connection that writes
        it (the bench reads their write-ahead logs, ``bench._wal``, and empties them between
        timed runs)."""
        backend = self.ns.backend
        files: dict[str, tuple[str, Any]] = {"object file": (backend.path, backend.connection)}
        if self.history:
            files["D1 file"] = (self.d1.path, self.d1.connection)
        return files

    async def run(self, steps: int, workflow: Any = wf.linear) -> float:
        self._runs += 1
        # Numbered so each run's keys sort after every earlier run's: each appends at the end of
        # the table, as the floor's do. (Run 10 sorting between runs 1 and 2 wrote 1.4x the pages.)
        execution_id = f"linear-{self._runs:06d}-{steps}"
        writes, written = self.ns.stats.writes, self.ns.stats.bytes_written
        start = time.perf_counter()
        handle = await self.client.run(workflow, {"n": steps}, execution_id=execution_id)
        if self.history:
            # Until the history is in D1 too: its last records go out as the run ends. Only
            # this execution's object: waiting on every object the namespace holds would
            # cost each run more than the last (one live object per earlier run).
            await self.ns.idle(name=execution_id)
        elapsed = time.perf_counter() - start
        self.last_writes = self.ns.stats.writes - writes
        self.last_bytes = self.ns.stats.bytes_written - written
        status = await handle.status()
        if status != "completed":
            raise RuntimeError(f"bench execution {execution_id} ended {status}")
        return elapsed

    async def bytes_per_write(self, steps: int = 100) -> float:
        self.ns.stats.reset()
        await self.run(steps)
        return self.ns.stats.bytes_written / self.ns.stats.writes

    async def bytes_per_step(self, steps: int = 100) -> float:
        self.ns.stats.reset()
        await self.run(steps)
        return self.ns.stats.bytes_written / steps

    async def close(self) -> None:
        await self.ns.close()


# -- cold replay ------------------------------------------------------------------


@dataclass
class ReplayResult:
    steps: int
    total: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """Process CPU of each resume (the wall time above also holds other jobs' turns)."""
    list_decode: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    journal_bytes: int = 0
    live_peak_bytes: int = 0
    """Peak memory of running the ``steps`` steps live (the journal's build, untimed)."""
    keyed: bool = False
    """Every step has an idempotency key (no target: what the keys cost)."""


async def _build_parked(path: str, steps: int, workflow: Any = wf.replay) -> tuple[str, int]:
    """An execution that finished ``steps`` steps and now waits for an event, and the
    peak memory (tracemalloc) of running them live, start to parking."""
    ns = LocalNamespace(path, synchronous="OFF", interleave="none")
    try:
        client = create_durable_workflow(ns)
        # What a process makes once (imports, caches) is made before the trace starts.
        warm = await client.run(workflow, {"n": 2}, execution_id="warm")
        await warm.send_event("go", "now")
        tracemalloc.start()
        try:
            handle = await client.run(workflow, {"n": steps}, execution_id="cold")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        status = await handle.status()
        if status != "waiting":
            raise RuntimeError(f"replay setup ended {status}")
    finally:
        await ns.close()
    return "cold", peak


async def _replay_once(path: str, execution_id: str, *, trace: bool) -> tuple[float, float, float, int]:
    """Open the file in a new namespace (a cold object) and time the whole resume:
    event in, one list of the journal, decode, replay, completion. Then, on a new
    connection, time one list of the journal plus decoding it, alone."""
    ns = LocalNamespace(path, synchronous="NORMAL", interleave="none")
    try:
        client = create_durable_workflow(ns)
        if trace:
            tracemalloc.start()
        start, cpu = time.perf_counter(), time.process_time()
        await client.execution(execution_id).send_event("go", "now")
        await ns.idle()
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = 0
        if trace:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        status = await client.execution(execution_id).status()
        if status != "completed":
            raise RuntimeError(f"replayed execution ended {status}")
    finally:
        await ns.close()
    backend = SqliteBackend(path, synchronous="NORMAL")
    try:
        start = time.perf_counter()
        snapshot = backend.list(execution_id, None, None, None, None, False)
        for key, text in snapshot.items():
            jn.decode_record(key, text)
        list_decode = time.perf_counter() - start
    finally:
        backend.close()
    return total, cpu, list_decode, peak


async def cold_replay(
    workdir: str, lengths: Sequence[int], reps: int, *, keyed: bool = False
) -> list[ReplayResult]:
    """Resume executions of ``lengths`` finished steps from a cold object (``keyed``: every
    step has an idempotency key)."""
    results = []
    for steps in lengths:
        built = os.path.join(workdir, f"replay-{steps}{'-keyed' if keyed else ''}.db")
        execution_id, live_peak = await _build_parked(built, steps, wf.replay_keyed if keyed else wf.replay)
        result = ReplayResult(steps, live_peak_bytes=live_peak, keyed=keyed)
        probe = LocalNamespace(built, interleave="none")
        result.journal_bytes = sum(
            len(k) + len(v.encode())
            for k, v in probe.backend.list(execution_id, None, None, None, None, False).items()
        )
        await probe.close()
        for rep in range(reps + 1):
            copy = os.path.join(workdir, f"replay-{steps}-{rep}.db")
            shutil.copyfile(built, copy)
            total, cpu, list_decode, peak = await _replay_once(copy, execution_id, trace=rep == reps)
            if rep == reps:
                result.peak_bytes = peak
            else:
                result.total.append(total)
                result.cpu.append(cpu)
                result.list_decode.append(list_decode)
            os.remove(copy)
        results.append(result)
    return results


# -- wake-ups of a long loop ----------------------------------------------------------


@dataclass
class WakeResult:
    turns: int
    """Turns the loop had gone through when it was woken (each a wait and a step)."""
    cpu: list[float] = field(default_factory=list)
    """Process CPU of each wake-up: the event in, the replay, the turn, parked again."""


async def loop_wakes(workdir: str, turns: Sequence[int], reps: int) -> list[WakeResult]:
    """Wake a loop that went through ``turns`` turns (``bench-loop``), ``reps`` times: each
    event is a new drive of the same object, which replays every turn before it."""
    results = []
    for done in turns:
        path = os.path.join(workdir, f"loop-{done}.db")
        ns = LocalNamespace(path, synchronous="NORMAL", interleave="none")
        try:
            client = create_durable_workflow(ns)
            handle = await client.run(wf.loop, {"n": done + reps + 2}, execution_id="loop")
            for _ in range(done + 1):  # the last one unmeasured: what a first wake-up makes once
                await handle.send_event("tick", 1)
                await ns.idle()
            result = WakeResult(done + 1)
            for _ in range(reps):
                cpu = time.process_time()
                await handle.send_event("tick", 1)
                await ns.idle()
                result.cpu.append(time.process_time() - cpu)
            if await handle.status() != "waiting":
                raise RuntimeError(f"the loop ended {await handle.status()}")
        finally:
            await ns.close()
        os.remove(path)
        results.append(result)
    return results


# -- storage operations per step -------------------------------------------------


@dataclass
class OpsResult:
    steps: int
    writes: int
    reads: int
    lists: int
    bytes_written: int
    first_writes_bytes: float
    last_writes_bytes: float


async def storage_ops(workdir: str, sizes: Sequence[int]) -> list[OpsResult]:
    out = []
    for steps in sizes:
        # A frozen virtual clock: every timestamp has one width (microseconds, as
        # wide as the system clock's), so byte counts show only what depends on
        # the journal's length.
        ns = LocalNamespace(
            os.path.join(workdir, f"ops-{steps}.db"),
            VirtualClock(1_767_225_600.123456, auto_advance=False),
            synchronous="OFF",
            interleave="none",
        )
        sizes_seen: list[int] = []

        def hook(
            obj: str, puts: Mapping[str, str], deletes: Sequence[str], seen: list[int] = sizes_seen
        ) -> None:
            seen.append(sum(len(k) + len(v.encode()) for k, v in puts.items()))

        ns.write_hook = hook
        client = create_durable_workflow(ns)
        try:
            await client.run(wf.linear, {"n": 2}, execution_id="warm")
            ns.stats.reset()
            sizes_seen.clear()
            await client.run(wf.linear, {"n": steps}, execution_id=f"ops-{steps}")
            stats = ns.stats
            # Commits 0-2 create, start and begin step 0; the last two close the
            # run; all between are step transitions.
            middle = sizes_seen[3:-2]
            head, tail = middle[:10], middle[-10:]
            out.append(
                OpsResult(
                    steps,
                    stats.writes,
                    stats.reads,
                    stats.lists,
                    stats.bytes_written,
                    sum(head) / len(head),
                    sum(tail) / len(tail),
                )
            )
        finally:
            await ns.close()
    return out


@dataclass
class ChildrenResult:
    children: int
    together: bool
    """All started at once (``asyncio.gather``), else one after the other."""
    parent_bytes: int
    """Bytes the parent's object wrote (keys and values), start to finish."""
    cpu: float
    """Process CPU of the whole run, the children's objects included."""


async def children_ops(workdir: str, sizes: Sequence[int]) -> list[ChildrenResult]:
    """A parent of N one-step children (``bench-parent``), one after the other and gathered:
    what its own object writes, per child."""
    out = []
    for together in (False, True):
        for n in sizes:
            path = os.path.join(workdir, f"children-{n}-{together}.db")
            ns = LocalNamespace(path, synchronous="OFF", interleave="none")
            written: dict[str, int] = {}

            def hook(
                obj: str, puts: Mapping[str, str], deletes: Sequence[str], seen: dict[str, int] = written
            ) -> None:
                seen[obj] = seen.get(obj, 0) + sum(len(k) + len(v.encode()) for k, v in puts.items())

            ns.write_hook = hook
            try:
                client = create_durable_workflow(ns)
                cpu = time.process_time()
                handle = await client.run(wf.parent, {"n": n, "together": together}, execution_id="parent")
                result = await handle.result(timeout=600)
                await ns.idle()
                cpu = time.process_time() - cpu
                if not result.ok:
                    raise RuntimeError(f"bench parent ended {result.status}")
            finally:
                await ns.close()
            os.remove(path)
            out.append(ChildrenResult(n, together, written["parent"], cpu))
    return out


# -- many concurrent executions -----------------------------------------------------


@dataclass
class ConcurrencyResult:
    executions: int
    """Executions in flight at once (started together on one namespace)."""
    steps: int
    synchronous: str
    wall: float
    cpu: float
    latencies: list[float]
    gc_collections: int
    gc_full: int = 0
    """Full (oldest-generation) collections: each walks every live object."""
    gc_seconds: float = 0.0
    """Wall time inside the collector (``gc.callbacks``)."""
    objects_in_flight: float | None = None
    """Objects the collector tracks per execution while all of them are in flight (an
    untimed pass of its own: :func:`objects_in_flight`); None when not counted."""
    collector_walks: float | None = None
    """Objects the collector walked per execution (an untimed pass of its own:
    :func:`collector_walks`); None when not counted."""
    rounds: int = 1
    """Rounds of ``executions`` timed (:func:`concurrency`): ``wall``, ``cpu`` and the
    collector's figures are their sums, ``latencies`` all of theirs."""

    @property
    def total(self) -> int:
        """Executions timed, over every round."""
        return self.executions * self.rounds


async def concurrency(
    workdir: str,
    executions: int,
    steps: int,
    synchronous: str,
    *,
    count_objects: bool = False,
    at_least: int = 0,
) -> ConcurrencyResult:
    """``executions`` executions of ``steps`` steps started at once on one namespace:
    wall time, process CPU and the garbage collector's runs while they ran; with
    ``count_objects``, then the objects they hold (:func:`objects_in_flight`).

    Rounds of it, each on a namespace of its own, until ``at_least`` executions were
    timed: every cell of the section then times about as much work (10 executions alone
    are 10 ms of CPU, which a shared machine's noise moves by a third from one run to
    the next), each round with ``executions`` in flight, and its figures are the sums."""
    rounds = max(1, -(-at_least // executions))
    total = ConcurrencyResult(executions, steps, synchronous, 0.0, 0.0, [], 0, rounds=rounds)
    for _ in range(rounds):
        one = await _concurrency_round(workdir, executions, steps, synchronous)
        total.wall += one.wall
        total.cpu += one.cpu
        total.latencies += one.latencies
        total.gc_collections += one.gc_collections
        total.gc_full += one.gc_full
        total.gc_seconds += one.gc_seconds
    if count_objects:
        total.objects_in_flight = await objects_in_flight(workdir, executions, steps, synchronous)
        total.collector_walks = await collector_walks(workdir, executions, steps, synchronous)
    return total


async def _concurrency_round(
    workdir: str, executions: int, steps: int, synchronous: str
) -> ConcurrencyResult:
    """One round of :func:`concurrency`: ``executions`` started at once on a new namespace."""
    path = os.path.join(workdir, f"conc-{synchronous}-{executions}-{time.monotonic_ns()}.db")
    # The default interleaving: every storage await lets another request run.
    ns = LocalNamespace(path, synchronous=synchronous)
    client = create_durable_workflow(ns)
    latencies: list[float] = []

    async def one(i: int) -> None:
        start = time.perf_counter()
        await client.run(wf.linear, {"n": steps}, execution_id=f"c-{i}")
        latencies.append(time.perf_counter() - start)

    timer = _GcTimer()
    try:
        await client.run(wf.linear, {"n": 2}, execution_id="warm")
        # What earlier cells left behind (a closed namespace's cycles) is collected now, so
        # a full collection of it is not counted against this cell.
        gc.collect()
        collections = sum(s["collections"] for s in gc.get_stats())
        full = gc.get_stats()[-1]["collections"]
        gc.callbacks.append(timer)
        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(executions)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        gc.callbacks.remove(timer)
        collections = sum(s["collections"] for s in gc.get_stats()) - collections
        full = gc.get_stats()[-1]["collections"] - full
        for i in (0, executions - 1):
            status = await client.execution(f"c-{i}").status()
            if status != "completed":
                raise RuntimeError(f"concurrent execution c-{i} ended {status}")
    finally:
        await ns.close()
        os.remove(path)
    return ConcurrencyResult(
        executions, steps, synchronous, wall, cpu, latencies, collections, full, timer.seconds
    )


async def objects_in_flight(workdir: str, executions: int, steps: int, synchronous: str) -> float:
    """The objects the garbage collector tracks per execution while every execution is in
    flight: the largest count seen before the first one finishes, less the count before
    they started, over ``executions``. Each full collection walks all of them.

    An untimed pass on a namespace of its own, as the timed one runs them: counting walks
    the heap (``gc.get_objects``), once per event-loop turn, which the timing must not see.
    The callers' tasks (one per execution, as an application has) are counted too."""
    path = os.path.join(workdir, f"objs-{synchronous}-{executions}-{time.monotonic_ns()}.db")
    ns = LocalNamespace(path, synchronous=synchronous)
    client = create_durable_workflow(ns)
    finished = 0

    async def one(i: int) -> None:
        nonlocal finished
        await client.run(wf.linear, {"n": steps}, execution_id=f"o-{i}")
        finished += 1

    try:
        await client.run(wf.linear, {"n": 2}, execution_id="warm")
        gc.collect()
        baseline = peak = len(gc.get_objects())
        runs = asyncio.gather(*(one(i) for i in range(executions)))
        while finished == 0 and not runs.done():
            peak = max(peak, len(gc.get_objects()))
            await asyncio.sleep(0)
        await runs
    finally:
        await ns.close()
        os.remove(path)
    return (peak - baseline) / executions


async def collector_walks(workdir: str, executions: int, steps: int, synchronous: str) -> float:
    """The objects the garbage collector walks per execution while ``executions`` run at
    once: at the start of each collection, the objects of the generations it collects,
    summed over the run and divided by ``executions``. A count, not a time, so the
    machine's noise does not move it: what an execution holds shows in it run after run.

    An untimed pass on a namespace of its own, as :func:`objects_in_flight`; the counting
    (``gc.get_objects(generation)`` in a ``gc.callbacks`` entry) allocates nothing the
    collector tracks while the executions run."""
    path = os.path.join(workdir, f"walks-{synchronous}-{executions}-{time.monotonic_ns()}.db")
    ns = LocalNamespace(path, synchronous=synchronous)
    client = create_durable_workflow(ns)
    walked = 0

    def count(phase: str, info: dict[str, Any]) -> None:
        nonlocal walked
        if phase == "start":
            walked += sum(len(gc.get_objects(g)) for g in range(info["generation"] + 1))

    try:
        await client.run(wf.linear, {"n": 2}, execution_id="warm")
        gc.collect()
        gc.callbacks.append(count)
        try:
            await asyncio.gather(
                *(client.run(wf.linear, {"n": steps}, execution_id=f"w-{i}") for i in range(executions))
            )
        finally:
            gc.callbacks.remove(count)
    finally:
        await ns.close()
        os.remove(path)
    return walked / executions


class _GcTimer:
    """A ``gc.callbacks`` entry adding up the time spent in collections."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start


def describe_stats(stats: Any) -> dict[str, Any]:
    return dict(vars(stats))
