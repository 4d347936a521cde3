"""The completed step entry spliced from its running entry's text is the text a
full encode gives (the step's hot path relies on it; see phase/_attempt.py)."""

from __future__ import annotations

from typing import Any

import pytest

from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine.phase._attempt import completed_envelope

NAMES = [
    "plain",
    'quote " inside',
    '"status":"running"',
    'x","status":"running',
    "back\\slash",
    "ünïcödé ✓",
    "new\nline",
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("finished_at", [1_767_225_600.123456, 1_767_225_600, 0.1])
def test_completed_envelope_is_the_full_encode(name: str, finished_at: float) -> None:
    running: dict[str, Any] = {
        "v": jn.OP_VERSION,
        "kind": "step",
        "name": name,
        "status": "running",
        "attempt": 2,
        "started_at": 1_767_225_599.5,
        "attempt_started_at": 1_767_225_600.0,
        "failures": 1,
        "errors": [{"message": '"status":"running"', "code": "x"}],
    }
    key = jn.op_key(jn.MAIN, 7)
    completed = {**running, "status": "completed", "finished_at": finished_at}
    spliced = completed_envelope(jn.encode_entry(key, running), finished_at)
    assert spliced == jn.encode_entry(key, completed)
    assert jn.decode_record(key, spliced[:-1] + ',"output":1}')["status"] == "completed"


@pytest.mark.parametrize("name", [*NAMES, "tab\there", "\x00nul", "emoji 🚀", "a" * 256])
@pytest.mark.parametrize("started_at", [1_767_225_600.123, 1_767_225_600.123456, 1_767_225_600, 0.1, 1e21])
@pytest.mark.parametrize("attempt", [1, 7])
def test_the_running_entry_written_out_is_the_full_encode(name: str, started_at: float, attempt: int) -> None:
    running = {
        "v": jn.OP_VERSION,
        "kind": "step",
        "name": name,
        "status": "running",
        "attempt": attempt,
        "started_at": started_at,
    }
    text = jn.running_step_text(name, attempt, started_at)
    assert text == jn.encode_entry(jn.op_key(jn.MAIN, 3), running)
    assert jn.decode_record(jn.op_key(jn.MAIN, 3), text)["name"] == name
