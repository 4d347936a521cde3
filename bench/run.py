"""``python -m bench [--quick]``: the engine against its targets, the floor and the peers, in one run.

Sections (issue #16 names the targets; each is printed MET or MISSED with min / median / max):

1. the engine's own CPU per step on an in-memory Storage port, a 1,000-step execution,
   on CPython and under Pyodide (``bench._memory``, through the repo's Node harness);
2. per-step cost on SQLite (WAL, ``synchronous=FULL`` and ``NORMAL``, the runtime's default
   interleaving): the engine, the same with a body that yields between steps, the same with
   the history projection, the floor (one raw committed write per step) and the peers
   (DBOS, Temporal, Restate: each in its own process, "not installed" when absent), all
   interleaved run by run, each in-process system's write-ahead log emptied before each of
   its runs (``bench._sqlite``); without a target, the log frames (pages) written per step
   and the checkpoints inside the timed runs, counted by SQLite (``bench._wal``), and the
   floor plus the history outbox's measured extra writes; then the cost per execution;
3. cold replay of 10,000 and 50,000 finished steps: time and peak memory (tracemalloc);
   without a target, the CPU of an event waking a loop of 100 and 1,000 turns;
4. storage operations and bytes per step, counted at the storage port; without a target,
   what a parent of 50 and 400 children writes per child;
5. 10 to 5,000 concurrent executions on one local runtime: executions/s, CPU per execution;
6. the real runtime (workerd with Python Durable Objects; ``--real-runtime``: this section
   alone; skipped by ``--quick``);
7. without a target, instructions per step counted by valgrind (``bench._instructions``): the
   engine on memory and on SQLite, with the history, the floor, and a cold replay's step, the
   same count from run to run where their time moves (skipped by ``--quick`` unless ``--only`` names it).

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
import sqlite3
import sys
import tempfile
import time
from typing import Any

from . import _engine, _instructions, _memory, _peers, _pyodide, _realruntime, _report, _sqlite
from ._targets import Verdict, skipped

MEMORY_STEPS = 1000
SECTIONS = ("memory", "pyodide", "sqlite", "replay", "ops", "concurrency", "instructions")
"""The sections ``--only`` picks from (``pyodide`` is the memory section's second row)."""


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
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "load": os.getloadavg(),
    }


async def memory_section(
    reps: int, quick: bool, pyodide: bool = True
) -> tuple[list[Verdict], dict[str, Any]]:
    cpython, reference = await _memory.per_step(MEMORY_STEPS, max(reps, 5))
    verdicts = _report.memory_cpu("CPython", cpython, MEMORY_STEPS, reference=reference)
    measured: dict[str, Any] = {"cpython": cpython, "cpython_reference": reference}
    if not pyodide:
        return verdicts, measured
    pyo = _pyodide.measure(MEMORY_STEPS, max(reps, 5))
    if isinstance(pyo, _pyodide.Unavailable):
        verdicts += _report.memory_cpu("Pyodide", None, MEMORY_STEPS, pyo.reason)
        return verdicts, {**measured, "pyodide": pyo.reason}
    name, warm_up = f"Pyodide {pyo['pyodide']}", pyo.get("warm_up", ())
    verdicts += _report.memory_cpu(
        name, pyo["per_step"], MEMORY_STEPS, warm_up=warm_up, reference=pyo.get("reference")
    )
    return verdicts, {**measured, "pyodide": pyo}


async def concurrency_section(workdir: str, counts: list[int], reps: int) -> dict[int, list[Any]]:
    results: dict[int, list[Any]] = {n: [] for n in counts}
    for rep in range(reps):
        for n in counts:
            # The objects in flight are the same in every run: counted once, after the first.
            # Each run times as many executions as the largest cell's (rounds of n at once).
            timed = await _engine.concurrency(
                workdir, n, 5, "NORMAL", count_objects=rep == 0, at_least=max(counts)
            )
            results[n].append(timed)
    return results


async def instructions_section(workdir: str, row_bytes: int | None) -> dict[str, Any] | str:
    """Instructions per step (no target); ``row_bytes``: the floor's, if the SQLite section measured it."""
    if row_bytes is None:
        engine = _engine.Engine(os.path.join(workdir, "row-bytes.db"), "NORMAL")
        try:
            row_bytes = round(await engine.bytes_per_write(100))
        finally:
            await engine.close()
    counted = await asyncio.to_thread(_instructions.measure, row_bytes)
    _instructions.report(counted)
    return counted if isinstance(counted, dict) else counted.reason


async def profile(workdir: str, steps: int) -> None:
    prof = cProfile.Profile()
    await _memory.run_once(10)
    prof.enable()
    await _memory.run_once(steps)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(30)
    print(f"\n== cProfile of one {steps}-step execution on memory storage (by own time)")
    print(buf.getvalue())
    engine = _engine.Engine(os.path.join(workdir, "profile.db"), "NORMAL")
    try:
        await engine.run(10)
        prof = cProfile.Profile()
        prof.enable()
        await engine.run(steps)
        prof.disable()
    finally:
        await engine.close()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(25)
    print(f"\n== cProfile of one {steps}-step execution on SQLite, synchronous=NORMAL (by own time)")
    print(buf.getvalue())


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    sizes = [10, 1000] if quick else [1, 10, 100, 1000]
    reps = args.reps or (3 if quick else 7)
    info = machine()
    print(
        f"workkit_workflow bench, {info['date']}, on {info['cpu']} ({info['nproc']} cpu),"
        f" Python {info['python']}, SQLite {info['sqlite']}, {info['platform']};"
        f" load average {info['load'][0]:.2f} at start;"
        f" {reps} interleaved runs per cell" + (" (--quick)" if quick else "")
    )
    if args.real_runtime:
        real = _realruntime.measure(200, args.reps or 5)
        lines = _realruntime.report(real)
        print("\n== targets")
        print("\n".join(lines))
        return {"machine": info, "real_runtime": real if isinstance(real, dict) else vars(real)}
    with tempfile.TemporaryDirectory(prefix="workkit-bench-", dir=args.dir) as workdir:
        if args.profile:
            await profile(workdir, 1000)
            return {}
        only = set(args.only.split(",")) if args.only else set(SECTIONS)
        verdicts: list[Verdict] = []
        memory: dict[str, Any] = {}
        steps: list[Any] = []
        replay: list[_engine.ReplayResult] = []
        wakes: list[_engine.WakeResult] = []
        kids: list[_engine.ChildrenResult] = []
        ops: list[_engine.OpsResult] = []
        conc: dict[int, list[Any]] = {}
        if "memory" in only:
            verdicts, memory = await memory_section(reps, quick, "pyodide" in only)
        if "sqlite" in only:
            peer_python = _peers.python_for_peers(args.peer_python)
            steps = await _sqlite.measure(
                workdir, sizes, reps, peer_python, args.peers, fresh_log=not args.keep_wal
            )
            verdicts += _report.per_step(steps, sizes)
            _report.per_execution(steps, 10)
        if "replay" in only:
            replay = await _engine.cold_replay(workdir, [1000, 10000, 50000], reps)
            replay += await _engine.cold_replay(workdir, [10000], reps, keyed=True)
            verdicts += _report.replay(replay)
            wakes = await _engine.loop_wakes(workdir, [100, 1000], reps)
            _report.wakes(wakes)
        if "ops" in only:
            ops = await _engine.storage_ops(workdir, [10, 100, 1000])
            verdicts += _report.ops(ops)
            kids = await _engine.children_ops(workdir, [50, 400])
            _report.children(kids)
        if "concurrency" in only:
            # As many interleaved runs as every other cell (the header's): the flatness
            # target is a ratio of two cells' medians, each moved by a shared machine's noise.
            conc = await concurrency_section(workdir, [10, 100, 1000, 5000], reps)
            verdicts += _report.concurrency(conc)
        counted: Any = "skipped (--quick)"
        if "instructions" in only and (not quick or args.only is not None):
            normal = next((r.row_bytes for r in steps if r.synchronous == "NORMAL"), None)
            counted = await instructions_section(workdir, normal)
        elif "instructions" in only:
            print("\n== instructions per step: skipped by --quick (python -m bench --only instructions)")
        real: Any = "skipped (--quick)"
        if not quick and args.only is None:
            real = _realruntime.measure(200, 5)
            verdicts += [Verdict(line, None) for line in _realruntime.report(real)]
        else:
            why = "skipped by --quick" if quick else "not in --only"
            verdicts.append(skipped("real runtime (issue #11)", f"{why}; python -m bench --real-runtime"))
        info["load_end"] = os.getloadavg()
        print(f"\nload average {info['load_end'][0]:.2f} at the end")
        totals = _report.summary(verdicts)
    return {
        "machine": info,
        "targets": [v.as_dict() for v in verdicts],
        "totals": totals,
        "memory_cpu": memory,
        "per_step": [vars(r) for r in steps],
        "replay": [vars(r) for r in replay],
        "loop_wakes": [vars(r) for r in wakes],
        "storage_ops": [vars(r) for r in ops],
        "children": [vars(r) for r in kids],
        "concurrency": {n: [vars(r) for r in runs] for n, runs in conc.items()},
        "real_runtime": real if isinstance(real, (dict, str)) else vars(real),
        "instructions": counted,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="N of 10 and 1,000, 3 runs per cell (a couple of minutes)"
    )
    parser.add_argument("--reps", type=int, default=0, help="runs per cell (default 7, quick 3)")
    parser.add_argument("--json", help="also write the raw measurements to this file")
    parser.add_argument("--dir", default=None, help="where the SQLite files go (default: the temp dir)")
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--profile", action="store_true", help="print the engine's hot spots and stop")
    parser.add_argument(
        "--peers", nargs="*", default=list(_peers.PEERS), help="peers to run (default: DBOS Temporal Restate)"
    )
    parser.add_argument(
        "--peer-python", default=None, help="the Python that runs the peers (default: this one)"
    )
    parser.add_argument(
        "--keep-wal",
        action="store_true",
        help="SQLite section: do not empty each system's write-ahead log before its timed runs"
        " (the method before the seventh round; checkpoints then fall where earlier runs left the log)",
    )
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
    sys.exit(main())
