"""A cold replay reads a completed step's output from its entry's text, decoding nothing
else (``engine._journal.completed_step_output``, ``engine._pages.JournalWindow.texts``).

What must hold is what holds when the whole entry is decoded: the same output (types
included), a renamed step is still a mismatch, a damaged entry is still refused with a
JournalFormatError, and a text read this way is one ``decode_record`` accepts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workkit_workflow import WorkflowContext, workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine import _pages
from workkit_workflow.engine._ports import KEEP_ALARM
from workkit_workflow.engine.phase._attempt import completed_envelope
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

STEPS = 30
OUTPUTS: list[Any] = [
    {"i": "00001", "ok": True},
    1.0,
    2,
    -0.0,
    0.1 + 0.2,
    1e300,
    2**70,
    None,
    'é✓ \u2028 "quoted"',
    [1, 2.5, {"a": None, "b": [True, False]}],
    {},
]


def entry_text(name: str, output: Any, started: float = 1796071795.609) -> str:
    """A completed first attempt's entry, built as the step builds it."""
    running = jn.running_step_text(name, 1, started)
    return completed_envelope(running, started + 0.25)[:-1] + ',"output":' + jn.dumps(output) + "}"


def changed(old: str, new: str) -> str:
    """Step ``step``'s entry with ``old`` replaced by ``new``."""
    return entry_text("step", 1).replace(old, new)


STARTED = '"started_at":1796071795.609'


@pytest.mark.parametrize("output", OUTPUTS, ids=repr)
def test_the_output_read_from_the_text_is_the_decoded_entrys(output: Any) -> None:
    text = entry_text("charge card", output)
    found = jn.completed_step_output(text, "charge card")
    assert found is not None and found[0] is None  # read, and without a key
    read = found[1]
    decoded = jn.decode_record("j:00000003", text)["output"]
    assert read == decoded and json.dumps(read) == json.dumps(decoded)
    assert type(read) is type(decoded)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (entry_text("other", 1), "another step's entry"),
        (changed('"attempt":1', '"attempt":2'), "a later attempt"),
        (changed(STARTED, '"started_at":x'), "a damaged field"),
        (changed(STARTED, '"started_at":01'), "not a JSON number"),
        (changed(STARTED, '"started_at":-1.0'), "a negative time"),
        (entry_text("step", 1, started=1e16), "a time with an exponent"),
        (entry_text("step", 1)[:-1], "a truncated entry"),
        (entry_text("step", 1) + " ", "text after the entry"),
        (changed(',"output":1}', ',"output":1,"x":2}'), "a field after the output"),
        (changed(',"output":1}', ',"output":[1}'), "a damaged output"),
        (changed('"finished_at"', '"idempotency_hash":"h","finished_at"'), "an extra field"),
        (changed('"v":2', '"v":1'), "version 1"),
        (changed('"status":"completed"', '"status":"failed"'), "a failed step"),
        (changed("{", "{ "), "whitespace"),
    ],
)
def test_any_other_text_is_left_to_decode_record(text: str, why: str) -> None:
    assert jn.completed_step_output(text, "step") is None, why


ESCAPED_NAMES = ['say "hi"', "back\\slash", "tab\there", "bell\x07"]
"""Step names JSON writes with an escape: their entries are decoded, never read in place."""
OTHER_NAMES = ["élan ✓", "日本", "~!@#$%^&*()"]
"""Names written as they are (no escape): read from the text."""


@pytest.mark.parametrize("name", ESCAPED_NAMES)
def test_a_name_written_with_an_escape_is_left_to_decode_record(name: str) -> None:
    text = entry_text(name, 1)
    assert jn.completed_step_output(text, name) is None
    assert jn.decode_record("j:00000003", text)["name"] == name


@pytest.mark.parametrize("name", OTHER_NAMES)
def test_a_name_written_as_it_is_is_read_from_its_text_and_only_as_itself(name: str) -> None:
    text = entry_text(name, 7)
    assert jn.completed_step_output(text, name) == (None, 7)
    assert jn.completed_step_output(text, name + " ") is None
    assert jn.completed_step_output(text, name[:-1]) is None


def test_what_is_not_text_is_left_to_decode_record() -> None:
    for value in (None, 1, b'{"v":2}', entry_text("step", 1).encode()):
        assert jn.completed_step_output(value, "step") is None


HASH = "sha256:" + "0123456789abcdef" * 2


def keyed_text(output: Any = 1, key_hash: str = HASH) -> str:
    """A keyed step's completed first attempt, as the step writes it (the key's hash
    between the two times; the key itself is not journaled once it completed)."""
    return entry_text("step", output).replace(
        '"finished_at"', f'"idempotency_hash":"{key_hash}","finished_at"'
    )


@pytest.mark.parametrize("output", OUTPUTS, ids=repr)
def test_a_keyed_entry_gives_its_hash_and_output_as_decoding_does(output: Any) -> None:
    text = keyed_text(output)
    record = jn.decode_record("j:00000003", text)
    # Read with its key's hash: never as a step without a key.
    assert jn.completed_step_output(text, "step") == (record["idempotency_hash"], record["output"])
    assert jn.completed_step_output(entry_text("step", output), "step") == (None, record["output"])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (keyed_text(key_hash="sha256:" + "0123456789ABCDEF" * 2), "a hash not as hash_key writes it"),
        (keyed_text(key_hash="sha256:0123"), "a short hash"),
        (keyed_text(key_hash=HASH + '\\"'), "an escape in the hash"),
        (keyed_text().replace('"idempotency_hash"', '"idempotency_key"'), "another field"),
        (keyed_text().replace('"attempt":1', '"attempt":2'), "a later attempt"),
        (keyed_text()[:-1], "a truncated entry"),
    ],
)
def test_any_other_keyed_text_is_left_to_decode_record(text: str, why: str) -> None:
    assert jn.completed_step_output(text, "step") is None, why


async def test_a_key_replayed_from_its_text_is_found_by_a_later_step(env: WorkflowTestEnv) -> None:
    calls: Counter[str] = Counter()
    names = [f"s{i:03d}" for i in range(STEPS)]

    @workflow(unique("keyed-text"))
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        for name in names:
            await ctx.step(name, lambda name=name: calls.update([name]) or name, idempotency_key=f"k-{name}")
        await ctx.wait_for_event("go", "go")
        # s013 is no page's first operation: its replay read it from its text.
        return await ctx.step("again", lambda: calls.update(["again"]) or "ran", idempotency_key="k-s013")

    handle = await env.run(flow, None)
    env.ns.evict(handle.execution_id)
    await handle.send_event("go", 1)
    result = await env.result(handle)
    assert result.ok and result.value == "s013"
    assert set(calls.values()) == {1} and "again" not in calls


PLAIN = entry_text("s", {"a": [1, 2.5]})


@settings(max_examples=400, deadline=None)
@given(
    at=st.integers(0, len(PLAIN) - 1), char=st.sampled_from('{}[]",:.0123456789-eE x\\'), cut=st.booleans()
)
def test_a_text_read_this_way_is_one_decode_record_reads_the_same(at: int, char: str, cut: bool) -> None:
    # A damaged entry: one character replaced, or the text cut there.
    text = PLAIN[:at] if cut else PLAIN[:at] + char + PLAIN[at + 1 :]
    found = jn.completed_step_output(text, "s")
    if found is None:
        return
    key_hash, output = found
    assert key_hash is None
    record = jn.decode_record("j:00000000", text)
    assert record["output"] == output and record["status"] == "completed" and record["kind"] == "step"
    assert set(record) == {
        "v", "kind", "name", "status", "attempt", "started_at", "finished_at", "output",
        "op", "failures", "lost", "errors", "error", "attempt_started_at",
    }  # fmt: skip


@pytest.fixture(autouse=True, params=["paged", "whole"])
def tiny_pages(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Each test twice: a journal read by pages of four, and one the drive's first read
    holds whole (a window whose pages all count as read, ``JournalWindow.whole``)."""
    if request.param == "paged":
        monkeypatch.setattr(_pages, "FIRST_READ", 8)
        monkeypatch.setattr(_pages, "PAGE", 4)


def typed_steps(calls: Counter[str], names: list[str], *, keyed: bool = False) -> Any:
    @workflow(unique("paged-text"))
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        outputs = []
        for i, name in enumerate(names):
            value = OUTPUTS[i % len(OUTPUTS)]
            call = lambda name=name, value=value: calls.update([name]) or value  # noqa: E731
            key = f"charge-{name}" if keyed else None
            outputs.append(await ctx.step(name, call, idempotency_key=key))
        await ctx.wait_for_event("go", "go")
        return json.dumps(outputs)  # the types as JSON tells them (1.0 is not 1)

    return flow


async def test_a_paged_replay_gives_the_first_runs_outputs_types_included(env: WorkflowTestEnv) -> None:
    calls: Counter[str] = Counter()
    handle = await env.run(typed_steps(calls, [f"s{i:03d}" for i in range(STEPS)]), None)
    assert await handle.status() == "waiting"
    env.ns.evict(handle.execution_id)  # a cold object: the replay reads the journal's texts
    await handle.send_event("go", "now")
    result = await env.result(handle)
    assert result.ok
    assert result.value == json.dumps([OUTPUTS[i % len(OUTPUTS)] for i in range(STEPS)])
    assert set(calls.values()) == {1} and len(calls) == STEPS


async def test_steps_named_with_escapes_or_outside_ascii_replay_as_they_ran(env: WorkflowTestEnv) -> None:
    calls: Counter[str] = Counter()
    names = [f"{base} {i}" for i, base in enumerate((ESCAPED_NAMES + OTHER_NAMES) * 3)]
    handle = await env.run(typed_steps(calls, names), None)
    assert await handle.status() == "waiting"
    env.ns.evict(handle.execution_id)
    await handle.send_event("go", "now")
    result = await env.result(handle)
    assert result.ok
    assert result.value == json.dumps([OUTPUTS[i % len(OUTPUTS)] for i in range(len(names))])
    assert set(calls.values()) == {1} and len(calls) == len(names)


async def test_a_renamed_step_on_a_later_page_is_a_mismatch(env: WorkflowTestEnv) -> None:
    calls: Counter[str] = Counter()
    names = [f"s{i:03d}" for i in range(STEPS)]
    handle = await env.run(typed_steps(calls, names), None)
    assert await handle.status() == "waiting"
    names[21] = "renamed"  # a deploy renamed a step the journal holds as text
    env.ns.evict(handle.execution_id)
    await handle.send_event("go", "now")
    result = await env.result(handle)
    assert not result.ok and result.error is not None and result.error.code == "replay_mismatch"
    assert "renamed" not in calls and set(calls.values()) == {1}


async def test_a_damaged_entry_on_a_later_page_is_refused_until_repaired(
    env: WorkflowTestEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workkit_workflow")
    calls: Counter[str] = Counter()
    handle = await env.run(typed_steps(calls, [f"s{i:03d}" for i in range(STEPS)]), None)
    assert await handle.status() == "waiting"
    key = jn.op_key(jn.MAIN, 21)
    text = env.ns.backend.get_many(handle.execution_id, [key])[key]
    # Its output intact, a field the replay does not need damaged: still refused, by the
    # drive (as a record it cannot read anywhere in the journal), which retries later.
    damaged = text.replace('"started_at":', '"started_at":x')
    env.ns.backend.commit(handle.execution_id, {key: damaged}, [], KEEP_ALARM)
    env.ns.evict(handle.execution_id)
    await handle.send_event("go", "now")
    await env.settle()
    warnings = [r.getMessage() for r in caplog.records if "alarm failed" in r.getMessage()]
    assert warnings and "JournalFormatError" in warnings[0] and repr(key) in warnings[0], warnings
    assert await handle.status() == "running"  # not failed: the record can be repaired
    env.ns.backend.commit(handle.execution_id, {key: text}, [], KEEP_ALARM)
    await env.clock.sleep(60)
    result = await env.result(handle)
    assert result.ok and result.value == json.dumps([OUTPUTS[i % len(OUTPUTS)] for i in range(STEPS)])
    assert set(calls.values()) == {1} and len(calls) == STEPS


class Pages:
    """The one storage call a journal window makes, over a dict of records."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records

    async def list(self, *, start: str, end: str) -> dict[str, str]:
        return {k: v for k, v in sorted(self.records.items()) if start <= k < end}


def keyed_journal() -> dict[str, str]:
    records = {jn.op_key(jn.MAIN, op): entry_text(f"s{op}", op) for op in range(8)}
    for op in (1, 6):  # completed with an idempotency key: its hash is journaled
        keyed = entry_text(f"s{op}", op).replace('"finished_at"', f'"idempotency_hash":"h{op}","finished_at"')
        records[jn.op_key(jn.MAIN, op)] = keyed
    return records


async def test_the_keys_held_in_texts_are_found_by_the_scan_and_as_they_are_reached() -> None:
    hashes: dict[str, str] = {}
    window = _pages.JournalWindow(Pages(keyed_journal()), jn.MAIN, 8, hashes)  # type: ignore[arg-type]
    await window.reach(0)  # page 0 (ops 0-3) is read, as text
    assert window.ready(1) and hashes.keys() == {"h1"}  # reached: decoded, its key recorded
    await window.scan_hashes()  # page 1 was never read: the scan reads it
    # Each key is recorded as where its entry is stored (read back when a step asks).
    assert hashes == {"h1": jn.op_key(jn.MAIN, 1), "h6": jn.op_key(jn.MAIN, 6)}


async def test_a_key_on_a_page_read_before_the_scan_is_found_by_it() -> None:
    hashes: dict[str, str] = {}
    window = _pages.JournalWindow(Pages(keyed_journal()), jn.MAIN, 8, hashes)  # type: ignore[arg-type]
    await window.reach(4)  # page 1 is held as text, op 6 not reached
    assert hashes == {}
    await window.scan_hashes()
    assert hashes.keys() == {"h1", "h6"}
    assert jn.completed_step_output(window.texts[5], "s5") == (None, 5)  # the others stay text


class SlowPages(Pages):
    """Pages whose reads each wait for one turn of the loop."""

    async def list(self, *, start: str, end: str) -> dict[str, str]:
        await asyncio.sleep(0)
        return await super().list(start=start, end=end)


async def test_a_scan_begun_while_another_reads_says_the_keys_are_known_only_once_they_are() -> None:
    hashes: dict[str, str] = {}
    window = _pages.JournalWindow(SlowPages(keyed_journal()), jn.MAIN, 8, hashes)  # type: ignore[arg-type]
    first = asyncio.ensure_future(window.scan_hashes())
    await asyncio.sleep(0)  # the first scan waits on its first page
    await window.scan_hashes()  # parallel branches: a second keyed step looks its key up
    assert hashes.keys() == {"h1", "h6"}
    await first
    assert window.scanned


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
async def test_a_cold_replay_decodes_no_completed_step_of_its_journal(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch, keyed: bool
) -> None:
    calls: Counter[str] = Counter()
    names = [f"s{i:03d}" for i in range(STEPS)]
    handle = await env.run(typed_steps(calls, names, keyed=keyed), None)
    assert await handle.status() == "waiting"
    decoded = count_entry_decodes(monkeypatch)
    env.ns.evict(handle.execution_id)
    await handle.send_event("go", "now")
    assert (await env.result(handle)).ok
    # Only the wait, reached and resumed, is decoded: each step's output is read from its text
    # (by pages, the first operation of each is decoded too: the page was read to reach it).
    expected = {jn.op_key(jn.MAIN, STEPS)}
    if _pages.FIRST_READ < STEPS:
        expected.update(jn.op_key(jn.MAIN, op) for op in range(0, STEPS, _pages.PAGE))
    assert set(decoded) == expected and set(decoded.values()) == {1}, decoded


def count_entry_decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each operation entry is decoded (``decode_record``) from now on."""
    decoded: Counter[str] = Counter()
    decode = jn.decode_record

    def counting(key: str, text: Any) -> dict[str, Any]:
        if jn.is_op_key(key):
            decoded[key] += 1
        return decode(key, text)

    monkeypatch.setattr(jn, "decode_record", counting)
    return decoded
