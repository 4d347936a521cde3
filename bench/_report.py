"""Tables and target verdicts, printed from the measurements of one run."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from workkit_workflow.local._backends import CHECKPOINT_PAGES

from . import _engine
from ._sqlite import SyncResult
from ._stats import percentile, spread, table
from ._targets import Verdict, at_least, at_most, ratios, skipped

FLOOR_RATIO = {"FULL": 1.3, "NORMAL": 1.6}
DBOS_RATIO = {"FULL": 6.0, "NORMAL": 20.0}
HISTORY_RATIO = 1.3
MEMORY_CPU = {"CPython": 12e-6, "Pyodide": 30e-6}
REPLAY = {10_000: 50e-3, 50_000: 250e-3}
REPLAY_PEAK = 16 * 2**20
BYTES_PER_STEP = 350
CONCURRENT_RATE = 1000.0
FLAT = 1.25
"""CPU per execution counts as flat when its largest median is within 25% of its smallest."""


def memory_cpu(
    runtime: str,
    values: list[float] | None,
    steps: int,
    reason: str = "",
    warm_up: Sequence[float] = (),
    reference: Sequence[float] | None = None,
) -> list[Verdict]:
    what = f"engine CPU per step on memory storage, {steps:,}-step execution, {runtime}"
    print(f"\n== {what} (us per step)")
    if values is None:
        print(f"not measured: {reason}")
        return [skipped(what, reason)]
    if warm_up:
        first = ", ".join(f"{v * 1e6:.1f}" for v in warm_up)
        print(f"first runs of a fresh interpreter, while V8 optimizes its code (not counted): {first}")
    print(f"median [min-max]: {spread(values).fmt(1e6, 1)} over {len(values)} runs")
    if reference:
        in_iterations = [v / r for v, r in zip(values, reference, strict=True)]
        print(
            "no target: the machine's reference, a fixed pure-Python loop of no engine code (a small"
            f" dict, a formatted string, a call, its JSON text), measured after each run:"
            f" {spread(reference).fmt(1e6, 2)} us an iteration; the engine's step costs"
            f" {spread(in_iterations).fmt(1, 1)} iterations of it (one ratio per run)"
        )
    return [at_most(what, values, MEMORY_CPU[runtime.split()[0]], unit=1e6, digits=1, suffix=" us")]


def per_step(results: Sequence[SyncResult], sizes: Sequence[int]) -> list[Verdict]:
    verdicts: list[Verdict] = []
    big = max(sizes)
    for res in results:
        names = list(res.series)
        print(
            f"\n== per-step cost on SQLite, WAL + synchronous={res.synchronous}, default interleaving"
            f" (ms per step, median [min-max]); floor row = {res.row_bytes} bytes"
        )
        for name, why in res.peers.items():
            print(f"  {name}: {why}")
        rows = []
        for n in sizes:
            rows.append([n, *(spread(res.series[k][n]).fmt(1e3) if res.series[k][n] else "-" for k in names)])
        print(table(["N", *names], rows))
        print(
            f"writes per step at N={big}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in res.writes_per_step.items())
            + " (the yielding body has no target: a completion is not held while the body waits,"
            " its write comes a few loop iterations after the body suspends)"
        )
        for line in _no_target_lines(res, big):
            print(line)
        verdicts += _sqlite_verdicts(res, big)
    return verdicts


def _no_target_lines(res: SyncResult, big: int) -> list[str]:
    """The SQLite section's figures without a target: log pages and checkpoints per step
    (counted by SQLite, ``bench._wal``), and what the outbox's writes cost the floor."""
    pages = res.wal_pages
    history = pages["engine + history, object file"], pages["engine + history, D1 file"]
    lines = [
        f"no target: WAL frames (pages of {res.page_size} bytes) written per step at N={big:,}, counted in"
        f" SQLite's wal-index over one untimed run: engine {pages['engine']:.3f}, engine + history"
        f" {history[0]:.3f} (object file) + {history[1]:.3f} (D1 file), floor {pages['floor']:.3f},"
        f" floor + outbox writes {pages['floor + outbox writes']:.3f}"
    ]
    how = "each run starts from an empty log" if res.fresh_log else "--keep-wal: runs start mid-log"
    counts = ", ".join(
        f"{label} {sum(v) / len(v) / big * 1000:.2f} ({' '.join(map(str, v))})"
        for label, v in res.checkpoints.items()
    )
    lines.append(
        f"no target: checkpoints per 1,000 steps inside the timed runs at N={big:,} ({how};"
        f" per run in brackets; a long run does one per {CHECKPOINT_PAGES:,} frames): {counts}"
    )
    if res.d1_per_step:
        d1 = res.d1_per_step
        per = d1["statements"]
        lines.append(
            f"no target: what the history sent D1 per step at N={big:,} (one untimed run): rows written"
            f" {d1['rows']:.3f}, statements {per:.3f}, batches {d1['batches']:.4f} (a Worker invocation"
            f" may send 1,000 queries, 50 on the free plan: about {1000 / per:,.0f} and {50 / per:,.0f}"
            " steps' history if each statement counts as one, more if a batch does)"
        )
    lines += _closing_lines(res, big)
    if res.series.get("floor + outbox writes", {}).get(big):
        outbox = spread(ratios(res.series["floor + outbox writes"][big], res.series["floor"][big]))
        m = res.outbox
        lines.append(
            f"no target: floor + outbox writes (what the history engine wrote more than the engine over"
            f" N={big:,}: {m.riders(big)} of the journal's commits carried outbox records, {m.rider_bytes()}"
            f" bytes each, and {m.extra_commits(big)} commits more, {m.commit_bytes()} bytes each; the floor"
            f" does the same, spread evenly) costs {outbox.fmt(1, 2)}x the floor at N={big:,}"
        )
    return lines


def _closing_lines(res: SyncResult, big: int) -> list[str]:
    """The cost of each run's closing checkpoint (what it left in its logs), and the
    target ratios with it counted in both times."""
    closing = res.closing
    if not closing:
        return []
    alone = ", ".join(f"{name} {spread(v).fmt(1e3, 4)}" for name, v in closing.items())
    lines = [
        f"no target: each run's closing checkpoint (what it left in its logs, checkpointed right after it,"
        f" outside its time) at N={big:,}, ms per step: {alone}"
    ]
    for top, bottom in (("engine", "floor"), ("engine + history", "engine")):
        if top in closing and bottom in closing:
            both = [
                [a + b for a, b in zip(res.series[name][big], closing[name], strict=True)]
                for name in (top, bottom)
            ]
            lines.append(
                f"no target: {top} / {bottom} at N={big:,} with the closing checkpoint counted in both times"
                f" (every page a run writes copied into its database in its own time):"
                f" {spread(ratios(*both)).fmt(1, 2)}x"
            )
    return lines


def _sqlite_verdicts(res: SyncResult, big: int) -> list[Verdict]:
    sync, s = res.synchronous, res.series
    out = [
        at_most(
            f"{sync}: engine / floor at N={big:,}",
            ratios(s["engine"][big], s["floor"][big]),
            FLOOR_RATIO[sync],
            suffix="x",
        ),
        at_most(
            f"{sync}: engine with history projection / without at N={big:,}",
            ratios(s["engine + history"][big], s["engine"][big]),
            HISTORY_RATIO,
            suffix="x",
        ),
    ]
    if "DBOS" in s and s["DBOS"][big]:
        dbos = ratios(s["DBOS"][big], s["engine"][big])
        out.append(
            at_least(f"{sync}: DBOS / engine at N={big:,}", dbos, DBOS_RATIO[sync], digits=1, suffix="x")
        )
    else:
        out.append(skipped(f"{sync}: DBOS / engine", res.peers.get("DBOS", "DBOS not run")))
    return out


def per_execution(results: Sequence[SyncResult], steps: int) -> None:
    print(f"\n== per execution: one {steps}-step workflow, start to finish (ms, median [min-max])")
    names = sorted({k for r in results for k in r.series if not k.startswith("floor")}, key=_order)
    rows = []
    for name in names:
        cells = [name]
        for res in results:
            values = res.series.get(name, {}).get(steps)
            cells.append(spread([v * steps for v in values]).fmt(1e3, 2) if values else "-")
        rows.append(cells)
    print(table(["system", *(r.synchronous for r in results)], rows))
    for name in sorted({k for r in results for k in r.peers}):
        if all(name not in r.series for r in results):
            print(f"{name}: {results[0].peers[name]}")


def _order(name: str) -> tuple[int, str]:
    return (0 if name.startswith("engine") else 1, name)


def replay(results: list[_engine.ReplayResult]) -> list[Verdict]:
    print("\n== cold replay: a new object resumes an execution after N finished steps (synchronous=NORMAL)")
    rows, verdicts = [], []
    for r in results:
        total = spread(r.total)
        rows.append(
            [
                f"{r.steps}, keyed" if r.keyed else r.steps,
                f"{r.journal_bytes / 1024:.0f}",
                total.fmt(1e3, 2),
                spread(r.cpu).fmt(1e3, 2),
                spread(r.list_decode).fmt(1e3, 2),
                f"{spread(r.cpu).median / r.steps * 1e6:.1f}",
                f"{r.peak_bytes / 2**20:.1f}",
                f"{r.live_peak_bytes / 2**20:.2f}",
            ]
        )
        if r.steps in REPLAY and not r.keyed:
            what = f"cold replay of {r.steps:,} steps"
            verdicts.append(at_most(f"{what}, CPU time", r.cpu, REPLAY[r.steps], unit=1e3, suffix=" ms"))
            verdicts.append(
                at_most(
                    f"{what}, peak memory (tracemalloc)",
                    [r.peak_bytes],
                    REPLAY_PEAK,
                    unit=2**-20,
                    digits=1,
                    suffix=" MiB",
                )
            )
    print(
        table(
            [
                "N",
                "journal KiB",
                "resume ms (wall)",
                "resume ms (CPU)",
                "list+decode ms",
                "CPU us/step",
                "peak MiB",
                "running them live: peak MiB",
            ],
            rows,
        )
    )
    return verdicts


def wakes(results: list[_engine.WakeResult]) -> None:
    """No target: what an event costs a loop that has been through many turns."""
    print(
        "\n== wake-ups of a long loop: each turn waits for an event, then runs a step; each event"
        " is a new drive that replays every turn before it (synchronous=NORMAL, no target)"
    )
    rows = []
    for r in results:
        cpu = spread(r.cpu)
        rows.append([r.turns, cpu.fmt(1e3, 3), f"{cpu.median / r.turns * 1e6:.2f}"])
    print(table(["turns replayed", "CPU per wake-up, ms", "CPU us per turn replayed"], rows))


def ops(results: list[_engine.OpsResult]) -> list[Verdict]:
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
    big = max(results, key=lambda r: r.steps)
    return [
        at_most(
            f"bytes per step at N={big.steps:,}", [big.bytes_written / big.steps], BYTES_PER_STEP, digits=0
        )
    ]


def children(results: list[_engine.ChildrenResult]) -> None:
    """No target: a parent's writes per child stay the same however many it starts."""
    print("\n== a parent of N one-step children: what the parent's object writes (no target)")
    rows = [
        [
            r.children,
            "gathered" if r.together else "one after the other",
            f"{r.parent_bytes / 2**20:.2f}",
            f"{r.parent_bytes / r.children:.0f}",
            f"{r.cpu / r.children * 1e3:.2f}",
        ]
        for r in results
    ]
    print(table(["N", "started", "parent MiB written", "bytes per child", "CPU ms per child"], rows))


def concurrency(results: dict[int, list[_engine.ConcurrencyResult]]) -> list[Verdict]:
    print("\n== concurrent executions of 5 steps on one LocalNamespace (SQLite NORMAL, default interleaving)")
    timed = max(r.total for runs in results.values() for r in runs)
    print(
        f"each run of a cell: rounds of its executions started at once, each round on a new namespace,"
        f" until {timed:,} executions were timed (rounds per run: "
        + ", ".join(f"{count:,}: {runs[0].rounds}" for count, runs in results.items())
        + "); gc runs are per round"
    )
    rows = []
    cpu_medians: dict[int, float] = {}
    for count, runs in results.items():
        rates = [r.total / r.wall for r in runs]
        cpus = [r.cpu / r.total for r in runs]
        cpu_medians[count] = statistics.median(cpus)
        latencies = [x for r in runs for x in r.latencies]
        rows.append(
            [
                count,
                spread(rates).fmt(1, 0),
                spread(cpus).fmt(1e3, 3),
                f"{percentile(latencies, 50) * 1e3:.0f}",
                f"{percentile(latencies, 99) * 1e3:.0f}",
                f"{statistics.median(r.gc_collections / r.rounds for r in runs):.1f}",
                f"{statistics.median(r.gc_full / r.rounds for r in runs):.1f}",
                f"{statistics.median(r.gc_seconds / r.total for r in runs) * 1e3:.3f}",
                _objects(runs),
                _walks(runs),
            ]
        )
    print(
        table(
            [
                "executions",
                "exec/s",
                "CPU ms per execution",
                "p50 ms",
                "p99 ms",
                "gc runs",
                "full gc runs",
                "gc ms per execution",
                "gc-tracked objects per execution in flight",
                "objects the collector walked per execution",
            ],
            rows,
        )
    )
    top = max(results)
    flat = max(cpu_medians.values()) / min(cpu_medians.values())
    print(_less_collector(results))
    return [
        at_least(
            f"{top:,} concurrent executions, executions/s",
            [r.total / r.wall for r in results[top]],
            CONCURRENT_RATE,
            digits=0,
        ),
        at_most(
            f"CPU per execution, largest / smallest median over {', '.join(map(str, results))} executions",
            [flat],
            FLAT,
            suffix="x",
        ),
    ]


def _less_collector(results: dict[int, list[_engine.ConcurrencyResult]]) -> str:
    """The flatness target's ratio with the collector's time taken out of each run's CPU
    (no target): how much of the rise is the garbage collector's."""
    medians = {
        count: statistics.median((r.cpu - r.gc_seconds) / r.total for r in runs)
        for count, runs in results.items()
    }
    low, high = min(medians, key=medians.__getitem__), max(medians, key=medians.__getitem__)
    return (
        f"no target: CPU per execution less the collector's time, largest / smallest median:"
        f" {medians[high] / medians[low]:.2f}x ({medians[high] * 1e3:.3f} ms at {high:,},"
        f" {medians[low] * 1e3:.3f} ms at {low:,})"
    )


def _objects(runs: Sequence[_engine.ConcurrencyResult]) -> str:
    """Objects per execution in flight (an untimed pass; no target): "-" if not counted."""
    counted = [r.objects_in_flight for r in runs if r.objects_in_flight is not None]
    return f"{statistics.median(counted):.1f}" if counted else "-"


def _walks(runs: Sequence[_engine.ConcurrencyResult]) -> str:
    """Objects the collector walked per execution (an untimed pass; no target)."""
    counted = [r.collector_walks for r in runs if r.collector_walks is not None]
    return f"{statistics.median(counted):.0f}" if counted else "-"


def summary(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    print("\n== targets")
    for v in verdicts:
        print(v.line)
    met = sum(1 for v in verdicts if v.met)
    measured = sum(1 for v in verdicts if v.met is not None)
    print(f"{met} of {measured} measured targets met")
    return {"met": met, "measured": measured}
