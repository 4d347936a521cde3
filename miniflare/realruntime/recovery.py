"""How long an execution takes to recover after the runtime crashes, in the real runtime.

Places small orders (three steps of 0.3 s each, ``recovery_worker/recovery_entry.py``) in
rounds; in each round it SIGKILLs workerd at a random moment while the round's orders are in
the middle of their steps, restarts it at once over the same storage, and records for every
interrupted order the seconds from the restart to its completion (the execution's own
``finished_at``, so the polling interval adds nothing). Nothing but the lease alarm resumes an
order: the script only reads statuses, which never drive an execution.

    WORKKIT_RUNTIME_KIT=/work/cache/rt PYTHONPATH=src \\
        python miniflare/realruntime/recovery.py [--orders 20] [--kills 5] [--long-kills 2]

prints, per lease (the package's default, then a 30 s lease for comparison), min / median /
p90 / max recovery seconds and the count, then checks every order: it completed, and no step
whose result was journaled ran again (each step's journaled run number is its last run).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rt_driver import (  # noqa: E402
    NEW_STYLE_DATE,
    ROOT,
    Module,
    RealRuntime,
    Service,
    free_port,
    package_modules,
    stage,
    standin_modules,
)

WORKER = HERE / "recovery_worker"
SERVICE = "recovery"
LEASES = {"default": "RecoveryExecutionDO", "long": "LongLeaseExecutionDO"}
"""Lease name in the Worker's query -> its execution class."""
STEP_NAMES = ("reserve-inventory", "charge-card", "ship")
STEP_SECONDS = 0.3
"""Each step's duration by default: long enough to be killed in, short like a small order's."""
SETTLE_TIMEOUT = 150.0
"""Seconds a round waits for its interrupted orders (a 30 s lease needs about 35)."""


class RecoveryRuntime(RealRuntime):
    """workerd serving only the recovery Worker (the package and the tier's pydantic stand-in,
    as the other Workers of this tier), with its storage on disk so a SIGKILL and restart keep
    it."""

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = Module("recovery_entry.py", WORKER / "recovery_entry.py")
        modules = (entry, *package_modules(), *standin_modules())
        self.services = [
            Service(
                SERVICE,
                modules,
                NEW_STYLE_DATE,
                (
                    (LEASES["default"], "WORKFLOW_DO"),
                    (LEASES["long"], "LONG_LEASE_DO"),
                    ("Runs", "RUNS"),
                ),
            )
        ]
        self.ports = {SERVICE: free_port()}
        self.config = stage(self.folder, self.services, self.flags, self.ports)
        self.log_path = self.folder / "workerd.log"


@dataclass
class Round:
    lease: str
    orders: list[str]
    killed_at: float = 0.0
    restarted_at: float = 0.0
    finished: dict[str, float] = field(default_factory=dict)
    """Execution id -> its ``finished_at`` (wall-clock seconds)."""
    resumed: dict[str, float] = field(default_factory=dict)
    """Interrupted execution id -> when its first step attempt after the restart began: the
    lease alarm's firing, give or take the isolate's cold start."""

    def interrupted(self) -> list[str]:
        return [eid for eid, done in self.finished.items() if done > self.killed_at]

    def recoveries(self) -> list[float]:
        return [self.finished[eid] - self.restarted_at for eid in self.interrupted()]


@dataclass
class Outcome:
    lease: str
    rounds: list[Round]
    problems: list[str]
    reruns: int
    """Step runs beyond the first (each one a step interrupted mid-run and run again)."""

    @property
    def recoveries(self) -> list[float]:
        return [r for rnd in self.rounds for r in rnd.recoveries()]


def _get(rt: RealRuntime, path: str) -> Any:
    reply = rt.request(SERVICE, "GET", path, timeout=60)
    if reply.status != 200:
        raise RuntimeError(f"GET {path}: {reply.status} {reply.text[:500]}")
    return reply.body


def _place(rt: RealRuntime, lease: str, order_id: str, step_seconds: float) -> None:
    body = {
        "order_id": order_id,
        "amount": 42.5,
        "items": [{"sku": "sku-1", "quantity": 1}],
        "step_seconds": step_seconds,
    }
    reply = rt.request(SERVICE, "POST", f"/orders?lease={lease}", body, timeout=60)
    if reply.status not in (200, 201):
        raise RuntimeError(f"POST /orders {order_id}: {reply.status} {reply.text[:500]}")


def _describe(rt: RealRuntime, lease: str, eid: str) -> dict[str, Any]:
    execution: dict[str, Any] = _get(rt, f"/executions/{eid}?lease={lease}")["execution"]
    return execution


def run_round(
    rt: RealRuntime, lease: str, tag: str, orders: int, rng: random.Random, step_seconds: float
) -> Round:
    """Place ``orders`` orders a random 0-0.3 s apart, SIGKILL at a random moment while they
    run, restart at once, wait for every order to settle."""
    ids = [f"{tag}-{i}" for i in range(orders)]
    for order_id in ids:
        _place(rt, lease, order_id, step_seconds)
        time.sleep(rng.uniform(0.0, 0.3))
    # An order takes 3 * step_seconds: the last one placed is still running at the kill.
    time.sleep(rng.uniform(0.05, max(0.4, 3 * step_seconds - 0.5)))
    rnd = Round(lease, [f"order-{i}" for i in ids])
    rnd.killed_at = time.time()
    rt.kill()
    rt.start()
    rnd.restarted_at = time.time()
    rnd.finished = _wait_settled(rt, lease, rnd.orders)
    for eid in rnd.interrupted():
        rnd.resumed[eid] = _first_attempt_after(rt, lease, eid, rnd.restarted_at)
    return rnd


def _first_attempt_after(rt: RealRuntime, lease: str, eid: str, moment: float) -> float:
    journal = _get(rt, f"/executions/{eid}/journal?lease={lease}")["entries"]
    starts = [float(e["attempt_started_at"]) for e in journal if (e.get("attempt_started_at") or 0) > moment]
    return min(starts, default=float("nan"))


def _wait_settled(rt: RealRuntime, lease: str, eids: Sequence[str]) -> dict[str, float]:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    finished: dict[str, float] = {}
    last: dict[str, Any] = {}
    while len(finished) < len(eids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not settled in {SETTLE_TIMEOUT} s: {json.dumps(last)[:2000]}")
        for eid in eids:
            if eid in finished:
                continue
            try:
                view = _describe(rt, lease, eid)
            except OSError:
                continue  # the isolate's cold start: the socket listens before Python answers
            last[eid] = view["status"]
            if view["settled"]:
                finished[eid] = float(view["finished_at"] or 0.0)
        time.sleep(0.1)
    return finished


def check(rt: RealRuntime, lease: str, eids: Sequence[str]) -> tuple[list[str], int]:
    """Problems (an order not completed; a step run again after its result was journaled) and
    the number of re-runs of interrupted steps."""
    problems = []
    runs = _get(rt, "/runs?prefix=order-")
    reruns = 0
    for eid in eids:
        view = _describe(rt, lease, eid)
        if view["status"] != "completed":
            problems.append(f"{eid}: {view['status']} ({view.get('error')})")
            continue
        journal = _get(rt, f"/executions/{eid}/journal?lease={lease}")["entries"]
        journaled = {e["name"]: e for e in journal if e.get("kind", "step") == "step"}
        for step in STEP_NAMES:
            total = runs.get(f"{eid}:{step}", 0)
            reruns += max(0, total - 1)
            entry = journaled.get(step)
            output = entry.get("output") if entry else None
            run = output.get("run") if isinstance(output, dict) else None
            # The run whose result was journaled must be the last one that started.
            if run != total:
                problems.append(f"{eid}:{step}: journaled run {run}, runs counted {total}")
    return problems, reruns


def _post(rt: RealRuntime, path: str) -> Any:
    reply = rt.request(SERVICE, "POST", path, {}, timeout=60)
    if reply.status not in (200, 201):
        raise RuntimeError(f"POST {path}: {reply.status} {reply.text[:500]}")
    return reply.body


def _poll(what: str, probe: Any, timeout: float = SETTLE_TIMEOUT) -> Any:
    """``probe()`` until it returns something true (an unanswered request counts as None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except OSError:
            found = None  # the isolate's cold start: the socket listens before Python answers
        if found:
            return found
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout} s")


def poisoned(rt: RealRuntime, eid: str, kills: int) -> dict[str, Any]:
    """Start a poisoned order (``recovery_entry.poisoned_order``) and SIGKILL the runtime
    each time its body hangs between its steps, ``kills`` times, restarting it at once;
    return its view once its object has been resumed again and stopped driving it (with
    the package's cap, paused)."""
    body = f"{eid}:body"

    def arrivals() -> int:
        return int(_get(rt, f"/runs?prefix={body}").get(body, 0))

    def parked() -> dict[str, Any] | None:
        view = _describe(rt, "default", eid)
        return None if view["status"] == "running" else view

    _post(rt, f"/poisoned?id={eid}")
    for arrival in range(1, kills + 1):
        _poll(f"{eid}: body arrival {arrival}", lambda a=arrival: arrivals() >= a)
        rt.kill()
        rt.start()
    return dict(_poll(f"{eid}: parked", parked))


def measure(
    rt: RealRuntime,
    lease: str,
    orders: int,
    kills: int,
    rng: random.Random,
    step_seconds: float = STEP_SECONDS,
) -> Outcome:
    per_round = max(1, orders // kills)
    rounds = [run_round(rt, lease, f"{lease}{k}", per_round, rng, step_seconds) for k in range(kills)]
    eids = [eid for rnd in rounds for eid in rnd.orders]
    problems, reruns = check(rt, lease, eids)
    return Outcome(lease, rounds, problems, reruns)


def summary(outcome: Outcome) -> dict[str, Any]:
    values = outcome.recoveries
    orders = sum(len(r.orders) for r in outcome.rounds)
    out: dict[str, Any] = {
        "lease": outcome.lease,
        "orders": orders,
        "kills": len(outcome.rounds),
        "interrupted": len(values),
        "step_reruns": outcome.reruns,
        "problems": outcome.problems,
        # SIGKILL to listening again (not part of the recovery figures, which start after it).
        "restart_seconds": [round(r.restarted_at - r.killed_at, 2) for r in outcome.rounds],
        "resumed_after": _spread([t - r.restarted_at for r in outcome.rounds for t in r.resumed.values()]),
    }
    out.update(_spread(values))
    return out


def _spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / p90 (nearest rank) / max, in seconds to the hundredth; {} for none."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return {}
    return {
        "min": round(ordered[0], 2),
        "median": round(statistics.median(ordered), 2),
        "p90": round(ordered[math.ceil(0.9 * len(ordered)) - 1], 2),
        "max": round(ordered[-1], 2),
    }


def line(s: dict[str, Any]) -> str:
    figures = (
        f"min {s['min']:.2f} s, median {s['median']:.2f} s, p90 {s['p90']:.2f} s, max {s['max']:.2f} s"
        if s["interrupted"]
        else "no order interrupted"
    )
    return (
        f"{s['lease']:>7} lease: {figures} over {s['interrupted']} interrupted orders "
        f"({s['orders']} orders, {s['kills']} kills, {s['step_reruns']} step re-runs, "
        f"{len(s['problems'])} problems); resumed {s['resumed_after'].get('min', 0):.2f}-"
        f"{s['resumed_after'].get('max', 0):.2f} s after the restart"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--long-kills", type=int, default=2, help="kills with the 30 s lease (0: skip)")
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=STEP_SECONDS,
        help="each step's duration; the kill lands anywhere in the orders' run",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--state", type=Path, default=ROOT / ".cache" / "realruntime-recovery")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from _runtime_kit import kit

    shutil.rmtree(args.state, ignore_errors=True)
    rng = random.Random(args.seed)
    rt = RecoveryRuntime(kit().serve_args, args.state)
    rt.start()
    summaries = []
    try:
        rt.wait_ready(SERVICE)
        plan = [("default", args.orders, args.kills)]
        if args.long_kills:
            plan.append(("long", args.long_kills * max(1, args.orders // args.kills), args.long_kills))
        for lease, orders, kills in plan:
            outcome = measure(rt, lease, orders, kills, rng, args.step_seconds)
            summaries.append(summary(outcome))
            print(line(summaries[-1]), flush=True)
    finally:
        rt.stop()
    if args.json:
        print(json.dumps(summaries, indent=2))
    for s in summaries:
        for problem in s["problems"]:
            print("PROBLEM", problem)
    return 1 if any(s["problems"] for s in summaries) else 0


if __name__ == "__main__":
    raise SystemExit(main())
