"""Plain completed steps are entries of a page row (schema version 3, ``_schema``).

``wf_step_pages`` holds, per execution, phase and 100 operations, the steps that completed
plainly; ``wf_step_rows`` every other step's row; the ``wf_steps`` view shows each step
once, from its page entry when both hold it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from test_history_projection import Runtime
from test_history_transitions import _deliver, _first_release_file, _linear
from workkit_workflow.engine import _journal as jn
from workkit_workflow.history import LocalD1
from workkit_workflow.history._bundle import Record
from workkit_workflow.history._d1 import inline_nulls
from workkit_workflow.history._pages import Pages, page_step
from workkit_workflow.history._projection import projection
from workkit_workflow.history._schema import PAGE_OPS

_STEP = {"v": 2, "kind": "step", "name": "charge"}


def _start(op: int, seq: int, at: float = 1.0) -> Record:
    value = {**_STEP, "name": f"s{op}", "status": "running", "attempt": 1, "started_at": at}
    return Record(seq, at, "x", f"j:{op:08d}", value)


def _done(start: Record, seq: int, at: float = 2.0) -> Record:
    return Record(seq, at, "x", start.key, {**start.value, "status": "completed", "finished_at": at})


def _steps(d1: LocalD1) -> list[tuple[Any, ...]]:
    rows = d1.rows("SELECT op, status, started_at, finished_at, seq, started_seq, finished_seq FROM wf_steps")
    return sorted(tuple(r.values()) for r in rows)


def _transitions(d1: LocalD1) -> list[tuple[Any, ...]]:
    return [(t["seq"], t["op"], t["status"]) for t in d1.rows("SELECT * FROM wf_transitions ORDER BY seq")]


def test_a_step_started_in_one_delivery_and_completed_in_the_next_shows_once() -> None:
    """Its start is a row (running), its completion a page entry: the view shows the
    completion, with the start's sequence from the row, and both transitions."""
    d1 = LocalD1()
    start = _start(0, 1)
    _deliver(d1, [start])
    assert _steps(d1) == [(0, "running", 1.0, None, 1, 1, None)]
    _deliver(d1, [_done(start, 2), _start(1, 3), _done(_start(1, 3), 4)])
    assert d1.rows("SELECT count(*) AS n FROM wf_step_rows")[0]["n"] == 1  # the start's, hidden
    assert _steps(d1) == [(0, "completed", 1.0, 2.0, 2, 1, 2), (1, "completed", 1.0, 2.0, 4, 3, 4)]
    assert _transitions(d1) == [
        (1, 0, "running"),
        (2, 0, "completed"),
        (3, 1, "running"),
        (4, 1, "completed"),
    ]
    d1.close()


def test_a_page_written_by_several_deliveries_or_twice_holds_each_step_once() -> None:
    """A page's row merges what each delivery adds; a delivery repeated (after a crash
    before its records were deleted), or late, changes nothing."""
    d1 = LocalD1()
    records = []
    for op in range(150):
        start = _start(op, 2 * op + 1, 1.0 + op)
        records += [start, _done(start, 2 * op + 2, 1.5 + op)]
    batches = [records[:50], records[50:170], records[170:]]
    for batch in [*batches, batches[1], batches[0]]:
        _deliver(d1, batch)
    assert [r["block"] for r in d1.rows("SELECT block FROM wf_step_pages ORDER BY block")] == [0, 1]
    shown = _steps(d1)
    assert [s[0] for s in shown] == list(range(150))
    assert all(status == "completed" for _, status, *_ in shown)
    assert shown[100] == (100, "completed", 101.0, 101.5, 202, 201, 202)
    assert len(_transitions(d1)) == 300
    assert d1.rows("SELECT count(*) AS n FROM wf_step_rows")[0]["n"] == 0
    d1.close()


def test_a_completion_with_failed_attempts_or_an_odd_instant_is_a_row() -> None:
    """A page entry holds no failed attempt and only whole milliseconds: anything else is a
    row of its own, shown as the records say."""
    retried = _done(_start(0, 1), 2)
    retried = retried._replace(value={**retried.value, "errors": [{"code": "E"}], "attempt": 2})
    odd = _done(_start(1, 3, 1.0), 4, 2.0001)  # a tenth of a millisecond
    assert not page_step({}, odd.key, odd.value, 4, 3)
    assert not page_step({}, retried.key, retried.value, 2, 1)
    assert page_step({}, "j:00000002", _done(_start(2, 5), 6).value, 6, 5)
    for odd_instant in ([1.0], {"at": 1.0}, "1.0", None, float("nan"), float("inf"), 1e300):
        strange = {**_done(_start(3, 7), 8).value, "started_at": odd_instant}
        assert not page_step({}, "j:00000003", strange, 8, 7)
    statements = projection([_start(0, 1), retried, _start(1, 3), odd])
    assert [sql.split(" (")[0] for sql, _ in statements] == ["INSERT INTO wf_step_rows"]
    d1 = LocalD1()
    for sql, args in statements:
        d1.rows(*inline_nulls(sql, args))
    assert [(s[0], s[3]) for s in _steps(d1)] == [(0, 2.0), (1, 2.0001)]
    d1.close()


def test_a_step_is_on_the_page_the_view_looks_for_it_on() -> None:
    """``page_step`` reads the page off the journal key; the view finds it by ``op / 100``."""
    for op in (0, 99, 100, 12_345, 99_999_999, 100_000_000, 2_000_000_123):
        pages: Pages = {}
        done = _done(_start(op, 1), 2)
        assert page_step(pages, jn.op_key(jn.MAIN, op), done.value, 2, 1)
        assert [int(block[2:]) for block in pages] == [op // PAGE_OPS]


def test_instants_come_back_from_a_page_as_the_floats_they_were() -> None:
    """An instant is written as whole milliseconds and read back through ``/ 1000.0``: the
    same float, for the instants the engine writes (``_now_to_the_millisecond``)."""
    d1 = LocalD1()
    records = []
    at = 1_796_196_903.961
    for op in range(64):
        start = _start(op, 2 * op + 1, at)
        records += [start, _done(start, 2 * op + 2, round((at + op * 0.0123) * 1000) / 1000)]
        at = round((at + 1234.567) * 1000) / 1000
    _deliver(d1, records)
    shown = {s[0]: s for s in _steps(d1)}
    for done in records[1::2]:
        op = int(done.key[2:])
        assert shown[op][2:4] == (done.value["started_at"], done.value["finished_at"])
    d1.close()


async def test_a_long_run_writes_a_page_row_per_100_steps() -> None:
    rt = Runtime()
    try:
        handle = await rt.client.run(_linear("paged", 200), {}, execution_id="long")
        assert (await handle.result(timeout=120)).ok
        await rt.drained(["long"])
        steps = rt.d1.rows("SELECT op, status FROM wf_steps WHERE execution_id = 'long' ORDER BY op")
        assert [(s["op"], s["status"]) for s in steps] == [(op, "completed") for op in range(200)]
        pages = rt.d1.rows("SELECT block FROM wf_step_pages WHERE execution_id = 'long' ORDER BY block")
        assert [p["block"] for p in pages] == [0, 1]
        written = rt.d1.rows("SELECT count(*) AS n FROM wf_step_rows WHERE execution_id = 'long'")[0]["n"]
        assert written < 10  # a page's last step while it runs
        rt.exactly_once()
    finally:
        await rt.close()


def test_a_file_of_the_first_schema_keeps_its_step_rows_when_migrated(tmp_path: Any) -> None:
    path = str(tmp_path / "h.d1")
    _first_release_file(path)
    d1 = LocalD1(path)
    assert _steps(d1) == [(0, "completed", 1.0, 2.0, 2, None, None)]
    d1.close()
    with sqlite3.connect(path) as db:
        kinds = dict(db.execute("SELECT name, type FROM sqlite_master WHERE name LIKE 'wf_step%'").fetchall())
    assert kinds == {"wf_steps": "view", "wf_step_rows": "table", "wf_step_pages": "table"}
