"""The per-step cost inside the real local runtime (workerd with Python Durable Objects).

Runs ``miniflare/realruntime/worker/bench.py`` in one workerd (started and stopped by
``rt_driver.run_bench``, built by the ../shared/runtime kit through ``tests/_runtime_kit.py``):
the engine over the SQL journal (what a SQLite-backed object gets), over the key-value API
(one awaited ``put`` per commit) and in memory, next to the raw floors of the same run
(an awaited ``ctx.storage.put`` and a ``ctx.storage.sql.exec`` insert of the size the engine
commits per step), with min / median / max over the rounds. And the engine over the SQL journal
with the history projection on: there is no D1 in this runtime, so a D1-shaped stand-in over the
object's own SQLite runs its SQL, or runs nothing (what the object spends when D1 is elsewhere,
as on Cloudflare); no target here (issue #16's 1.3x is judged on the SQLite cells).

And what a whole execution costs the runtime (``rt_driver.run_cpu``): the workerd process's
CPU (read from /proc: a Worker's clock is wall time, blind to the runtime's threads) per
request, for a request the Worker answers itself, one to a new Durable Object that answers at
once, and executions of 1 and 10 steps through the client's ``run``, each a new execution
object: the execution's part is its row less the new object's. And less the row of a new
object doing the storage work of a 1-step execution itself, without the engine (its table,
reads, three commits, the alarm set and deleted): what the engine and the package add to the
runtime's cost of that work.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from ._stats import spread, table

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 0.2
"""Issue #11: the real per-step cost of the engine in this runtime."""

ROWS = (
    ("engine_sql", "engine, SQL journal (SQLite-backed object)"),
    ("engine_kv", "engine, key-value put per commit"),
    ("engine_memory", "engine, in-memory port (CPU only)"),
    ("engine_sql_history", "engine + history, SQL journal, its D1's SQL in the object"),
    ("engine_sql_history_offbox", "  the same, D1 elsewhere: the object's own part"),
    ("engine_sql_waiting", "engine, SQL journal, each step awaiting JS (as a fetch)"),
    ("engine_sql_waiting_history", "  the same + history, its D1's SQL in the object"),
    ("put", "floor: awaited ctx.storage.put"),
    ("sql_exec", "floor: ctx.storage.sql.exec insert"),
    ("sql_commit", "SqlJournalStorage.commit, 1 key"),
    ("adapter_commit", "DurableObjectStorage.commit, 1 key"),
    ("transaction_sync", "empty transactionSync"),
    ("await_js", "await a resolved JS promise"),
)

CPU_ROWS = (
    ("bare", "a request the Worker answers itself"),
    ("new_object", "a request to a new Durable Object that answers at once"),
    ("storage_floor", "  the same, doing a 1-step execution's storage work (no engine)"),
    ("run_1", "an execution of 1 step (client.run; a new execution object)"),
    ("run_10", "an execution of 10 steps, the same"),
)

HISTORY_ROWS = (
    ("engine_sql_history", "engine_sql", "with its SQL here"),
    ("engine_sql_history_offbox", "engine_sql", "with D1 elsewhere"),
    ("engine_sql_waiting_history", "engine_sql_waiting", "with steps awaiting JS, its SQL here"),
)
"""The rows with the history projection on, each against its row without, of its round."""


@dataclass(frozen=True)
class Unavailable:
    reason: str


def _driver() -> Any:
    for folder in (ROOT / "tests", ROOT / "miniflare" / "realruntime"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    import rt_driver

    return rt_driver


def measure(
    steps: int, rounds: int, executions: int = 200, cpu_rounds: int = 3
) -> dict[str, Any] | Unavailable:
    """The bench's report, or why the real runtime cannot run here."""
    try:
        rt_driver = _driver()
        from _runtime_kit import kit

        serve_args = kit().serve_args
    except Exception as exc:
        return Unavailable(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    reply = rt_driver.run_bench(serve_args, steps, rounds)
    if reply.status != 200 or not isinstance(reply.body, dict):
        raise RuntimeError(f"the real-runtime bench answered {reply.status}: {reply.text[:2000]}")
    return {**reply.body, "cpu": rt_driver.run_cpu(serve_args, executions, cpu_rounds)}


def report(result: dict[str, Any] | Unavailable) -> list[str]:
    """Print the table; the verdict lines for the targets section."""
    print("\n== real runtime: workerd with Python Durable Objects (ms per step or per call)")
    if isinstance(result, Unavailable):
        print(f"not available: {result.reason}")
        return [f"[SKIPPED] real runtime: not available: {result.reason}"]
    rounds = result["all_rounds"]
    rows = []
    for key, label in ROWS:
        values = rounds.get(key)
        if values:
            ordered = sorted(values)
            median = result["ms_per_step_or_call"][key]
            rows.append([label, f"{ordered[0]:.3f}", f"{median:.3f}", f"{ordered[-1]:.3f}"])
    print(
        f"{result['rounds']} rounds of a {result['steps']}-step workflow; "
        f"{result['commits_per_step']} commits and {result['committed_bytes_per_step']:.0f} bytes per step; "
        f"floors with values of that size"
    )
    print(table(["", "min", "median", "max"], rows))
    turns = result["loop_turns_per_step"]
    print("event-loop turns per step: " + ", ".join(f"{k} {v}" for k, v in turns.items()))
    ms = result["ms_per_step_or_call"]
    engine = ms["engine_sql"]
    on_off = [
        f"{_round_ratio(rounds, key, base):.2f}x {where}"
        for key, base, where in HISTORY_ROWS
        if rounds.get(key) and rounds.get(base)
    ]
    if on_off:
        print(
            "no target: history on / off over the SQL journal, median of the rounds' ratios: "
            + ", ".join(on_off)
            + f" (D1 statements per run: {result.get('history_statements_per_run')})"
        )
    if "cpu" in result:
        _report_cpu(result["cpu"])
    return [
        f"[{'MET' if engine <= TARGET_MS else 'MISSED'}] real runtime: engine over the SQL journal "
        f"{engine:.3f} ms/step (median) <= {TARGET_MS} ms (key-value {ms['engine_kv']:.3f}, "
        f"floors: put {ms['put']:.3f}, sql.exec {ms['sql_exec']:.3f})"
    ]


def _report_cpu(cpu: dict[str, Any]) -> None:
    print(
        f"\n== real runtime: the workerd process's CPU per request, ms (/proc, user + system; "
        f"{cpu['executions']} requests of each kind a round, {cpu['rounds']} rounds, "
        f"{cpu['clock_ticks_per_second']} ticks a second)"
    )
    rounds = cpu["all_rounds"]
    rows = []
    for key, label in CPU_ROWS:
        figures = spread(rounds[key])
        rows.append([label, f"{figures.low:.2f}", f"{figures.median:.2f}", f"{figures.high:.2f}"])
    print(table(["", "min", "median", "max"], rows))
    for base, what in (("new_object", "the new object's"), ("storage_floor", "its storage work's")):
        parts = [
            f"{steps} {median([a - b for a, b in zip(rounds[key], rounds[base], strict=True)]):.2f} ms"
            for key, steps in (("run_1", "1 step"), ("run_10", "10 steps"))
        ]
        print(
            f"no target: an execution's own part (its row less {what}, median of the rounds): "
            + ", ".join(parts)
        )


def _round_ratio(rounds: dict[str, list[float]], key: str, base: str) -> float:
    """The median over rounds of ``key`` / ``base`` in the same round (rounds interleave the
    variants, so a round's two figures saw the same load)."""
    return median([a / b for a, b in zip(rounds[key], rounds[base], strict=True) if b > 0])
