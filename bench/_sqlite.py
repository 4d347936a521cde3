"""Per-step cost on SQLite: the engine (plain, with a body that yields between steps, with
the history projection), the floor and the peers, interleaved run by run.

Checkpoints. SQLite copies a file's write-ahead log into the database (a checkpoint: at
``synchronous=NORMAL`` its only two fsyncs) when a commit leaves ``CHECKPOINT_PAGES``
(10,000) pages or more in the log, the same interval for every system here (the local
runtime's, given to the floor and to DBOS), so a run's checkpoints depend on how full its
log was when the run started. The bench counts them in every timed run (``bench._wal``)
and, by default (``fresh_log``), empties every in-process system's logs (``PRAGMA
wal_checkpoint(RESTART)``, untimed; the file keeps its size, ``_wal.restart``) before each
of its timed runs: each run then starts from the log's first frame and does exactly the
checkpoints its own writes cause, the same rule for every system, and they stay in its
time. A 1,000-step run writes under 2,000 pages, so it does none. What a run leaves in its
log is checkpointed outside the timing, for every system alike, and timed on its own: the
report prints that closing checkpoint's cost and the target ratios with it counted in both
times (every page a run writes copied into its database in its own time), the fairer
figure for a long-running app, whose checkpoints its steps pay for sooner or later. The
peers' files (another process's connections) are counted, not emptied.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from workkit_workflow.engine import _journal as jn

from . import _peers, _wal
from . import _workflows as wf
from ._engine import Engine
from ._floor import NO_OUTBOX, Floor, OutboxModel

SYNCS = ("FULL", "NORMAL")
PEER_MAX_STEPS = {"DBOS": 1000, "Temporal": 100, "Restate": 100}
"""Largest N a peer runs (Temporal's ~50 ms and Restate's ~10 ms per step on this machine
would make a 1,000-step run last a minute)."""

Files = dict[str, tuple[str, sqlite3.Connection | None]]
"""A system's SQLite files by label: path, and the connection that empties its log
(None: another process writes it; counted only)."""


@dataclass
class SyncResult:
    synchronous: str
    row_bytes: int
    outbox: OutboxModel = NO_OUTBOX
    """What the history projection adds to a run's storage writes, measured; the floor +
    outbox writes column does the same extra commits and bytes."""
    series: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    """Seconds per step by system, then by N: one figure per run."""
    writes_per_step: dict[str, float] = field(default_factory=dict)
    wal_pages: dict[str, float] = field(default_factory=dict)
    """Log frames (pages) written per step at the largest N, by system and file: counted
    exactly by SQLite's wal-index in an untimed run of that N (``bench._wal.FrameCounter``)."""
    page_size: int = 0
    checkpoints: dict[str, list[int]] = field(default_factory=dict)
    """Checkpoints inside each timed run at the largest N, by system and file."""
    d1_per_step: dict[str, float] = field(default_factory=dict)
    """What the history sent D1 per step in the untimed run at the largest N: ``rows``
    written (SQLite's count of changes), ``statements`` and ``batches``."""
    closing: dict[str, list[float]] = field(default_factory=dict)
    """Seconds per step of each timed run's closing checkpoint at the largest N, by system
    (run by run, as the series; see :class:`TimedRun`)."""
    fresh_log: bool = True
    """Every in-process system's log was emptied before each of its timed runs."""
    peers: dict[str, str] = field(default_factory=dict)
    """Each peer's description, or why it is missing."""


@dataclass
class System:
    run: Callable[[int], Awaitable[float]]
    files: Files


async def measure(
    workdir: str,
    sizes: Sequence[int],
    reps: int,
    peer_python: str,
    peer_names: Sequence[str],
    *,
    fresh_log: bool = True,
) -> list[SyncResult]:
    return [await _one_sync(workdir, sync, sizes, reps, peer_python, peer_names, fresh_log) for sync in SYNCS]


async def _one_sync(
    workdir: str,
    sync: str,
    sizes: Sequence[int],
    reps: int,
    peer_python: str,
    peer_names: Sequence[str],
    fresh_log: bool,
) -> SyncResult:
    engine = Engine(os.path.join(workdir, f"engine-{sync}.db"), sync)
    history = Engine(os.path.join(workdir, f"history-{sync}.db"), sync, history=True)
    floor = Floor(os.path.join(workdir, f"floor-{sync}.db"), sync)
    peers: dict[str, _peers.PeerProcess] = {}
    result = SyncResult(sync, 0, fresh_log=fresh_log)
    try:
        for name in peer_names:
            started = _peers.start(name, peer_python, workdir, sync)
            if isinstance(started, _peers.Missing):
                result.peers[name] = started.reason
            else:
                peers[name] = started
                result.peers[name] = ", ".join(f"{k}={v}" for k, v in started.info.items())
        await _untimed(engine, history, floor, result, max(sizes))
        systems = _systems(engine, history, floor, peers, result, workdir)
        await _interleaved(systems, engine, sizes, reps, result)
    finally:
        await engine.close()
        await history.close()
        floor.close()
        for peer in peers.values():
            peer.close()
    return result


async def _untimed(engine: Engine, history: Engine, floor: Floor, result: SyncResult, big: int) -> None:
    """Warm-up, then one untimed run of each system at ``big`` steps: the floor's row size,
    the outbox model and the log frames per step come from these."""
    await engine.run(10)  # warm up imports, caches, the files
    await history.run(10)
    result.row_bytes = round(await engine.bytes_per_write(100))
    floor.run(10, result.row_bytes)
    pages = await count_frames(engine.wal_files(), lambda: engine.run(big))
    result.wal_pages["engine"] = pages["object file"] / big
    riders = OutboxRiders()
    history.ns.write_hook = riders
    d1 = history.d1
    before = d1.connection.total_changes, d1.statements, d1.calls
    try:
        pages = await count_frames(history.wal_files(), lambda: history.run(big))
    finally:
        history.ns.write_hook = None
    after = d1.connection.total_changes, d1.statements, d1.calls
    names = ("rows", "statements", "batches")
    result.d1_per_step = {k: (b - a) / big for k, a, b in zip(names, before, after, strict=True)}
    for label, frames in pages.items():
        result.wal_pages[f"engine + history, {label}"] = frames / big
    result.outbox = outbox_model(engine, history, big, riders)
    for name, outbox in (("floor", NO_OUTBOX), ("floor + outbox writes", result.outbox)):

        async def raw(outbox: OutboxModel = outbox) -> float:
            return floor.run(big, result.row_bytes, outbox)

        pages = await count_frames({"file": (floor.path, floor.db)}, raw)
        result.wal_pages[name] = pages["file"] / big
    result.page_size = _wal.read(floor.path).page_size


async def count_frames(files: Files, run: Callable[[], Awaitable[float]]) -> dict[str, int]:
    """Log frames each file gets during ``run()``, counted exactly (``bench._wal.FrameCounter``)."""
    counters = {}
    for label, (path, connection) in files.items():
        if connection is None:
            raise ValueError(f"{label}: frames are counted on the writing connection")
        counters[label] = _wal.FrameCounter(connection, path)
    try:
        await run()
    finally:
        for counter in counters.values():
            counter.stop()
    return {label: counter.frames for label, counter in counters.items()}


class OutboxRiders:
    """A storage write hook: the journal's commits that carry outbox records too, and the
    records' bytes (keys and values, as ``stats.bytes_written`` counts them)."""

    def __init__(self) -> None:
        self.commits = 0
        self.bytes = 0

    def __call__(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        outbox = [len(k) + len(v.encode()) for k, v in puts.items() if k.startswith(jn.OUTBOX)]
        if outbox and len(outbox) < len(puts):
            self.commits += 1
            self.bytes += sum(outbox)


def outbox_model(engine: Engine, history: Engine, steps: int, riders: OutboxRiders) -> OutboxModel:
    """What the history engine's last run wrote more than the plain engine's last run (both
    of ``steps`` steps): its extra commits with the extra bytes that did not ride in the
    journal's commits, and the journal's commits that carried outbox records (``riders``,
    counted over the history engine's run)."""
    commits = max(0, history.last_writes - engine.last_writes) / steps
    written = max(0, history.last_bytes - engine.last_bytes - riders.bytes) / steps
    return OutboxModel(commits, written, riders.commits / steps, riders.bytes / steps)


def _systems(
    engine: Engine,
    history: Engine,
    floor: Floor,
    peers: dict[str, _peers.PeerProcess],
    result: SyncResult,
    workdir: str,
) -> dict[str, System]:
    row, outbox = result.row_bytes, result.outbox

    async def plain(n: int) -> float:
        return await engine.run(n)

    async def yielding(n: int) -> float:
        return await engine.run(n, wf.linear_yield)

    async def projected(n: int) -> float:
        return await history.run(n)

    async def raw(n: int) -> float:
        return floor.run(n, row)

    async def raw_outbox(n: int) -> float:
        return floor.run(n, row, outbox)

    def labelled(name: str, files: dict[str, tuple[str, sqlite3.Connection]]) -> Files:
        if len(files) == 1:
            return {name: next(iter(files.values()))}
        return {f"{name}, {label}": file for label, file in files.items()}

    floor_file = {"file": (floor.path, floor.db)}
    systems = {
        "engine": System(plain, labelled("engine", engine.wal_files())),
        "engine, yielding body": System(yielding, labelled("engine, yielding body", engine.wal_files())),
        "engine + history": System(projected, labelled("engine + history", history.wal_files())),
        "floor": System(raw, labelled("floor", floor_file)),
        "floor + outbox writes": System(raw_outbox, labelled("floor + outbox writes", floor_file)),
    }
    for name, peer in peers.items():

        async def run(n: int, peer: _peers.PeerProcess = peer) -> float:
            return peer.run(n)

        files: Files = {}
        if name == "DBOS":
            files[name] = (os.path.join(workdir, f"dbos-{result.synchronous}.sqlite"), None)
        systems[name] = System(run, files)
    return systems


async def _interleaved(
    systems: dict[str, System], engine: Engine, sizes: Sequence[int], reps: int, result: SyncResult
) -> None:
    big = max(sizes)
    result.series = {name: {n: [] for n in sizes} for name in systems}
    writes: dict[str, list[float]] = {"engine": [], "engine, yielding body": []}
    for _ in range(reps):
        # Interleaved, so drift in the machine (fsync latency, load) hits all alike.
        for n in sizes:
            for name, system in systems.items():
                if n > PEER_MAX_STEPS.get(name, n):
                    continue
                run = await timed_run(system, n, fresh_log=result.fresh_log)
                result.series[name][n].append(run.seconds / n)
                if n == big:
                    for label, count in run.checkpoints.items():
                        result.checkpoints.setdefault(label, []).append(count)
                    if run.closing is not None:
                        result.closing.setdefault(name, []).append(run.closing / n)
                    if name in writes:
                        writes[name].append(engine.last_writes / n)
    result.writes_per_step = {k: sum(v) / len(v) for k, v in writes.items() if v}


@dataclass(frozen=True)
class TimedRun:
    seconds: float
    checkpoints: dict[str, int]
    """Checkpoints inside the run, by file (those countable)."""
    closing: float | None
    """Seconds of checkpointing what the run left in its logs, right after it (outside
    ``seconds``); None if not done (``fresh_log`` off, or a peer)."""


async def timed_run(system: System, steps: int, *, fresh_log: bool) -> TimedRun:
    """One run of ``steps`` steps, the checkpoints of each of the system's files inside it
    and, with ``fresh_log``, its logs emptied first (untimed) and checkpointed after (timed
    apart: the closing checkpoint)."""
    own = [connection for _path, connection in system.files.values() if connection is not None]
    if fresh_log:
        for connection in own:
            _wal.restart(connection)
    before = {label: _wal.read(path) for label, (path, _c) in system.files.items()}
    seconds = await system.run(steps)
    counts = {}
    for label, (path, _c) in system.files.items():
        try:
            counts[label] = _wal.checkpoints(before[label], _wal.read(path))
        except RuntimeError:
            continue  # a peer's log whose salt was drawn anew: not countable, not printed
    closing = None
    if fresh_log and own:
        start = time.perf_counter()
        for connection in own:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        closing = time.perf_counter() - start
    return TimedRun(seconds, counts, closing)
