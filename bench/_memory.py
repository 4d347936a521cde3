"""The engine's own CPU per step: an N-step execution over an in-memory Storage port.

No SQLite, no JavaScript, no I/O: what is left is the engine (journal encoding,
the phase loop, the step's record keeping). The module is plain Python that runs
on CPython (``bench.run``) and under Pyodide (``bench._pyodide`` runs it through
``miniflare/run_pyodide.mjs``), so both figures come from the same code.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from workkit_workflow.engine._execution import ExecutionCore
from workkit_workflow.engine._ports import KEEP_ALARM, SystemClock


class MemoryStorage:
    """The Storage port in a dict."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.alarm: Any = None

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        return {k: self.data[k] for k in keys if k in self.data}

    async def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, str]:
        keys = sorted(
            k
            for k in self.data
            if (prefix is None or k.startswith(prefix))
            and (start is None or k >= start)
            and (end is None or k < end)
        )
        if reverse:
            keys.reverse()
        return {k: self.data[k] for k in keys[:limit]}

    def commit_now(self, puts: Mapping[str, str]) -> bool:
        """A commit of puts alone, made at once (as the Durable Object's SQL journal makes a step's)."""
        self.data.update(puts)
        return True

    async def commit(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> None:
        self.data.update(puts)
        for key in deletes:
            self.data.pop(key, None)
        if alarm is not KEEP_ALARM:
            self.alarm = alarm

    async def get_alarm(self) -> float | None:
        return self.alarm  # type: ignore[no-any-return]

    async def set_alarm(self, at: float | None) -> None:
        self.alarm = at


class MemoryHost:
    """The ``ctx`` of one object: memory storage, the system clock, plain tasks."""

    def __init__(self, clock: Any = None) -> None:
        self.storage = MemoryStorage()
        self.clock = clock or SystemClock()
        self.object_name: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def cpu_clock() -> Any:
    """Process CPU time: on CPython ``process_time``; under Pyodide, where ``process_time``
    is not a CPU clock, that of the Node process running it (``process.cpuUsage()``, so a
    busy machine does not count against the engine), else wall time."""
    if sys.platform != "emscripten":
        return time.process_time
    try:
        from js import process  # type: ignore[import-not-found]  # Node's, under its harness

        process.cpuUsage()
    except Exception:
        return time.perf_counter

    def node_cpu() -> float:
        usage = process.cpuUsage()
        return float(usage.user + usage.system) / 1e6

    return node_cpu


async def run_once(steps: int, workflow: str = "bench-linear", clock: Any = None) -> float:
    """Seconds of CPU for one ``steps``-step execution on a fresh object, start to finish
    (through ``ExecutionCore``: the wire's request models need pydantic, which the
    offline Pyodide here cannot load, and are not the engine). ``clock``: the object's
    (default: the system's)."""
    core = ExecutionCore(MemoryHost(clock), lease=30.0)
    clock = cpu_clock()
    start = clock()
    view, _ = await core.execute(
        workflow=workflow, input={"n": steps}, execution_id=f"mem-{steps}", wait=True
    )
    elapsed = float(clock() - start)
    if view.get("status") != "completed":
        raise RuntimeError(f"memory bench run ended {json.dumps(view)[:300]}")
    return elapsed


async def per_step(steps: int, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds per step, one figure per round, after one unmeasured warm-up run; and beside
    each round, the machine's reference (:func:`reference_once`) measured right after it."""
    await run_once(10)
    reference_once()
    values: list[float] = []
    references: list[float] = []
    for _ in range(rounds):
        values.append(await run_once(steps) / steps)
        references.append(reference_once())
    return values, references


REFERENCE_ITERATIONS = 2_000


def reference_once(iterations: int = REFERENCE_ITERATIONS) -> float:
    """CPU seconds per iteration of a fixed pure-Python loop that runs no engine code: the
    machine's speed, now, at the kind of work a step does (a small dict, a formatted string,
    a call, its JSON text). The engine's step read in these iterations compares across
    machines, and across runs on one machine whose speed moves, where microseconds do not."""
    clock = cpu_clock()
    start = clock()
    total = 0
    for i in range(iterations):
        entry = {"v": 2, "kind": "step", "name": f"step-{i:05d}", "status": "running", "attempt": 1}
        total += _checksum(entry, json.dumps(entry, separators=(",", ":")))
    elapsed = float(clock() - start)
    if total <= 0:
        raise RuntimeError("the reference loop did no work")
    return elapsed / iterations


def _checksum(entry: Mapping[str, Any], text: str) -> int:
    return len(text) + int(entry["attempt"])


WARM_UP_RUNS = 3
"""Full runs a fresh Pyodide makes before it is measured: V8 compiles Pyodide's WebAssembly
in tiers, first quickly, then optimized in the background, and a fresh interpreter's first
few thousand steps run on the quick code (measured: 71, 36, 30 us per step over its first
three 1,000-step runs, then 25 to 29). A Worker's isolate serves many requests; what it
costs once warm is the figure, and the bench prints these runs beside it."""


async def main() -> int:
    """Entry point under Pyodide: ``-- STEPS ROUNDS``; prints one JSON line."""
    from . import _workflows  # noqa: F401  (registers the workflows)

    steps, rounds = int(sys.argv[1]), int(sys.argv[2])
    warm_up = [await run_once(steps) / steps for _ in range(WARM_UP_RUNS)]
    values, references = await per_step(steps, rounds)
    result = {
        "per_step": values,
        "reference": references,
        "warm_up": warm_up,
        "python": sys.version.split()[0],
    }
    print("BENCH-RESULT " + json.dumps(result))
    return 0
