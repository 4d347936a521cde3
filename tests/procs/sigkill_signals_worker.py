"""A local runtime plus a client driver in one OS process, for tests/test_sigkill_signals.py to SIGKILL.

    python tests/procs/sigkill_signals_worker.py DB LOG --seed S --life N [--finish SECONDS]

Opens a LocalNamespace on the SQLite file DB: its pending alarms resume what a
killed predecessor left. A driver task then plays a client at random moments
(seeded by S and N): it starts executions of two workflows, sends the events
they wait for, cancels some, and restarts some from a step, until the parent
kills the process. ``--finish SECONDS`` plays the last life: no new starts,
cancels or restarts; it re-sends what is still owed (starts and restarts never
answered, events not yet acknowledged) and waits at most SECONDS for every
execution in DB to settle, then prints DONE or TIMEOUT.

Only one process has DB open at a time (a second opener would run the same
alarms: issue #10 item 5). Everything the test judges is appended to LOG, one
JSON object per line, each line written by a single ``write`` (the page cache
survives SIGKILL; no fsync is needed). A kill can still tear the line being written
where it crosses a page: ``read_log`` skips such a last line and the next life cuts it:

    {"t": "boot", ...}                            a process started
    {"t": "req"|"ack", "k": KIND, "x": EXEC, ...} a client request, and its answer
    {"t": "seen", "x": EXEC, "status": S}         the driver saw EXEC settled
    {"t": "run"|"done", "x": EXEC, "step": NAME, "attempt": N}
                                                  a step body was entered / completed
                                                  (its side effect happened)

An ``ack`` line is written after the answer arrived, so it never claims what
the object did not durably accept; a ``done`` line is written before the step
returns, so it precedes the step's journal write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from workkit_workflow import (
    CompensationContext,
    RetryPolicy,
    WorkflowContext,
    create_durable_workflow,
    current_step,
    workflow,
)
from workkit_workflow.errors import WorkflowError
from workkit_workflow.local import LocalNamespace

try:
    from _outside import drop_torn_tail  # run as a script: a sibling
except ImportError:  # imported by the test
    from procs._outside import drop_torn_tail

WAIT = 0.2
"""Seconds of the durable sleeps, the retry backoff and the batch's wait timeout."""
LEASE = 0.5
"""The execution objects' lease: after a kill, the next process resumes a running
phase within this long."""
MAX_ACTIVE = 6
"""New executions start only while fewer than this many known ones are unsettled."""

STUCK = 3.0
"""Seconds the last life waits with no request in flight and no alarm set before it gives up."""

ORDER_OPS = ["reserve", "fan-a", "fan-b", "first", "nap", "charge", "second", "pack", "third", "ship"]
BATCH_OPS = ["part-0", "part-1", "part-2", "rest", "flaky", "nudge", "merge"]
OPS = {"order": ORDER_OPS, "batch": BATCH_OPS}
ORDER_WAITS = {i: ORDER_OPS.index(name) for i, name in enumerate(["first", "second", "third"])}
"""Event index -> position of the ``wait_for_event`` that consumes it (type ``item``)."""


class Log:
    def __init__(self, path: str) -> None:
        drop_torn_tail(path)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        os.write(self.fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())


def read_log(path: str) -> list[dict[str, Any]]:
    """Every whole line of LOG (a last one without its newline was torn by a kill: what
    it says never happened, since every line is written before what it announces)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]


def events_needed(workflow_name: str, from_step: str | None) -> list[int]:
    """The event indices an execution waits for: a restart keeps the waits before its cut."""
    if workflow_name != "order":
        return []
    cut = 0 if from_step is None else ORDER_OPS.index(from_step)
    return [i for i, position in ORDER_WAITS.items() if position >= cut]


def event_id(execution: str, index: int) -> str:
    return f"{execution}:ev{index}"


def payload(execution: str, index: int) -> str:
    return f"{execution}#{index}"


# -- the workflows -----------------------------------------------------------------


def define(log: Log, rng: random.Random, after_step: Callable[[str], None]) -> None:
    async def effect(flaky: bool = False) -> dict[str, Any]:
        step = current_step()
        assert step is not None
        record = {"x": step.execution_id, "step": step.step, "attempt": step.attempt}
        log.write({"t": "run", **record})
        await asyncio.sleep(rng.uniform(0.001, 0.015))  # the call to the outside world
        if flaky and step.attempt == 1:
            raise ConnectionError("the first attempt always times out")
        log.write({"t": "done", **record})
        after_step(step.execution_id)
        return record

    retry = RetryPolicy(max_attempts=20, initial_delay=WAIT, max_delay=WAIT, jitter=0.0)

    async def compensate(ctx: CompensationContext) -> None:
        # In-doubt steps may have had their effect: undo them too (an undo keyed by the
        # attempt's idempotency key is a no-op where nothing happened).
        names = [*ctx.step_outputs, *(step.name for step in ctx.in_doubt_steps)]
        for name in reversed(names):
            await ctx.step(f"undo-{name}", effect)

    @workflow("order", retry=retry)
    async def order(ctx: WorkflowContext, input: Any) -> dict[str, Any]:
        await ctx.step("reserve", effect)
        # The first wait runs beside two steps: its event can arrive while they run.
        _, _, first = await asyncio.gather(
            ctx.step("fan-a", effect), ctx.step("fan-b", effect), ctx.wait_for_event("first", "item")
        )
        await ctx.sleep("nap", WAIT)
        # A key shared with restarted executions: their charge reuses this one's output.
        await ctx.step("charge", effect, True, idempotency_key=lambda s: f"charge:{s.input['order']}")
        # A step, then a wait: the execution parks a few loop turns after the step.
        second = await ctx.wait_for_event("second", "item")
        await ctx.step("pack", effect)
        third = await ctx.wait_for_event("third", "item")
        await ctx.step("ship", effect)
        return {"events": [first, second, third]}

    @workflow("batch", retry=retry)
    async def batch(ctx: WorkflowContext, input: Any) -> dict[str, Any]:
        parts = await asyncio.gather(*(ctx.step(f"part-{i}", effect) for i in range(3)))
        await ctx.sleep("rest", WAIT)
        await ctx.step("flaky", effect, True)
        nudge = await ctx.wait_for_event("nudge", "nudge", timeout=WAIT, default="none")
        await ctx.step("merge", effect)
        return {"parts": len(parts), "nudge": nudge}

    order.on_failure(compensate)
    batch.on_failure(compensate)


# -- the client driver ----------------------------------------------------------------


class Known:
    """What earlier lives asked for and were answered, read back from LOG."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.requests: dict[str, dict[str, Any]] = {}  # exec -> its start/restart request
        self.created: set[str] = set()  # start/restart answered
        self.events_done: set[str] = set()  # event ids answered accepted or duplicate
        self.refused: set[str] = set()  # executions that refused events (finished or cancelled)
        self.settled: set[str] = set()
        self.restarts = 0
        for r in records:
            self.note(r)

    def note(self, r: dict[str, Any]) -> None:
        t, kind = r["t"], r.get("k")
        if t == "req" and kind in ("start", "restart"):
            self.requests.setdefault(r["x"], r)
            self.restarts += kind == "restart"
        elif t == "ack" and kind in ("start", "restart") and "error" not in r:
            self.created.add(r["x"])
        elif t == "ack" and kind == "restart":
            self.requests.pop(r["x"], None)  # refused: it does not exist
        elif t == "ack" and kind == "event":
            if "error" in r:
                self.refused.add(r["x"])
            else:
                self.events_done.add(r["id"])
        elif t == "seen":
            self.settled.add(r["x"])

    def next_event(self, execution: str) -> int | None:
        """The next event owed to ``execution``, in order (the waits take them in order)."""
        request = self.requests[execution]
        if execution in self.refused or execution in self.settled:
            return None
        for index in events_needed(request["wf"], request.get("from")):
            if event_id(execution, index) not in self.events_done:
                return index
        return None

    def active(self) -> list[str]:
        return sorted(x for x in self.created if x not in self.settled)


class Driver:
    def __init__(self, ns: LocalNamespace, log: Log, known: Known, rng: random.Random, life: int) -> None:
        self.ns = ns
        self.client = create_durable_workflow(ns)
        self.log = log
        self.known = known
        self.rng = rng
        self.life = life
        self.busy: set[str] = set()  # executions with a request in flight
        self.finishing = False
        self.tasks: set[asyncio.Task[None]] = set()

    def record(self, record: dict[str, Any]) -> None:
        self.log.write(record)
        self.known.note(record)

    async def ask(self, req: dict[str, Any], call: Awaitable[dict[str, Any]]) -> None:
        """One client request, logged before it is sent and after it is answered."""
        self.record({"t": "req", **req})
        try:
            answer = await call
        except WorkflowError as exc:
            answer = {"error": exc.code, "message": exc.message, "about": exc.details.get("execution_id")}
        self.record({"t": "ack", "k": req["k"], "x": req["x"], **answer})

    def spawn(self, execution: str, req: dict[str, Any], call: Awaitable[dict[str, Any]]) -> None:
        self.busy.add(execution)

        async def run() -> None:
            try:
                await self.ask(req, call)
            finally:
                self.busy.discard(execution)

        task = asyncio.ensure_future(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- requests --------------------------------------------------------------------

    def start(self, execution: str, workflow_name: str, drive: bool) -> None:
        async def call() -> dict[str, Any]:
            run = self.client.run if drive else self.client.start
            handle = await run(workflow_name, {"order": execution}, execution_id=execution)
            return {"created": handle.created}

        self.spawn(execution, {"k": "start", "x": execution, "wf": workflow_name, "drive": drive}, call())

    def restart(self, source: str, new: str, from_step: str, workflow_name: str) -> None:
        async def call() -> dict[str, Any]:
            handle = await self.client.restart(source, from_step=from_step, new_execution_id=new, wait=False)
            return {"created": handle.created}

        req = {"k": "restart", "x": new, "src": source, "from": from_step, "wf": workflow_name}
        self.spawn(new, req, call())

    def event(self, execution: str, index: int) -> None:
        ident = event_id(execution, index)

        async def call() -> dict[str, Any]:
            accepted = await self.client.execution(execution).send_event(
                "item", payload(execution, index), event_id=ident
            )
            return {"id": ident, "i": index, "accepted": accepted}

        self.spawn(execution, {"k": "event", "x": execution, "id": ident, "i": index}, call())

    def cancel(self, execution: str) -> None:
        async def call() -> dict[str, Any]:
            return {"cancelled": await self.client.execution(execution).cancel("driver")}

        self.spawn(execution, {"k": "cancel", "x": execution}, call())

    def observe(self, execution: str) -> None:
        async def run() -> None:
            view = await self.client.execution(execution).describe()
            if view["settled"]:
                self.record({"t": "seen", "x": execution, "status": view["status"]})

        task = asyncio.ensure_future(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- what is owed, and random play -------------------------------------------------

    def resend_unanswered(self) -> None:
        """Starts and restarts whose answer never came: ask again (same ids, so idempotent)."""
        for execution, req in sorted(self.known.requests.items()):
            if execution in self.known.created or execution in self.busy:
                continue
            if req["k"] == "start":
                self.start(execution, req["wf"], False)
            else:
                self.restart(req["src"], execution, req["from"], req["wf"])

    def send_owed_event(self, candidates: list[str]) -> bool:
        owed = [x for x in candidates if x not in self.busy and self.known.next_event(x) is not None]
        if not owed:
            return False
        execution = self.rng.choice(owed)
        index = self.known.next_event(execution)
        assert index is not None
        self.event(execution, index)
        return True

    def chase(self, execution: str, probability: float, turns: int) -> None:
        """Signal ``execution`` within a few loop turns: called when one of its steps
        finished or it writes, so the signal lands while it journals, starts its next
        operation or parks (issue #10 items 1-2: races of a few turns)."""
        if self.finishing or execution not in self.known.requests or self.rng.random() >= probability:
            return
        delay = self.rng.randint(0, turns)
        cancel = self.rng.random() < 0.1

        async def later() -> None:
            for _ in range(delay):
                await asyncio.sleep(0)
            if execution in self.busy:
                return
            index = self.known.next_event(execution)
            if cancel:
                self.cancel(execution)
            elif index is not None:
                self.event(execution, index)

        task = asyncio.ensure_future(later())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def watch(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        """LocalNamespace's write hook. A wait's entry is written some 10-20 loop turns
        before the execution parks, and the park's own state write opens the window of
        a lost cancel: signal then."""
        records = [json.loads(text) for key, text in puts.items() if key == "state" or key[:2] == "j:"]
        if any(r.get("kind") == "wait" and r.get("status") == "waiting" for r in records):
            self.chase(obj, 0.7, 24)
        elif any(r.get("status") in ("waiting", "sleeping") for r in records if "phase" in r):
            self.chase(obj, 0.4, 8)
        else:
            self.chase(obj, 0.03, 8)

    def play_once(self, serial: int) -> None:
        active = self.known.active()
        choice = self.rng.choices(["start", "event", "cancel", "restart", "observe"], [2, 2, 2, 1, 3])[0]
        if choice == "start" and len(active) < MAX_ACTIVE:
            name = self.rng.choice(["order", "order", "batch"])
            self.start(f"{name[0]}{self.life}.{serial}", name, drive=self.rng.random() < 0.3)
        elif choice == "event":
            self.send_owed_event(active)
        elif choice == "cancel" and active and self.rng.random() < 0.5:
            target = self.rng.choice(active)
            if target not in self.busy:
                self.cancel(target)
        elif choice == "restart" and self.known.created and self.known.restarts <= self.life:
            source = self.rng.choice(sorted(self.known.created))
            workflow_name = self.known.requests[source]["wf"]
            new = f"{source}.r{self.life}.{serial}"
            if new not in self.busy:
                self.restart(source, new, self.rng.choice(OPS[workflow_name]), workflow_name)
        elif choice == "observe" and active:
            self.observe(self.rng.choice(active))

    async def play(self) -> None:
        self.resend_unanswered()
        for serial in range(1_000_000):
            await asyncio.sleep(self.rng.uniform(0.002, 0.04))
            self.play_once(serial)

    def stored_unsettled(self) -> dict[str, Any]:
        """The executions whose stored state is not settled, read from the file itself."""
        rows = self.ns.backend.connection.execute(  # type: ignore[attr-defined]
            "SELECT obj, value FROM kv WHERE key = CAST('state' AS BLOB)"
        ).fetchall()
        states = {obj: json.loads(value) for obj, value in rows}
        return {x: s.get("status") for x, s in states.items() if s.get("phase") != "done"}

    async def finish(self, seconds: float) -> dict[str, Any]:
        """Pay what is owed, then wait (bounded) for every execution to settle."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        self.finishing = True
        self.resend_unanswered()
        views: dict[str, Any] = {}
        stuck_since: float | None = None
        while loop.time() < end:
            while self.send_owed_event(sorted(self.known.created)):
                pass
            # What is owed and in flight is read before the objects are listed: a request
            # answered while the views are gathered made its object after the listing.
            owed = [x for x in self.known.created if self.known.next_event(x) is not None]
            unanswered = set(self.known.requests) - self.known.created
            quiet = not owed and not unanswered and not self.busy
            views = {x: await self.client.execution(x).describe() for x in self.ns.backend.objects()}
            if quiet and all(v["settled"] for v in views.values()):
                return {
                    "t": "finish",
                    "settled": True,
                    "statuses": {x: v["status"] for x, v in views.items()},
                    # What the file holds at this moment, for the test to hold against the views.
                    "stored_unsettled": self.stored_unsettled(),
                }
            alarms = self.ns.backend.alarms()
            stuck = not self.busy and all(v["settled"] or x not in alarms for x, v in views.items())
            # Nothing in flight and no alarm left: nothing will ever move again.
            stuck_since = (stuck_since or loop.time()) if stuck else None
            if stuck_since is not None and loop.time() - stuck_since > STUCK:
                break
            await asyncio.sleep(0.05)
        unsettled = {x: v for x, v in views.items() if not v["settled"]}
        return {"t": "finish", "settled": False, "unsettled": unsettled, "busy": sorted(self.busy)}


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("log")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--life", type=int, required=True)
    parser.add_argument("--finish", type=float)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed * 100_003 + args.life)
    known = Known(read_log(args.log))
    log = Log(args.log)
    log.write({"t": "boot", "life": args.life, "pid": os.getpid()})
    drivers: list[Driver] = []
    define(log, random.Random(rng.random()), lambda x: drivers[0].chase(x, 0.6, 24) if drivers else None)

    from workkit_workflow import WorkflowExecutionDO

    class QuickLease(WorkflowExecutionDO):  # type: ignore[misc]
        lease = LEASE

    # Half the lives yield 0-4 loop turns at every storage await instead of one, as
    # Cloudflare's scheduling may: other interleavings of the same requests.
    interleave = rng.choice(["storage", "chaos"])
    async with LocalNamespace(
        args.db,
        object_class=QuickLease,
        synchronous="FULL",
        interleave=interleave,
        seed=rng.randrange(1 << 30),
    ) as ns:
        driver = Driver(ns, log, known, rng, args.life)
        drivers.append(driver)
        ns.write_hook = driver.watch
        await ns.start()  # deliver the pending alarms before any request
        print("READY", flush=True)
        if args.finish is None:
            await driver.play()
            return 1  # never reached: the parent kills this process
        outcome = await driver.finish(args.finish)
        log.write(outcome)
        print("DONE" if outcome["settled"] else "TIMEOUT", json.dumps(outcome), flush=True)
        return 0 if outcome["settled"] else 2


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
