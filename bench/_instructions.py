"""Instructions per step, counted by valgrind: the SQLite cells on a machine whose clock can't
resolve them.

On a shared virtual machine the same code's time per step on SQLite moves by a third between
runs minutes apart, more than most changes to the engine. The CPU's instructions do not move:
each cell runs here in a child process under valgrind's callgrind (about fifty times slower),
once for ``SMALL`` steps and once for ``LARGE``, and the difference over ``LARGE - SMALL`` is
what one step executes, with the interpreter's start, the imports and a warm-up run cancelled
out. A cell's work is made the same in every run: a fixed hash seed, the collector off after
the warm-up, the local runtime's interleaving seeded, and a clock that moves by a fixed tick
at each reading and never wakes a sleeper (``_ticking_clock``: a history page goes out when it
is full or the run ends, as at full speed; under valgrind it would otherwise go out early, on
its timer). Counts repeat within about 1k instructions per step.

No target: an instruction count is the user-space work only, not the kernel's (a write to the
page cache, an fsync) nor how fast the CPU runs it, so the targets stay judged on time. What
it tells apart is the Python the engine and the history add, against the same SQLite work.
"""

from __future__ import annotations

import asyncio
import compileall
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._stats import table

ROOT = Path(__file__).resolve().parent.parent
SMALL, LARGE = 300, 1580
"""The two runs' steps: each cell's figure is their difference over ``LARGE - SMALL``. That
is 1,280, a whole number of every period the engine and its history work in (a history page
of 80 or 160 commits, the head rewritten every 128, mail pages of 20): the two runs end on the
same partial page, whose projection costs more per step, so no end effect is left over."""

CELLS = (
    ("memory", "engine, in-memory storage port"),
    ("engine", "engine, SQLite NORMAL"),
    ("history", "engine + history, SQLite NORMAL"),
    ("history-hooks", "  the same, its capture recording nothing"),
    ("history-no-statements", "  the same, its deliveries building no statement"),
    ("history-no-sql", "  the same, its local D1 running no SQL"),
    ("engine-keyed", "engine, SQLite NORMAL, each step with an idempotency key"),
    ("engine-yield", "engine, SQLite NORMAL, a body yielding between steps"),
    ("engine-no-turns", "engine, SQLite NORMAL, no write suspending"),
    ("history-no-turns", "engine + history, the same"),
    ("engine-short", "engine, SQLite NORMAL, 10-step executions"),
    ("history-short", "engine + history, the same"),
    ("engine-empty", "engine, SQLite NORMAL, executions of no step (per execution, below)"),
    ("floor", "floor: raw SQLite commit, NORMAL"),
    ("replay", "cold replay, SQLite NORMAL: a step replayed"),
    ("replay-keyed", "  the same, each step with an idempotency key"),
)
"""The three cells under ``history`` take one part of the history away each (``_strip``):
what is left of the history's cost after it, part by part (``report``). The ``no-turns``
cells run without the local runtime's interleaving, so no write lets the event loop run
anything else, as on a Durable Object's SQL journal (synchronous writes) with steps that
wait for nothing: the history's deliveries run only at the turn the write that fills a page
lets the loop take (``Outbox.kick``; until 2026-12-02 they waited for the run's end). The ``short`` cells
run their steps as executions of ``SHORT`` steps each, what an execution's own records cost
spread over few steps; the ``empty`` cell runs as many executions of no step, each a request
through the client, its creation, its end and its answer (reported per execution). The
``replay`` cell counts a cold object replaying finished steps (the cold replay section's
work, whose time moves with the machine's speed)."""

SHORT = 10
"""Steps per execution of the ``short`` cells."""

HISTORY_TARGET = 1.3
"""Issue #16: the engine with the history projection at most this times the engine alone."""
_COLLECTED = re.compile(r"Collected : (\d+)")
START = 1_767_225_600.0
TICK = 25e-6
"""How far each reading of a cell's clock moves it (``_TickingClock``): about half a step's
time at full speed on SQLite, where a step reads the clock twice."""


@dataclass(frozen=True)
class Unavailable:
    reason: str


def measure(
    row_bytes: int, small: int = SMALL, large: int = LARGE, cells: Sequence[str] | None = None
) -> dict[str, Any] | Unavailable:
    """Instructions per step by cell (``cells``, default all), or why they cannot be counted here.

    ``row_bytes``: the floor's value size (the engine's average write, measured by the caller)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return Unavailable("valgrind not found (Debian: apt-get install valgrind)")
    names = [cell for cell, _ in CELLS] if cells is None else list(cells)
    # Every module compiled first: a child that finds a stale .pyc compiles it, and the two
    # children of a cell start together, so one might count the compiling and not the other
    # (up to 10k instructions per step on a cell; docs/benchmarks.md, sixteenth round).
    for folder in (ROOT / "src", ROOT / "bench"):
        compileall.compile_dir(folder, quiet=1)
    jobs = [(cell, steps) for cell in names for steps in (small, large)]
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        counts = list(pool.map(lambda job: _count(valgrind, job[0], job[1], row_bytes), jobs))
    found = dict(zip(jobs, counts, strict=True))
    failed = [f"{cell} ({n} steps): {text}" for (cell, n), text in found.items() if isinstance(text, str)]
    if failed:
        return Unavailable("; ".join(failed))
    per_step = {cell: (found[cell, large] - found[cell, small]) / (large - small) for cell in names}
    return {"per_step": per_step, "small": small, "large": large, "row_bytes": row_bytes}


def _count(valgrind: str, cell: str, steps: int, row_bytes: int) -> int | str:
    """The instructions of one child run (``python -m bench._instructions``), or why it failed."""
    command = [
        valgrind,
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench._instructions",
        cell,
        str(steps),
        str(row_bytes),
    ]
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    except subprocess.TimeoutExpired:
        return "still running after 900 s"
    found = _COLLECTED.findall(done.stderr)
    if done.returncode != 0 or not found:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"exit {done.returncode}: {tail}"
    return int(found[-1])


def report(result: dict[str, Any] | Unavailable) -> None:
    print(
        "\n== instructions per step, counted by valgrind (callgrind; no target: the same code"
        " counts the same from run to run, where its time moves)"
    )
    if isinstance(result, Unavailable):
        print(f"  not available: {result.reason}")
        return
    per_step = result["per_step"]
    counted = result["large"] - result["small"]
    print(
        f"{counted:,} steps counted (a {result['large']:,}-step run less a {result['small']:,}-step run),"
        f" the collector off after a warm-up run, a clock moving {TICK * 1e6:.0f} us a reading;"
        f" floor row = {result['row_bytes']} bytes"
    )
    rows = [[label, _per_step_text(cell, per_step[cell])] for cell, label in CELLS]
    print(table(["cell", "instructions per step"], rows))
    engine, floor, history = per_step["engine"], per_step["floor"], per_step["history"]
    print(
        f"no target: engine + history / engine {history / engine:.2f}x;"
        f" engine / floor {engine / floor:.2f}x; engine's SQLite storage over its in-memory port"
        f" {engine - per_step['memory']:,.0f} instructions per step (the kernel's part of a write is"
        " in neither count: these ratios are not the timed ones)"
    )
    hooks, no_statements, no_sql = (
        per_step[c] for c in ("history-hooks", "history-no-statements", "history-no-sql")
    )
    parts = [
        ("the engine's calls to its observer", hooks - engine),
        ("capture and delivery, no projection", no_statements - hooks),
        ("projection: page entries, rows and bound statements", no_sql - no_statements),
        ("D1's SQL (in process here, in D1 on Cloudflare)", history - no_sql),
    ]
    if "history-no-turns" in per_step and "engine-no-turns" in per_step:
        print(
            f"no target: engine + history / engine when no write suspends (its deliveries run at the"
            f" turn each full page gets) {per_step['history-no-turns'] / per_step['engine-no-turns']:.2f}x"
        )
    if "engine-empty" in per_step:
        print(
            f"no target: an execution of no step (the client's request, its creation, its end and the"
            f" answer) {per_step['engine-empty'] * SHORT:,.0f} instructions"
        )
    if "history-short" in per_step and "engine-short" in per_step:
        print(
            f"no target: engine + history / engine in {SHORT}-step executions"
            f" {per_step['history-short'] / per_step['engine-short']:.2f}x"
        )
    print(
        f"no target: what the history adds per step, {history - engine:,.0f} instructions, by part: "
        + "; ".join(f"{what} {count:,.0f}" for what, count in parts)
        + f"; {HISTORY_TARGET}x the engine leaves {engine * (HISTORY_TARGET - 1):,.0f} for all of it"
    )


def _per_step_text(cell: str, count: float) -> str:
    """A cell's figure in the table: per step, or, for executions of no step, per execution."""
    if cell == "engine-empty":
        return f"{count * SHORT / 1e3:.1f}k an execution"
    return f"{count / 1e3:.1f}k"


# -- the child: one cell, run in this process -------------------------------------


def _ticking_clock() -> Any:
    from workkit_workflow.local import VirtualClock

    class _TickingClock(VirtualClock):
        """Its sleepers never wake: a history page goes out when it is full or the run ends,
        as at full speed, where a page's timer (``LINGER``) never fires first. Its readings
        move on by ``TICK`` each, to the millisecond as the system clock's: the instants a
        step writes change about as often as at full speed (under valgrind, fifty times
        slower, the system clock would show a new millisecond at every reading, and a
        frozen one none: each costs the engine's encoding of its instants otherwise)."""

        def __init__(self) -> None:
            super().__init__(START, auto_advance=False)
            self._reading = START

        def now(self) -> float:
            self._reading += TICK
            return round(self._reading * 1000) / 1000

    return _TickingClock()


def _strip(cell: str) -> None:
    """Take away the part of the history that ``cell`` runs without (a bench child only)."""
    from workkit_workflow.history import _capture, _d1, _outbox

    if cell == "history-hooks":
        _capture.Capture.capture = lambda self, puts, entries=None: {}  # type: ignore[method-assign]
    elif cell == "history-no-statements":
        _outbox.plain_projection = lambda execution_id, bundles, executions=None: []
        _outbox.tail_projection = lambda execution_id, commits, seqs: []  # a run's pages
    elif cell == "history-no-sql":
        _d1.LocalD1._run = lambda self, batch: []  # type: ignore[method-assign]


async def _engine_run(cell: str, steps: int) -> None:
    from . import _workflows as wf
    from ._engine import Engine

    _strip(cell)
    with tempfile.TemporaryDirectory(prefix="workkit-instr-") as workdir:
        clock = _ticking_clock()
        path = os.path.join(workdir, "o.db")
        no_turns = cell.endswith("-no-turns")
        engine = Engine(
            path,
            "NORMAL",
            history=cell.startswith("history"),
            clock=clock,
            seed=0,
            interleave="none" if no_turns else "storage",
        )
        try:
            await engine.run(50)
            gc.collect()
            gc.disable()
            if cell.endswith(("-short", "-empty")):
                # Executions of SHORT steps, or as many of none: SHORT steps' worth each.
                for _ in range(max(1, steps // SHORT)):
                    await engine.run(0 if cell.endswith("-empty") else SHORT)
            else:
                body = {"engine-keyed": wf.linear_keyed, "engine-yield": wf.linear_yield}.get(cell, wf.linear)
                await engine.run(steps, body)
        finally:
            await engine.close()


async def _memory_run(steps: int) -> None:
    from . import _workflows  # noqa: F401  (registers the bench's workflows)
    from ._memory import run_once

    clock = _ticking_clock()
    await run_once(50, clock=clock)
    gc.collect()
    gc.disable()
    await run_once(steps, clock=clock)


def _floor_run(steps: int, row_bytes: int) -> None:
    from ._floor import Floor

    with tempfile.TemporaryDirectory(prefix="workkit-instr-") as workdir:
        floor = Floor(os.path.join(workdir, "f.db"), "NORMAL")
        try:
            floor.run(50, row_bytes)
            gc.collect()
            gc.disable()
            floor.run(steps, row_bytes)
        finally:
            floor.close()


def _replay_run(steps: int, keyed: bool) -> None:
    """A cold object replays ``steps`` finished steps (``bench-replay``, or ``keyed``:
    ``bench-replay-keyed``, then its event). The journal is written by a process this one
    starts, which valgrind does not follow (it counts this process only): what is counted is
    the replay, not the run that wrote it."""
    with tempfile.TemporaryDirectory(prefix="workkit-instr-") as workdir:
        path = os.path.join(workdir, "r.db")
        command = [sys.executable, "-m", "bench._instructions", JOURNAL, str(steps), path, str(int(keyed))]
        subprocess.run(command, check=True)
        asyncio.run(_replay(path))


async def _replay(path: str) -> None:
    from workkit_workflow import create_durable_workflow
    from workkit_workflow.local import LocalNamespace

    from . import _workflows  # noqa: F401  (registers the bench's workflows)

    ns = LocalNamespace(path, _ticking_clock(), synchronous="NORMAL", interleave="none")
    try:
        gc.collect()
        gc.disable()
        handle = create_durable_workflow(ns).execution("cold")
        await handle.send_event("go", "now")
        await ns.idle()
        if await handle.status() != "completed":
            raise RuntimeError(f"the replayed execution ended {await handle.status()}")
    finally:
        await ns.close()


JOURNAL = "replay-journal"
"""The ``replay`` cells' helper: ``python -m bench._instructions replay-journal STEPS PATH KEYED``
writes an execution of STEPS finished steps (each with a key if KEYED is 1) that waits for an
event, at PATH (its instants from the cells' ticking clock, so its text is the same at every run)."""


async def _write_journal(steps: int, path: str, keyed: bool) -> None:
    from workkit_workflow import create_durable_workflow
    from workkit_workflow.local import LocalNamespace

    from . import _workflows as wf

    ns = LocalNamespace(path, _ticking_clock(), synchronous="OFF", interleave="none")
    try:
        workflow = wf.replay_keyed if keyed else wf.replay
        handle = await create_durable_workflow(ns).run(workflow, {"n": steps}, execution_id="cold")
        if await handle.status() != "waiting":
            raise RuntimeError(f"the journal's execution ended {await handle.status()}")
    finally:
        await ns.close()


def child(cell: str, steps: int, row_bytes: int) -> None:
    if cell in ("replay", "replay-keyed"):
        _replay_run(steps, keyed=cell == "replay-keyed")
    elif cell == "floor":
        _floor_run(steps, row_bytes)
    elif cell == "memory":
        asyncio.run(_memory_run(steps))
    elif cell in dict(CELLS):
        asyncio.run(_engine_run(cell, steps))
    else:
        raise SystemExit(f"unknown cell {cell!r}: one of {', '.join(c for c, _ in CELLS)}")


if __name__ == "__main__":
    if sys.argv[1] == JOURNAL:
        asyncio.run(_write_journal(int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"))
    else:
        child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
