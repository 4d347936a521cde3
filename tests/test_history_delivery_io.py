"""What delivering the history costs the object's storage: a delivery in the middle of a
run neither commits on its own (the run's next commit carries the head) nor lists
storage when no commit stored a record since storage was seen without any; and a page's
step start that its completion follows is projected without decoding its entry."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from test_history_memory import _linear
from test_history_projection import Runtime
from workkit_workflow import create_durable_workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine._ports import KEEP_ALARM
from workkit_workflow.history import LocalD1
from workkit_workflow.history._bundle import Bundle, bundle_key, step_piece
from workkit_workflow.history._d1 import LocalStatement
from workkit_workflow.history._outbox import _TAIL_PAGE, BATCH, HEAD, Outbox
from workkit_workflow.history._projection import projection
from workkit_workflow.local import LocalNamespace


class _Writes:
    """The object's commits (puts, deletes) and the D1 batches, as they happen."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.commits: list[tuple[dict[str, str], list[str]]] = []
        rt.ns.write_hook = self._spy

    def _spy(self, obj: str, puts: Any, deletes: Any) -> None:
        self.rt._spy(obj, puts, deletes)
        self.commits.append((dict(puts), list(deletes)))

    def head_only(self) -> int:
        return sum(1 for puts, deletes in self.commits if set(puts) == {HEAD} and not deletes)


async def test_a_run_delivers_its_history_without_commits_or_lists_of_its_own() -> None:
    rt = Runtime()
    writes = _Writes(rt)
    try:
        lists = rt.ns.stats.lists
        steps = 5 * BATCH
        handle = await rt.client.run(_linear(steps), {}, execution_id="io-1")
        assert (await handle.result(timeout=60)).value == {"i": steps - 1}
        await rt.drained(["io-1"])
        batches = rt.d1.calls
        assert batches >= 5  # the steps' starts and completions: pages of BATCH commits
        # The mark the head carries moves with the run's own commits; only the last
        # delivery, which leaves nothing in memory, clears it with a commit of its own.
        assert writes.head_only() <= 1
        # Storage is listed when a commit may have stored a record, not for every page:
        # the run's only stored records are its start's and its end's.
        assert rt.ns.stats.lists - lists < batches
        rt.exactly_once()
        assert rt.outbox("io-1") == {}
        assert "mem" not in jn.loads(rt.ns.backend.list("io-1", HEAD, None, None, None, False)[HEAD])
    finally:
        await rt.close()


async def test_a_page_goes_out_at_the_commit_that_fills_it_though_the_engine_skips_kicks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the ``LINGER`` timer is set, the engine calls no ``kick`` after a commit
    (``kick_due``): the commit that fills a page sets it again, so that page goes out
    then, never a few commits later. ``_pending`` counts the commits of the page."""
    seen: list[int] = []
    capture = Outbox.capture

    def spied(self: Outbox, puts: Any, entries: Any = None) -> dict[str, str]:
        out = capture(self, puts, entries)
        seen.append(self._pending)
        return out

    monkeypatch.setattr(Outbox, "capture", spied)
    rt = Runtime()
    try:
        steps = 3 * BATCH
        handle = await rt.client.run(_linear(steps), {}, execution_id="io-full")
        assert (await handle.result(timeout=60)).value == {"i": steps - 1}
        await rt.drained(["io-full"])
        assert max(seen) == BATCH  # each page's last commit kicked it: never one more
        assert seen.count(BATCH) >= 2
        rt.exactly_once()
    finally:
        await rt.close()


async def test_the_history_leaves_a_write_that_keeps_the_alarm_as_it_is() -> None:
    """Why its ``steers_kept_alarm`` is False, so the engine does not ask it about such
    writes: whatever waits or failed, ``alarm_for`` gives the kept alarm back."""
    outbox = _outbox_on(_Stored())
    assert outbox.steers_kept_alarm is False
    for undelivered in (False, True):
        for failures in (0, 3):
            for active in (False, True):
                outbox.undelivered, outbox._failures, outbox._active = undelivered, failures, active
                assert outbox.alarm_for(KEEP_ALARM) is KEEP_ALARM


async def test_a_record_stored_after_storage_was_seen_empty_is_still_delivered() -> None:
    """A retry stores what memory holds with its own commit, long after the first pages
    went out from memory alone: the next delivery lists storage again and sends it."""
    rt = Runtime()
    try:
        handle = await rt.client.run(_linear(150, fail_once=120), {}, execution_id="io-2")
        assert (await handle.result(timeout=60)).value == {"i": 149}
        await rt.drained(["io-2"])
        rt.exactly_once()
        assert rt.outbox("io-2") == {}
        retried = [r for r in rt.table("wf_steps") if r["op"] == 120]
        assert retried[0]["status"] == "completed" and retried[0]["attempt"] == 2
    finally:
        await rt.close()


def _step_entry(name: str, status: str, attempt: int, **more: Any) -> str:
    entry = {"v": 2, "kind": "step", "name": name, "status": status, "attempt": attempt, **more}
    return jn.dumps(entry | {"started_at": 10.0} if "started_at" not in more else entry)


def test_a_start_its_completion_follows_in_the_page_projects_as_if_decoded() -> None:
    """Its value holds only what its event shows; the statements are the same."""
    commits = [
        {"j:00000000": _step_entry("a", "running", 1, attempt_started_at=10.5, errors=[{"code": "x"}])},
        {
            "j:00000000": _step_entry("a", "completed", 1, finished_at=11.0, output={"n": 1}),
            "j:00000001": _step_entry('b \u00e9\\"', "running", 3),
        },
        # A retry's entry (not a reference): decoded, though its completion follows.
        {"j:00000001": _step_entry('b \u00e9\\"', "retrying", 3, retry_at=30.0, error={"code": "E"})},
        {
            "j:00000001": _step_entry('b \u00e9\\"', "completed", 3, finished_at=12.0),
            "j:00000002": _step_entry("c", "running", 1),
        },
        # A later rewrite of a completed entry (not a reference): the completion keeps its event.
        {"j:00000000": _step_entry("a", "failed", 1, error={"code": "Undone"})},
    ]
    page: list[Bundle] = []
    seq = 1
    for puts in commits:
        pieces = [step_piece(key, puts[key]) for key in sorted(puts)]
        page.append(Bundle.held(bundle_key(seq), seq, 20.0 + seq, "x", pieces))
        seq += len(pieces)
    superseded: set[str] = set()
    newest_first = []
    for bundle in reversed(page):
        records = bundle.records(superseded)
        superseded.update(r.key for r in records)
        newest_first.append(records)
    light = [r for records in reversed(newest_first) for r in records]
    decoded = [r for bundle in page for r in bundle.records()]
    # Two starts were followed by their completions: neither was decoded.
    assert [r.value.get("started_at") is None for r in light] == [
        True,
        False,
        True,
        False,
        False,
        False,
        False,
    ]
    assert projection(light) == projection(decoded)


class _Storage:
    def __init__(self) -> None:
        self.commits: list[tuple[dict[str, str], list[str]]] = []

    async def commit(self, puts: Any, deletes: Any = (), alarm: Any = None) -> None:
        self.commits.append((dict(puts), list(deletes)))


class _Stored(_Storage):
    """Storage that keeps what it is given, and lists it."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, str] = {}
        self.lists = 0
        self.fail = False

    async def commit(self, puts: Any, deletes: Any = (), alarm: Any = None) -> None:
        if self.fail:
            self.fail = False
            raise OSError("the object died (injected)")
        await super().commit(puts, deletes)
        self.data.update(puts)
        for key in deletes:
            self.data.pop(key, None)

    async def list(self, *, prefix: str = "", start: str = "", limit: int = 1000, **_: Any) -> dict[str, str]:
        self.lists += 1
        keys = sorted(k for k in self.data if k.startswith(prefix) and k >= start)
        return {k: self.data[k] for k in keys[:limit]}

    async def get_many(self, keys: Any) -> dict[str, str]:
        return {k: self.data[k] for k in keys if k in self.data}


def _state(status: str) -> str:
    return jn.encode_record(jn.STATE, {"status": status, "phase": "main", "updated_at": 5.0}, what="state")


class _LateD1(LocalD1):
    """A local D1 whose queries answer a few loop turns later, as over a network."""

    def prepare(self, sql: str) -> LocalStatement:
        return _LateStatement(self, sql)


class _LateStatement(LocalStatement):
    def bind(self, *args: Any) -> LocalStatement:
        bound = super().bind(*args)
        return _LateStatement(bound._db, bound.sql, bound.args)

    async def all(self) -> Any:
        for _ in range(3):
            await asyncio.sleep(0)
        return await super().all()


def _handed(outbox: Outbox, puts: dict[str, str]) -> dict[str, str]:
    """``outbox.capture`` of a commit whose every value the engine handed over."""
    return outbox.capture(puts, {key: jn.loads(text) for key, text in puts.items()})


def _transitions(outbox: Outbox) -> list[tuple[int, str]]:
    """The step transitions D1 holds, as (operation, status), in order."""
    rows = outbox.db.binding.rows("SELECT op, status FROM wf_transitions WHERE kind = 'step' ORDER BY seq")
    return [(row["op"], row["status"]) for row in rows]


def _outbox_on(storage: _Storage, database: Any = None) -> Outbox:
    loop = asyncio.get_running_loop()
    core = SimpleNamespace(
        execution_id="x",
        workflow_name="w",
        now=lambda: 5.0,
        storage=storage,
        fault=lambda *args, **kwargs: None,
        spawn=loop.create_task,
        clock=SimpleNamespace(sleep=asyncio.sleep),
    )
    return Outbox(core, database or LocalD1())  # type: ignore[arg-type]


@pytest.mark.parametrize("delivered_between", [True, False])
async def test_what_a_failed_write_leaves_to_read_back_is_delivered_after_storage_was_clean(
    delivered_between: bool,
) -> None:
    storage = _Stored()
    outbox = _outbox_on(storage)

    async def write(puts: dict[str, str]) -> None:
        await storage.commit(puts | outbox.capture(puts))

    await write(
        {
            jn.STATE: _state("running"),
            "j:00000000": _step_entry("a", "running", 1),
        }
    )
    assert await outbox.settle()
    assert not any(k.startswith("o:0") for k in storage.data)  # storage is clean: no list until it moves
    await write(
        {"j:00000000": _step_entry("a", "completed", 1), "j:00000001": _step_entry("b", "running", 1)}
    )
    outbox.capture({"j:00000001": _step_entry("b", "completed", 1)})
    outbox.aborted()  # that write failed: the next drive reads the journal back first
    await outbox.restore()
    if delivered_between:
        assert await outbox.settle()  # what was read back is stored: delivered, though nothing else moved
        assert not any(k.startswith("o:0") for k in storage.data)
    await write({"j:00000001": _step_entry("b", "retrying", 1, retry_at=9.0, error={"code": "E"})})
    assert await outbox.settle()
    assert not any(k.startswith("o:0") for k in storage.data)
    assert _transitions(outbox) == [(0, "running"), (0, "completed"), (1, "running"), (1, "retrying")]


async def test_the_mark_moves_with_the_next_commit_and_is_cleared_when_memory_empties() -> None:
    storage = _Storage()
    outbox = _outbox_on(storage)

    def capture(op: int) -> dict[str, str]:
        puts = {jn.op_key(jn.MAIN, op + 1): _step_entry(f"s{op + 1}", "running", 1)}
        if op >= 0:
            puts[jn.op_key(jn.MAIN, op)] = _step_entry(f"s{op}", "completed", 1, finished_at=11.0)
        return outbox.capture(puts)

    def mark(written: dict[str, str]) -> Any:
        return jn.loads(written[HEAD]).get("mem")

    assert mark(capture(-1)) == {"j:": 0}
    assert HEAD not in capture(0)
    assert HEAD not in capture(1)
    first, second, _ = list(outbox._memory)
    assert await outbox._deliver_page({first: "", second: ""})
    assert storage.commits == []  # the run goes on: no commit of the delivery's own
    assert mark(capture(2)) == {"j:": 1}  # the next commit carries the mark, moved on
    assert await outbox._deliver_page(dict.fromkeys(outbox._memory, ""))
    [(puts, deletes)] = storage.commits  # memory is empty: the delivery clears the mark
    assert set(puts) == {HEAD} and deletes == [] and mark(puts) is None


async def test_a_page_of_memory_s_tail_keeps_what_is_captured_while_d1_answers() -> None:
    """A run's page (memory's tail, its commits not keyed) is dropped once D1 took it; a
    commit captured while D1 answered stays in memory for the next page."""
    late: list[dict[str, str]] = []

    class _SlowD1(LocalD1):
        async def batch(self, statements: Any) -> Any:
            await asyncio.sleep(0)
            if not late:
                late.append(capture(3))  # a commit lands meanwhile, once
            return await super().batch(statements)

    storage = _Storage()
    outbox = _outbox_on(storage, _SlowD1())

    def capture(op: int) -> dict[str, str]:
        puts = {jn.op_key(jn.MAIN, op): _step_entry(f"s{op}", "running", 1)}
        return _handed(outbox, puts)

    capture(1), capture(2)
    assert (outbox._tail_seq, len(outbox._tail)) == (1, 2) and outbox._memory == outbox._held == {}
    assert await outbox._deliver_page(outbox._page({}))
    assert late and (outbox._tail_seq, len(outbox._tail)) == (3, 1) and outbox._held == {}
    # With no commit meanwhile the page goes whole: memory is left empty.
    assert await outbox._deliver_page(outbox._page({}))
    assert outbox._tail == [] and outbox._memory == outbox._held == {} and len(late) == 1
    assert storage.commits[-1] == ({HEAD: outbox._head()}, [])  # the mark cleared with the last page
    assert "mem" not in jn.loads(outbox._head())


async def test_a_head_read_past_the_tail_leaves_its_sequences_and_moves_the_next_ones() -> None:
    """Another instance's head (a reservation past this one's) read while the tail holds
    commits: theirs stay as they were, the next commit's come after that reservation."""
    outbox = _outbox_on(_Storage())

    def capture(op: int) -> None:
        puts = {jn.op_key(jn.MAIN, op): _step_entry(f"s{op}", "running", 1)}
        _handed(outbox, puts)

    capture(0), capture(1)
    outbox.load(
        {HEAD: jn.dumps({"v": jn.VERSION, "seq": 900, "reserved": 1000, "last": None})}, complete=False
    )
    capture(2)
    outbox._settle_tail()
    assert [(bundle.key, bundle.seq) for bundle in outbox._memory.values()] == [
        (bundle_key(1), 1),
        (bundle_key(2), 2),
        (bundle_key(1001), 1001),
    ]


async def test_a_tail_stored_while_d1_answers_is_deleted_once_delivered() -> None:
    """A commit that stores what memory holds (a retry's entry may overwrite one the tail
    refers to) while D1 answers the tail's page: that page's records, stored with it, are
    deleted once delivered; the retry goes out with the next page; nothing goes twice."""
    storage = _Stored()
    outbox = _outbox_on(storage)
    late: list[str] = []
    batch = outbox.db.batch

    async def slow_batch(statements: Any) -> Any:
        await asyncio.sleep(0)
        if not late:  # once, while the delivery task runs
            retry = {"j:00000002": _step_entry("s2", "retrying", 1, retry_at=9.0, error={"code": "E"})}
            written = outbox.capture(retry)
            late.extend(key for key in written if key.startswith("o:0"))
            await storage.commit(retry | written)
        return await batch(statements)

    outbox.db.batch = slow_batch  # type: ignore[method-assign]
    pages: list[list[str]] = []
    deliver = outbox._deliver_page

    async def delivered(found: dict[str, str]) -> bool:
        pages.append([] if found is _TAIL_PAGE else list(found))
        return await deliver(found)

    outbox._deliver_page = delivered  # type: ignore[method-assign]

    async def write(puts: dict[str, str]) -> None:
        await storage.commit(puts | _handed(outbox, puts))

    await write({"j:00000000": _step_entry("s0", "running", 1)})
    for op in range(2):  # a step's completion and the next one's start, as the engine writes them
        await write(
            {
                jn.op_key(jn.MAIN, op): _step_entry(f"s{op}", "completed", 1, finished_at=11.0),
                jn.op_key(jn.MAIN, op + 1): _step_entry(f"s{op + 1}", "running", 1),
            }
        )
    assert len(outbox._tail) == 3 and not any(key.startswith("o:0") for key in storage.data)
    assert await outbox.settle()
    assert late == [bundle_key(seq) for seq in (1, 2, 4, 6)]  # the tail's, stored, and the retry's
    assert pages == [[], [bundle_key(6)]]  # the tail, then the retry alone
    assert not any(key.startswith("o:0") for key in storage.data)  # every one deleted once delivered
    assert outbox._tail == [] and outbox._memory == outbox._held == {}
    assert _transitions(outbox) == [
        (0, "running"),
        (0, "completed"),
        (1, "running"),
        (1, "completed"),
        (2, "running"),
        (2, "retrying"),
    ]


async def test_a_short_execution_s_history_costs_one_commit_and_one_d1_batch() -> None:
    """Its start waits (``LINGER``) for what follows it, its end sends everything in one
    batch, and that batch's commit also clears the alarm kept for it."""
    rt = Runtime()
    plain = LocalNamespace(None, rt.clock)  # one virtual clock per loop
    try:
        handle = await create_durable_workflow(plain).run(_linear(3), {}, execution_id="short-1")
        assert (await handle.result(timeout=60)).value == {"i": 2}
        await plain.idle()
        handle = await rt.client.run(_linear(3), {}, execution_id="short-1")
        assert (await handle.result(timeout=60)).value == {"i": 2}
        await rt.drained(["short-1"])
        assert rt.ns.stats.writes == plain.stats.writes + 1
        assert rt.d1.calls == 1
        rt.exactly_once()
        assert rt.ns.backend.get_alarm("short-1") is None
    finally:
        await plain.close()
        await rt.close()


async def test_storage_seen_without_records_is_not_listed_again_until_a_commit_stores_one() -> None:
    storage = _Stored()
    outbox = _outbox_on(storage)
    assert await outbox.settle() and storage.lists == 1  # nothing there
    assert await outbox.settle() and storage.lists == 1  # nor since: not read again
    puts = {jn.STATE: _state("waiting")}
    await storage.commit(puts | outbox.capture(puts))
    assert await outbox.settle() and storage.lists == 2  # its record, all of it deleted: clean again
    assert not any(k.startswith("o:0") for k in storage.data)


async def test_an_instance_after_a_crash_recovers_from_the_journal_and_projects_nothing_twice() -> None:
    """The first instance's page reached D1, then it died before its commit: the next one,
    before any write of its own, reads the marked journal back; D1 had it all already."""
    storage = _Stored()
    database = _LateD1()
    first = _outbox_on(storage, database)

    async def write(puts: dict[str, str]) -> None:
        await storage.commit(puts | first.capture(puts))

    await write({jn.STATE: _state("running"), "j:00000000": _step_entry("a", "running", 1)})
    await write(
        {"j:00000000": _step_entry("a", "completed", 1), "j:00000001": _step_entry("b", "running", 1)}
    )
    assert "mem" in jn.loads(storage.data[HEAD])
    storage.fail = True  # D1 gets the page; the commit after it never happens
    assert not await first.settle()
    second = _outbox_on(storage, database)
    second.load(storage.data, complete=True)
    await second.restore()
    assert "mem" not in jn.loads(storage.data[HEAD])
    assert await second.settle()
    assert _transitions(first) == [(0, "running"), (0, "completed"), (1, "running")]
    # Then it keeps the next steps in memory again.
    assert not any(
        k.startswith("o:0") for k in second.capture({"j:00000002": _step_entry("c", "running", 1)})
    )


async def test_an_evicted_object_s_linger_timer_fires_harmlessly_and_its_next_instance_delivers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The page's linger timer is the event loop's, not a task of the object's: eviction does
    not cancel it. Fired after the object died, it starts no delivery and raises nothing into
    the loop (the host refuses the dead object a task); the lease alarm brings the execution
    back, and its next instance delivers what the dead one had captured."""
    from workkit_workflow import Workflow
    from workkit_workflow.history._outbox import LINGER
    from workkit_workflow.local import VirtualClock

    gate = asyncio.Event()

    async def held(i: Any, p: Any, c: Any) -> str:
        await gate.wait()
        return "done"

    flow = Workflow("linger-after-eviction").step("held", held)
    clock = VirtualClock(auto_advance=False)
    d1 = LocalD1()
    ns = LocalNamespace(None, clock, env={"HISTORY_DB": d1})
    client = create_durable_workflow(ns, history=d1)
    try:
        with caplog.at_level(logging.ERROR):
            handle = await client.start(flow, {}, execution_id="evicted")
            await _turns(30)  # the alarm due now drives it into its step, which waits
            core = ns._instance("evicted").instance._object.core
            [outbox] = [o for o in core.execution.observers if isinstance(o, Outbox)]
            assert outbox._nudge is not None  # the page it captured waits for its timer
            ns.evict("evicted")
            clock.advance(LINGER * 4)
            await _turns(30)
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
            gate.set()
            clock.advance(3600.0)  # past the lease: the alarm drives a new instance
            await _turns(60)
            await ns.idle()
            assert await handle.status() == "completed"
            rows = d1.rows("SELECT status FROM wf_executions WHERE execution_id = 'evicted'")
            assert rows == [{"status": "completed"}]
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        await ns.close()


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)
