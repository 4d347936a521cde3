"""The completed step entry spliced from its running entry's text is the text a
full encode gives (the step's hot path relies on it; see phase/_attempt.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from workkit_workflow import workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine.phase._attempt import (
    completed_envelope,
    hash_key,
    keyed_completed_envelope,
    keyed_running_text,
)
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

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


KEYS = ["charge:o-1", 'quo"te', "back\\slash", "ünï ✓", "tab\tkey", "k" * 300]


CLOCK_INSTANTS = (1_767_225_600.123, 1_767_225_600.124)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key_text", KEYS)
@pytest.mark.parametrize(
    ("started_at", "finished_at"), [CLOCK_INSTANTS, (1_767_225_600, 1_767_225_601.5), (0.1, 1e21)]
)
def test_a_keyed_entry_written_out_is_the_full_encode(
    name: str, key_text: str, started_at: float, finished_at: float
) -> None:
    key = jn.op_key(jn.MAIN, 4)
    key_hash = hash_key(key_text)
    running = {
        "v": jn.OP_VERSION,
        "kind": "step",
        "name": name,
        "status": "running",
        "attempt": 1,
        "started_at": started_at,
        "idempotency_key": key_text,
        "idempotency_hash": key_hash,
    }
    assert keyed_running_text(name, 1, started_at, key_text, key_hash) == jn.encode_entry(key, running)
    completed = {**running, "status": "completed", "finished_at": finished_at}
    del completed["idempotency_key"]  # as the step journals it: the hash stays, the key goes
    envelope = keyed_completed_envelope(jn.encode_entry(key, running), finished_at)
    assert envelope == jn.encode_entry(key, completed)
    # A replay reads it in place, key hash and output, when its name has no escape and its
    # instants are a clock's (a fraction, no exponent); any other is decoded whole.
    text = envelope[:-1] + ',"output":[1]}'
    assert jn.decode_record(key, text)["idempotency_hash"] == key_hash
    in_place = jn.dumps(name) == f'"{name}"' and (started_at, finished_at) == CLOCK_INSTANTS
    assert jn.completed_step_output(text, name) == ((key_hash, [1]) if in_place else None)


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(min_size=1, max_size=40),
    key_text=st.text(min_size=1, max_size=40),
    started_at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    attempt=st.integers(1, 9),
)
def test_keyed_texts_match_the_encoder_for_any_text(
    name: str, key_text: str, started_at: float, attempt: int
) -> None:
    assume(jn.is_unicode(name) and jn.is_unicode(key_text))  # else refused before any entry is built
    key_hash = hash_key(key_text)
    running = {
        "v": jn.OP_VERSION, "kind": "step", "name": name, "status": "running", "attempt": attempt,
        "started_at": started_at, "idempotency_key": key_text, "idempotency_hash": key_hash,
    }  # fmt: skip
    key = jn.op_key(jn.MAIN, 0)
    assert keyed_running_text(name, attempt, started_at, key_text, key_hash) == jn.encode_entry(key, running)
    completed = {k: v for k, v in running.items() if k != "idempotency_key"}
    completed.update(status="completed", finished_at=started_at + 1.5)
    envelope = keyed_completed_envelope(jn.encode_entry(key, running), started_at + 1.5)
    assert envelope == jn.encode_entry(key, completed)


HELD: dict[str, asyncio.Event] = {}


async def held(name: str) -> str:
    await HELD[name].wait()
    return name


@workflow(unique("texts"))
async def texts_flow(ctx: Any, input: Any) -> Any:
    for name in NAMES:
        await ctx.step(name, held, name)
    return len(NAMES)


async def test_the_texts_a_new_step_journals_are_the_encoders(env: WorkflowTestEnv) -> None:
    """The running and completed entries the step's hot path writes out itself
    (``run_new_step``) are byte for byte what ``encode_entry`` gives for their values."""
    HELD.clear()
    HELD.update({name: asyncio.Event() for name in NAMES})
    handle = await env.start(texts_flow, None)

    def stored() -> dict[str, str]:
        return env.ns.backend.list(handle.execution_id, jn.MAIN, None, None, None, False)

    for op, name in enumerate(NAMES):
        await env.settle()
        key = jn.op_key(jn.MAIN, op)
        running = stored()[key]  # the step waits: its running entry is stored
        fields = json.loads(running)
        assert list(fields) == ["v", "kind", "name", "status", "attempt", "started_at"]
        assert (fields["name"], fields["status"], fields["attempt"]) == (name, "running", 1)
        assert running == jn.encode_entry(key, fields)
        HELD[name].set()
    assert (await env.result(handle)).value == len(NAMES)
    for op, (key, text) in enumerate(stored().items()):
        fields = json.loads(text)
        assert (fields["status"], fields["output"]) == ("completed", NAMES[op])
        assert text == jn.encode_entry(key, fields)
