"""A step's plain transitions live in its row (schema version 2, ``_schema``).

A step's first attempt starting and its completion are not rows of ``wf_events`` but
its ``wf_steps`` row's ``started_seq`` and ``finished_seq``; the ``wf_transitions``
view shows every transition as the events table did, with the same sequences.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_history_projection import Runtime, order_flow
from workkit_workflow import Workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.history import MIGRATIONS, SCHEMA, D1Port, LocalD1
from workkit_workflow.history._bundle import Record
from workkit_workflow.history._d1 import inline_nulls
from workkit_workflow.history._outbox import Outbox
from workkit_workflow.history._projection import projection, step_event
from workkit_workflow.history._schema import ADDED, statements

SHOWN = ("seq", "kind", "phase", "op", "name", "status", "attempt", "detail")
"""What a transition shows besides its time (a step row's is the step's own)."""


def _linear(name: str, steps: int) -> Workflow:
    flow = Workflow(name)
    for i in range(steps):
        flow = flow.step(f"s{i}", lambda input, prev, ctx, i=i: i)
    return flow


async def test_a_plain_run_writes_its_steps_and_no_step_event() -> None:
    rt = Runtime()
    try:
        handle = await rt.client.run(_linear("plain-rows", 6), {}, execution_id="p")
        assert (await handle.result(timeout=60)).ok
        await rt.drained(["p"])
        assert [e["kind"] for e in rt.table("wf_events")] == ["execution"] * 2  # running, completed
        steps = rt.d1.rows("SELECT op, started_seq, finished_seq FROM wf_steps ORDER BY op")
        assert [s["op"] for s in steps] == list(range(6))
        assert all(s["started_seq"] < s["finished_seq"] for s in steps)
        shown = rt.d1.rows("SELECT kind, op, status, seq FROM wf_transitions ORDER BY seq")
        # Started by the request that created it: it begins running, never pending.
        assert [(t["kind"], t["op"], t["status"]) for t in shown] == [
            ("execution", None, "running"),
            *[("step", op, status) for op in range(6) for status in ("running", "completed")],
            ("execution", None, "completed"),
        ]
        assert [t["seq"] for t in shown] == list(range(1, len(shown) + 1))
        rt.exactly_once()
    finally:
        await rt.close()


async def test_the_client_reads_every_transition_of_a_compensated_run() -> None:
    """Retries, failures and compensation: what adds a detail is an event, the rest is in
    the rows; the client's ``events`` are all of them, in order."""
    rt = Runtime()
    try:
        handle = await rt.client.run(order_flow(), {"order_id": "t-1"}, execution_id="t-1")
        assert (await handle.result(timeout=60)).status == "failed"
        await rt.drained(["t-1"])
        history = await rt.client.history.get_execution("t-1")
        steps = [(e.phase, e.name, e.status, e.attempt) for e in history.events if e.kind == "step"]
        assert steps == [
            ("main", "reserve", "running", 1),
            ("main", "reserve", "completed", 1),
            ("main", "charge", "running", 1),
            ("main", "charge", "retrying", 1),
            ("main", "charge", "running", 2),
            ("main", "charge", "completed", 2),
            ("main", "ship", "running", 1),
            ("main", "ship", "failed", 1),
            ("compensation", "refund", "running", 1),
            ("compensation", "refund", "completed", 1),
            ("compensation", "release", "running", 1),
            ("compensation", "release", "completed", 1),
        ]
        assert [e.seq for e in history.events] == list(range(1, len(history.events) + 1))
        in_events = rt.d1.rows("SELECT name, status, attempt FROM wf_events WHERE kind = 'step' ORDER BY seq")
        assert [(e["name"], e["status"], e["attempt"]) for e in in_events] == [
            ("charge", "retrying", 1),
            ("charge", "running", 2),
            ("ship", "failed", 1),
        ]
    finally:
        await rt.close()


# -- the projection alone: the view against the events every record used to write ------------

_STEP = {"kind": "step", "name": "charge"}
_TRANSITIONS = [
    {**_STEP, "status": "running", "attempt": 1},
    {**_STEP, "status": "retrying", "attempt": 1, "error": {"code": "E"}, "retry_at": 9.0},
    {**_STEP, "status": "running", "attempt": 2},
    {**_STEP, "status": "completed", "attempt": 2},
]
"""A step's transitions, in the order its entry goes through them."""

_OTHERS = [
    {"kind": "sleep", "name": "nap", "status": "sleeping", "wake_at": 99.0},
    {"kind": "sleep", "name": "nap", "status": "completed"},
    {"kind": "wait", "name": "go", "status": "waiting", "event_type": "go"},
    {"kind": "wait", "name": "go", "status": "completed"},
    {**_STEP, "name": "plain", "status": "running", "attempt": 1},
    {**_STEP, "name": "plain", "status": "completed", "attempt": 1, "error": None},
    {**_STEP, "name": "untimed", "status": "running", "attempt": 1},
    {**_STEP, "name": "untimed", "status": "completed", "attempt": 1, "finished_at": None},
]


def _records() -> list[Record]:
    """One record per transition, each step's at its own time, as the engine writes them
    (a step's ``started_at`` is its first attempt's, ``finished_at`` its completion's)."""
    out = []
    seq = 0
    for op, entries in enumerate([_TRANSITIONS, _OTHERS[:2], _OTHERS[2:4], _OTHERS[4:6], _OTHERS[6:]]):
        first = None
        for entry in entries:
            seq += 1
            at = 10.0 * seq
            first = at if first is None else first
            value = {"started_at": first, **entry}  # an entry without the time keeps its None
            if value["status"] == "completed":
                value.setdefault("finished_at", at)
            out.append(Record(seq, at, "x", f"j:{op:08d}", value))
    return out


def _deliver(d1: LocalD1, records: list[Record]) -> None:
    for sql, args in projection(records):
        d1.rows(*inline_nulls(sql, args))


def _shown(d1: LocalD1) -> list[tuple[Any, ...]]:
    return [tuple(r[k] for k in ("at", *SHOWN)) for r in d1.rows("SELECT * FROM wf_transitions ORDER BY seq")]


def _events_of(records: list[Record]) -> list[tuple[Any, ...]]:
    """What the events table held for ``records`` when every record was an event."""
    columns = ("execution_id", "seq", "at", *SHOWN[1:])
    return [tuple(dict(zip(columns, step_event(r), strict=True))[k] for k in ("at", *SHOWN)) for r in records]


def test_the_view_shows_what_the_events_did() -> None:
    d1 = LocalD1()
    records = _records()
    _deliver(d1, records)
    assert _shown(d1) == _events_of(records)
    # Only the first attempt's start and the completion without a detail are in the row.
    kept = d1.rows("SELECT name, status, attempt FROM wf_events ORDER BY seq")
    assert [(e["name"], e["status"]) for e in kept] == [
        ("charge", "retrying"),
        ("charge", "running"),
        ("nap", "sleeping"),
        ("nap", "completed"),
        ("go", "waiting"),
        ("go", "completed"),
        ("plain", "completed"),  # a field of the event's detail, even empty: an event
        ("untimed", "completed"),  # without the time its row would show it at: an event
    ]
    d1.close()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_batches_delivered_in_order_and_again_show_each_transition_once(data: st.DataObject) -> None:
    """However the records are cut into batches, and whichever earlier batches are sent
    again (a crash between sending and deleting), the view shows each transition once."""
    records = _records()
    cuts = sorted(data.draw(st.sets(st.integers(1, len(records) - 1), max_size=len(records))))
    batches = [records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)], strict=True)]
    d1, whole = LocalD1(), LocalD1()
    for i, batch in enumerate(batches):
        _deliver(d1, batch)
        for again in data.draw(st.lists(st.integers(0, i), max_size=2)):
            _deliver(d1, batches[again])
    assert _shown(d1) == _events_of(records)
    # And each step's row is the one a single batch writes (a retry's time and error gone
    # once a later attempt runs, whichever of the two statements wrote the row).
    _deliver(whole, records)
    assert d1.rows("SELECT * FROM wf_steps ORDER BY op") == whole.rows("SELECT * FROM wf_steps ORDER BY op")
    d1.close()
    whole.close()


def test_a_quiet_record_sets_no_transition_of_the_row() -> None:
    """A recovered record D1 already holds (``quiet``) leaves the row's sequences alone:
    its transition is there under the sequence it was first sent with."""
    d1 = LocalD1()
    start = Record(1, 1.0, "x", "j:00000000", {**_STEP, "status": "running", "attempt": 1, "started_at": 1.0})
    done = Record(8, 2.0, "x", start.key, {**start.value, "status": "completed", "finished_at": 2.0})
    # A crash lost the completion's sequence: it is recovered with new ones, the start quiet.
    _deliver(d1, [start])
    for sql, args in projection([start._replace(seq=7), done], frozenset({7})):
        d1.rows(*inline_nulls(sql, args))
    # Then again, both D1 holds (a second crash before the records were deleted).
    for sql, args in projection([start._replace(seq=9), done._replace(seq=10)], frozenset({9, 10})):
        d1.rows(*inline_nulls(sql, args))
    shown = [(t["seq"], t["status"]) for t in d1.rows("SELECT * FROM wf_transitions ORDER BY seq")]
    assert shown == [(1, "running"), (8, "completed")]
    d1.close()


def test_a_quiet_record_an_earlier_release_sent_as_an_event_stays_one() -> None:
    """D1 holds a step's start as an event (sent before the upgrade); its recovered record
    is quiet and must not put it in the row too."""
    d1 = LocalD1()
    d1.rows("INSERT INTO wf_events VALUES ('x', 1, 1.0, 'step', 'main', 0, 'charge', 'running', 1, '{}')")
    start = Record(5, 1.0, "x", "j:00000000", {**_STEP, "status": "running", "attempt": 1, "started_at": 1.0})
    for sql, args in projection([start], frozenset({5})):
        d1.rows(*inline_nulls(sql, args))
    assert [t["seq"] for t in d1.rows("SELECT * FROM wf_transitions")] == [1]
    d1.close()


# -- migrations -----------------------------------------------------------------------------------


def test_each_migration_adds_the_names_a_missing_one_is_told_by() -> None:
    for migration, names in ADDED.items():
        assert all(name in MIGRATIONS[migration] for name in names)
    assert list(ADDED) == list(MIGRATIONS)[1:]


def _first_release_file(path: str) -> None:
    """A history file as the first release left it: schema 1, with a step's plain events."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.execute(
        "INSERT INTO wf_events VALUES ('old', 1, 1.0, 'step', 'main', 0, 'a', 'running', 1, '{}'), "
        "('old', 2, 2.0, 'step', 'main', 0, 'a', 'completed', 1, '{}')"
    )
    db.execute(
        "INSERT INTO wf_steps (execution_id, phase, op, name, kind, status, attempt, started_at, "
        "finished_at, errors, seq) VALUES ('old', 'main', 0, 'a', 'step', 'completed', 1, 1.0, 2.0, '[]', 2)"
    )
    db.commit()
    db.close()


async def test_a_file_of_the_first_schema_is_migrated_when_opened(tmp_path: Any) -> None:
    path = str(tmp_path / "h.d1")
    _first_release_file(path)
    d1 = LocalD1(path)
    try:
        old = d1.rows("SELECT seq, status FROM wf_transitions WHERE execution_id = 'old' ORDER BY seq")
        assert [(r["seq"], r["status"]) for r in old] == [(1, "running"), (2, "completed")]
        rt = Runtime(d1=d1)
        try:
            handle = await rt.client.run(_linear("migrated", 3), {}, execution_id="new")
            assert (await handle.result(timeout=60)).ok
            await rt.drained(["new"])
            rt.exactly_once()
        finally:
            await rt.ns.close()
    finally:
        d1.close()
    again = LocalD1(path)  # opening it again migrates nothing twice
    assert len(again.rows("SELECT * FROM wf_transitions WHERE execution_id = 'old'")) == 2
    again.close()


@pytest.mark.parametrize("missing", list(MIGRATIONS)[1:])
async def test_d1_without_a_later_migration_keeps_the_records_and_names_it(
    missing: str, caplog: pytest.LogCaptureFixture
) -> None:
    d1 = LocalD1(migrate=False)
    for name in list(MIGRATIONS)[: list(MIGRATIONS).index(missing)]:
        for sql in statements(MIGRATIONS[name]):
            d1.rows(sql)
    rt = Runtime(d1=d1)
    try:
        with caplog.at_level(logging.WARNING, logger="workkit_workflow.history"):
            handle = await rt.client.run(_linear("unmigrated", 3), {}, execution_id="u")
            assert (await handle.result(timeout=60)).ok
            await rt.clock.sleep(30)
        assert missing in caplog.text
        assert rt.d1.rows("SELECT * FROM wf_steps") == []
        await D1Port(d1).apply_schema()  # what `wrangler d1 migrations apply` does
        await rt.drained(["u"])
        assert [s["status"] for s in rt.table("wf_steps")] == ["completed"] * 3
        rt.exactly_once()
        await D1Port(d1).apply_schema()  # and again: nothing to do
    finally:
        await rt.close()


def test_plain_steps_go_a_hundred_to_a_row_and_plain_rows_seven_to_a_statement() -> None:
    """D1 bills rows written and may count each statement against a Worker invocation's
    queries (1,000 paid, 50 free): plain completed steps are entries of one page row per 100
    operations, and plain rows (steps still running) need no column of the rare fields, so
    7 go in one statement, not 5."""
    records = []
    for op in range(140):
        start = {**_STEP, "name": f"s{op}", "status": "running", "attempt": 1, "started_at": 1.0}
        done = {**start, "status": "completed", "finished_at": 2.0}
        records += [
            Record(2 * op + 1, 1.0, "x", f"j:{op:08d}", start),
            Record(2 * op + 2, 2.0, "x", f"j:{op:08d}", done),
        ]
    statements = projection(records)
    assert [(sql.split(" (")[0], len(args)) for sql, args in statements] == [("INSERT INTO wf_step_pages", 8)]
    assert None not in statements[0][1]
    started = projection(records[:140:2])
    assert len(started) == 10
    assert all(len(args) == 98 for _, args in started)
    retried = records[1]._replace(value={**records[1].value, "error": {"code": "E"}})
    tables = [sql.split(" (")[0] for sql, _ in projection([records[0], retried, *records[2:]])]
    # the retried step's row and its event apart
    assert tables == ["INSERT INTO wf_step_rows", "INSERT INTO wf_step_pages", "INSERT INTO wf_events"]


async def test_a_row_without_its_start_time_reads_without_failing() -> None:
    """A row whose start has no time (data no release writes) is read, not refused."""
    from workkit_workflow.history import HistoryQuery

    d1 = LocalD1()
    d1.rows(
        "INSERT INTO wf_executions (execution_id, workflow, status, phase, created_at, updated_at, seq) "
        "VALUES ('odd', 'w', 'running', 'main', 1.0, 1.0, 1)"
    )
    d1.rows(
        "INSERT INTO wf_step_rows (execution_id, phase, op, name, kind, status, attempt, errors, seq, "
        "started_seq) VALUES ('odd', 'main', 0, 'a', 'step', 'running', 1, '[]', 2, 2)"
    )
    history = await HistoryQuery(d1).get_execution("odd")
    assert [(e.seq, e.status, e.at) for e in history.events if e.kind == "step"] == [(2, "running", 0.0)]
    d1.close()


# -- a page of plain steps, projected straight from the bundles memory holds -----------------------


class _Core:
    execution_id = "p-1"
    workflow_name = "w"

    def now(self) -> float:
        return 10.0


def _entry(op: int, status: str, attempt: int, extra: dict[str, Any]) -> str:
    entry = {
        "v": 2,
        "kind": "step",
        "name": f"s{op}",
        "status": status,
        "attempt": attempt,
        "started_at": 1.0,
    }
    if attempt > 1:
        entry["attempt_started_at"] = 2.0
    if status == "completed":
        entry |= {"finished_at": 3.0, "output": {"op": op}}
    return jn.dumps(entry | extra)


_ODD = st.sampled_from(
    [
        {},
        {},
        {},
        {},
        {"errors": [{"code": "E"}]},
        {"errors": []},
        {"attempt_started_at": 2.5},
        {"started_at": 1.0005},  # no whole millisecond: a row
        {"name": None},
        {"error": {"code": "E"}},
        {"finished_at": None},
        {"restored_from": "x"},
        {"retry_at": 9.0},
        {"wake_at": 9.0},
        {"event_type": "go"},
    ]
)
_RARE = {"error", "restored_from", "retry_at", "wake_at", "event_type"}


async def _projected(statements: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """What D1 shows after ``statements`` (a step's row or a page's entry alike, and the
    execution's row)."""
    d1 = LocalD1()
    try:
        await D1Port(d1).batch(statements)
        shown = {
            view: d1.rows(f"SELECT * FROM {view} ORDER BY phase, op, seq")
            for view in ("wf_steps", "wf_transitions")
        }
        return shown | {"wf_executions": d1.rows("SELECT * FROM wf_executions ORDER BY execution_id")}
    finally:
        d1.close()


def _state(status: str, at: float) -> str:
    state = {"status": status, "phase": "main", "created_at": 0.5, "updated_at": at, "started_at": 0.5}
    if status == "completed":
        state |= {"finished_at": at}
    return jn.encode_record(jn.STATE, state, what="state")


_META = jn.encode_record(
    jn.META,
    {"execution_id": "p-1", "workflow": "w", "version": None, "input": {"n": 1}, "created_at": 0.5},
    what="meta",
)


@settings(max_examples=200, deadline=None)
@given(st.data())
async def test_a_plain_page_projects_as_its_records_do(data: st.DataObject) -> None:
    """Whatever the commits (the execution's creation, a completion and the next start, a
    start alone, a retry's start, a completion with fields a plain one lacks, the
    execution's end with its last completion), the page's statements straight from the
    values the engine handed over, or from the commits' texts where it did not, show in D1
    what its records' statements show, or there are none and the records are used."""
    outbox = Outbox(_Core(), LocalD1())  # type: ignore[arg-type]
    found: dict[str, str] = {}
    op = 0
    if data.draw(st.booleans()):
        found |= outbox.capture({jn.META: _META, jn.STATE: _state("running", 0.5)})
    for _ in range(data.draw(st.integers(1, 12))):
        shape = data.draw(st.sampled_from(["next", "next", "next", "start", "retry"]))
        puts = {}
        if shape in ("next", "retry"):
            puts[jn.op_key(jn.MAIN, op)] = _entry(
                op, "completed", 1 if shape == "next" else 2, data.draw(_ODD)
            )
            op += 1
        puts[jn.op_key(jn.MAIN, op)] = _entry(op, "running", 2 if shape == "retry" else 1, {})
        handed = data.draw(st.sampled_from([True, True, True, False]))
        entries = {key: jn.loads(text) for key, text in puts.items()} if handed else None
        found |= outbox.capture(puts, entries)
    if data.draw(st.booleans()):
        # The end: the last step's completion and the execution's (the engine hands the step's value).
        last = {jn.op_key(jn.MAIN, op): _entry(op, "completed", 1, data.draw(_ODD))}
        found |= outbox.capture(
            last | {jn.STATE: _state("completed", 4.0)}, {k: jn.loads(v) for k, v in last.items()}
        )
    found = {k: v for k, v in found.items() if k.startswith("o:0")}
    outbox._settle_tail()  # the run's bundles, keyed as a delivery of more than the tail would
    found = {k: found.get(k, "") for k in sorted(set(found) | set(outbox._memory))}
    fast = outbox._plain_statements(found)
    slow = projection(await outbox._records(found))
    assert fast is None or await _projected(fast) == await _projected(slow)
    values = [
        p.entry or jn.loads(p.text) for b in outbox._held.values() for p in b.pieces if p.key != jn.STATE
    ]
    plain = all(value["status"] == "completed" or value["attempt"] == 1 for value in values)
    odd = any(
        not value.keys().isdisjoint(_RARE)
        or (value["status"] == "completed" and value["finished_at"] is None)
        for value in values
    )
    assert (fast is not None) == (plain and not odd)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"errors": [{"code": "E"}]},
        {"errors": []},
        {"attempt_started_at": 2.5},
        {"attempt_started_at": 1.0},
        {"started_at": 1.0005},
        {"finished_at": 3.0005},
        {"name": None},
        {"name": 'a "quoted" \\ name'},
        {"attempt": 0},
    ],
)
async def test_a_first_attempt_completion_unlike_the_usual_one_projects_as_its_records_do(
    extra: dict[str, Any],
) -> None:
    """``plain_projection`` writes the usual completion's page entry itself and leaves any
    other to ``page_step``: one in the middle of a page of usual ones, their instants'
    texts known, shows in D1 what the records' statements show."""
    outbox = Outbox(_Core(), LocalD1())  # type: ignore[arg-type]
    found: dict[str, str] = {}
    for op in range(4):
        puts = {}  # as the engine writes them: a completion, then the next step's start
        if op:
            puts[jn.op_key(jn.MAIN, op)] = _entry(op, "completed", 1, extra if op == 2 else {})
        puts[jn.op_key(jn.MAIN, op + 1)] = _entry(op + 1, "running", 1, {})
        entries = {key: jn.loads(text) for key, text in puts.items()}
        found |= {k: v for k, v in outbox.capture(puts, entries).items() if k.startswith("o:0")}
    outbox._settle_tail()  # the run's bundles, keyed as a delivery of more than the tail would
    found = {k: found.get(k, "") for k in sorted(set(found) | set(outbox._memory))}
    fast = outbox._plain_statements(found)
    assert fast is not None
    assert await _projected(fast) == await _projected(projection(await outbox._records(found)))


def test_the_rare_fields_are_the_columns_a_plain_row_leaves_out() -> None:
    from workkit_workflow.history import _projection as p

    full, plain = (columns.split(", ") for columns in (p._STEP_COLUMNS, p._PLAIN_COLUMNS))
    assert tuple(c for c in full if c not in plain) == p._RARE
    assert [c for c in full if c in p._RARE or c in plain] == full


_TIME = st.floats(1.0, 2e9, allow_nan=False)
_PLAIN_ENTRY = st.fixed_dictionaries(
    {"started_at": _TIME},
    optional={
        # A compact entry may leave out what is at its default.
        "name": st.text(max_size=8),
        "kind": st.just("step"),
        "status": st.sampled_from(["running", "completed"]),
        "attempt": st.integers(0, 5),
        "v": st.just(2),
        "attempt_started_at": _TIME,
        "finished_at": _TIME,
        "errors": st.lists(st.fixed_dictionaries({"code": st.text(max_size=4)}), max_size=2),
        "output": st.integers(),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    _PLAIN_ENTRY,
    st.sampled_from([jn.MAIN, jn.COMPENSATION]),
    st.integers(0, 10**6),
    st.integers(1, 10**6),
    st.none() | st.integers(1, 10**6),
    st.none() | st.integers(1, 10**6),
)
def test_a_plain_row_is_the_step_row_of_its_entry(
    entry: dict[str, Any], prefix: str, op: int, seq: int, started: int | None, finished: int | None
) -> None:
    """``plain_projection`` builds each row with ``plain_row``, which skips what a plain
    entry cannot hold: the row is ``_step_row``'s, whatever the entry's optional fields."""
    from workkit_workflow.history import _plain
    from workkit_workflow.history import _projection as p

    key = jn.op_key(prefix, op)
    expected = p._step_row("e-1", key, entry, seq, started, finished)
    assert _plain.plain_row("e-1", key, entry, seq, started, finished) == expected
    assert len(expected) == p._PLAIN_WIDTH
