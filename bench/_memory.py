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

    def __init__(self) -> None:
        self.storage = MemoryStorage()
        self.clock = SystemClock()
        self.object_name: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def cpu_clock() -> Any:
    """Process CPU time on CPython; wall time under Pyodide, where the interpreter is the
    only thing running in its thread and ``process_time`` is not a CPU clock."""
    return time.perf_counter if sys.platform == "emscripten" else time.process_time


async def run_once(steps: int, workflow: str = "bench-linear") -> float:
    """Seconds of CPU for one ``steps``-step execution on a fresh object, start to finish
    (through ``ExecutionCore``: the wire's request models need pydantic, which the
    offline Pyodide here cannot load, and are not the engine)."""
    core = ExecutionCore(MemoryHost(), lease=30.0)
    clock = cpu_clock()
    start = clock()
    view, _ = await core.execute(
        workflow=workflow, input={"n": steps}, execution_id=f"mem-{steps}", wait=True
    )
    elapsed = float(clock() - start)
    if view.get("status") != "completed":
        raise RuntimeError(f"memory bench run ended {json.dumps(view)[:300]}")
    return elapsed


async def per_step(steps: int, rounds: int) -> list[float]:
    """Seconds per step, one figure per round, after one unmeasured warm-up run."""
    await run_once(10)
    return [await run_once(steps) / steps for _ in range(rounds)]


async def main() -> int:
    """Entry point under Pyodide: ``-- STEPS ROUNDS``; prints one JSON line."""
    from . import _workflows  # noqa: F401  (registers the workflows)

    steps, rounds = int(sys.argv[1]), int(sys.argv[2])
    values = await per_step(steps, rounds)
    print("BENCH-RESULT " + json.dumps({"per_step": values, "python": sys.version.split()[0]}))
    return 0
