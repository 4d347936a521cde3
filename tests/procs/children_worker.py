"""A local runtime in its own OS process, for tests/test_sigkill_children.py to SIGKILL.

    python tests/procs/children_worker.py DB LOG [--start] [--finish]

Opens a LocalNamespace on the SQLite file DB: its pending alarms resume whatever
a killed predecessor left. ``--start`` starts the parent ``family`` (three
children, each two steps around a durable sleep, then a last step of its own);
``--finish`` waits until every execution in DB has settled and prints DONE with
the parent's result. What the outside world sees is appended to LOG, fsync'd:

    run <execution> <step> <attempt> <idempotency key>   a step handler was entered
    effect <idempotency key>                              its side effect happened
    journaled <execution> <step>                          its completion was committed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from _outside import Log, QuickLease  # a sibling: this file runs as a script

from workkit_workflow import RetryPolicy, WorkflowContext, current_step, workflow
from workkit_workflow.local import LocalNamespace

PARENT = "family"
WAIT = 0.3


def build(log: Log) -> Any:
    async def effect() -> str:
        step = current_step()
        assert step is not None
        log.write(f"run {step.execution_id} {step.step} {step.attempt} {step.idempotency_key}")
        await asyncio.sleep(0.01)  # the call to the outside world
        log.write(f"effect {step.idempotency_key}")
        return f"{step.execution_id}/{step.step}"

    retry = RetryPolicy(max_attempts=50, initial_delay=WAIT, max_delay=WAIT, jitter=0.0)

    @workflow("kid", retry=retry)
    async def kid(ctx: WorkflowContext, input: Any) -> Any:
        first = await ctx.step(f"pack-{input}", effect)
        await ctx.sleep("dry", WAIT)
        return [first, await ctx.step(f"label-{input}", effect)]

    @workflow(PARENT, retry=retry)
    async def family(ctx: WorkflowContext, input: Any) -> Any:
        kids = await asyncio.gather(*(ctx.child(kid, n, name=f"kid-{n}") for n in range(3)))
        return {"kids": kids, "last": await ctx.step("ship", effect)}

    return family


def watch_commits(ns: LocalNamespace, log: Log) -> None:
    commit = ns.backend.commit

    def logged(obj: str, puts: Mapping[str, str], deletes: Sequence[str], alarm: Any) -> None:
        commit(obj, puts, deletes, alarm)
        for key, text in puts.items():
            record = json.loads(text) if key.startswith("j:") else {}
            if record.get("kind") == "step" and record.get("status") == "completed":
                log.write(f"journaled {obj} {record['name']}")

    ns.backend.commit = logged  # type: ignore[method-assign]


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("log")
    parser.add_argument("--start", action="store_true")
    parser.add_argument("--finish", action="store_true")
    args = parser.parse_args(argv)
    log = Log(args.log)
    family = build(log)
    from workkit_workflow import create_durable_workflow

    async with LocalNamespace(args.db, object_class=QuickLease, synchronous="FULL") as ns:
        watch_commits(ns, log)
        client = create_durable_workflow(ns)
        print("READY", flush=True)
        if args.start:
            await client.start(family, None, execution_id=PARENT)
            print("STARTED", flush=True)
        if not args.finish:
            await asyncio.sleep(3600)  # until killed
            return 1
        result = await client.execution(PARENT).result(timeout=60)
        for _ in range(200):  # the children's own mail (their outcome) is delivered by now
            views = [await client.execution(obj).describe() for obj in ns.backend.objects()]
            if all(v["settled"] for v in views):
                break
            await asyncio.sleep(0.05)
        print("DONE", json.dumps({"ok": result.ok, "value": result.value, "objects": len(views)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
