"""A tour of workkit_workflow on the local runtime: ``python -m workkit_workflow.demo``.

1. An order whose payment gateway fails twice: retried with durable backoff.
2. An order whose worker process is SIGKILLed mid-step: a new process opens
   the same SQLite file, the pending alarm resumes the execution, and the
   steps already journaled do not run again.
3. An order with a bad address: a permanent failure, compensated (refund,
   release) in reverse order.
4. A large order that waits for a manager's approval (an external event).
5. The same bad address on a flow with per-step undo handlers: each completed
   step is undone, last started first.
6. An order split into parcels: one child workflow per parcel, run side by side.

Side effects go to an append-only log (fsync'd), the "outside world", so the
tour can prove what ran how many times, across processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import (
    NonRetryableError,
    RetryPolicy,
    StepContext,
    StepUndo,
    Workflow,
    WorkflowExecutionDO,
    create_durable_workflow,
    workflow,
)
from .definitions._durations import iso
from .history import LocalD1
from .local import LocalNamespace

EFFECTS = Path(
    os.environ.get("WORKKIT_DEMO_EFFECTS", Path(tempfile.gettempdir()) / "workkit-demo-effects.log")
)
BOLD, DIM, GREEN, RED, YELLOW, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[33m", "\033[0m")
    if sys.stdout.isatty()
    else ("",) * 6
)


def say(text: str) -> None:
    print(text, flush=True)


def effect(kind: str, ctx: StepContext, detail: str = "") -> None:
    """Record a side effect in the outside world (durably, like a real API would)."""
    with EFFECTS.open("a") as log:
        log.write(f"{kind}\t{ctx.execution_id}\t{ctx.idempotency_key}\t{detail}\n")
        log.flush()
        os.fsync(log.fileno())
    say(f"    {DIM}→ {kind:<9} attempt {ctx.attempt}  key={ctx.idempotency_key}{RESET}")


def effects_of(execution_id: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    if EFFECTS.exists():
        for line in EFFECTS.read_text().splitlines():
            kind, exec_id, *_ = line.split("\t")
            if exec_id == execution_id:
                counts[kind] += 1
    return counts


# -- the workflow ------------------------------------------------------------------


async def reserve(input: dict[str, Any], prev: Any, ctx: StepContext) -> dict[str, Any]:
    effect("reserve", ctx, ",".join(input["items"]))
    return {"reservation_id": f"res-{input['order_id']}"}


async def charge(input: dict[str, Any], prev: Any, ctx: StepContext) -> dict[str, Any]:
    if ctx.attempt <= input.get("gateway_failures", 0):
        say(f"    {YELLOW}✗ payment gateway timed out (attempt {ctx.attempt}){RESET}")
        raise ConnectionError("payment gateway timed out")
    effect("charge", ctx, f"{input['amount']:.2f}")
    return {"transaction_id": f"tx-{input['order_id']}", "reservation_id": prev["reservation_id"]}


async def ship(input: dict[str, Any], prev: Any, ctx: StepContext) -> dict[str, Any]:
    if input.get("address") == "nowhere":
        say(f"    {RED}✗ carrier rejected the address (not retryable){RESET}")
        raise NonRetryableError("carrier rejected the address", code="bad_address")
    if ctx.attempt == 1:
        # The carrier hangs on the first call only: the attempt that runs again
        # after a crash answers at once, so the tour does not wait it out twice.
        await asyncio.sleep(float(input.get("ship_seconds", 0.0)))
    effect("ship", ctx, input.get("address", ""))
    return {"tracking": f"trk-{input['order_id']}", "transaction_id": prev["transaction_id"]}


async def compensate(ctx: Any) -> None:
    say(f"    {YELLOW}↺ compensating after {ctx.failed_step!r} failed: {ctx.error['message']}{RESET}")
    if "charge-card" in ctx.step_outputs:
        tx = ctx.step_outputs["charge-card"]["transaction_id"]
        await ctx.step("refund", lambda: _undo("refund", ctx.execution_id, tx))
    if "reserve-inventory" in ctx.step_outputs:
        res = ctx.step_outputs["reserve-inventory"]["reservation_id"]
        await ctx.step("release", lambda: _undo("release", ctx.execution_id, res))


def _undo(kind: str, execution_id: str, ref: str) -> dict[str, str]:
    with EFFECTS.open("a") as log:
        log.write(f"{kind}\t{execution_id}\t{kind}:{ref}\t\n")
    say(f"    {DIM}→ {kind:<9} {ref}{RESET}")
    return {kind: ref}


order_flow = (
    Workflow(
        "demo-order-flow",
        retry=RetryPolicy(max_attempts=4, initial_delay=0.5, backoff_multiplier=2.0),
        timeout="10m",
    )
    .step("reserve-inventory", reserve)
    .step("charge-card", charge, idempotency_key=lambda input, ctx: f"charge:{input['order_id']}")
    .step("ship", ship)
    .on_failure(compensate)
)

approval_flow = (
    Workflow("demo-approval-flow", timeout="7d")
    .step("reserve-inventory", reserve)
    .wait_for_event("manager-approval", "approved", timeout="2d")
    .step("charge-card", lambda input, prev, ctx: charge_approved(input, ctx))
    .on_failure(compensate)
)


def refund_charge(info: StepUndo) -> dict[str, str]:
    return _undo("refund", info.execution_id, info.output["transaction_id"])


saga_flow = (
    Workflow("demo-saga-flow", retry=RetryPolicy(max_attempts=2, initial_delay=0.2))
    .step(
        "reserve-inventory",
        reserve,
        undo=lambda info: _undo("release", info.execution_id, info.output["reservation_id"]),
    )
    .step(
        "charge-card", charge, undo=refund_charge, undo_retry=RetryPolicy(max_attempts=3, initial_delay=0.2)
    )
    .step("ship", ship)
)


async def charge_approved(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Charge once the manager approved (the previous output is the approval, not the reservation)."""
    reservation = {"reservation_id": f"res-{input['order_id']}"}
    return await charge({**input, "gateway_failures": 0}, reservation, ctx)


def pack(input: dict[str, Any], prev: Any, ctx: StepContext) -> str:
    effect("label", ctx, input["item"])  # a parcel's one step: its label, an effect outside
    return f"{input['item']}: labelled by {ctx.execution_id}"


parcel_flow = Workflow("demo-parcel").step("print-label", pack)


@workflow("demo-split-order")
async def split_order(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
    parcels = [ctx.child(parcel_flow, {"item": item}, name=f"parcel-{item}") for item in input["items"]]
    return {"labels": await asyncio.gather(*parcels)}


class DemoExecutionDO(WorkflowExecutionDO):
    # A short lease so the crashed execution resumes about a second after the
    # kill (the engine's default is 5 s).
    lease = 1.0


PROGRESS_EVERY = 1.0
"""Seconds between progress lines while the tour waits: the screen never goes quiet."""


# -- the tour ------------------------------------------------------------------------


def heading(text: str) -> None:
    say(f"\n{BOLD}{text}{RESET}")


async def show(handle: Any) -> None:
    view = await handle.describe()
    colour = (
        GREEN
        if view["status"] == "completed"
        else RED
        if view["status"] in ("failed", "cancelled")
        else YELLOW
    )
    say(f"  status: {colour}{view['status']}{RESET}")
    for entry in await handle.journal():
        errors = ", ".join(e["code"] for e in entry.get("errors", []))
        extra = f"  errors: {errors}" if errors else ""
        extra += f"  child {entry['child_id']}" if entry.get("kind") == "child" else ""
        phase = "  (compensation)" if entry["phase"] == "compensation" else ""
        # Sleeps and waits have no attempts: say nothing rather than a placeholder.
        attempts = f"attempts={entry['attempt']}" if entry.get("attempt") else ""
        say(f"    {entry['name']:<18} {entry['status']:<10} {attempts}{extra}{phase}".rstrip())


async def wait_for(done: Any, what: str, timeout: float = 30.0) -> float:
    """Poll ``done()`` (sync or async) until true, printing a progress line every
    ``PROGRESS_EVERY`` seconds; return the seconds waited."""
    started = time.monotonic()
    shown = started
    while True:
        value = done()
        if asyncio.iscoroutine(value):
            value = await value
        now = time.monotonic()
        if value:
            return now - started
        if now - started > timeout:
            raise RuntimeError(f"the demo gave up after {timeout:.0f}s {what}")
        if now - shown >= PROGRESS_EVERY:
            shown = now
            say(f"    {DIM}… {what} ({now - started:.0f}s){RESET}")
        await asyncio.sleep(0.05)


async def part_retries(ns: LocalNamespace) -> None:
    heading("1. A flaky payment gateway: retried with durable backoff")
    workflows = create_durable_workflow(ns)
    order = {"order_id": "o-1", "items": ["book"], "amount": 25.0, "gateway_failures": 2}
    started = time.monotonic()
    handle = await workflows.run(order_flow, order, execution_id="demo-o-1")
    await wait_for(lambda: _settled(handle), "backing off until the next attempt's alarm")
    result = await handle.result(timeout=60)
    say(f"  result: {result.value}  ({time.monotonic() - started:.1f}s, backoff waits were alarms)")
    await show(handle)
    say("  → each failed attempt was journaled; the waits between them were alarms, not sleeps.")


async def _settled(handle: Any) -> bool:
    return bool((await handle.describe())["settled"])


def _child(db: str) -> None:
    """Runs in a separate process: start order o-2 and keep driving it until killed."""

    async def main() -> None:
        async with _namespace(db) as ns:
            workflows = create_durable_workflow(ns)
            order = {"order_id": "o-2", "items": ["lamp"], "amount": 80.0, "ship_seconds": 30}
            await workflows.run(order_flow, order, execution_id="demo-o-2", wait=True)

    asyncio.run(main())


async def part_crash(db: str) -> None:
    heading("2. The worker process is killed mid-step, and resumes from the journal")
    say("  starting a worker process for order o-2 ...")
    child = subprocess.Popen([sys.executable, "-m", "workkit_workflow.demo", "--child", db])  # noqa: ASYNC220
    try:
        await wait_for(lambda: effects_of("demo-o-2")["charge"] > 0, "the worker reserves and charges")
        await asyncio.sleep(0.3)  # now inside the slow 'ship' step (its carrier hangs)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    so_far = dict(effects_of("demo-o-2"))
    say(f"  {RED}SIGKILL{RESET} (pid {child.pid}): the process died in 'ship'; effects so far: {so_far}")
    say(f"  opening the same SQLite file in this process (pid {os.getpid()}); nobody calls the execution:")
    say(f"  its lease alarm alone (due within {DemoExecutionDO.lease:g}s of the kill) resumes it ...")
    async with _namespace(db) as ns:
        workflows = create_durable_workflow(ns)
        handle = workflows.execution("demo-o-2")
        took = await wait_for(lambda: _settled(handle), "waiting for the lease alarm to resume it")
        say(f"  resumed and finished {took:.1f}s after the file was reopened")
        await show(handle)
        counts = effects_of("demo-o-2")
        say(f"  effects: {dict(counts)}: reserve and charge (journaled) did not run again; the lost")
        say("  'ship' attempt ran again with the same idempotency key, so a carrier would dedupe it.")


async def part_compensation(ns: LocalNamespace) -> None:
    heading("3. A permanent failure is compensated")
    workflows = create_durable_workflow(ns)
    order = {"order_id": "o-3", "items": ["chair"], "amount": 120.0, "address": "nowhere"}
    handle = await workflows.run(order_flow, order, execution_id="demo-o-3")
    result = await handle.result(timeout=60)
    assert result.error is not None
    comp = result.error.compensation
    compensation = f"; compensation {comp['status']}" if comp else ""
    say(f"  result: failed at {result.error.failed_step!r} ({result.error.code}){compensation}")
    await show(handle)
    say("  → the undo steps ran in reverse order, each journaled like any other step.")


async def part_approval(ns: LocalNamespace) -> None:
    heading("4. A large order waits for a manager's approval")
    workflows = create_durable_workflow(ns)
    order = {"order_id": "o-4", "items": ["piano"], "amount": 4999.0}
    handle = await workflows.run(approval_flow, order, execution_id="demo-o-4")
    view = await handle.describe()
    say(f"  status: {view['status']}, waiting for {view['waiting_for']} until {iso(view['wake_at'])}")
    say("  (nothing waits in memory: an alarm is set for the timeout, the event wakes it)")
    say("  the manager approves: POST /event {type: 'approved', payload: {by: 'ana'}}")
    await handle.resume("approved", {"by": "ana"})
    result = await handle.result(timeout=60)
    say(f"  result: {result.value}")
    await show(handle)
    say("  → a typo'd event type would not wake it: the CLI's `resume` says what it waits for.")


async def part_children(ns: LocalNamespace) -> None:
    heading("6. An order split into parcels: a child workflow per parcel, whose end wakes the order")
    order = {"items": ["desk", "shelf"]}
    handle = await create_durable_workflow(ns).run(split_order, order, execution_id="demo-o-6")
    say(f"  result: {(await handle.result(timeout=60)).value}")
    await show(handle)


async def part_undo(ns: LocalNamespace) -> None:
    heading("5. Per-step undo handlers: each completed step undoes itself")
    workflows = create_durable_workflow(ns)
    order = {"order_id": "o-5", "items": ["desk"], "amount": 300.0, "address": "nowhere"}
    handle = await workflows.run(saga_flow, order, execution_id="demo-o-5")
    result = await handle.result(timeout=60)
    assert result.error is not None and result.error.compensation is not None
    for undo in result.error.compensation["undos"]:
        plural = "s" if undo["attempts"] != 1 else ""
        say(f"  undo of {undo['step']!r}: {undo['status']} after {undo['attempts']} attempt{plural}")
    await show(handle)
    say("  → undo:<step> ran last started first, each journaled with its own retry policy.")


def _namespace(db: str) -> LocalNamespace:
    # History is projected into the same SQLite file, for the CLI and the timeline page.
    return LocalNamespace(db, object_class=DemoExecutionDO, env={"HISTORY_DB": LocalD1(db)})


async def tour() -> None:
    EFFECTS.unlink(missing_ok=True)  # noqa: ASYNC240 - once, before anything runs
    db = os.environ.get("WORKKIT_DEMO_DB", "workkit-demo.db")
    for suffix in ("", "-wal", "-shm"):
        Path(db + suffix).unlink(missing_ok=True)  # noqa: ASYNC240 - a fresh database per tour
    began = time.monotonic()
    say(f"{BOLD}workkit-workflow: durable workflows on the local runtime{RESET} (SQLite: {db})")
    async with _namespace(db) as ns:
        await part_retries(ns)
    await part_crash(db)
    async with _namespace(db) as ns:
        await part_compensation(ns)
        await part_approval(ns)
        await part_undo(ns)
        await part_children(ns)
        await ns.idle()  # history delivery finishes
    say(f"\n{GREEN}done{RESET} in {time.monotonic() - began:.1f}s. Every step above was journaled in SQLite")
    say(f"before the next one ran: {db} holds eight executions (six orders, two parcels) and their history.")
    cli = cli_command()
    say("Look back at them (these commands work as printed, from this directory):")
    say(f"  {cli} list --db {db}                 every execution")
    say(f"  {cli} show demo-o-3 --db {db}        the compensated order, as a timeline")
    say(f"  {cli} journal demo-o-2 --db {db}     the killed order's journal (--json for scripts)")
    say(f"  {cli} serve --db {db}                the timeline page, at http://127.0.0.1:8787")


def cli_command() -> str:
    """The CLI as a command that works from the current directory: the console
    script next to this interpreter (``.venv/bin/workkit-workflow``), else
    ``python -m workkit_workflow`` with this interpreter."""
    interpreter = Path(sys.executable)
    script = interpreter.parent / "workkit-workflow"
    target = script if script.exists() else interpreter
    try:
        shown = str(target.relative_to(Path.cwd()))
    except ValueError:
        shown = str(target)
    return shown if target is script else f"{shown} -m workkit_workflow"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--child"]:
        _child(args[1])
        return 0
    asyncio.run(tour())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
