"""A step's completion rides on the next write, and the loop turns a storage await takes.

A completion is deferred (``ExecutionState.defer``) until the next operation's write,
or until the body suspends for anything else; the local runtime's storage await
gives the loop a turn whenever anything else is ready to run, and at least every
16th await in any case (``interleave="storage"``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import types
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import pytest

from workkit_workflow import create_durable_workflow, workflow
from workkit_workflow.engine._ports import KEEP_ALARM, SystemClock
from workkit_workflow.engine._signals import StorageFailure
from workkit_workflow.engine._state import ExecutionState
from workkit_workflow.local import LocalNamespace, VirtualClock
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


def _record_writes(ns: LocalNamespace, obj: str, writes: list[Mapping[str, str]]) -> None:
    def hook(name: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        if name == obj:
            writes.append(dict(puts))

    ns.write_hook = hook


async def _carrying_writes(flow: Any, execution_id: str) -> int:
    """Runs ``flow`` to its end on a namespace of its own: how many of its writes carried
    two journal entries (a step's completion and the next step's start)."""
    async with LocalNamespace() as ns:
        writes: list[Mapping[str, str]] = []
        _record_writes(ns, execution_id, writes)
        handle = await create_durable_workflow(ns).run(flow, {}, execution_id=execution_id)
        assert await handle.status() == "completed"
    return len([w for w in writes if sum(k.startswith("j:") for k in w) == 2])


async def test_a_step_the_body_then_waits_past_is_journaled_at_once(workflow_env: WorkflowTestEnv) -> None:
    gate = asyncio.Event()

    @workflow(unique("body-waits"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step("first", lambda: "first")
        await gate.wait()  # not an operation: no write carries the completion
        return first

    handle = await workflow_env.start(flow, {})
    await workflow_env.settle()
    journal = {e["name"]: e["status"] for e in await handle.journal()}
    assert journal == {"first": "completed"}
    gate.set()
    assert (await workflow_env.result(handle)).value == "first"


async def test_a_completion_and_the_next_start_are_one_write() -> None:
    @workflow(unique("one-write"))
    async def flow(ctx: Any, input: Any) -> Any:
        for i in range(5):
            await ctx.step(f"s{i}", lambda i=i: i)
        return "done"

    # Steps 1-4 start in the write that completes the step before them.
    assert await _carrying_writes(flow, "one") == 4


async def test_a_request_ready_to_run_gets_a_turn_at_every_write() -> None:
    @workflow(unique("interleaved"))
    async def flow(ctx: Any, input: Any) -> Any:
        for i in range(40):
            await ctx.step(f"s{i}", lambda i=i: i)
        return "done"

    async with LocalNamespace() as ns:
        writes: list[Mapping[str, str]] = []
        _record_writes(ns, "busy", writes)
        ticks: list[int] = []
        running = True

        async def ticker() -> None:
            while running:
                ticks.append(len(writes))
                await asyncio.sleep(0)

        other = asyncio.ensure_future(ticker())
        await create_durable_workflow(ns).run(flow, {}, execution_id="busy")
        running = False
        await other
    assert len(writes) > 40
    # Never two writes of the execution without the ready task running between them.
    assert max(b - a for a, b in itertools.pairwise(ticks)) <= 1


async def test_a_lone_execution_still_lets_timers_run_every_few_writes() -> None:
    @workflow(unique("lone"))
    async def flow(ctx: Any, input: Any) -> Any:
        for i in range(60):
            await ctx.step(f"s{i}", lambda i=i: i)
        return "done"

    async with LocalNamespace() as ns:
        loop = asyncio.get_running_loop()
        writes: list[Mapping[str, str]] = []
        fired: list[int] = []

        def hook(name: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
            if name != "lone":
                return
            writes.append(dict(puts))
            if len(writes) == 10:
                # Due at once, but run only when the loop turns.
                loop.call_later(0, lambda: fired.append(len(writes)))

        ns.write_hook = hook
        await create_durable_workflow(ns).run(flow, {}, execution_id="lone")
    assert len(writes) > 30
    # At most 15 storage awaits in a row skip their turn.
    assert fired and fired[0] - 10 <= 16


class _Host:
    """Just enough of a host for an ``ExecutionState`` no write goes through."""

    storage: Any = None
    clock = SystemClock()


@types.coroutine
def _pause(label: str) -> Generator[str, Any, Any]:
    return (yield label)


async def test_a_deferred_body_takes_what_is_sent_thrown_and_closed_as_awaiting_it_would() -> None:
    state = ExecutionState(_Host(), rng=None, faults=None)
    closed: list[str] = []

    async def body() -> Any:
        got = await _pause("first")
        try:
            await _pause("second")
        except ValueError as exc:
            return got, str(exc)
        finally:
            closed.append("body")

    run = state.deferring(body())
    assert run.send(None) == "first"
    assert run.send(41) == "second"
    with pytest.raises(StopIteration) as end:
        run.throw(ValueError("refused"))
    assert end.value.value == (41, "refused")

    left = state.deferring(body())
    assert next(left) == "first"
    assert left.send(1) == "second"
    left.close()  # the body unwinds from where it waits
    assert closed == ["body", "body"]


async def test_a_body_yielding_between_steps_starts_no_flush_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A body that suspends for a turn of the loop between steps (``sleep(0)``, as one that
    awaits something already done) runs again in the turn its deferred flush is called
    in, and its next step's write carries the completion: the flush starts no task of the
    object's to write nothing. A completion the body leaves while it waits longer is
    still written without an operation
    (``test_a_step_the_body_then_waits_past_is_journaled_at_once``)."""
    from workkit_workflow.local import _host

    spawned: list[str] = []
    spawn = _host.LocalHost.spawn

    def counting(self: Any, coro: Any) -> Any:
        spawned.append(getattr(coro, "__qualname__", type(coro).__name__))
        return spawn(self, coro)

    monkeypatch.setattr(_host.LocalHost, "spawn", counting)

    @workflow(unique("yielding"))
    async def flow(ctx: Any, input: Any) -> Any:
        for i in range(20):
            await ctx.step(f"s{i}", lambda i=i: i)
            await asyncio.sleep(0)
        return "done"

    # Steps 1-19 start in the write that completes the one before.
    assert await _carrying_writes(flow, "yielding") == 19
    flushes = [name for name in spawned if name == "_flush"]
    assert len(flushes) <= 1, flushes  # the last step's, as the body ends (before: one a step)


class _FlushRecorded(ExecutionState):
    __slots__ = ("flushed",)

    def _flush_soon(self) -> None:
        self.flushed.append(bool(self._pending))


async def test_a_completion_deferred_as_the_body_suspends_is_flushed_after_it() -> None:
    state = _FlushRecorded(_Host(), rng=None, faults=None)
    flushed: list[bool] = []
    state.flushed = flushed

    async def body() -> None:
        state.defer("j:00000000", "{}", "s")
        await _pause("suspended")

    run = state.deferring(body())
    assert run.send(None) == "suspended"
    assert flushed == []  # scheduled as the body suspended, not while it ran
    await asyncio.sleep(0)
    assert flushed == [True]
    run.close()


async def test_a_flush_scheduled_before_the_object_died_starts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The deferred flush is a callback the event loop runs itself, not a task of the
    object's: an eviction between its scheduling and its turn does not cancel it. It then
    writes nothing and raises nothing into the loop; the lease alarm brings the execution
    back and the step whose completion was lost runs again (at least once)."""
    clock = VirtualClock(auto_advance=False)
    ns = LocalNamespace(None, clock)
    calls: list[str] = []

    def evicting() -> int:
        calls.append("a")
        if len(calls) == 1:  # queued before the flush the body's suspension schedules
            asyncio.get_running_loop().call_soon(ns.evict, "died")
        return 1

    @workflow(unique("evicted-flush"))
    async def flow(ctx: Any, input: Any) -> int:
        await ctx.step("a", evicting)
        await asyncio.sleep(0)  # a suspension with the completion still deferred
        return int(await ctx.step("b", lambda: 2))

    client = create_durable_workflow(ns)
    try:
        with caplog.at_level(logging.ERROR):
            handle = await client.start(flow, {}, execution_id="died")
            for _ in range(30):
                await asyncio.sleep(0)
            assert calls == ["a"] and ns.live_objects() == []
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
            clock.advance(3600.0)  # past the lease
            for _ in range(60):
                await asyncio.sleep(0)
            await ns.idle()
            assert await handle.status() == "completed"
            assert calls == ["a", "a"]  # its completion was never written: it ran again
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        await ns.close()


async def test_a_loop_that_does_not_show_what_is_ready_always_gets_the_turn() -> None:
    async with LocalNamespace() as ns:
        # Pyodide's WebLoop has no ready queue to look at: every storage await turns.
        assert [ns._turns(None) for _ in range(40)] == [1] * 40
        for _ in range(5):
            await asyncio.sleep(0)  # the namespace's alarm loop starts, then waits
        loop = asyncio.get_running_loop()
        turns = [ns._turns(loop) for _ in range(40)]  # nothing else is ready now
    assert "".join(map(str, turns)).split("1") == ["0" * 15, "0" * 15, "0" * 8]


def test_an_execution_state_keeps_its_attributes_in_slots() -> None:
    # With ``Deferral``'s, 31 attributes: one more than CPython shares the keys of among a
    # class's instances, so each execution in flight held a 1.6 KB dict of its own.
    state = ExecutionState(_Host(), rng=None, faults=None)
    assert not hasattr(state, "__dict__")
    assert sys.getsizeof(state) < 400


class _AtOnce:
    """Storage whose commits of puts alone are made at the call (``commit_now``), as the
    Durable Object's SQL journal makes a step's."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.commits: list[tuple[str, dict[str, str]]] = []
        self.refuse = False
        self.failure: Exception | None = None

    def commit_now(self, puts: Mapping[str, str]) -> bool:
        if self.failure is not None:
            raise self.failure
        if self.refuse:
            return False
        self.data.update(puts)
        self.commits.append(("now", dict(puts)))
        return True

    async def commit(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> None:
        self.data.update(puts)
        self.commits.append(("commit", dict(puts)))


def _state_over(storage: _AtOnce) -> ExecutionState:
    host = _Host()
    host.storage = storage
    return ExecutionState(host, rng=None, faults=None)


async def test_a_write_of_puts_alone_is_made_at_the_call_when_storage_can() -> None:
    storage = _AtOnce()
    state = _state_over(storage)
    state.defer("j:00000000", "done", "first")
    written = state.write({"j:00000001": "running"})
    # Made before the write is awaited, the deferred completion with it, in one commit.
    assert storage.commits == [("now", {"j:00000000": "done", "j:00000001": "running"})]
    await written
    await state.write({"state": "x"}, ["gone"])  # a delete: the storage's commit
    await state.write({"state": "y"}, alarm=5.0)  # an alarm change: the same
    storage.refuse = True
    await state.write({"state": "z"})  # refused at once: then committed
    assert [how for how, _ in storage.commits] == ["now", "commit", "commit", "commit"]
    assert storage.data["state"] == "z" and state.writes == 4


async def test_a_write_made_at_the_call_that_fails_stops_the_run_as_any_failed_write() -> None:
    storage = _AtOnce()
    state = _state_over(storage)
    storage.failure = RuntimeError("SQLITE_FULL (injected)")
    state.defer("j:00000000", "done", "first")
    with pytest.raises(StorageFailure) as failed:
        state.write({"j:00000001": "running"})
    assert isinstance(failed.value.cause, RuntimeError) and not storage.data
    storage.failure = None
    # A completion was in the failed write: every later write refuses, so the runner stops
    # and replays from storage instead of going on as if the step were journaled.
    with pytest.raises(StorageFailure):
        state.write({"j:00000002": "running"})
    assert not storage.data
