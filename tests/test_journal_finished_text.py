"""A replay reads what a finished wait, child or sleep returned from its entry's text,
decoding nothing else (``engine._journal.finished_op_output``, ``PhaseRun.finished_from_text``),
as it does for a completed step (``test_journal_step_text``).

What must hold is what holds when the whole entry is decoded: the same output (types
included), another operation's text is not read as this one's, a damaged entry is left to
``decode_record`` (which refuses it), and a text read this way is one it accepts.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_journal_step_text import OUTPUTS, count_entry_decodes
from workkit_workflow import WorkflowContext, workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine import _pages
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

TURNS = 12


@workflow(unique("finished-kid"))
async def kid(ctx: WorkflowContext, input: Any) -> Any:
    return input


def looping() -> Any:
    """Each turn waits for an event, sleeps, and runs a child that returns the payload."""

    @workflow(unique("finished-loop"))
    async def loop(ctx: WorkflowContext, input: Any) -> Any:
        seen = []
        for turn in range(TURNS):
            payload = await ctx.wait_for_event(f"wait-{turn}", "tick")
            await ctx.sleep(f"nap-{turn}", 0.5)
            seen.append(await ctx.child(kid, payload, name=f"echo-{turn}"))
        await ctx.wait_for_event("last", "go")
        return json.dumps(seen)  # the types as JSON tells them (1.0 is not 1)

    return loop


async def _parked_loop(env: WorkflowTestEnv) -> Any:
    """A loop that went through every turn (payloads from OUTPUTS) and waits for "go"."""
    handle = await env.run(looping(), None)
    for turn in range(TURNS):
        await handle.send_event("tick", OUTPUTS[turn % len(OUTPUTS)])
        await env.settle()
        await env.clock.sleep(1.0)  # past the nap (virtual time)
        await env.settle()
    assert (await handle.describe())["waiting_for"] == ["go"]
    return handle


def _finished_texts(env: WorkflowTestEnv, execution_id: str) -> dict[str, str]:
    return {
        key: text
        for key, text in env.ns.backend.list(execution_id, jn.MAIN, None, None, None, False).items()
        if '"status":"completed"' in text
    }


async def test_the_output_read_from_each_text_is_the_decoded_entrys(env: WorkflowTestEnv) -> None:
    handle = await _parked_loop(env)
    texts = _finished_texts(env, handle.execution_id)
    assert len(texts) == 3 * TURNS
    for key, text in texts.items():
        entry = jn.decode_record(key, text)
        read = jn.finished_op_output(text, jn.op_of(key), entry["kind"], entry["name"])
        assert read is not jn.NOT_PLAIN, text
        decoded = entry.get("output")
        assert read == decoded and json.dumps(read) == json.dumps(decoded), text
        assert type(read) is type(decoded)
        # Not this operation's: another position, name or kind.
        assert jn.finished_op_output(text, jn.op_of(key) + 1, entry["kind"], entry["name"]) is jn.NOT_PLAIN
        assert jn.finished_op_output(text, jn.op_of(key), entry["kind"], "other") is jn.NOT_PLAIN
        other = "wait" if entry["kind"] != "wait" else "sleep"
        assert jn.finished_op_output(text, jn.op_of(key), other, entry["name"]) is jn.NOT_PLAIN


WAIT = (
    '{"v":2,"op":3,"kind":"wait","name":"w","status":"completed","event_type":"tick",'
    '"started_at":1796071795.609,"wake_at":null,"finished_at":1796071795.859,'
    '"event_id":"e-1","output":{"a":[1,2.5]}}'
)
SLEEP = (
    '{"v":2,"op":3,"kind":"sleep","name":"w","status":"completed","started_at":1796071795.609,'
    '"wake_at":1796071796.609,"finished_at":1796071796.61}'
)


def test_the_layouts_written_by_hand_read_as_decoding_does() -> None:
    assert jn.finished_op_output(WAIT, 3, "wait", "w") == {"a": [1, 2.5]}
    assert jn.finished_op_output(WAIT.replace('"e-1"', "null"), 3, "wait", "w") == {"a": [1, 2.5]}
    timed = WAIT.replace('"wake_at":null', '"wake_at":1796071805.609')
    assert jn.finished_op_output(timed, 3, "wait", "w") == {"a": [1, 2.5]}
    assert jn.finished_op_output(SLEEP, 3, "sleep", "w") is None


@pytest.mark.parametrize("named", ['"w\\"1"', '"w\\\\1"', '"w\\t1"', '"w\\u00e91"'])
def test_a_name_written_with_an_escape_is_left_to_decode_record(named: str) -> None:
    for text, kind in ((WAIT, "wait"), (SLEEP, "sleep")):
        escaped = text.replace('"name":"w"', f'"name":{named}')
        name = json.loads(named)
        assert jn.finished_op_output(escaped, 3, kind, name) is jn.NOT_PLAIN
        assert jn.decode_record("j:00000003", escaped)["name"] == name


def test_a_name_outside_ascii_is_read_from_its_text_and_only_at_its_position() -> None:
    text = WAIT.replace('"name":"w"', '"name":"wé✓"')
    assert jn.finished_op_output(text, 3, "wait", "wé✓") == {"a": [1, 2.5]}
    assert jn.finished_op_output(text, 3, "wait", "w") is jn.NOT_PLAIN
    assert jn.finished_op_output(text, 30, "wait", "wé✓") is jn.NOT_PLAIN
    assert jn.finished_op_output(WAIT.replace('"op":3', '"op":03'), 3, "wait", "w") is jn.NOT_PLAIN
    assert jn.finished_op_output(None, 3, "wait", "w") is jn.NOT_PLAIN


@pytest.mark.parametrize(
    ("text", "kind", "why"),
    [
        (WAIT.replace('"e-1"', '"e\\"1"'), "wait", "an event id with an escape"),
        (WAIT.replace('"tick"', '"ti\\u0063k"'), "wait", "an event type with an escape"),
        (WAIT.replace('"completed"', '"waiting"'), "wait", "a wait not over"),
        (WAIT.replace('"completed"', '"failed"'), "wait", "a wait that timed out"),
        (WAIT.replace("1796071795.859", "x"), "wait", "a damaged time"),
        (WAIT.replace("1796071795.859", "-1.0"), "wait", "a negative time"),
        (WAIT.replace("1796071795.859", "1e16"), "wait", "a time with an exponent"),
        (WAIT.replace('"wake_at":null', '"wake_at":nul'), "wait", "a damaged null"),
        (WAIT[:-1], "wait", "a truncated entry"),
        (WAIT + " ", "wait", "text after the entry"),
        (WAIT[:-1] + ',"x":2}', "wait", "a field after the output"),
        (WAIT.replace('{"a":[1,2.5]}', '{"a":[1,2.5}'), "wait", "a damaged output"),
        (WAIT.replace('"event_id"', '"x":1,"event_id"'), "wait", "an extra field"),
        (WAIT.replace('"v":2', '"v":1'), "wait", "version 1"),
        (WAIT.replace("{", "{ ", 1), "wait", "whitespace"),
        (SLEEP[:-1] + ',"x":2}', "sleep", "a field after the last"),
        (SLEEP.replace('"wake_at":1796071796.609', '"wake_at":null'), "sleep", "a sleep with no time"),
        (SLEEP + "}", "sleep", "text after the entry"),
    ],
)
def test_any_other_text_is_left_to_decode_record(text: str, kind: str, why: str) -> None:
    assert jn.finished_op_output(text, 3, kind, "w") is jn.NOT_PLAIN, why


@settings(max_examples=400, deadline=None)
@given(
    at=st.integers(0, len(WAIT) - 1),
    char=st.sampled_from('{}[]",:.0123456789-eE xnul\\'),
    cut=st.booleans(),
)
def test_a_text_read_this_way_is_one_decode_record_reads_the_same(at: int, char: str, cut: bool) -> None:
    # A damaged entry: one character replaced, or the text cut there.
    text = WAIT[:at] if cut else WAIT[:at] + char + WAIT[at + 1 :]
    output = jn.finished_op_output(text, 3, "wait", "w")
    if output is jn.NOT_PLAIN:
        return
    record = jn.decode_record("j:00000003", text)
    assert record["output"] == output and record["status"] == "completed" and record["kind"] == "wait"
    assert record["op"] == 3 and record["name"] == "w"


@pytest.fixture(params=["paged", "whole"])
def pages(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A journal read by pages of four, or one the drive's first read holds whole."""
    if request.param == "paged":
        monkeypatch.setattr(_pages, "FIRST_READ", 8)
        monkeypatch.setattr(_pages, "PAGE", 4)
    return str(request.param)


async def test_a_cold_replay_decodes_no_finished_wait_sleep_or_child(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch, pages: str
) -> None:
    handle = await _parked_loop(env)
    decoded = count_entry_decodes(monkeypatch)
    env.ns.evict(handle.execution_id)  # a cold object: the replay reads the journal's texts
    await handle.send_event("go", "now")
    result = await env.result(handle)
    assert result.ok
    assert result.value == json.dumps([OUTPUTS[turn % len(OUTPUTS)] for turn in range(TURNS)])
    # Only the last wait, reached and resumed, is decoded (by pages, the first operation of
    # each is decoded too: the page was read to reach it).
    last = 3 * TURNS
    expected = {jn.op_key(jn.MAIN, last)}
    if pages == "paged":
        expected.update(jn.op_key(jn.MAIN, op) for op in range(0, last, _pages.PAGE))
    assert set(decoded) == expected and set(decoded.values()) == {1}, decoded


async def test_a_replay_in_a_gather_reads_each_branch_from_its_text(env: WorkflowTestEnv) -> None:
    # Operations called together take their positions in call order: each branch's text is
    # read as its own, and the outputs come back in order.
    @workflow(unique("finished-gather"))
    async def fan(ctx: WorkflowContext, input: Any) -> Any:
        got = await asyncio.gather(*(ctx.wait_for_event(f"w{n}", f"t{n}") for n in range(4)))
        await ctx.wait_for_event("last", "go")
        return got

    handle = await env.run(fan, None)
    for n in (2, 0, 3, 1):
        await handle.send_event(f"t{n}", n * 10)
    await env.settle()
    env.ns.evict(handle.execution_id)
    await handle.send_event("go", "now")
    result = await env.result(handle)
    assert result.ok and result.value == [0, 10, 20, 30]
