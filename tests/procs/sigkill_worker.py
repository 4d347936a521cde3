"""A local runtime in its own OS process, for tests/test_sigkill.py to SIGKILL.

    python tests/procs/sigkill_worker.py DB LOG [--new PREFIX] [--finish]

Opens a LocalNamespace on the SQLite file DB (synchronous=FULL): its pending
alarms resume whatever a killed predecessor left running. ``--new PREFIX``
starts three executions named PREFIX-0..2; ``--finish`` waits until every
execution in DB has settled and prints DONE. Everything the outside world would
see is appended to LOG and fsync'd before the process goes on:

    boot <pid>                                            a process started
    run <execution> <step> <attempt> <idempotency key>   a step handler was entered
    effect <idempotency key>                              its side effect happened
    journaled <execution> <step> <attempt>                its completion was committed

The last line is written after the SQLite commit returned, so the log never
claims a completion that is not durable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from _outside import Log, QuickLease  # a sibling: this file runs as a script

from workkit_workflow import RetryPolicy, WorkflowContext, current_step, workflow
from workkit_workflow.local import LocalNamespace

STEPS = 8
WORKFLOW = "sigkill-flow"
WAIT = float(os.environ.get("WORKKIT_SIGKILL_WAIT", "0.3"))
"""Seconds of the durable sleep and of the retry backoff. Waits of a few
milliseconds hit a suspension race in PhaseRun.execute (see
test_fault_matrix.py::test_a_wake_up_during_idle_detection_does_not_strand_the_execution)."""


def build(log: Log) -> None:
    rng = random.Random()

    async def effect(flaky: bool = False) -> dict[str, Any]:
        step = current_step()
        assert step is not None
        log.write(f"run {step.execution_id} {step.step} {step.attempt} {step.idempotency_key}")
        await asyncio.sleep(rng.uniform(0.002, 0.02))  # the call to the outside world
        if flaky and step.attempt == 1:
            raise ConnectionError("first attempt always times out")
        log.write(f"effect {step.idempotency_key}")
        return {"step": step.step, "attempt": step.attempt}

    @workflow(WORKFLOW, retry=RetryPolicy(max_attempts=50, initial_delay=WAIT, max_delay=WAIT, jitter=0.0))
    async def flow(ctx: WorkflowContext, input: Any) -> int:
        for i in range(STEPS):
            await ctx.step(f"s{i}", effect, i == 2)
            if i == 3:
                await ctx.sleep("nap", WAIT)
            if i == 5:
                await asyncio.gather(ctx.step("fan-a", effect), ctx.step("fan-b", effect))
        return STEPS


def watch_commits(ns: LocalNamespace, log: Log) -> None:
    backend = ns.backend
    commit = backend.commit

    def logged(obj: str, puts: Mapping[str, str], deletes: Sequence[str], alarm: Any) -> None:
        commit(obj, puts, deletes, alarm)
        for key, text in puts.items():
            if key.startswith("j:"):
                record = json.loads(text)
                if record.get("kind") == "step" and record.get("status") == "completed":
                    log.write(f"journaled {obj} {record['name']} {record['attempt']}")

    backend.commit = logged  # type: ignore[method-assign]


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("log")
    parser.add_argument("--new")
    parser.add_argument("--finish", action="store_true")
    args = parser.parse_args(argv)
    log = Log(args.log)
    log.write(f"boot {os.getpid()}")
    build(log)
    from workkit_workflow import create_durable_workflow

    async with LocalNamespace(args.db, object_class=QuickLease, synchronous="FULL") as ns:
        watch_commits(ns, log)
        client = create_durable_workflow(ns)
        print("READY", flush=True)
        if args.new:
            for n in range(3):
                await client.start(WORKFLOW, {"n": n}, execution_id=f"{args.new}-{n}")
            print("STARTED", flush=True)
        if not args.finish:
            await asyncio.sleep(3600)  # until killed
            return 1
        for _ in range(600):
            views = [await client.execution(obj).describe() for obj in ns.backend.objects()]
            if all(v["settled"] for v in views):
                print("DONE", json.dumps({v["execution_id"]: v["status"] for v in views}), flush=True)
                return 0
            await asyncio.sleep(0.05)
        print("TIMEOUT", json.dumps([v for v in views if not v["settled"]]), flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
