"""An execution started by a request that drives it at once (``run``, ``wait=True``) begins
its first incarnation in its creation's write: one write less per execution. Whatever
lands between that write and the drive (a cancel, a crash) is still observed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from workkit_workflow import Workflow
from workkit_workflow.engine import _drive
from workkit_workflow.engine._state import ExecutionState
from workkit_workflow.errors import TransportError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


def _linear(steps: int, ran: list[int]) -> Workflow:
    flow = Workflow(unique("begins"))
    for i in range(steps):
        flow = flow.step(f"s{i}", lambda input, prev, ctx, i=i: ran.append(i) or i)
    return flow


def _before_the_drive(monkeypatch: Any, request: Callable[[], Awaitable[bool]]) -> list[bool]:
    """Make the whole ``request`` after the creation's write and before its drive reads."""
    next_phase = _drive.Driver._next_phase
    made: list[bool] = []

    async def request_first(self: _drive.Driver) -> Any:
        if not made:
            made.append(await request())
            assert made == [True]
        return await next_phase(self)

    monkeypatch.setattr(_drive.Driver, "_next_phase", request_first)
    return made


def _snapshots_loaded(monkeypatch: Any) -> list[bool]:
    """For each snapshot a drive loads: whether it is what the creation wrote, not read back."""
    cached: list[bool] = []
    load = _drive.Driver._load

    def load_seen(self: _drive.Driver, snapshot: Any) -> bool:
        begun = self.execution.begun
        cached.append(begun is not None and snapshot is begun[0])
        return load(self, snapshot)

    monkeypatch.setattr(_drive.Driver, "_load", load_seen)
    return cached


def _count_decodes(monkeypatch: Any) -> list[str]:
    """The execution's records decoded (its meta, its state), in order."""
    decoded: list[str] = []
    decode_record, decode_state = _drive.jn.decode_record, _drive.decode_state

    def counted_record(key: str, text: Any) -> Any:
        if key == _drive.jn.META:
            decoded.append(key)
        return decode_record(key, text)

    def counted_state(text: Any) -> Any:
        decoded.append("state")
        return decode_state(text)

    monkeypatch.setattr(_drive.jn, "decode_record", counted_record)
    monkeypatch.setattr(_drive, "decode_state", counted_state)
    return decoded


async def test_a_driven_start_writes_its_creation_its_steps_and_its_end(env: WorkflowTestEnv) -> None:
    ran: list[int] = []
    flow = _linear(4, ran)
    writes = env.ns.stats.writes
    handle = await env.run(flow, {})
    assert (await env.result(handle)).value == 3
    # meta + state (running, its lease alarm), one write per step, the end: n + 2.
    assert env.ns.stats.writes - writes == 4 + 2
    meta = await handle.meta()
    assert meta["incarnations"] == 1
    assert meta["started_at"] is not None and meta["started_at"] == meta["created_at"]
    assert ran == [0, 1, 2, 3]


async def test_a_start_without_waiting_is_pending_until_its_alarm_drives_it(
    env: WorkflowTestEnv, monkeypatch: Any
) -> None:
    ran: list[int] = []
    # The alarm, due at once, is held back while the execution is looked at (the loop
    # looks at it within a turn or two of its write, before a request could).
    deliver_due = env.ns._deliver_due
    monkeypatch.setattr(env.ns, "_deliver_due", lambda now: (False, None))
    handle = await env.start(_linear(2, ran), {})
    described = await handle.describe()
    assert (described["status"], described["started_at"]) == ("pending", None)
    assert ran == [] and env.ns.backend.get_alarm(handle.execution_id) is not None
    monkeypatch.setattr(env.ns, "_deliver_due", deliver_due)
    env.ns._wake()
    assert (await env.result(handle)).ok
    assert (await handle.meta())["incarnations"] == 1


async def test_a_cancel_between_the_creation_and_its_drive_stops_it_in_its_first_incarnation(
    env: WorkflowTestEnv, monkeypatch: Any
) -> None:
    ran: list[int] = []
    flow = _linear(3, ran)
    execution_id = unique("begun-cancel")
    handle = env.client.execution(execution_id)
    cancelled = _before_the_drive(monkeypatch, lambda: handle.cancel("changed my mind"))
    decoded = _count_decodes(monkeypatch)
    lists = env.ns.stats.lists
    await env.run(flow, {}, execution_id=execution_id)
    result = await env.result(handle)
    assert cancelled and result.status == "cancelled"
    assert ran == []
    # Its state is no longer the one its creation wrote: the drive read it back and decoded it.
    assert env.ns.stats.lists > lists
    assert decoded[:2] == ["meta", "state"]
    # The cancel's write changed the state the creation wrote: the drive wrote its own
    # start, still counted as the first incarnation.
    assert (await handle.meta())["incarnations"] == 1


async def test_a_crash_before_the_first_step_is_resumed_by_the_creation_lease(env: WorkflowTestEnv) -> None:
    ran: list[int] = []
    flow = _linear(3, ran)
    env.faults.crash_at("before_step", step="s0")
    execution_id = unique("begun-crash")
    handle = env.client.execution(execution_id)
    with pytest.raises(TransportError):  # the object died under the request that drove it
        await env.run(flow, {}, execution_id=execution_id)
    result = await env.result(handle)
    assert result.ok and ran == [0, 1, 2]
    meta = await handle.meta()
    # The creation began incarnation 1; the lease alarm's drive after the crash is the 2nd.
    assert meta["incarnations"] == 2
    assert len(env.faults.crashes) == 1


async def test_a_drive_during_the_creation_write_is_not_undone_by_the_creation(
    env: WorkflowTestEnv, monkeypatch: Any
) -> None:
    """``start`` sets the alarm due now: in the local runtime its drive may run while the
    creation's write is still awaited. The creation cached its records after that await,
    and put its own ``pending`` state back under a drive that had already begun: the drive
    then parked on the wait as ``pending`` (found by the SIGKILL loop, stranded)."""
    ran: list[int] = []
    flow = _linear(2, ran).wait_for_event("go", "go")
    write = ExecutionState.write

    def slow_creation(self: ExecutionState, puts: Any, *args: Any, **kwargs: Any) -> Any:
        turns = write(self, puts, *args, **kwargs)
        if "meta" not in puts:
            return turns

        async def awaited() -> None:
            await turns
            for _ in range(200):  # the alarm's drive runs meanwhile, to its park
                await asyncio.sleep(0)

        return awaited()

    monkeypatch.setattr(ExecutionState, "write", slow_creation)
    handle = await env.start(flow, {})
    monkeypatch.setattr(ExecutionState, "write", write)
    await env.settle()
    assert ran == [0, 1]
    described = await handle.describe()
    assert (described["status"], described["waiting_for"]) == ("waiting", ["go"])
    assert await handle.send_event("go", 1)
    assert (await env.result(handle)).ok


async def test_the_drive_its_creation_began_keeps_the_records_the_creation_cached(
    env: WorkflowTestEnv, monkeypatch: Any
) -> None:
    """The creation's records are not decoded again: the meta and state it cached are the
    ones the drive runs on (about 2 KB per execution in flight that were copies of them)."""
    ran: list[int] = []
    flow = _linear(3, ran)
    created: list[tuple[Any, Any]] = []
    load = _drive.Driver._load

    def load_seen(self: _drive.Driver, snapshot: Any) -> bool:
        before = (self.execution.meta, self.execution.state)
        found = load(self, snapshot)
        if not created:
            created.append(before)
            assert (self.execution.meta, self.execution.state) == before  # equal...
            assert self.execution.meta is before[0] and self.execution.state is before[1]  # ...and the same
        return found

    monkeypatch.setattr(_drive.Driver, "_load", load_seen)
    decoded = _count_decodes(monkeypatch)
    handle = await env.run(flow, {"n": 1})
    assert (await env.result(handle)).value == 2 and ran == [0, 1, 2]
    assert created and decoded == []
    # What it kept is what storage holds: a cold read of it agrees.
    meta = await handle.meta()
    assert (meta["input"], meta["incarnations"]) == ({"n": 1}, 1)


async def test_the_drive_its_creation_began_reads_nothing_back(
    env: WorkflowTestEnv, monkeypatch: Any
) -> None:
    """With no meta before it, the object held nothing: the creation's write is all it holds,
    and the drive it starts at once runs on it without reading it back (one read and one
    turn of the event loop less per execution)."""
    ran: list[int] = []
    cached = _snapshots_loaded(monkeypatch)
    stats = env.ns.stats
    reads, lists = stats.reads, stats.lists
    handle = await env.run(_linear(3, ran), {"n": 1})
    # One read: the start's, which found no execution of that id.
    assert (stats.reads - reads, stats.lists - lists) == (1, 0)
    assert cached == [True]
    assert ran == [0, 1, 2] and (await env.result(handle)).value == 2
    meta = await handle.meta()
    assert (meta["input"], meta["incarnations"], meta["steps"]) == ({"n": 1}, 1, 3)


async def test_a_creation_an_observer_adds_to_is_read_back_by_its_drive(monkeypatch: Any) -> None:
    """The history projection adds its records to the creation's write: those are not in
    what the creation cached, so its drive reads the execution back. The state it reads is
    the one the creation wrote: that is not decoded again (the history decodes the meta)."""
    env = WorkflowTestEnv(history=True)
    try:
        ran: list[int] = []
        cached = _snapshots_loaded(monkeypatch)
        decoded = _count_decodes(monkeypatch)
        handle = await env.run(_linear(2, ran), {})
        assert cached == [False] and "state" not in decoded
        assert ran == [0, 1] and (await env.result(handle)).ok
        await env.ns.idle()
        assert env.client.history is not None
        history = await env.client.history.get_execution(handle.execution_id)
        assert history.execution.status == "completed" and len(history.steps) == 2
    finally:
        await env.close()


async def test_a_write_between_the_creation_and_its_drive_makes_the_drive_read_back(
    env: WorkflowTestEnv, monkeypatch: Any
) -> None:
    """An event stored between the creation's write and the drive's start: the drive reads
    the execution back, and its wait finds the event there."""
    flow = Workflow(unique("begun-event")).wait_for_event("go", "go").step("after", lambda i, prev, ctx: prev)
    execution_id = unique("begun-event")
    handle = env.client.execution(execution_id)
    sent = _before_the_drive(monkeypatch, lambda: handle.send_event("go", {"early": True}))
    cached = _snapshots_loaded(monkeypatch)
    await env.run(flow, {}, execution_id=execution_id)
    result = await env.result(handle)
    assert sent and cached[0] is False
    assert result.ok and result.value == {"early": True}
