"""The history outbox inside the core's write: which writes are events, what a record holds."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from workkit_workflow.engine import _journal as jn
from workkit_workflow.history import LocalD1, _capture
from workkit_workflow.history._outbox import HEAD, SEQ_BLOCK, Outbox
from workkit_workflow.history._records import records_of


def _outbox_of(execution_id: str = "x") -> Outbox:
    core = SimpleNamespace(execution_id=execution_id, workflow_name="w", now=lambda: 5.0)
    return Outbox(core, LocalD1())  # type: ignore[arg-type]


def _records(written: dict[str, str]) -> list[Any]:
    return [r for k, v in written.items() if k != HEAD for r in records_of(k, v, "x")]


def _state(**changes: Any) -> dict[str, str]:
    state = {"status": "running", "phase": "main", "created_at": 1.0, "updated_at": 2.0} | changes
    return {jn.STATE: jn.encode_record(jn.STATE, state, what="state")}


def test_a_state_write_is_an_event_only_when_what_it_shows_changes() -> None:
    outbox = _outbox_of()
    assert [r.value["status"] for r in _records(outbox.capture(_state()))] == ["running"]
    assert outbox.capture(_state(updated_at=3.0)) == {}  # the clock alone moved
    failed = _records(outbox.capture(_state(error={"code": "Boom", "message": "no"})))
    assert [r.value["error"]["code"] for r in failed] == ["Boom"]
    other = _records(outbox.capture(_state(error={"code": "Other", "message": "no"})))
    assert [r.value["error"]["code"] for r in other] == ["Other"]
    assert outbox.capture(_state(error={"code": "Other", "message": "another text"})) == {}


def test_a_head_written_before_reservations_moves_sequences_past_its_seq() -> None:
    """An earlier release's head holds the last sequence used as ``seq``: never reused."""
    outbox = _outbox_of()
    outbox.load({HEAD: jn.encode_record(HEAD, {"seq": 17, "last": None}, what="head")}, complete=False)
    written = outbox.capture(_state())
    assert [r.seq for r in _records(written)] == [18]
    assert jn.loads(written[HEAD])["reserved"] == 18 + SEQ_BLOCK


def test_history_that_cannot_be_recorded_never_fails_the_write(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(key: str, text: str) -> Any:
        raise RuntimeError("a bug in the history")

    monkeypatch.setattr(_capture, "step_piece", broken)
    step = jn.dumps({"v": 2, "kind": "step", "name": "s", "status": "running", "attempt": 1})
    with caplog.at_level(logging.ERROR, logger="workkit_workflow.history"):
        assert _outbox_of().capture({"j:00000000": step}) == {}
    assert "could not record history for this write" in caplog.text
    assert "a bug in the history" in caplog.text


def _step(op: int, status: str) -> dict[str, str]:
    entry = {"v": 2, "kind": "step", "name": f"s{op}", "status": status, "attempt": 1, "started_at": 1.0}
    return {jn.op_key(jn.MAIN, op): jn.dumps(entry)}


def test_a_state_write_after_step_commits_is_compared_with_the_last_state_written() -> None:
    outbox = _outbox_of()
    assert _records(outbox.capture(_state()))
    outbox.capture(_step(0, "running"))  # kept in memory: it carries no summary
    assert outbox.capture(_state(updated_at=3.0)) == {}  # what it shows did not change


def test_the_summary_a_loaded_head_holds_is_written_again_by_the_next_head() -> None:
    """A head from an earlier instance: its ``last`` goes on in the head this one writes."""
    summary = ["running", "main", None, [], None, None, None]
    outbox = _outbox_of()
    outbox.load(
        {HEAD: jn.encode_record(HEAD, {"seq": 17, "reserved": 17, "last": summary}, what="head")},
        complete=False,
    )
    written = outbox.capture(_step(3, "running"))  # the first kept in memory: it writes the mark
    assert jn.loads(written[HEAD])["last"] == summary
    assert outbox.capture(_state(updated_at=3.0)) == {}  # the same summary: no event
