"""An execution's input is in its first history record only: a batch that also holds a
newer record of that execution still projects it."""

from __future__ import annotations

import sqlite3

from workkit_workflow.history._bundle import Record
from workkit_workflow.history._projection import projection
from workkit_workflow.history._schema import SCHEMA, TRANSITIONS


def _run(records: list[Record], db: sqlite3.Connection) -> None:
    for sql, args in projection(records):
        db.execute(sql, args)


def _created(seq: int) -> Record:
    row = {"status": "pending", "workflow": "w", "input": {"n": 1}, "restarted_from": {"execution_id": "x-0"}}
    return Record(seq, 1.0, "x-1", "state", row)


def _running(seq: int) -> Record:
    return Record(seq, 2.0, "x-1", "state", {"status": "running", "workflow": "w"})


def _row(db: sqlite3.Connection) -> tuple[str, str, str]:
    return db.execute("SELECT status, input, restarted_from FROM wf_executions").fetchone()


def test_the_input_travels_with_a_newer_record_of_the_same_batch() -> None:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA + TRANSITIONS)
    _run([_created(1), _running(2)], db)
    assert _row(db) == ("running", '{"n":1}', '{"execution_id":"x-0"}')


def test_a_later_batch_keeps_the_input() -> None:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA + TRANSITIONS)
    _run([_created(1)], db)
    _run([_running(2)], db)
    assert _row(db) == ("running", '{"n":1}', '{"execution_id":"x-0"}')
