"""Per-step cost on SQLite: the engine (plain, with a body that yields between steps, with
the history projection), the floor and the peers, interleaved run by run."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _peers
from . import _workflows as wf
from ._engine import Engine
from ._floor import Floor

SYNCS = ("FULL", "NORMAL")
PEER_MAX_STEPS = {"DBOS": 1000, "Temporal": 100, "Restate": 100}
"""Largest N a peer runs (Temporal's ~50 ms and Restate's ~10 ms per step on this machine
would make a 1,000-step run last a minute)."""


@dataclass
class SyncResult:
    synchronous: str
    row_bytes: int
    outbox_bytes: int = 0
    """What the history outbox adds to a step's commits, in bytes (the outbox row of the floor)."""
    series: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    """Seconds per step by system, then by N: one figure per run."""
    writes_per_step: dict[str, float] = field(default_factory=dict)
    peers: dict[str, str] = field(default_factory=dict)
    """Each peer's description, or why it is missing."""


async def measure(
    workdir: str, sizes: Sequence[int], reps: int, peer_python: str, peer_names: Sequence[str]
) -> list[SyncResult]:
    return [await _one_sync(workdir, sync, sizes, reps, peer_python, peer_names) for sync in SYNCS]


async def _one_sync(
    workdir: str, sync: str, sizes: Sequence[int], reps: int, peer_python: str, peer_names: Sequence[str]
) -> SyncResult:
    engine = Engine(os.path.join(workdir, f"engine-{sync}.db"), sync)
    history = Engine(os.path.join(workdir, f"history-{sync}.db"), sync, history=True)
    floor = Floor(os.path.join(workdir, f"floor-{sync}.db"), sync)
    peers: dict[str, _peers.PeerProcess] = {}
    result = SyncResult(sync, 0)
    try:
        for name in peer_names:
            started = _peers.start(name, peer_python, workdir, sync)
            if isinstance(started, _peers.Missing):
                result.peers[name] = started.reason
            else:
                peers[name] = started
                result.peers[name] = ", ".join(f"{k}={v}" for k, v in started.info.items())
        await engine.run(10)  # warm up imports, caches, the files
        await history.run(10)
        result.row_bytes = round(await engine.bytes_per_write(100))
        extra = await history.bytes_per_step(100) - await engine.bytes_per_step(100)
        result.outbox_bytes = max(1, round(extra))
        floor.run(10, result.row_bytes)
        runners = _runners(engine, history, floor, peers, result.row_bytes, result.outbox_bytes)
        result.series = {name: {n: [] for n in sizes} for name in runners}
        writes: dict[str, list[float]] = {"engine": [], "engine, yielding body": []}
        for _ in range(reps):
            # Interleaved, so drift in the machine (fsync latency, load) hits all alike.
            for n in sizes:
                for name, run in runners.items():
                    if n > PEER_MAX_STEPS.get(name, n):
                        continue
                    result.series[name][n].append(await run(n) / n)
                    if name in writes and n == max(sizes):
                        writes[name].append((engine.last_writes) / n)
        result.writes_per_step = {k: sum(v) / len(v) for k, v in writes.items() if v}
    finally:
        await engine.close()
        await history.close()
        floor.close()
        for peer in peers.values():
            peer.close()
    return result


def _runners(
    engine: Engine,
    history: Engine,
    floor: Floor,
    peers: dict[str, _peers.PeerProcess],
    row: int,
    outbox: int,
) -> dict[str, Callable[[int], Any]]:
    async def plain(n: int) -> float:
        return await engine.run(n)

    async def yielding(n: int) -> float:
        return await engine.run(n, wf.linear_yield)

    async def projected(n: int) -> float:
        return await history.run(n)

    async def raw(n: int) -> float:
        return floor.run(n, row)

    async def raw_outbox(n: int) -> float:
        return floor.run(n, row, outbox=outbox)

    runners: dict[str, Callable[[int], Any]] = {
        "engine": plain,
        "engine, yielding body": yielding,
        "engine + history": projected,
        "floor": raw,
        "floor + outbox row": raw_outbox,
    }
    for name, peer in peers.items():

        async def run(n: int, peer: _peers.PeerProcess = peer) -> float:
            return peer.run(n)

        runners[name] = run
    return runners
