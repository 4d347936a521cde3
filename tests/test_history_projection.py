"""The D1 projection: same-write outbox, idempotent delivery, D1 outages, crashes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

import pytest

from workkit_workflow import NonRetryableError, RetryPolicy, Workflow, create_durable_workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.errors import TransportError
from workkit_workflow.history import D1Error, LocalD1
from workkit_workflow.history._bundle import UNREAD, Record
from workkit_workflow.history._d1 import inline_nulls
from workkit_workflow.history._outbox import HEAD, RECORD_PREFIX
from workkit_workflow.history._projection import projection
from workkit_workflow.history._records import records_of
from workkit_workflow.local import LocalNamespace, VirtualClock
from workkit_workflow.testing import FaultPlan

_names = itertools.count()


def order_flow(*, ship_fails: bool = True) -> Workflow:
    calls: dict[str, int] = {}

    def charge(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        calls[input["order_id"]] = calls.get(input["order_id"], 0) + 1
        if calls[input["order_id"]] == 1:
            raise ConnectionError("card network timeout")
        return {"tx": f"tx-{input['order_id']}"}

    def ship(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        if ship_fails:
            raise NonRetryableError("address rejected by carrier")
        return {"tracking": "trk-1"}

    async def undo(ctx: Any) -> None:
        await ctx.step("refund", lambda: {"refunded": True})
        await ctx.step("release", lambda: {"released": True})

    async def reserve(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        return {"reservation": 1}

    return (
        Workflow(f"order-{next(_names)}", retry=RetryPolicy(max_attempts=3, initial_delay=1.0))
        .step("reserve", reserve)
        .step("charge", charge)
        .step("ship", ship)
        .on_failure(undo)
    )


class Runtime:
    def __init__(
        self,
        path: str | None = None,
        d1: Any = None,
        faults: FaultPlan | None = None,
        clock: VirtualClock | None = None,
        interleave: str = "storage",
    ) -> None:
        # One VirtualClock per event loop: two would each wait for the other to idle.
        self.clock = clock or VirtualClock()
        self.d1 = d1 if d1 is not None else LocalD1()
        self.path = path
        self.faults = faults
        self.ns = LocalNamespace(
            path, self.clock, env={"HISTORY_DB": self.d1}, faults=faults, interleave=interleave
        )
        self.client = create_durable_workflow(self.ns, history=self.d1)
        self.written: list[tuple[str, int]] = []
        """Every outbox record ever committed but recovered ones: (execution id, seq)."""
        self.ns.write_hook = self._spy

    def _spy(self, obj: str, puts: Any, deletes: Any) -> None:
        # A bundle (one per commit) holds several records, each with its own sequence. A
        # commit of references only writes none (its records wait in memory), and a
        # recovered record reaches D1 only if its transition is not there yet.
        self.written.extend(
            (obj, record.seq)
            for k, v in puts.items()
            if k.startswith(RECORD_PREFIX)
            for record in records_of(k, v, obj)
            if not record.recovered
        )

    def exactly_once(self) -> None:
        """Every record committed to an outbox reached D1, and every step transition the
        journals show is in D1 once: the start of each step's last attempt, each completion."""
        events = self.table("wf_transitions")
        assert len(set(self.written)) == len(self.written)
        assert set(self.written) <= {(r["execution_id"], r["seq"]) for r in events}
        transitions = [
            (r["execution_id"], r["phase"], r["op"], r["status"], r["attempt"])
            for r in events
            if r["kind"] == "step" and r["status"] in ("running", "completed")
        ]
        assert len(transitions) == len(set(transitions)), "a step transition was projected twice"
        for execution_id in {r["execution_id"] for r in events}:
            for key, text in self.ns.backend.list(execution_id, None, None, None, None, False).items():
                if not jn.is_op_key(key):
                    continue
                entry = jn.decode_record(key, text)
                if entry.get("kind") != "step" or entry.get("status") not in ("running", "completed"):
                    continue
                phase = "main" if key.startswith(jn.MAIN) else "compensation"
                expected = {(execution_id, phase, jn.op_of(key), "running", entry["attempt"])}
                if entry["status"] == "completed":
                    expected.add((execution_id, phase, jn.op_of(key), "completed", entry["attempt"]))
                assert expected <= set(transitions), f"{key} of {execution_id} is missing from wf_transitions"

    def outbox(self, execution_id: str) -> dict[str, str]:
        return self.ns.backend.list(execution_id, RECORD_PREFIX, None, None, None, False)

    async def drained(self, ids: Sequence[str], timeout: float = 20.0) -> None:
        """Wait (virtual time skips) until every outbox is empty and the objects are quiet."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not any(self.outbox(i) for i in ids):
                # Let the delivering tasks finish (clear their alarm) before looking.
                await self.clock.sleep(1.0)
                if not any(self.outbox(i) for i in ids):
                    return
            await self.clock.sleep(5.0)
        raise AssertionError({i: len(self.outbox(i)) for i in ids})

    def table(self, name: str) -> list[dict[str, Any]]:
        return self.d1.rows(f"SELECT * FROM {name} ORDER BY 1, 2, 3")

    async def close(self) -> None:
        await self.ns.close()


@pytest.fixture
async def rt() -> Any:
    runtime = Runtime()
    yield runtime
    await runtime.close()


async def settle(handle: Any) -> Any:
    """The result, retrying while crashes reset the object under the request."""
    for _ in range(200):
        try:
            return await handle.result(timeout=3600)
        except TransportError:
            await asyncio.sleep(0)
    raise AssertionError("never settled")


def shape(rows: list[dict[str, Any]], *drop: str) -> list[tuple[Any, ...]]:
    return [tuple(v for k, v in r.items() if k not in drop) for r in rows]


EVENT_SHAPE = ("kind", "phase", "op", "name", "status", "attempt")


def events(rt: Runtime, execution_id: str) -> list[tuple[Any, ...]]:
    rows = rt.d1.rows("SELECT * FROM wf_transitions WHERE execution_id = ? ORDER BY seq", [execution_id])
    return [tuple(r[k] for k in EVENT_SHAPE) for r in rows]


EXPECTED_COMPENSATED = [
    # ``client.run`` drives it at once: its creation is its first incarnation (no "pending").
    ("execution", "main", None, None, "running", None),
    ("step", "main", 0, "reserve", "running", 1),
    ("step", "main", 0, "reserve", "completed", 1),
    ("step", "main", 1, "charge", "running", 1),
    ("step", "main", 1, "charge", "retrying", 1),
    ("execution", "main", None, None, "sleeping", None),
    ("execution", "main", None, None, "running", None),
    ("step", "main", 1, "charge", "running", 2),
    ("step", "main", 1, "charge", "completed", 2),
    ("step", "main", 2, "ship", "running", 1),
    ("step", "main", 2, "ship", "failed", 1),
    ("execution", "compensation", None, None, "failed", None),
    ("execution", "compensation", None, None, "failed", None),
    ("step", "compensation", 0, "refund", "running", 1),
    ("step", "compensation", 0, "refund", "completed", 1),
    ("step", "compensation", 1, "release", "running", 1),
    ("step", "compensation", 1, "release", "completed", 1),
    ("execution", "done", None, None, "failed", None),
]


async def test_a_compensated_execution_is_projected_exactly(rt: Runtime) -> None:
    handle = await rt.client.run(order_flow(), {"order_id": "o-1"}, execution_id="x-1")
    result = await handle.result(timeout=60)
    assert result.status == "failed"
    await rt.drained(["x-1"])
    assert events(rt, "x-1") == EXPECTED_COMPENSATED
    seqs = [r["seq"] for r in rt.table("wf_transitions")]
    assert seqs == list(range(1, len(EXPECTED_COMPENSATED) + 1))
    steps = {(s["phase"], s["name"]): s for s in rt.table("wf_steps")}
    assert {k: (v["status"], v["attempt"]) for k, v in steps.items()} == {
        ("main", "reserve"): ("completed", 1),
        ("main", "charge"): ("completed", 2),
        ("main", "ship"): ("failed", 1),
        ("compensation", "refund"): ("completed", 1),
        ("compensation", "release"): ("completed", 1),
    }
    [execution] = rt.table("wf_executions")
    assert execution["status"] == "failed"
    assert execution["failed_step"] == "ship"
    assert execution["compensation_status"] == "completed"
    assert '"order_id":"o-1"' in execution["input"]
    # Delivered and cleaned up: no outbox left, no alarm left behind.
    assert rt.outbox("x-1") == {}
    assert rt.ns.backend.get_alarm("x-1") is None


async def test_the_outbox_is_written_in_the_same_commit_as_the_journal(rt: Runtime) -> None:
    commits: list[tuple[dict[str, str], dict[str, Any]]] = []
    head: dict[str, Any] = {}

    def spy(obj: str, puts: Any, deletes: Any) -> None:
        nonlocal head
        if HEAD in puts:
            head = jn.loads(puts[HEAD])
        commits.append((dict(puts), head))  # with the head as stored after the commit

    rt.ns.write_hook = spy  # replaces the Runtime's own spy, fine for this test
    rt.d1.fail = True
    handle = await rt.client.run(order_flow(ship_fails=False), {"order_id": "o-2"}, execution_id="x-2")
    assert (await handle.result(timeout=60)).ok
    kept_in_memory = 0
    for puts, stored_head in commits:
        journal = {k for k in puts if k == "state" or k.startswith(("j:", "c:"))}
        records = {k for k in puts if k.startswith(RECORD_PREFIX)}
        if journal and not records:
            # A commit of step starts and completions only: its records wait in memory,
            # and the head it leaves says, durably, from which operation on.
            kept_in_memory += 1
            assert "state" not in journal
            for key in journal:
                assert jn.loads(puts[key])["status"] in ("running", "completed")
                assert stored_head["mem"][key[:2]] <= jn.op_of(key)
        else:
            # Any other journal write carries its history records, and only then.
            assert bool(journal) == bool(records) or set(puts) == {HEAD}
    assert kept_in_memory > 0


async def test_workflows_finish_during_a_d1_outage_and_every_row_arrives_once() -> None:
    reference = Runtime()
    outage = Runtime(clock=reference.clock)
    try:
        ids = [f"e-{i}" for i in range(6)]
        for rt in (reference, outage):
            flows = [order_flow(), order_flow(ship_fails=False)]
            if rt is outage:
                rt.d1.fail = True
            started = time.monotonic()
            for i, eid in enumerate(ids):
                handle = await rt.client.run(flows[i % 2], {"order_id": eid}, execution_id=eid)
                assert (await handle.result(timeout=3600)).status in ("failed", "completed")
            # The outage neither fails nor noticeably slows the workflows.
            assert time.monotonic() - started < 5.0
        assert outage.table("wf_transitions") == []
        assert outage.d1.calls == 0
        assert all(outage.outbox(eid) for eid in ids)
        # Records wait with an alarm set, although the executions are done.
        assert all(outage.ns.backend.get_alarm(eid) is not None for eid in ids)
        await outage.clock.sleep(600)  # a long outage: several retries fail
        outage.d1.fail = False
        await reference.drained(ids)
        await outage.drained(ids)
        for eid in ids:
            assert events(outage, eid) == events(reference, eid)
            assert outage.ns.backend.get_alarm(eid) is None
        assert shape(
            outage.table("wf_steps"),
            "seq",
            "started_at",
            "attempt_started_at",
            "finished_at",
            "retry_at",
            "errors",
            "error",
        ) == shape(
            reference.table("wf_steps"),
            "seq",
            "started_at",
            "attempt_started_at",
            "finished_at",
            "retry_at",
            "errors",
            "error",
        )
        outage.exactly_once()
        reference.exactly_once()
        assert len(outage.table("wf_executions")) == len(ids)
        assert [r["status"] for r in outage.table("wf_executions")] == [
            r["status"] for r in reference.table("wf_executions")
        ]
    finally:
        await reference.close()
        await outage.close()


class FlakyAfterCommit(LocalD1):
    """Applies the batch, then loses the answer (the worst case for duplicates)."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_answers = 3

    async def batch(self, statements: Any) -> Any:
        result = await super().batch(statements)
        if self.lose_answers > 0:
            self.lose_answers -= 1
            raise D1Error("D1_ERROR: Network connection lost.")
        return result


async def test_a_batch_applied_twice_leaves_no_duplicates() -> None:
    rt = Runtime(d1=FlakyAfterCommit())
    try:
        handle = await rt.client.run(order_flow(), {"order_id": "o-3"}, execution_id="x-3")
        assert (await handle.result(timeout=3600)).status == "failed"
        await rt.drained(["x-3"])
        assert rt.d1.lose_answers == 0  # type: ignore[attr-defined]
        assert events(rt, "x-3") == EXPECTED_COMPENSATED
        assert len(rt.table("wf_steps")) == 5
        rt.exactly_once()
    finally:
        await rt.close()


@pytest.mark.parametrize("times", [1, 3])
async def test_crash_in_history_delivery_loses_nothing(times: int) -> None:
    faults = FaultPlan()
    faults.crash_at("in_history", times=times)
    rt = Runtime(faults=faults)
    try:
        handle = await rt.client.start(order_flow(), {"order_id": "o-4"}, execution_id="x-4")
        result = await settle(handle)
        assert result.status == "failed"
        await rt.drained(["x-4"])
        assert len(faults.crashes) == times
        rt.exactly_once()
        if times == 1:  # the first delivery is the create's: the crash costs no step attempt
            # Started by its alarm (``start``): pending until that drive begins.
            assert events(rt, "x-4") == [
                ("execution", "main", None, None, "pending", None),
                *EXPECTED_COMPENSATED,
            ]
    finally:
        await rt.close()


@pytest.mark.parametrize("point", ["before_step", "after_side_effect", "after_journal", "in_compensation"])
async def test_crashes_in_the_workflow_project_consistent_history(point: str) -> None:
    faults = FaultPlan()
    faults.crash_at(point)
    rt = Runtime(faults=faults)
    try:
        handle = await rt.client.start(order_flow(), {"order_id": "o-5"}, execution_id="x-5")
        result = await settle(handle)
        assert result.status == "failed"
        await rt.drained(["x-5"])
        assert faults.crashes
        steps = {(s["phase"], s["name"]): s["status"] for s in rt.table("wf_steps")}
        assert steps == {
            ("main", "reserve"): "completed",
            ("main", "charge"): "completed",
            ("main", "ship"): "failed",
            ("compensation", "refund"): "completed",
            ("compensation", "release"): "completed",
        }
        rt.exactly_once()
        [execution] = rt.table("wf_executions")
        assert (execution["status"], execution["phase"]) == ("failed", "done")
    finally:
        await rt.close()


async def test_records_survive_a_process_restart_during_an_outage(tmp_path: Any) -> None:
    path = str(tmp_path / "workflows.db")
    d1 = LocalD1(str(tmp_path / "history.db"))
    rt = Runtime(path, d1=d1)
    d1.fail = True
    handle = await rt.client.run(order_flow(ship_fails=False), {"order_id": "o-6"}, execution_id="x-6")
    assert (await handle.result(timeout=3600)).ok
    # Completed steps are stored by reference: the new process reads them from the journal.
    records = [r for k, v in rt.outbox("x-6").items() for r in records_of(k, v, "x-6")]
    assert any(r.value is UNREAD for r in records)
    await rt.ns.close()
    d1.fail = False
    assert d1.rows("SELECT * FROM wf_transitions") == []
    # A new process opens the same storage: the pending alarm delivers the outbox.
    rt2 = Runtime(path, d1=d1, clock=rt.clock)
    try:
        await rt2.ns.start()
        await rt2.drained(["x-6"])
        assert [r["status"] for r in d1.rows("SELECT * FROM wf_executions")] == ["completed"]
        assert len(d1.rows("SELECT * FROM wf_transitions")) == 12
        steps = d1.rows("SELECT * FROM wf_steps ORDER BY op")
        assert {(s["status"], s["finished_at"] is not None) for s in steps} == {("completed", True)}
        done = d1.rows("SELECT name FROM wf_transitions WHERE status = 'completed' AND op >= 0 ORDER BY seq")
        assert [e["name"] for e in done if e["name"]] == [s["name"] for s in steps]
    finally:
        await rt2.close()
        d1.close()


async def test_a_hanging_d1_does_not_hold_the_workflow(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    class Hanging(LocalD1):
        async def batch(self, statements: Any) -> Any:
            await asyncio.Event().wait()

    rt2 = Runtime(d1=Hanging(), clock=rt.clock)
    try:
        started = time.monotonic()
        handle = await rt2.client.run(order_flow(ship_fails=False), {"order_id": "o-7"}, execution_id="x-7")
        assert (await handle.result(timeout=3600)).ok
        assert time.monotonic() - started < 2.0
        await rt2.clock.sleep(30)  # the delivery gives up on D1 after 10 s, and says so
        assert "D1 did not answer within 10s" in caplog.text
    finally:
        await rt2.close()


async def test_no_binding_means_no_outbox() -> None:
    clock = VirtualClock()
    async with LocalNamespace(None, clock) as ns:
        client = create_durable_workflow(ns)
        assert client.history is None
        handle = await client.run(order_flow(ship_fails=False), {"order_id": "o-8"}, execution_id="x-8")
        assert (await handle.result(timeout=3600)).ok
        assert ns.backend.list("x-8", "o:", None, None, None, False) == {}


def test_none_arguments_become_sql_null() -> None:
    assert inline_nulls("VALUES (?, ?, ?)", ["a", None, True]) == ("VALUES (?, NULL, ?)", ["a", 1])
    # Each combination of NULLs and bools: a bool is bound as 0 or 1, never as itself.
    assert inline_nulls("VALUES (?, ?)", ["a", False]) == ("VALUES (?, ?)", ["a", 0])
    assert inline_nulls("VALUES (?, ?)", [None, 2.5]) == ("VALUES (NULL, ?)", [2.5])
    plain = ["a", 1, 2.5]
    sql, args = inline_nulls("VALUES (?, ?, ?)", plain)
    assert (sql, args) == ("VALUES (?, ?, ?)", plain) and args is not plain
    assert [type(a) for a in inline_nulls("VALUES (?, ?)", [True, None])[1]] == [int]
    with pytest.raises(ValueError):
        inline_nulls("VALUES (?)", [])
    with pytest.raises(D1Error, match="undefined"):
        LocalD1().prepare("SELECT ?").bind(None)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("point", ["in_history", "after_journal", "before_step", "in_alarm"])
async def test_chaos_interleaving_crashes_and_outages_keep_rows_exactly_once(seed: int, point: str) -> None:
    """Random extra interleavings, two crashes, and a D1 outage for odd seeds."""
    faults = FaultPlan()
    faults.crash_at(point, times=2)
    clock = VirtualClock()
    d1 = LocalD1()
    rt = Runtime(d1=d1, faults=faults, clock=clock)
    await rt.ns.close()
    rt.ns = LocalNamespace(None, clock, env={"HISTORY_DB": d1}, faults=faults, interleave="chaos", seed=seed)
    rt.ns.write_hook = rt._spy
    rt.client = create_durable_workflow(rt.ns, history=d1)
    try:
        d1.fail = seed % 2 == 1
        ids = [f"c-{i}" for i in range(4)]
        flows = [order_flow(), order_flow(ship_fails=False)]
        handles = []
        for i, eid in enumerate(ids):
            try:
                handles.append(await rt.client.start(flows[i % 2], {"order_id": eid}, execution_id=eid))
            except TransportError:  # the crash hit during /execute: the execution exists
                handles.append(rt.client.execution(eid))
        for handle in handles:
            await settle(handle)
        d1.fail = False
        await rt.drained(ids)
        assert faults.crashes, "the fault point was never reached"
        rt.exactly_once()
        phases = [r["phase"] for r in d1.rows("SELECT phase FROM wf_executions ORDER BY execution_id")]
        assert phases == ["done"] * 4
    finally:
        await rt.close()


async def test_a_huge_input_is_projected_without_it(rt: Runtime) -> None:
    # Fits in the journal (2 MB per value), not once more with the state beside it.
    big = {"order_id": "o-9", "blob": "x" * 1_999_750}
    handle = await rt.client.run(order_flow(ship_fails=False), big, execution_id="x-9")
    assert (await handle.result(timeout=3600)).ok
    await rt.drained(["x-9"])
    [row] = rt.table("wf_executions")
    assert row["status"] == "completed" and row["input"] is None
    rt.exactly_once()


async def test_rows_of_a_long_sleeping_execution_arrive_soon_after_an_outage(rt: Runtime) -> None:
    """An outage as an execution parks for a week: delivery is retried by an alarm
    brought forward, not left for the wake-up."""
    flow = (
        Workflow(f"sleeper-{next(_names)}")
        .step("a", lambda i, p, c: 1)
        .sleep("week", "7d")
        .step("b", lambda i, p, c: 2)
    )
    rt.d1.fail = True
    handle = await rt.client.run(flow, {}, execution_id="sleeper")
    assert await handle.status() == "sleeping"
    start = rt.clock.now()
    rt.d1.fail = False
    await rt.clock.sleep(600)  # ten minutes, far less than the week
    assert rt.outbox("sleeper") == {}
    assert rt.clock.now() - start < 86400
    steps = rt.table("wf_steps")
    assert [s["name"] for s in steps if s["execution_id"] == "sleeper"] == ["a", "week"]
    assert (await handle.describe())["wake_at"] is not None
    assert await handle.status() == "sleeping"
    rt.exactly_once()


@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("normal", 1), ("OFF", 0)])
def test_the_local_d1_takes_sqlites_synchronous_setting(tmp_path: Any, synchronous: str, level: int) -> None:
    d1 = LocalD1(str(tmp_path / "h.d1"), synchronous=synchronous)
    try:
        assert d1.rows("PRAGMA synchronous") == [{"synchronous": level}]
    finally:
        d1.close()
    with pytest.raises(ValueError, match="synchronous must be"):
        LocalD1(str(tmp_path / "bad.d1"), synchronous="sometimes")


def test_a_step_event_details_only_what_its_transition_adds() -> None:
    """Fields present but empty add nothing to an event's detail; set ones are kept in order."""
    base = {"kind": "step", "name": "charge", "status": "running", "attempt": 1}
    quiet = Record(1, 5.0, "x", "j:00000000", {**base, "error": None, "retry_at": None})
    retrying = Record(
        2, 6.0, "x", "j:00000000", {**base, "status": "retrying", "retry_at": 9.0, "error": {"code": "E"}}
    )
    details = {row["seq"]: row["detail"] for row in _project_events([quiet, retrying])}
    assert details == {1: "{}", 2: '{"error":{"code":"E"},"retry_at":9.0}'}


def _project_events(records: list[Record]) -> list[dict[str, Any]]:
    d1 = LocalD1()
    for sql, args in projection(records):
        d1.rows(*inline_nulls(sql, args))
    rows = d1.rows("SELECT * FROM wf_transitions ORDER BY seq")
    d1.close()
    return rows


def test_rows_come_from_the_newest_record_in_whatever_order_the_batch_holds_them() -> None:
    """An execution's and a step's row are their newest records' (by sequence), even when a
    batch holds an older one after it; a step's row keeps its attempt's own start."""
    older = Record(
        3, 5.0, "x", jn.STATE, {"status": "running", "phase": "main", "started_at": 4.0, "input": 1}
    )
    newer = Record(
        9, 6.0, "x", jn.STATE, {"status": "completed", "phase": "done", "started_at": 4.0, "input": 2}
    )
    step = {"kind": "step", "name": "charge", "started_at": 1.0}
    first = Record(4, 1.0, "x", "j:00000000", {**step, "status": "retrying", "attempt": 1, "retry_at": 2.0})
    second = Record(
        8, 2.5, "x", "j:00000000", {**step, "status": "running", "attempt": 2, "attempt_started_at": 2.5}
    )
    d1 = LocalD1()
    for sql, args in projection([newer, second, older, first]):
        d1.rows(*inline_nulls(sql, args))
    [execution] = d1.rows("SELECT status, started_at, input, seq FROM wf_executions")
    assert execution == {"status": "completed", "started_at": 4.0, "input": "2", "seq": 9}
    [row] = d1.rows("SELECT status, attempt, started_at, attempt_started_at, retry_at, seq FROM wf_steps")
    assert row == {
        "status": "running",
        "attempt": 2,
        "started_at": 1.0,
        "attempt_started_at": 2.5,
        "retry_at": None,
        "seq": 8,
    }
    d1.close()
