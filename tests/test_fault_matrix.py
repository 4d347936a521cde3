"""The fault matrix: every fault point x every workflow shape, each followed by a restart.

For each case a fault-free reference run records how often every fault point
is hit; the faulty run crashes the object at the first and at the last hit of
one point, restarts the runtime (SQLite: a new namespace on the same file;
memory: every object evicted) and drives the execution to its end in virtual
time. Invariants:

* no step ran again after its completion was journaled (checked at the storage
  port: every commit is inspected as it is written);
* side effects keyed by idempotency key reached the outside world exactly once
  per key, and the same keys as in the fault-free run;
* nothing is stuck: the execution settles and no alarm is left behind;
* the final state (status, result, failed step, compensation, the journal's
  operations and outputs) equals the fault-free run's.

Storage failures and throwing alarm handlers are covered at the end: a failed commit, and a
failed read, at each write or read of each shape's run in turn.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import workkit_workflow
from workkit_workflow import (
    Limit,
    NonRetryableError,
    RetryPolicy,
    Workflow,
    WorkflowContext,
    current_step,
    workflow,
)
from workkit_workflow.engine._ports import WireResponse
from workkit_workflow.errors import TransportError
from workkit_workflow.local import LocalNamespace, VirtualClock
from workkit_workflow.local._host import LocalStorage
from workkit_workflow.testing import FAULT_POINTS, WorkflowTestEnv

_names = itertools.count()
EXECUTION = "order-1"


def _history_point_fired() -> bool:
    # ``in_history`` is a declared fault point; it joins the matrix once the
    # engine fires it (history delivery is built separately).
    src = Path(workkit_workflow.__file__).parent
    return any('"in_history"' in p.read_text() for p in src.rglob("*.py") if p.name != "testing.py")


POINTS = [p for p in FAULT_POINTS if p != "in_history" or _history_point_fired()]


@dataclass
class World:
    """The outside world, as seen by the steps, plus what the journal recorded."""

    calls: Counter[str] = field(default_factory=Counter)
    delivered: Counter[str] = field(default_factory=Counter)
    journaled: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)

    def effect(self, name: str, *, fail_first: int = 0, permanent: bool = False) -> Callable[..., Any]:
        """A step body: counts its calls, delivers its idempotency key, maybe fails."""

        def body(*args: Any) -> dict[str, Any]:
            step = current_step()
            assert step is not None
            label = step.step
            if label in self.journaled:
                self.violations.append(f"{label} ran after its completion was journaled")
            self.calls[label] += 1
            if permanent:
                raise NonRetryableError(f"{label} rejected")
            if self.calls[label] <= fail_first:
                raise ConnectionError(f"{label} flaked #{self.calls[label]}")
            self.delivered[step.idempotency_key] += 1
            return {"step": label, "args": list(args)}

        return body

    def watch(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        """Storage write hook: note every operation whose completion is being committed."""
        for key, text in puts.items():
            if key.startswith(("j:", "c:")):
                record = json.loads(text)
                if record.get("status") == "completed" and record.get("kind") == "step":
                    self.journaled.add(record["name"])


# -- the shapes ---------------------------------------------------------------------

Shape = Callable[[World], Workflow]
RETRY = RetryPolicy(max_attempts=6, initial_delay=1.0, max_delay=8.0)


def linear(world: World) -> Workflow:
    return (
        Workflow(f"linear-{next(_names)}", retry=RETRY)
        .step("reserve", lambda i, p, c: world.effect("reserve")())
        .step("charge", lambda i, p, c: world.effect("charge")(), idempotency_key=lambda i, c: "charge:o-1")
        .step("ship", lambda i, p, c: world.effect("ship")(p["step"]))
    )


def retries(world: World) -> Workflow:
    @workflow(f"retries-{next(_names)}", retry=RETRY)
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        first = await ctx.step("prepare", world.effect("prepare"))
        flaky = await ctx.step("flaky", world.effect("flaky", fail_first=2), first["step"])
        return await ctx.step("finish", world.effect("finish"), flaky["step"])

    return flow


def compensation(world: World) -> Workflow:
    async def undo(ctx: Any) -> None:
        for name in ("charge", "reserve"):
            if name in ctx.step_outputs:
                # A lost attempt counts: give undo steps attempts to survive crashes
                # (see test_a_crash_before_a_default_compensation_step_fails_it).
                await ctx.step(f"undo-{name}", world.effect(f"undo-{name}"), retry=RETRY)

    return (
        Workflow(f"saga-{next(_names)}", retry=RETRY)
        .step("reserve", lambda i, p, c: world.effect("reserve")())
        .step("charge", lambda i, p, c: world.effect("charge")())
        .step("ship", lambda i, p, c: world.effect("ship", permanent=True)())
        .on_failure(undo)
    )


def sleep(world: World) -> Workflow:
    @workflow(f"sleep-{next(_names)}", retry=RETRY)
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        await ctx.step("before", world.effect("before"))
        await ctx.sleep("cool-down", "2h")
        return await ctx.step("after", world.effect("after"))

    return flow


def wait_for_event(world: World) -> Workflow:
    @workflow(f"wait-{next(_names)}", retry=RETRY)
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        await ctx.step("quote", world.effect("quote"))
        decision = await ctx.wait_for_event("approval", "approved", timeout="7d")
        return await ctx.step("ship", world.effect("ship"), decision)

    return flow


def fan_out(world: World) -> Workflow:
    @workflow(f"fan-{next(_names)}", retry=RETRY)
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        parts = await asyncio.gather(
            ctx.step("a", world.effect("a")),
            ctx.step("b", world.effect("b", fail_first=1)),
            ctx.step("c", world.effect("c")),
        )
        return await ctx.step("join", world.effect("join"), [p["step"] for p in parts])

    return flow


def children(world: World) -> Workflow:
    @workflow(f"kid-{next(_names)}", retry=RETRY)
    async def kid(ctx: WorkflowContext, input: Any) -> Any:
        # Step names carry the input: the two children's steps are distinct operations.
        packed = await ctx.step(f"pack-{input}", world.effect(f"pack-{input}", fail_first=1))
        await ctx.sleep("dry", "1h")
        return await ctx.step(f"label-{input}", world.effect(f"label-{input}"), packed["step"])

    @workflow(f"parent-{next(_names)}", retry=RETRY)
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        await ctx.step("prepare", world.effect("prepare"))
        parts = await asyncio.gather(ctx.child(kid, "a", name="kid-a"), ctx.child(kid, "b", name="kid-b"))
        return await ctx.step("finish", world.effect("finish"), [p["step"] for p in parts])

    return flow


def undo_handlers(world: World) -> Workflow:
    # Per-step undo handlers: undo steps run (and are journaled) in the compensation phase.
    return (
        Workflow(f"undo-{next(_names)}", retry=RETRY)
        .step("reserve", lambda i, p, c: world.effect("reserve")(), undo=lambda u: world.effect("r")())
        .step("charge", lambda i, p, c: world.effect("charge")(), undo=lambda u: world.effect("c")())
        .step("ship", lambda i, p, c: world.effect("ship", permanent=True)())
    )


def limited(world: World) -> Workflow:
    # A per-key concurrency limit: created queued, it asks its key's coordinator for a
    # slot before it runs and mails the release in the write that settles it.
    return (
        Workflow(f"limited-{next(_names)}", retry=RETRY, concurrency=Limit(key="order_id", max=1))
        .step("reserve", lambda i, p, c: world.effect("reserve")())
        .step("ship", lambda i, p, c: world.effect("ship")(p["step"]))
    )


SHAPES: dict[str, Shape] = {
    "linear": linear,
    "retries": retries,
    "compensation": compensation,
    "sleep": sleep,
    "wait_for_event": wait_for_event,
    "fan_out": fan_out,
    "undo_handlers": undo_handlers,
    "children": children,
    "limited": limited,
}


def _cases() -> Iterator[Any]:
    for shape in SHAPES:
        for point in POINTS:
            if point == "in_compensation" and shape not in ("compensation", "undo_handlers"):
                continue  # only a failing workflow with a handler compensates
            if point == "in_mail" and shape != "children":
                continue  # only children send mail to other objects
            for hit in ("first", "last"):
                yield pytest.param(shape, point, hit, id=f"{shape}-{point}-{hit}")


# -- running a case -----------------------------------------------------------------


class Case:
    """One WorkflowTestEnv plus the world it acts on; survives restarts."""

    def __init__(self, shape: str, path: str | None, clock: VirtualClock) -> None:
        self.world = World()
        self.flow = SHAPES[shape](self.world)
        self.shape = shape
        self.env = WorkflowTestEnv(path=path, clock=clock, history=True)
        self.env.ns.write_hook = self.world.watch

    async def restart(self) -> None:
        await self.env.restart()
        self.env.ns.write_hook = self.world.watch

    async def start(self) -> None:
        await self.env.start(self.flow, {"order_id": "o-1"}, execution_id=EXECUTION)
        if self.shape == "wait_for_event":
            # Sent at once: the inbox keeps it until the wait consumes it. A crash
            # of the object while it serves the request resets it: send again
            # (the event id makes that safe).
            for _ in range(10):
                try:
                    await self.env.send_event(EXECUTION, "approved", {"by": "ops"}, event_id="approval-1")
                    break
                except TransportError:
                    await asyncio.sleep(0)

    async def settle(self) -> dict[str, Any]:
        handle = self.env.client.execution(EXECUTION)
        result = await self.env.result(handle)
        # A crash inside an alarm handler makes the platform retry that alarm;
        # once it ran, a settled execution has no alarm left.
        await self.env.clock.sleep(600)
        await self.env.ns.idle()
        assert self.env.ns.backend.get_alarm(EXECUTION) is None, "a settled execution kept an alarm"
        if self.shape == "limited":
            slots = await self.env.ns.request(f"limit:{self.flow.name}:o-1", "GET", "/limit")
            assert slots.body["limit"]["holders"] == {}, "the slot leaked"
        journal = await handle.journal()
        view = await handle.describe()
        return {
            "ok": result.ok,
            "status": result.status,
            "value": result.value,
            "error": None if result.error is None else result.error.code,
            "failed_step": view["failed_step"],
            "compensation": (view["compensation"] or {}).get("status"),
            "journal": [(e["phase"], e["kind"], e["name"], e["status"], e.get("output")) for e in journal],
        }


async def _reference(
    shape: str, path: str | None, clock: VirtualClock
) -> tuple[dict[str, Any], World, Counter[str]]:
    case = Case(shape, path, clock)
    hits: Counter[str] = Counter()

    def counter(point: str) -> Callable[[Mapping[str, Any]], bool]:
        def count(info: Mapping[str, Any]) -> bool:
            hits[point] += 1
            return False  # count, never crash

        return count

    for point in POINTS:
        case.env.faults.crash_at(point, times=10**9, when=counter(point))
    try:
        await case.start()
        final = await case.settle()
    finally:
        await case.env.close()
    assert not case.world.violations
    return final, case.world, hits


@pytest.fixture
def clock() -> VirtualClock:
    # One virtual clock per test, shared by its environments: two clocks on one
    # event loop keep each other from ever seeing the loop idle (see
    # test_two_virtual_clocks_on_one_loop_both_advance).
    return VirtualClock()


@pytest.fixture(params=["memory", "sqlite", "sqlite-awaited"])
def storage_path(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], str | None]:
    """Where the cases keep storage. ``sqlite-awaited``: the engine's writes take the
    path of storage that writes when awaited (Cloudflare's), each in a coroutine of its
    own; the local runtime's storage writes at the call and skips it."""
    if request.param == "sqlite-awaited":
        monkeypatch.setattr(LocalStorage, "commits_at_call", False)

    def make(name: str) -> str | None:
        return None if request.param == "memory" else str(tmp_path / f"{name}.db")

    return make


async def test_a_run_passes_the_same_fault_points_on_every_write_path(
    storage_path: Callable[[str], str | None], clock: VirtualClock
) -> None:
    """A point a run never passes is skipped by the matrix below: the points must not
    depend on how storage's commit completes (at the call, or when awaited)."""
    _, _, hits = await _reference("linear", storage_path("reference"), clock)
    assert {point for point, count in hits.items() if count} >= {
        "before_step",
        "after_side_effect",
        "after_journal",
    }


@pytest.mark.parametrize(("shape", "point", "hit"), list(_cases()))
async def test_crash_then_restart_matches_a_fault_free_run(
    shape: str, point: str, hit: str, storage_path: Callable[[str], str | None], clock: VirtualClock
) -> None:
    expected, clean_world, hits = await _reference(shape, storage_path("reference"), clock)
    if hits[point] == 0:
        pytest.skip(f"the {shape} shape never reaches {point}")
    target = 1 if hit == "first" else hits[point]
    seen = itertools.count(1)
    crashed = asyncio.Event()

    def at_target(info: Mapping[str, Any]) -> bool:
        if next(seen) != target:
            return False
        crashed.set()
        return True

    case = Case(shape, storage_path("faulty"), clock)
    case.env.faults.crash_at(point, when=at_target)
    try:
        await case.start()
        await crashed.wait()  # virtual time runs meanwhile
        await case.restart()
        final = await case.settle()
    finally:
        await case.env.close()

    world = case.world
    assert len(case.env.faults.crashes) == 1
    assert world.violations == [], world.violations
    assert final == expected
    # Exactly once towards the outside world: the same distinct keys. A step that
    # ran but was not journaled when the object died runs again with its key
    # (at least once inside, exactly once outside).
    assert set(world.delivered) == set(clean_world.delivered)


# -- storage failures ------------------------------------------------------------------


class FailingWrites:
    """A write hook that makes ``Storage.commit`` raise on command (nothing is written)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.remaining = 0
        self.failed = 0
        self.after = 0

    def arm(self, times: int, *, after: int = 0) -> None:
        self.remaining, self.after = times, after

    def disarm(self) -> None:
        self.remaining = 0

    def __call__(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        if self.remaining > 0:
            if self.after > 0:
                self.after -= 1
            else:
                self.remaining -= 1
                self.failed += 1
                raise OSError("disk I/O error (injected)")
        self.world.watch(obj, puts, deletes)


def _snapshot(ns: LocalNamespace) -> dict[str, Any]:
    return {
        obj: (ns.backend.list(obj, None, None, None, None, False), ns.backend.get_alarm(obj))
        for obj in ns.backend.objects()
    }


@pytest.mark.parametrize("after", [1, 2, 3, 4, 5, 6])
async def test_a_failed_commit_is_retried_by_the_alarm(
    storage_path: Callable[[str], str | None],
    clock: VirtualClock,
    after: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")
    expected, clean_world, _ = await _reference("linear", storage_path("reference"), clock)
    case = Case("linear", storage_path("faulty"), clock)
    failing = FailingWrites(case.world)
    case.env.ns.write_hook = failing
    failing.arm(1, after=after)
    try:
        await case.start()
        final = await case.settle()
    finally:
        await case.env.close()
    assert failing.failed == 1
    assert case.world.violations == []
    assert final == expected
    assert set(case.world.delivered) == set(clean_world.delivered)


async def _retried(case: Case, path: str, body: dict[str, Any]) -> WireResponse:
    """``body`` sent to the execution until it is not refused as retryable (three tries)."""
    for _ in range(3):
        answer = await case.env.ns.request(EXECUTION, "POST", path, body)
        if answer.ok or not answer.body["error"].get("retryable"):
            break
    return answer


class FailingReads:
    """Makes the ``at``-th read of the namespace's backend from now raise (a disk I/O error
    for a moment): ``get_many``, ``list`` and ``get_alarm``, counted together."""

    def __init__(self, ns: LocalNamespace, at: int) -> None:
        self.reads = self.failed = 0
        self.at: int | None = at
        for name in ("get_many", "list", "get_alarm"):
            setattr(ns.backend, name, self._counted(getattr(ns.backend, name)))

    def _counted(self, read: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            self.reads += 1
            if self.reads == self.at:
                self.failed += 1
                raise OSError("disk I/O error on read (injected)")
            return read(*args)

        return counted

    def disarm(self) -> None:
        self.at = None


def _fail_once(case: Case, fault: str, n: int) -> FailingWrites | FailingReads:
    """Make the ``n``-th (from 0) commit or read of ``case``'s storage from now fail, once."""
    if fault == "read":
        return FailingReads(case.env.ns, at=n + 1)
    failing = FailingWrites(case.world)
    case.env.ns.write_hook = failing
    failing.arm(1, after=n)
    return failing


@pytest.mark.parametrize("fault", ["commit", "read"])
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_a_storage_failure_anywhere_in_a_run_a_request_drives_is_answered_and_retried(
    shape: str,
    fault: str,
    storage_path: Callable[[str], str | None],
    clock: VirtualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The run that ``client.run``'s request drives (and, for the event shape, the one its
    # event's request starts) meets one failed commit, or read, at each of its writes (reads)
    # in turn. The request is answered with the execution, or refused as retryable (503:
    # nothing was written) and then sent again; never "no execution with this id" (a caller
    # would start another, and each step would run twice; the mail outbox dead-letters a
    # 404), nor a 500. The execution then ends as a fault-free run does, through its retry.
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")
    expected, _, _ = await _reference(shape, storage_path("reference"), clock)
    execute = {"workflow": "", "input": {"order_id": "o-1"}, "execution_id": EXECUTION, "wait": True}
    event = {"type": "approved", "payload": {"by": "ops"}, "id": "approval-1"}
    for n in itertools.count():
        case = Case(shape, storage_path(f"faulty-{n}"), clock)
        failing = _fail_once(case, fault, n)
        try:
            answer = await _retried(case, "/execute", {**execute, "workflow": case.flow.name})
            assert answer.ok and answer.body["execution"]["execution_id"] == EXECUTION, (n, answer)
            if shape == "wait_for_event":
                answer = await _retried(case, "/event", event)
                assert answer.ok and answer.body["accepted"], (n, answer)
            failing.disarm()
            final = await case.settle()
        finally:
            await case.env.close()
        if failing.failed == 0:
            assert n > 2, f"the requests made too few {fault}s to fail any"
            break
        assert case.world.violations == [], n
        assert final == expected, n


async def test_a_failed_flush_of_completions_stops_the_runner_and_loses_no_step(
    storage_path: Callable[[str], str | None], clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A body that waits between steps (here a few turns of the loop: one turn alone lets
    the next step's write carry the completion) has each completion written on its own, by
    a flush in the background. When that write fails the runner must stop at its next write
    and replay from storage: going on would end the execution with the step still
    ``running`` in its journal (the step runs again instead: at least once)."""
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")
    calls: Counter[str] = Counter()

    @workflow(f"yielding-{next(_names)}")
    async def flow(ctx: Any, input: Any) -> Any:
        out = []
        for i in range(4):
            out.append(await ctx.step(f"s{i}", lambda i=i: calls.update([f"s{i}"]) or i))
            for _ in range(4):
                await asyncio.sleep(0)  # the completion is flushed on its own meanwhile
        return out

    failed: list[dict[str, str]] = []

    def fail_the_first_flush(obj: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        if not failed and puts and all(k.startswith("j:") and '"completed"' in v for k, v in puts.items()):
            failed.append(dict(puts))
            raise OSError("disk I/O error (injected)")

    env = WorkflowTestEnv(path=storage_path("flush"), clock=clock)
    env.ns.write_hook = fail_the_first_flush
    try:
        handle = await env.start(flow, None)
        result = await env.result(handle)
        journal = await handle.journal()
    finally:
        await env.close()
    assert failed, "no write carried completions alone"
    assert result.ok and result.value == [0, 1, 2, 3]
    assert [entry["status"] for entry in journal] == ["completed"] * 4
    assert set(calls) == {"s0", "s1", "s2", "s3"}


async def test_a_failing_commit_writes_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A commit that fails inside SQLite's transaction leaves no trace: all or nothing."""
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")
    world = World()
    env = WorkflowTestEnv(path=str(tmp_path / "atomic.db"))
    flow = linear(world)
    backend = env.ns.backend
    real_commit = backend.commit
    armed = {"on": True}
    before: dict[str, Any] = {}

    class Exploding(dict[str, str]):
        def items(self) -> Any:
            # The first row is inserted, then the write fails mid-transaction.
            for n, pair in enumerate(super().items()):
                if n == 1:
                    raise OSError("disk full (injected)")
                yield pair

    def commit(obj: str, puts: Mapping[str, str], deletes: Sequence[str], alarm: Any) -> None:
        # The write that journals one step's output and starts the next.
        if armed["on"] and len(puts) >= 2 and sum(k.startswith("j:") for k in puts) >= 2:
            armed["on"] = False
            before.update(_snapshot(env.ns))
            try:
                real_commit(obj, Exploding(puts), deletes, alarm)
            finally:
                assert _snapshot(env.ns) == before, "a failed commit left a partial write"
            return
        real_commit(obj, puts, deletes, alarm)

    backend.commit = commit  # type: ignore[method-assign]
    try:
        await env.start(flow, {"order_id": "o-1"}, execution_id=EXECUTION)
        handle = env.client.execution(EXECUTION)
        result = await env.result(handle)
    finally:
        await env.close()
    assert before, "the failing commit never happened"
    assert result.ok
    assert world.violations == []
    assert len(world.delivered) == 3  # every step's key reached the outside world


async def test_an_alarm_handler_that_throws_is_retried(
    storage_path: Callable[[str], str | None], clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The object's alarm handler raises (a bug, a platform hiccup): the runtime retries it."""
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")
    expected, _, _ = await _reference("sleep", storage_path("reference"), clock)
    from workkit_workflow import WorkflowExecutionDO

    thrown: list[int] = []

    class FlakyAlarm(WorkflowExecutionDO):  # type: ignore[misc]
        async def alarm(self, alarm_info: Any = None) -> None:
            if len(thrown) < 3:
                thrown.append(1)
                raise RuntimeError("alarm handler blew up (injected)")
            await super().alarm(alarm_info)

    case = Case("sleep", storage_path("faulty"), clock)
    case.env.ns.object_class = FlakyAlarm
    try:
        await case.start()
        final = await case.settle()
    finally:
        await case.env.close()
    assert len(thrown) == 3
    assert final == expected
    assert case.world.violations == []


async def test_an_exception_inside_the_alarm_handler_sets_a_retry_alarm(
    storage_path: Callable[[str], str | None], clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An ordinary exception at the in_alarm point is caught by the engine, which sets
    its own retry alarm (Cloudflare would drop an alarm after a few failures)."""
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")
    expected, _, _ = await _reference("retries", storage_path("reference"), clock)
    raised = itertools.count()

    def boom(info: Mapping[str, Any]) -> bool:
        if next(raised) < 4:
            raise RuntimeError("alarm hook raised (injected)")
        return False

    case = Case("retries", storage_path("faulty"), clock)
    case.env.faults.crash_at("in_alarm", when=boom)
    try:
        await case.start()
        final = await case.settle()
    finally:
        await case.env.close()
    assert next(raised) > 4
    assert final == expected


async def test_two_virtual_clocks_on_one_loop_both_advance() -> None:
    first, second = VirtualClock(), VirtualClock()
    await first.sleep(1.0)  # leaves first's driver task running
    done = asyncio.ensure_future(second.sleep(1.0))
    # Real time bound: the clocks are virtual, so give them plenty of loop turns.
    await asyncio.wait({done}, timeout=0.5)
    ok = done.done()
    done.cancel()
    assert ok, "the second clock never advanced"


async def test_a_failed_commit_in_a_request_gives_a_clean_error_and_a_retry_works(
    storage_path: Callable[[str], str | None], clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")
    case = Case("linear", storage_path("faulty"), clock)
    failing = FailingWrites(case.world)
    case.env.ns.write_hook = failing
    failing.arm(1)
    body = {"workflow": case.flow.name, "input": {}, "execution_id": EXECUTION, "wait": True}
    try:
        first = await case.env.ns.request(EXECUTION, "POST", "/execute", body)
        assert first.status >= 400 and first.body["error"]["code"]
        second = await case.env.ns.request(EXECUTION, "POST", "/execute", body)
        assert second.status == 201, second.body
        assert second.body["execution"]["status"] == "completed"
    finally:
        await case.env.close()


async def test_a_crash_before_a_single_attempt_compensation_step_runs_it_again(clock: VirtualClock) -> None:
    world = World()

    async def undo(ctx: Any) -> None:
        await ctx.step("release", world.effect("release"))  # default policy: one attempt

    flow = (
        Workflow(f"saga-default-{next(_names)}")
        .step("reserve", lambda i, p, c: world.effect("reserve")())
        .step("ship", lambda i, p, c: world.effect("ship", permanent=True)())
        .on_failure(undo)
    )
    env = WorkflowTestEnv(clock=clock)
    env.faults.crash_at("before_step", step="release")
    try:
        handle = await env.start(flow, {}, execution_id=EXECUTION)
        result = await env.result(handle)
        view = await handle.describe()
    finally:
        await env.close()
    assert env.faults.crashes
    assert not result.ok
    assert view["compensation"]["status"] == "completed"


class TurnClock:
    """A clock whose ``sleep`` ends after a fixed number of event-loop turns, to
    place a wake-up precisely relative to the engine's idle detection."""

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self._now = 1_767_225_600.0

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds > 3600:  # the alarm loop's long waits: not needed here
            await asyncio.Event().wait()
        for _ in range(self.turns):
            await asyncio.sleep(0)
        self._now += max(seconds, 0.0)


@pytest.mark.parametrize("turns", [8, 9])
async def test_a_wake_up_during_idle_detection_does_not_strand_the_execution(turns: int) -> None:
    async def slow() -> int:
        for _ in range(30):
            await asyncio.sleep(0)
        return 1

    @workflow(f"race-{next(_names)}")
    async def flow(ctx: WorkflowContext, input: Any) -> int:
        await ctx.step("a", lambda: 1)
        await ctx.sleep("nap", 0.05)
        await ctx.step("b", slow)
        return 2

    ns = LocalNamespace(None, TurnClock(turns), interleave="none", deliver_alarms=False)
    try:
        handle = await workkit_workflow.create_durable_workflow(ns).run(flow, {}, execution_id="race")
        view = await handle.describe()
        alarm = ns.backend.get_alarm("race")
    finally:
        await ns.close()
    # Finished, or something (a wake-up time, an alarm) will carry it on.
    assert view["status"] == "completed" or alarm is not None, view
