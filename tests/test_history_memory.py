"""History records kept in memory only: commits of step starts and completions write no
outbox record; the head marks them, and a crash is recovered from the journal, once."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from test_history_projection import Runtime, settle
from workkit_workflow import RetryPolicy, Workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.history import LocalD1
from workkit_workflow.history._bundle import (
    RECOVERED_VERSION,
    UNREAD,
    Bundle,
    Record,
    plain_pieces,
    recovered_bundles,
)
from workkit_workflow.history._capture import BATCH, HELD, HELD_REFERENCES, Capture
from workkit_workflow.history._d1 import D1Port, LocalStatement
from workkit_workflow.history._outbox import HEAD, RECORD_PREFIX, Outbox
from workkit_workflow.history._projection import projection
from workkit_workflow.history._records import records_of, resolved
from workkit_workflow.history._recovery import already_projected, derived, lowered, read_back
from workkit_workflow.testing import FaultPlan

_names = itertools.count()


def _linear(steps: int, *, fail_once: int | None = None) -> Workflow:
    flow = Workflow(f"memory-{next(_names)}", retry=RetryPolicy(max_attempts=3, initial_delay=1.0))
    failed: set[int] = set()

    def step(input: Any, prev: Any, ctx: Any, i: int) -> dict[str, int]:
        if i == fail_once and i not in failed:
            failed.add(i)
            raise RuntimeError("once")
        return {"i": i}

    for i in range(steps):
        flow = flow.step(f"s{i}", lambda input, prev, ctx, i=i: step(input, prev, ctx, i))
    return flow


class _Commits:
    """Every commit of one runtime, with the head as stored after it."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.head: dict[str, Any] = {}
        self.commits: list[tuple[dict[str, str], dict[str, Any]]] = []
        rt.ns.write_hook = self._spy

    def _spy(self, obj: str, puts: Any, deletes: Any) -> None:
        self.rt._spy(obj, puts, deletes)  # the Runtime's own record of outbox writes
        if HEAD in puts:
            self.head = jn.loads(puts[HEAD])
        self.commits.append((dict(puts), self.head))


async def test_a_run_of_steps_writes_no_outbox_record_for_its_starts_and_completions() -> None:
    rt = Runtime()
    spy = _Commits(rt)
    try:
        handle = await rt.client.run(_linear(30), {}, execution_id="m-1")
        assert (await handle.result(timeout=60)).value == {"i": 29}
        await rt.drained(["m-1"])
        steps_only = [
            puts
            for puts, _ in spy.commits
            if puts and all(k.startswith("j:") or k == HEAD for k in puts) and any(k != HEAD for k in puts)
        ]
        assert len(steps_only) >= 29
        # The first one after a clean head marks it; the later ones write nothing more.
        assert sum(HEAD in puts for puts in steps_only) <= 3
        rt.exactly_once()
        assert len([r for r in rt.table("wf_steps") if r["status"] == "completed"]) == 30
        assert rt.outbox("m-1") == {}
        assert "mem" not in jn.loads(rt.ns.backend.list("m-1", HEAD, None, None, None, False)[HEAD])
    finally:
        await rt.close()


async def test_memory_holds_a_bounded_number_of_bundles_while_deliveries_cannot_keep_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While deliveries cannot keep up (D1 is down), the outbox holds at most ``HELD``
    bundles of values (a step's entries, its output decoded: kilobytes each), then up to
    ``HELD_REFERENCES`` bundles of references only; past those, a commit stores its record.
    References are read back from the journal as they go out. Until 2026-12-01 the bound
    held for what memory alone kept, not for what it kept of stored records: a 3,000-step
    run held all 3,000, with their values."""
    held = _held_while(monkeypatch)
    rt = Runtime()
    steps = HELD_REFERENCES + 100
    try:
        rt.d1.fail = True
        handle = await rt.client.run(_linear(steps), {}, execution_id="long")
        assert (await handle.result(timeout=3600)).value == {"i": steps - 1}
        assert len(held) > steps
        # (The execution's first commits, its start, are no step's values.)
        assert HELD - 5 <= max(values for values, _ in held) <= HELD
        assert HELD_REFERENCES - 5 <= max(total for _, total in held) <= HELD_REFERENCES
        rt.d1.fail = False
        await rt.drained(["long"])
        rt.exactly_once()
        assert [r["status"] for r in rt.table("wf_steps")] == ["completed"] * steps
    finally:
        await rt.close()


async def test_a_run_that_never_waits_still_delivers_each_page_as_it_fills(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Cloudflare, steps that wait for nothing over the SQL journal, whose writes are
    synchronous, never let the event loop run ("no turn": the local runtime without
    interleaving). The write that fills a page lets it run once (``Outbox.kick``), so the
    page's delivery goes out then: memory holds a page or two, never ``HELD``, and no commit
    stores a record for lack of room. Until 2026-12-02 such a run delivered nothing until
    its end, and past ``HELD_REFERENCES`` bundles each of its commits stored its records."""
    held = _held_while(monkeypatch)
    rt = Runtime(interleave="none")
    steps = HELD_REFERENCES + 100
    try:
        handle = await rt.client.run(_linear(steps), {}, execution_id="never-waits")
        assert (await handle.result(timeout=3600)).value == {"i": steps - 1}
        assert max(total for _, total in held) <= 2 * BATCH + 5
        assert rt.d1.calls >= steps // BATCH
        await rt.drained(["never-waits"])
        rt.exactly_once()
        assert [r["status"] for r in rt.table("wf_steps")] == ["completed"] * steps
    finally:
        await rt.close()


def _held_while(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """After each capture: the bundles the outbox holds with their values, and in all."""
    held: list[tuple[int, int]] = []
    capture = Capture.capture

    def spy(self: Capture, puts: Any, entries: Any = None) -> dict[str, str]:
        out = capture(self, puts, entries)
        values = sum(not isinstance(bundle.parts, list) for bundle in self._held.values()) + len(self._tail)
        held.append((values, len(self._held) + len(self._tail)))
        return out

    monkeypatch.setattr(Capture, "capture", spy)
    return held


def test_a_reference_held_without_its_value_is_read_back() -> None:
    running = {"v": 2, "kind": "step", "name": "b", "status": "running", "attempt": 2, "started_at": 1.0}
    completed = {**running, "name": "a", "status": "completed", "attempt": 1, "finished_at": 2.0}
    entries = {"j:00000002": running, "j:00000001": completed}
    bundle = Bundle.held("o:000000000007", 7, 3.0, "x", plain_pieces(entries, values=False))
    records = bundle.records()
    assert [(r.seq, r.key, r.value is UNREAD, r.attempt) for r in records] == [
        (7, "j:00000001", True, None),
        (8, "j:00000002", True, 2),
    ]
    # Read back: the completion as the journal has it; the start as its attempt was, even
    # when the journal's entry has moved on (a newer record of it goes out too).
    later = {**running, "attempt": 3}
    journal = {"j:00000001": jn.dumps(completed), "j:00000002": jn.dumps(later)}
    assert [r.value for r in resolved(records, journal)] == [
        completed,
        {"kind": "step", "name": "b", "started_at": 1.0, "status": "running", "attempt": 2},
    ]
    # A superseded start needs no reading back.
    (_, superseded) = bundle.records({"j:00000002"})
    assert superseded.value == {"name": "b", "status": "running", "attempt": 2}


async def test_a_run_s_last_commit_stores_what_memory_holds_as_one_record() -> None:
    """A commit that must store its records stores those memory holds with them: at a
    short run's end, while no delivery has a page of them in hand, as one record (written,
    then delivered and deleted, once rather than once per step), their sequences kept."""
    rt = Runtime()
    spy = _Commits(rt)
    try:
        handle = await rt.client.run(_linear(6), {}, execution_id="short")
        assert (await handle.result(timeout=60)).value == {"i": 5}
        await rt.drained(["short"])
        rt.exactly_once()
        (last,) = [puts for puts, _ in spy.commits if "result" in puts]
        (record,) = [(k, v) for k, v in last.items() if k.startswith(RECORD_PREFIX)]
        held = records_of(*record, "short")
        assert [r.key for r in held] == [jn.op_key(jn.MAIN, op) for op in range(6) for _ in "sc"] + ["state"]
        assert [r.seq for r in held] == list(range(held[0].seq, held[0].seq + 13))
    finally:
        await rt.close()


async def test_a_retry_stores_the_records_kept_in_memory_with_its_own() -> None:
    """A retrying entry overwrites the running one a memory-only record refers to."""
    rt = Runtime()
    rt.d1.fail = True  # nothing is delivered meanwhile: memory holds what was not stored
    spy = _Commits(rt)
    try:
        handle = await rt.client.start(_linear(6, fail_once=3), {}, execution_id="m-2")
        assert (await settle(handle)).value == {"i": 5}
        for puts, head in spy.commits:
            entries = {k: jn.loads(v) for k, v in puts.items() if k.startswith("j:")}
            if any(e.get("status") == "retrying" for e in entries.values()):
                stored = {
                    r.key
                    for k, v in puts.items()
                    if k.startswith(RECORD_PREFIX)
                    for r in records_of(k, v, "m-2")
                }
                # The attempt's start, kept in memory until now, is stored with its retry.
                assert "j:00000003" in stored
                assert "mem" not in head
                break
        else:
            raise AssertionError("no retrying commit")
        rt.d1.fail = False
        await rt.drained(["m-2"])
        rt.exactly_once()
    finally:
        await rt.close()


async def test_a_crash_before_delivery_is_recovered_from_the_journal() -> None:
    faults = FaultPlan()
    faults.crash_at("after_journal", step="s4")
    rt = Runtime(faults=faults)
    try:
        handle = await rt.client.start(_linear(8), {}, execution_id="m-3")
        assert (await settle(handle)).value == {"i": 7}
        await rt.drained(["m-3"])
        assert faults.crashes
        rt.exactly_once()
        running = [r for r in rt.table("wf_transitions") if r["kind"] == "step" and r["status"] == "running"]
        # s4 ran twice (the crash came after its journal write, before its completion
        # was delivered): no start is missing, none is there twice.
        assert len(running) == len({(r["op"], r["attempt"]) for r in running})
    finally:
        await rt.close()


class _NetworkStatement(LocalStatement):
    """A statement whose answer, as over a network, comes a few turns of the loop later."""

    def bind(self, *args: Any) -> _NetworkStatement:
        return _NetworkStatement(self._db, super().bind(*args).sql, args)

    async def all(self) -> Any:
        for _ in range(3):
            await asyncio.sleep(0)
        return await super().all()


class _DiesAfterD1(LocalD1):
    """A D1 that answers a batch with step events, then its caller's object dies; its
    queries answer a turn later (the local stand-in answers at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.rt: Runtime | None = None
        self.kills = 1

    def prepare(self, sql: str) -> LocalStatement:
        return _NetworkStatement(self, sql)

    async def batch(self, statements: Any) -> Any:
        result = await super().batch(statements)
        if self.kills and self.rt is not None and any("wf_step" in s.sql for s in statements):
            self.kills -= 1
            self.rt.ns.evict("m-4")
        return result


async def test_records_delivered_before_a_crash_are_not_projected_twice() -> None:
    """D1 answered, the object died before it noted so: recovery finds them in D1."""
    d1 = _DiesAfterD1()
    rt = Runtime(d1=d1)
    d1.rt = rt
    try:
        handle = await rt.client.start(_linear(12), {}, execution_id="m-4")
        assert (await settle(handle)).value == {"i": 11}
        await rt.drained(["m-4"])
        assert d1.kills == 0
        assert rt.outbox("m-4") == {}  # the recovered records were delivered, not left waiting
        rt.exactly_once()
        assert len([r for r in rt.table("wf_steps") if r["status"] == "completed"]) == 12
    finally:
        await rt.close()


def test_a_recovered_bundle_holds_each_transition_with_its_own_time() -> None:
    running = jn.dumps(
        {"v": 2, "kind": "step", "name": "a", "status": "running", "attempt": 2, "started_at": 5.0}
    )
    done = jn.dumps(
        {"v": 2, "kind": "step", "name": "b", "status": "completed", "attempt": 1, "started_at": 6.0}
        | {"finished_at": 7.5, "output": 1}
    )
    items = derived("j:00000003", running) + derived("c:00000001", done)
    assert [(at, key, jn.loads(text)["status"]) for at, key, text in items] == [
        (5.0, "j:00000003", "running"),
        (6.0, "c:00000001", "running"),
        (7.5, "c:00000001", "completed"),
    ]
    retrying = jn.dumps({"v": 2, "kind": "step", "name": "a", "status": "retrying", "attempt": 1})
    assert derived("j:00000004", retrying) == []  # stored with its own commit
    [(key, text)] = recovered_bundles(40, items).items()
    assert key == "o:000000000040" and jn.loads(text)[0] == RECOVERED_VERSION
    records = records_of(key, text, "x")
    assert [(r.seq, r.at, r.key, r.recovered) for r in records] == [
        (40, 5.0, "j:00000003", True),
        (41, 6.0, "c:00000001", True),
        (42, 7.5, "c:00000001", True),
    ]


def test_the_mark_is_lowered_only_by_an_older_operation() -> None:
    mark: dict[str, int] = {}
    first = lowered(mark, ["j:00000007", "j:00000008"])
    assert first == {"j:": 7} and mark == {}
    assert lowered(first, ["j:00000009"]) is first  # unchanged: no head write
    assert lowered(first, ["j:00000002", "c:00000000"]) == {
        "j:": 2,
        "c:": 0,
    }


class _Core:
    execution_id = "u-1"
    workflow_name = "w"

    def now(self) -> float:
        return 10.0


def _entry(op: int, status: str) -> dict[str, str]:
    text = {"v": 2, "kind": "step", "name": f"s{op}", "status": status, "attempt": 1, "started_at": 1.0}
    return {jn.op_key(jn.MAIN, op): jn.dumps(text)}


@pytest.mark.parametrize("handed", [True, False], ids=["values handed over", "texts only"])
def test_a_completion_older_than_the_mark_lowers_it_in_its_own_commit(handed: bool) -> None:
    outbox = Outbox(_Core(), LocalD1())

    def capture(puts: dict[str, str]) -> dict[str, str]:
        # As the engine does (``Capture.capture``), or with the texts alone (``_capture``).
        return outbox.capture(puts, {k: jn.loads(v) for k, v in puts.items()} if handed else None)

    out = capture(_entry(5, "running"))  # the first kept in memory marks the head
    assert set(out) == {HEAD} and jn.loads(out[HEAD])["mem"] == {"j:": 5}
    assert capture(_entry(6, "running")) == {}  # nothing stored: the mark covers it
    assert capture(_entry(7, "running")) == {}
    out = capture(_entry(2, "completed"))  # a parallel branch's older step ends
    assert set(out) == {HEAD} and jn.loads(out[HEAD])["mem"] == {"j:": 2}
    assert capture(_entry(3, "completed")) == {}  # above the mark
    undo = {jn.op_key(jn.COMPENSATION, 0): _entry(0, "running")[jn.op_key(jn.MAIN, 0)]}
    out = capture(undo)  # the other phase's first: the mark names both
    assert set(out) == {HEAD} and jn.loads(out[HEAD])["mem"] == {"j:": 2, "c:": 0}
    # A commit that is not only references stores what memory holds, and clears the mark.
    failed = {"v": 2, "kind": "step", "name": "s7", "status": "failed", "attempt": 1, "error": {"code": "E"}}
    out = outbox.capture({"j:00000007": jn.dumps(failed)})
    stored = sorted(
        r.seq for k, v in out.items() if k.startswith(RECORD_PREFIX) for r in records_of(k, v, "u-1")
    )
    assert len(stored) == 7 and "mem" not in jn.loads(out[HEAD])


async def test_a_recovered_transition_is_quiet_when_d1_or_its_page_holds_it() -> None:
    d1 = LocalD1()
    step = {"kind": "step", "name": "s3", "attempt": 1}
    stored = Record(10, 1.0, "x", "j:00000003", step | {"status": "running"})
    again = Record(50, 1.0, "x", "j:00000003", step | {"status": "running"}, recovered=True)
    done = Record(51, 2.0, "x", "j:00000003", step | {"status": "completed"}, recovered=True)
    other = Record(52, 2.0, "x", "c:00000003", step | {"status": "completed"}, recovered=True)
    port = D1Port(d1)
    # The same start earlier in the page: quiet. The rest: not in D1 yet.
    assert await already_projected(port, "x", [stored, again, done, other]) == {50}
    await port.batch(projection([done]))
    assert await already_projected(port, "x", [again, done, other]) == {51}
    assert await already_projected(port, "y", [again, done]) == frozenset()  # another execution's
    assert await already_projected(port, "x", [stored]) == frozenset()  # nothing recovered: no query


@pytest.mark.parametrize(("steps", "op", "fail_once"), [(10, 5, None), (150, 120, None), (150, 119, 120)])
async def test_a_failed_write_leaves_no_record_of_it_and_loses_none_before_it(
    steps: int, op: int, fail_once: int | None
) -> None:
    """The write of a commit kept in memory fails: memory forgets it, the journal is read
    back from the oldest operation memory held, and D1 gets what happened, once. Late in
    a run, storage was seen without records long before: what is read back is stored (and
    next, with ``fail_once``, a retry's record), so the next delivery lists storage again."""
    rt = Runtime()
    failed: list[dict[str, str]] = []

    def hook(obj: str, puts: Any, deletes: Any) -> None:
        if not failed and '"completed"' in puts.get(jn.op_key(jn.MAIN, op), ""):
            failed.append(dict(puts))
            raise OSError("database or disk is full (injected)")
        rt._spy(obj, puts, deletes)

    rt.ns.write_hook = hook
    try:
        handle = await rt.client.start(_linear(steps, fail_once=fail_once), {}, execution_id="m-5")
        assert (await settle(handle)).value == {"i": steps - 1}
        await rt.drained(["m-5"])
        assert failed and not any(k.startswith(RECORD_PREFIX) for k in failed[0])
        rt.exactly_once()
        completions = [r for r in rt.table("wf_transitions") if r["op"] == op and r["status"] == "completed"]
        assert len(completions) == 1  # the one journaled, not the one that failed
        assert len([r for r in rt.table("wf_steps") if r["status"] == "completed"]) == steps
    finally:
        await rt.close()


def test_after_a_failed_write_the_next_one_stores_the_mark_again() -> None:
    outbox = Outbox(_Core(), LocalD1())
    outbox.capture(_entry(5, "running"))  # its head, with the mark, was not stored:
    outbox.aborted()
    failed = {"v": 2, "kind": "step", "name": "s6", "status": "failed", "attempt": 1, "error": {"code": "E"}}
    out = outbox.capture({"j:00000006": jn.dumps(failed)})
    assert jn.loads(out[HEAD])["mem"] == {"j:": 5}  # read back from there by the next drive
    # Until that drive read it back, nothing more is kept in memory only.
    assert any(k.startswith(RECORD_PREFIX) for k in outbox.capture(_entry(6, "running")))


def test_a_recovered_start_is_the_attempt_s_own() -> None:
    """The second attempt's start, not the step's; the step's name and kind, for its event and row."""
    text = jn.dumps(
        {"v": 2, "kind": "step", "name": "charge", "status": "running", "attempt": 2}
        | {"started_at": 5.0, "attempt_started_at": 9.0, "lost": 1}
    )
    [(at, key, value)] = derived("j:00000004", text)
    assert (at, key) == (9.0, "j:00000004")
    assert jn.loads(value) == {
        "kind": "step",
        "name": "charge",
        "status": "running",
        "attempt": 2,
        "started_at": 5.0,
    }


class _Journal:
    """The part of a storage port ``read_back`` uses, over a dict."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records
        self.lists = 0

    async def list(self, *, prefix: str, start: str, limit: int) -> dict[str, str]:
        self.lists += 1
        keys = sorted(k for k in self.records if k.startswith(prefix) and k >= start)[:limit]
        return {k: self.records[k] for k in keys}


async def test_the_journal_is_read_back_a_page_at_a_time_from_the_mark() -> None:
    entries = {jn.op_key(jn.MAIN, op): _entry(op, "completed")[jn.op_key(jn.MAIN, op)] for op in range(7)}
    entries["c:00000000"] = _entry(0, "running")["j:00000000"]
    journal = _Journal(entries)
    items = await read_back(journal, {"j:": 2, "c:": 0}, 2)
    assert [(key, jn.loads(text)["status"]) for _, key, text in items] == [
        ("c:00000000", "running"),
        *[(jn.op_key(jn.MAIN, op), s) for op in range(2, 7) for s in ("running", "completed")],
    ]
    assert journal.lists == 1 + 3  # the compensation's one page, then j:2-3, j:4-5, j:6


async def test_a_transition_is_told_by_its_whole_operation_and_its_default_status() -> None:
    d1 = LocalD1()
    port = D1Port(d1)
    step = {"kind": "step", "name": "s", "attempt": 1}
    far = Record(7, 1.0, "x", "j:12345678", step | {"status": "completed"})
    await port.batch(projection([far, Record(8, 1.0, "x", "j:00000001", step)]))  # no status: running
    again = [
        Record(20, 1.0, "x", "j:12345678", step | {"status": "completed"}, recovered=True),
        Record(21, 1.0, "x", "j:02345678", step | {"status": "completed"}, recovered=True),
        Record(22, 1.0, "x", "j:00000001", step, recovered=True),  # no status either: running
    ]
    assert await already_projected(port, "x", again) == {20, 22}


def test_a_bundle_held_as_values_takes_its_time_from_them() -> None:
    """A commit of a step's transitions held as the engine's values reads no clock: its
    time is the newest its values hold, a completion's end or an attempt's own start."""
    completed = {"kind": "step", "name": "a", "status": "completed", "attempt": 1, "started_at": 5.0}
    running = {"kind": "step", "name": "b", "status": "running", "attempt": 2, "started_at": 6.0}
    parts = {"j:00000001": completed | {"finished_at": 7.0}, "j:00000002": running}
    bundle = Bundle.held("o:000000000009", 9, None, "x", parts)
    assert bundle.when == 7.0
    assert (
        Bundle.held(
            "o:000000000009", 9, None, "x", {**parts, "j:00000002": running | {"attempt_started_at": 8.0}}
        ).when
        == 8.0
    )
    assert {record.at for record in bundle.records()} == {7.0}
    [stored] = bundle.stored()
    assert [record.at for record in records_of(stored.key, stored.text, "x")] == [7.0, 7.0]
    assert Bundle.held("o:000000000009", 9, 4.5, "x", parts).when == 4.5


def test_a_commit_under_the_mark_or_of_another_phase_lowers_it() -> None:
    """``capture`` compares a commit's keys with the run's usual mark, the main phase's
    operation alone: a lower operation, or a compensation's (whose keys sort first), lowers
    it, and the head that stores the new mark goes with the commit."""
    capture = Outbox(_Core(), LocalD1())  # type: ignore[arg-type]

    def commit(prefix: str, op: int) -> dict[str, str]:
        value = {
            "v": 2,
            "kind": "step",
            "name": f"s{op}",
            "status": "running",
            "attempt": 1,
            "started_at": 1.0,
        }
        key = jn.op_key(prefix, op)
        return capture.capture({key: jn.dumps(value)}, {key: value})

    assert HEAD in commit(jn.MAIN, 5) and capture._mark == {jn.MAIN: 5}
    assert commit(jn.MAIN, 6) == {} and capture._mark == {jn.MAIN: 5}
    assert HEAD in commit(jn.MAIN, 3) and capture._mark == {jn.MAIN: 3}
    assert HEAD in commit(jn.COMPENSATION, 7) and capture._mark == {jn.MAIN: 3, jn.COMPENSATION: 7}
    assert commit(jn.COMPENSATION, 8) == {} and commit(jn.MAIN, 9) == {}
    assert HEAD in commit(jn.COMPENSATION, 1) and capture._mark == {jn.MAIN: 3, jn.COMPENSATION: 1}
