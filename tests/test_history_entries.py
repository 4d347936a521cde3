"""The values the engine builds reach the history without being decoded again.

A step's start and completion are dicts before they are journal texts: the write path
hands them to the journal observers (``ExecutionState.write``'s ``entries``, kept with a
deferred completion by ``defer``), and the history outbox records them from the values
(``Capture.capture``, ``_bundle.plain_pieces``) and projects a page of them without decoding
a text. What D1
holds must be the same as when every text is decoded, and a value must be what its text
says, then and when the delivery reads it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from test_history_projection import Runtime
from workkit_workflow import NonRetryableError, RetryPolicy, Workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine._plugins import HANDED_MAX
from workkit_workflow.engine._ports import SystemClock
from workkit_workflow.engine._state import ExecutionState
from workkit_workflow.history._bundle import INLINE_MAX, Bundle, bundles, plain_pieces
from workkit_workflow.history._d1 import LocalD1
from workkit_workflow.history._outbox import Outbox
from workkit_workflow.history._records import records_of
from workkit_workflow.local import VirtualClock


def _flows() -> list[tuple[Workflow, dict[str, Any], str]]:
    """Linear steps, a retried step, a failure with compensation, a large output (a text
    the outbox shortens), and steps with an idempotency key, from a function and a string
    (``run_new_step``, with its key): (workflow, input, id)."""
    calls: dict[str, int] = {}

    def flaky(input: Any, prev: Any, ctx: Any) -> str:
        calls["flaky"] = calls.get("flaky", 0) + 1
        if calls["flaky"] == 1:
            raise ConnectionError("timeout")
        return "ok"

    def refuse(input: Any, prev: Any, ctx: Any) -> None:
        raise NonRetryableError("no")

    async def undo(ctx: Any) -> None:
        await ctx.step("refund", lambda: {"refunded": True})

    linear = Workflow("entries-linear")
    for i in range(170):  # more than two delivery pages
        linear = linear.step(f"s{i}", lambda input, prev, ctx, i=i: {"i": i})
    retried = (
        Workflow("entries-retried", retry=RetryPolicy(max_attempts=3, initial_delay=1.0))
        .step("a", lambda input, prev, ctx: 1)
        .step("flaky", flaky)
        .step("b", lambda input, prev, ctx: 2)
        .step("refuse", refuse)
        .on_failure(undo)
    )
    big = (
        Workflow("entries-big")
        .step("big", lambda input, prev, ctx: "x" * (2 * INLINE_MAX))
        .step("after", lambda input, prev, ctx: 1)
    )
    keyed = (
        Workflow("entries-keyed")
        .step("pay", lambda input, prev, ctx: {"paid": 1}, idempotency_key=lambda input, ctx: "pay-1")
        .step("ship", lambda input, prev, ctx: {"shipped": 1}, idempotency_key="ship-1")  # run_new_step
    )
    return [(linear, {}, "linear"), (retried, {}, "retried"), (big, {}, "big"), (keyed, {}, "keyed")]


async def _tables() -> dict[str, list[dict[str, Any]]]:
    rt = Runtime(clock=VirtualClock())
    try:
        ids = []
        for flow, data, execution_id in _flows():
            handle = await rt.client.run(flow, data, execution_id=execution_id)
            await handle.result(timeout=120)
            ids.append(execution_id)
        await rt.drained(ids)
        rt.exactly_once()
        tables = ("wf_executions", "wf_steps", "wf_events", "wf_transitions")
        return {name: [_timeless(row) for row in rt.table(name)] for name in tables}
    finally:
        await rt.close()


def _timeless(value: Any) -> Any:
    """``value`` without its times (two runs' clocks differ by the real time they took),
    JSON text columns included."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if not (k == "at" or k.endswith("_at"))}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    if isinstance(value, str) and value[:1] in "[{":
        return _timeless(jn.loads(value))
    return value


async def test_d1_holds_the_same_whether_the_values_are_handed_over_or_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed = await _tables()
    capture = Outbox.capture

    def texts_only(self: Outbox, puts: Mapping[str, str], entries: Any = None) -> dict[str, str]:
        return capture(self, puts)  # every text decoded

    monkeypatch.setattr(Outbox, "capture", texts_only)
    decoded = await _tables()
    assert handed == decoded
    assert len(handed["wf_steps"]) > 170


async def test_every_value_handed_over_is_its_text_and_stays_so(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str, Mapping[str, Any], dict[str, Any]]] = []
    kinds: set[str] = set()
    long_handed: list[bool] = []
    capture = Outbox.capture

    def spy(self: Outbox, puts: Mapping[str, str], entries: Any = None) -> dict[str, str]:
        for key, entry in (entries or {}).items():
            seen.append((key, puts[key], entry, copy.deepcopy(dict(entry))))
        kinds.add("values" if entries and len(entries) == len(puts) else "texts")
        long_handed.extend(key in (entries or {}) for key, text in puts.items() if len(text) > HANDED_MAX)
        return capture(self, puts, entries)

    monkeypatch.setattr(Outbox, "capture", spy)
    await _tables()
    assert seen and kinds == {"values", "texts"}
    assert long_handed == [True]  # the big flow's completion: its value, without the large output
    statuses = set()
    for key, text, entry, then in seen:
        decoded = jn.loads(text)
        # A reused completion's value leaves out the version its text starts with.
        decoded.pop("v")
        if then["status"] == "completed" and "output" not in then:
            # A first attempt's value built for the observers alone has none (``HANDED_MAX``).
            assert "output" in decoded and len(text) > 0
            del decoded["output"]
        assert decoded == {k: v for k, v in then.items() if k != "v"}, key
        assert entry == then, f"the engine changed {key}'s value after writing it"
        # What the outbox takes for granted (``plain_pieces``): a step's, running or completed,
        # and no completion with a long text held with its output (``HANDED_MAX``).
        assert entry["kind"] == "step" and entry["status"] in ("running", "completed"), key
        assert entry["status"] == "running" or len(text) <= HANDED_MAX or "output" not in entry, key
        assert type(entry["attempt"]) is int and isinstance(entry["name"], str), key
        statuses.add((entry["status"], entry["attempt"]))
    assert {("running", 1), ("running", 2), ("completed", 1), ("completed", 2)} <= statuses


def test_a_step_s_values_are_held_as_references_without_their_texts() -> None:
    running = {"v": 2, "kind": "step", "name": "b", "status": "running", "attempt": 2, "started_at": 1.0}
    completed = {**running, "name": "a", "status": "completed", "attempt": 1, "finished_at": 2.0, "output": 1}
    entries = {"j:00000002": running, "j:00000001": completed}
    pieces = plain_pieces(entries)
    assert [(p.key, p.ref, p.name, p.entry, p.text) for p in pieces] == [
        ("j:00000001", "null", "a", completed, ""),
        ("j:00000002", "2", "b", running, ""),
    ]
    # Held in memory as the values themselves; its records are the values, copied.
    bundle = Bundle.held("o:000000000007", 7, 3.0, "x", entries)
    assert bundle.pieces == pieces and list(bundle.op_keys()) == ["j:00000002", "j:00000001"]
    records = bundle.records()
    assert [(r.seq, r.key, r.value) for r in records] == [
        (7, "j:00000001", completed),
        (8, "j:00000002", running),
    ]
    assert records[0].value is not completed
    # A running step that a newer record of its page supersedes shows only its event.
    (_, superseded) = bundle.records({"j:00000002"})
    assert superseded.value == {"name": "b", "status": "running", "attempt": 2}


def test_a_bundle_of_values_is_stored_as_its_pieces_would_be_and_held_as_its_values() -> None:
    """A commit kept in memory only goes to storage with the next commit that must store its
    records (``Capture._store_memory``): its text is what :func:`bundles` makes of its pieces,
    and it stays held as the values, for its delivery to project them (``plain_projection``)."""
    running = {"v": 2, "kind": "step", "name": "b", "status": "running", "attempt": 2, "started_at": 1.0}
    completed = {**running, "name": "a", "status": "completed", "attempt": 1, "finished_at": 2.0, "output": 1}
    entries = {"j:00000002": running, "j:00000001": completed}
    held = Bundle.held("o:000000000007", 7, 3.25, "x", entries)
    (stored,) = held.stored()
    (expected,) = bundles(7, 3.25, "x", plain_pieces(entries))
    assert (stored.key, stored.text, stored.seq, stored.at) == (expected.key, expected.text, 7, 3.25)
    assert stored.parts is entries
    assert [(r.seq, r.key, r.attempt) for r in records_of(stored.key, stored.text, "x")] == [
        (7, "j:00000001", None),
        (8, "j:00000002", 2),
    ]
    # A bundle of pieces is stored as ever.
    pieces = Bundle.held("o:000000000007", 7, 3.25, "x", plain_pieces(entries))
    assert [(b.key, b.text) for b in pieces.stored()] == [(expected.key, expected.text)]


def test_a_bundle_of_values_too_long_for_one_record_is_stored_a_piece_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many steps completing in one commit (a wide gather) may not fit in one stored value:
    each record goes alone, as for any bundle, and is delivered from its pieces."""
    completed = {"v": 2, "kind": "step", "name": "a", "status": "completed", "attempt": 1, "finished_at": 2.0}
    entries = {jn.op_key(jn.MAIN, op): {**completed, "name": f"s{op}"} for op in range(1, 4)}
    monkeypatch.setattr(jn, "MAX_VALUE_BYTES", 60)
    made = Bundle.held("o:000000000007", 7, 3.25, "x", entries).stored()
    assert [(b.key, b.seq) for b in made] == [(f"o:00000000000{seq}", seq) for seq in (7, 8, 9)]
    assert all(isinstance(b.parts, list) and len(b.parts) == 1 for b in made)
    assert [records_of(b.key, b.text, "x")[0].key for b in made] == list(entries)


class _Core:
    execution_id = "e-1"
    workflow_name = "w"

    def now(self) -> float:
        return 3.0


def test_a_long_completion_is_held_as_its_text_without_its_output() -> None:
    """Memory holds a commit's values until their delivery, hundreds of commits at most
    (``HELD``): the engine hands no value whose text is long (an output of megabytes,
    ``HANDED_MAX``, checked end to end above), and the outbox holds such a completion
    as its text without the output; its page is projected from that text."""
    outbox = Outbox(_Core(), LocalD1())  # type: ignore[arg-type]
    big = "x" * (2 * HANDED_MAX)
    running = {"v": 2, "kind": "step", "name": "next", "status": "running", "attempt": 1, "started_at": 2.0}
    completed = {**running, "name": "big", "status": "completed", "finished_at": 2.0, "output": big}
    puts = {"j:00000000": jn.dumps(completed), "j:00000001": jn.dumps(running)}
    assert set(outbox.capture(puts, {"j:00000001": running})) <= {Outbox.HEAD}  # held, not stored
    (held,) = outbox._memory.values()
    assert [(p.key, p.ref, p.entry) for p in held.pieces] == [
        ("j:00000000", "null", None),
        ("j:00000001", "1", None),
    ]
    assert big not in repr(held)
    statements = outbox._plain_statements({held.key: ""})
    assert statements is not None and big not in repr(statements)
    assert any('"00000000":["big",1,' in str(args) for _, args in statements)  # its page entry
    short = {"j:00000002": {**running, "name": "short"}}
    outbox.capture({"j:00000002": jn.dumps(short["j:00000002"])}, short)
    assert outbox._tail[-1] is short  # a short one: its values


class _Storage:
    def __init__(self) -> None:
        self.commits: list[dict[str, str]] = []

    async def commit(self, puts: Mapping[str, str], deletes: Any, alarm: Any) -> None:
        self.commits.append(dict(puts))


class _Host:
    def __init__(self) -> None:
        self.storage = _Storage()
        self.clock = SystemClock()


class _Observer:
    HEAD = "x:head"
    captures = True
    steers_kept_alarm = True
    kick_due = True

    def __init__(self) -> None:
        self.entries: list[dict[str, Any] | None] = []

    def capture(self, puts: Mapping[str, str], entries: Any = None) -> dict[str, str]:
        self.entries.append(None if entries is None else dict(entries))
        return {}

    def alarm_for(self, alarm: Any) -> Any:
        return alarm

    def kick(self) -> bool:
        return False


async def test_the_write_hands_over_the_deferred_values_and_drops_a_rewritten_one() -> None:
    state = ExecutionState(_Host(), rng=None, faults=None)  # type: ignore[arg-type]
    observer = _Observer()
    state.observers.append(observer)  # type: ignore[arg-type]
    done = {"status": "completed"}
    nxt = {"status": "running"}

    state.defer("j:00000001", "{}", "a", done)  # nobody reads values: none is kept
    await state.write({"j:00000002": "{}"}, entries={"j:00000002": nxt})
    assert observer.entries[-1] == {"j:00000002": nxt}

    state.hands_entries = True
    state.defer("j:00000002", "{}", "b", done)
    await state.write({"j:00000003": "{}"}, entries={"j:00000003": nxt})
    assert observer.entries[-1] == {"j:00000002": done, "j:00000003": nxt}

    state.defer("j:00000003", "{}", "c", done)
    await state.write({"j:00000003": '{"other":1}'})  # rewritten without its value: the text says
    assert observer.entries[-1] == {}

    state.defer("j:00000004", "{}", "d", done)
    state.defer("j:00000004", "{}", "d")  # deferred again without one
    await state.write({})
    assert observer.entries[-1] is None
    assert [sorted(c) for c in state.storage.commits][-1] == ["j:00000004"]
