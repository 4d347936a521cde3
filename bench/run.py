"""``python -m bench [--quick]``: the engine against the floor and DBOS, in one run.

Sections:

1. per-step cost of an N-step workflow at synchronous=FULL and NORMAL (WAL):
   the engine (LocalNamespace on SQLite, ``interleave="none"``), the floor
   (one raw committed SQLite write per step, same row size and pragmas) and
   DBOS Transact on SQLite (same pragmas, in a subprocess); medians with
   p10-p90 over repeated runs, and the ratios;
2. cold replay against journal length: a new object resumes an execution
   that finished N steps (one list, decode, replay), time and peak memory;
3. storage operations and bytes per step, counted at the storage port;
4. many concurrent executions: throughput, latency, peak memory;
5. the real runtime (workerd with Python Durable Objects, the ../shared/runtime kit): the
   engine over the SQL journal and over the key-value API next to the raw ``put`` and
   ``sql.exec`` floors, in one workerd run (``--real-runtime``: this section alone); a
   "not available: <reason>" line where the kit cannot be built.

Timings are printed, never asserted. ``--profile`` prints the engine's hot spots.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import signal
import subprocess
import sys
import tempfile
from typing import Any

from . import _engine, _realruntime
from ._floor import Floor
from ._stats import spread, table

SYNCS = ("FULL", "NORMAL")
TARGET_FLOOR_RATIO = 1.5
TARGET_FLOOR_SLACK = 0.1e-3
TARGET_DBOS = {"FULL": 5.0, "NORMAL": 15.0}
TARGET_REPLAY_1000 = 20e-3


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import sqlite3

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }


class DbosPeer:
    """DBOS in a child process, driven one run at a time (see bench._dbos_worker)."""

    def __init__(self, workdir: str, synchronous: str) -> None:
        cmd = [sys.executable, "-m", "bench._dbos_worker", "--synchronous", synchronous, "--dir", workdir]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first:
            raise RuntimeError(f"DBOS did not start:\n{self.proc.communicate()[1][-2000:]}")
        info = json.loads(first)
        self.pragmas = [info["journal_mode"], info["synchronous"]]
        # DBOS keeps background threads (queue and recovery pollers): stopped
        # between its runs, they take no CPU from the engine's and the floor's.
        os.kill(self.proc.pid, signal.SIGSTOP)

    def run(self, steps: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        try:
            self.proc.stdin.write(f"{steps}\n")
            self.proc.stdin.flush()
            return float(self.proc.stdout.readline())
        finally:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def close(self) -> None:
        assert self.proc.stdin is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def start_dbos(workdir: str, synchronous: str) -> DbosPeer | None:
    try:
        import dbos  # noqa: F401
    except ImportError:
        print("  (dbos is not installed: pip install -e '.[bench]' to compare with DBOS)", file=sys.stderr)
        return None
    return DbosPeer(workdir, synchronous)


async def per_step(workdir: str, sizes: list[int], reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sync in SYNCS:
        engine = _engine.Engine(os.path.join(workdir, f"engine-{sync}.db"), sync)
        floor = Floor(os.path.join(workdir, f"floor-{sync}.db"), sync)
        dbos = start_dbos(workdir, sync)
        try:
            await engine.run(10)  # warm up imports, caches, the file
            row = round(await engine.bytes_per_write(100))
            floor.run(10, row)
            eng: dict[int, list[float]] = {n: [] for n in sizes}
            flo: dict[int, list[float]] = {n: [] for n in sizes}
            dbo: dict[int, list[float]] = {n: [] for n in sizes}
            for _ in range(reps):
                # Interleaved, so drift in the machine (fsync latency) hits all alike.
                for n in sizes:
                    eng[n].append(await engine.run(n) / n)
                    flo[n].append(floor.run(n, row) / n)
                    if dbos is not None:
                        dbo[n].append(dbos.run(n) / n)
        finally:
            await engine.close()
            floor.close()
            if dbos is not None:
                dbos.close()
        out[sync] = {
            "row_bytes": row,
            "engine": eng,
            "floor": flo,
            "dbos": dbo if dbos is not None else None,
            "dbos_pragmas": dbos.pragmas if dbos is not None else None,
        }
    return out


def print_per_step(results: dict[str, Any], sizes: list[int]) -> list[str]:
    verdicts: list[str] = []
    for sync, res in results.items():
        print(
            f"\n== per-step cost, WAL + synchronous={sync} (ms per step, median [p10-p90]);"
            f" floor row = {res['row_bytes']} bytes"
        )
        rows = []
        for n in sizes:
            e = spread(res["engine"][n])
            f = spread(res["floor"][n])
            d = spread(res["dbos"][n]) if res["dbos"] else None
            rows.append(
                [
                    n,
                    e.fmt(1e3),
                    f.fmt(1e3),
                    d.fmt(1e3) if d else "-",
                    f"{e.median / f.median:.2f}x",
                    f"{(e.median - f.median) * 1e3:+.3f}",
                    f"{d.median / e.median:.1f}x" if d else "-",
                ]
            )
        print(table(["N", "engine", "floor", "DBOS", "eng/floor", "eng-floor ms", "DBOS/eng"], rows))
        big = max(sizes)
        e = spread(res["engine"][big]).median
        f = spread(res["floor"][big]).median
        ok = e <= TARGET_FLOOR_RATIO * f + TARGET_FLOOR_SLACK
        verdicts.append(
            f"[{'MET' if ok else 'MISSED'}] {sync}: engine {e * 1e3:.3f} ms/step at N={big} <= 1.5 x floor"
            f" {f * 1e3:.3f} + 0.1 ms = {(TARGET_FLOOR_RATIO * f + TARGET_FLOOR_SLACK) * 1e3:.3f} ms"
        )
        if res["dbos"]:
            d = spread(res["dbos"][big]).median
            want = TARGET_DBOS[sync]
            verdicts.append(
                f"[{'MET' if d / e >= want else 'MISSED'}] {sync}: DBOS/engine = {d / e:.1f}x at N={big}"
                f" (target >= {want:g}x)"
            )
    return verdicts


def print_replay(results: list[_engine.ReplayResult]) -> list[str]:
    print("\n== cold replay: a new object resumes an execution after N finished steps (synchronous=NORMAL)")
    rows = []
    verdicts = []
    for r in results:
        total = spread(r.total)
        ld = spread(r.list_decode)
        rows.append(
            [
                r.steps,
                f"{r.journal_bytes / 1024:.0f}",
                total.fmt(1e3, 2),
                ld.fmt(1e3, 2),
                f"{total.median / r.steps * 1e6:.1f}",
                f"{r.peak_bytes / 2**20:.1f}",
            ]
        )
        if r.steps == 1000:
            ok = total.median <= TARGET_REPLAY_1000
            verdicts.append(
                f"[{'MET' if ok else 'MISSED'}] cold replay of 1,000 steps: {total.median * 1e3:.2f} ms"
                " (target <= 20 ms)"
            )
    print(
        table(
            ["N", "journal KiB", "resume ms", "list+decode ms", "us/step", "peak MiB (tracemalloc)"],
            rows,
        )
    )
    return verdicts


def print_ops(results: list[_engine.OpsResult]) -> None:
    print("\n== storage operations at the port (one N-step execution, start to finish)")
    rows = [
        [
            r.steps,
            r.writes,
            f"{r.writes / r.steps:.3f}",
            r.reads,
            r.lists,
            f"{r.bytes_written / r.steps:.0f}",
            f"{r.first_writes_bytes:.0f}",
            f"{r.last_writes_bytes:.0f}",
        ]
        for r in results
    ]
    print(
        table(
            ["N", "writes", "writes/step", "reads", "lists", "bytes/step", "B/write first 10", "last 10"],
            rows,
        )
    )


def print_concurrency(results: list[_engine.ConcurrencyResult]) -> None:
    print("\n== concurrent executions on one LocalNamespace (default interleaving)")
    rows = []
    for r in results:
        lat = spread(r.latencies)
        from ._stats import percentile

        rows.append(
            [
                f"{r.executions} x {r.steps} steps",
                r.synchronous,
                f"{r.wall:.2f}",
                f"{r.executions / r.wall:.0f}",
                f"{r.executions * r.steps / r.wall:.0f}",
                f"{lat.median * 1e3:.0f}",
                f"{percentile(r.latencies, 99) * 1e3:.0f}",
                f"{r.peak_bytes / 2**20:.1f}" if r.peak_bytes else "-",
            ]
        )
    print(table(["load", "sync", "wall s", "exec/s", "steps/s", "p50 ms", "p99 ms", "peak MiB"], rows))


async def profile(workdir: str, steps: int, synchronous: str) -> None:
    engine = _engine.Engine(os.path.join(workdir, f"profile-{synchronous}.db"), synchronous)
    try:
        await engine.run(10)
        prof = cProfile.Profile()
        prof.enable()
        await engine.run(steps)
        prof.disable()
    finally:
        await engine.close()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime")
    stats.print_stats(25)
    print(f"\n== cProfile of one {steps}-step execution at synchronous={synchronous} (by own time)")
    print(buf.getvalue())


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    sizes = [1, 10, 100] if quick else [1, 10, 100, 1000]
    reps = args.reps or (3 if quick else 7)
    replay_lengths = [10, 100, 1000] if quick else [10, 100, 1000, 10000]
    conc = 200 if quick else 1000
    info = machine()
    print(
        f"workkit_workflow bench on {info['cpu']} ({info['nproc']} cpu), Python {info['python']},"
        f" SQLite {info['sqlite']}; {reps} runs per cell" + (" (--quick)" if quick else "")
    )
    real_steps, real_rounds = (100, 3) if quick else (200, 5)
    if args.real_runtime:
        real = _realruntime.measure(real_steps, args.reps or real_rounds)
        verdicts = _realruntime.report(real)
        print("\n== targets")
        for line in verdicts:
            print(line)
        return {"machine": info, "real_runtime": real if isinstance(real, dict) else vars(real)}
    with tempfile.TemporaryDirectory(prefix="workkit-bench-", dir=args.dir) as workdir:
        if args.profile:
            await profile(workdir, max(sizes), "NORMAL")
            return {}
        verdicts: list[str] = []
        steps = await per_step(workdir, sizes, reps)
        verdicts += print_per_step(steps, sizes)
        replay = await _engine.cold_replay(workdir, replay_lengths, max(3, reps))
        verdicts += print_replay(replay)
        ops = await _engine.storage_ops(workdir, [10, 100, 1000])
        print_ops(ops)
        concurrent = [
            await _engine.concurrency(workdir, conc, 5, sync, trace=False) for sync in ("NORMAL", "FULL")
        ]
        concurrent.append(await _engine.concurrency(workdir, conc, 5, "NORMAL", trace=True))
        print_concurrency(concurrent)
        real = _realruntime.measure(real_steps, real_rounds)
        verdicts += _realruntime.report(real)
        print("\n== targets")
        for line in verdicts:
            print(line)
    return {
        "machine": info,
        "per_step": steps,
        "replay": [vars(r) for r in replay],
        "storage_ops": [vars(r) for r in ops],
        "concurrency": [vars(r) for r in concurrent],
        "real_runtime": real if isinstance(real, dict) else vars(real),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer runs (about 30 s)")
    parser.add_argument("--reps", type=int, default=0, help="runs per cell (default 7, quick 3)")
    parser.add_argument("--json", help="also write the raw measurements to this file")
    parser.add_argument("--dir", default=None, help="where the SQLite files go (default: the temp dir)")
    parser.add_argument("--profile", action="store_true", help="print the engine's hot spots and stop")
    parser.add_argument(
        "--real-runtime",
        action="store_true",
        help="only the real-runtime section: the engine in workerd against the put and sql.exec floors",
    )
    args = parser.parse_args(argv)
    results = asyncio.run(amain(args))
    if args.json and results:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
