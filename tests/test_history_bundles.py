"""The outbox's bundles: one record per commit, sent in batches, read in both versions."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from test_history_projection import Runtime
from workkit_workflow import RetryPolicy, Workflow, create_durable_workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.history import TABLES, VIEWS, LocalD1
from workkit_workflow.history._bundle import (
    INLINE_MAX,
    Record,
    bundles,
    execution_piece,
    step_piece,
)
from workkit_workflow.history._outbox import BATCH, HEAD, RECORD_PREFIX, SEQ_BLOCK
from workkit_workflow.history._projection import projection
from workkit_workflow.history._records import records_of, resolved
from workkit_workflow.local import LocalNamespace

_names = itertools.count()


def _linear(steps: int) -> Workflow:
    flow = Workflow(f"bundles-{next(_names)}")
    for i in range(steps):
        flow = flow.step(f"s{i}", lambda input, prev, ctx, i=i: {"i": i})
    return flow


def _project(records: list[Record]) -> dict[str, list[dict[str, Any]]]:
    d1 = LocalD1()
    for sql, args in projection(records):
        d1.rows(sql, args)
    tables = {t: d1.rows(f"SELECT * FROM {t} ORDER BY 1, 2, 3") for t in TABLES + VIEWS}
    d1.close()
    return tables


def test_records_of_older_versions_project_as_a_bundle_does() -> None:
    """Records an older version left in storage are delivered as before."""
    entry = {"kind": "step", "name": "charge", "status": "retrying", "attempt": 1, "started_at": 10.0}
    entry["error"] = {"code": "Boom", "message": "card network timeout"}
    entry["retry_at"] = 11.0
    v1 = jn.encode_record(
        "o:000000000007",
        {"seq": 7, "at": 10.5, "execution_id": "x", "kind": "step", "phase": "main"}
        | {"entry": {**entry, "op": 3}},
        what="test",
    )
    [(key, text, *_)] = bundles(7, 10.5, "x", [step_piece("j:00000003", jn.dumps({"v": 2, **entry}))])
    assert key == "o:000000000007"
    # Version 2: the bundle an earlier release wrote, the execution's id inside.
    v2 = jn.dumps({"v": 2, "seq": 7, "at": 10.5, "execution_id": "x", "records": [["j:00000003", entry]]})
    old, new = records_of(key, v1, "ignored"), records_of(key, text, "x")
    assert [(r.seq, r.at, r.execution_id, r.key) for r in old] == [(7, 10.5, "x", "j:00000003")]
    assert _project(old) == _project(new) == _project(records_of(key, v2, "ignored"))
    [event] = _project(new)["wf_events"]
    # A step's event holds what its transition adds; its step row holds all of it.
    assert jn.loads(event["detail"]) == {"error": entry["error"], "retry_at": 11.0}
    [step] = _project(new)["wf_steps"]
    assert (step["status"], step["attempt_started_at"], step["retry_at"]) == ("retrying", 10.0, 11.0)


def test_an_unknown_outbox_version_is_refused_by_name() -> None:
    with pytest.raises(jn.JournalFormatError, match="o:000000000001"):
        records_of("o:000000000001", '{"v":9,"seq":1}', "x")
    with pytest.raises(jn.JournalFormatError, match="o:000000000001"):
        records_of("o:000000000001", "[4,1,2.5]", "x")
    with pytest.raises(jn.JournalFormatError):
        records_of("o:000000000001", "not json", "x")


def test_a_large_entry_is_copied_without_its_output() -> None:
    text = jn.dumps({"v": 2, "kind": "step", "name": "big", "status": "completed", "output": "x" * 50_000})
    piece = step_piece("j:00000000", text)
    assert len(piece.text) < INLINE_MAX and "output" not in piece.text
    short = jn.dumps({"v": 2, "kind": "step", "name": "small", "status": "retrying", "attempt": 1})
    assert step_piece("j:00000001", short).text == short  # embedded as written


_PAY = {"kind": "step", "name": "pay"}


@pytest.mark.parametrize(
    ("entry", "ref"),
    [
        (_PAY | {"status": "completed", "attempt": 2, "output": {"status": "running"}}, "null"),
        (_PAY | {"status": "running", "attempt": 12, "started_at": 1.5}, "12"),
        (_PAY | {"status": "running", "attempt": 3}, "3"),
        (_PAY | {"status": "retrying", "attempt": 1, "error": {"code": "Boom"}}, None),
        ({"kind": "step", "name": 'a","status":"completed', "status": "failed"}, None),
        (_PAY | {"status": "running", "output": {"x": ',"status":"completed'}}, None),
        ({"kind": "sleep", "name": "nap", "status": "completed"}, None),
        ({"kind": "step", "name": 'q\\"', "status": "completed"}, "null"),
    ],
)
def test_a_steps_entry_that_runs_or_completed_is_stored_by_reference(
    entry: dict[str, Any], ref: str | None
) -> None:
    """A completed step's entry is never rewritten, so the journal keeps it until it is
    delivered; a running one's event is its attempt's number. A name or an output that
    looks like a status changes nothing."""
    text = jn.dumps({"v": 2, **entry})
    piece = step_piece("j:00000004", text)
    assert (piece.ref, piece.text) == (ref, text)
    [bundle] = bundles(3, 1.5, "x", [piece])
    stored = jn.loads(bundle.text)
    assert stored == [3, 3, 1.5, "j:00000004", jn.loads(text) if ref is None else jn.loads(ref)]
    # Read back from storage, a reference takes the journal's entry.
    [record] = resolved(records_of(bundle.key, bundle.text, "x"), {"j:00000004": text})
    assert record[:5] == (3, 1.5, "x", "j:00000004", jn.loads(text)) == bundle.records()[0][:5]
    assert resolved(records_of(bundle.key, bundle.text, "x"), {}) == ([] if ref else [record])


def test_a_running_reference_read_after_its_attempt_ended_shows_that_attempt() -> None:
    """The journal moved on (the attempt failed, the next one completed): the running
    record still says which attempt started, and the step's later records say the rest."""
    running = step_piece("j:00000001", jn.dumps({"v": 2, **_PAY, "status": "running", "attempt": 1}))
    [bundle] = bundles(5, 2.0, "x", [running])
    now = jn.dumps({"v": 2, **_PAY, "status": "completed", "attempt": 2, "started_at": 1.0, "output": 7})
    [record] = resolved(records_of(bundle.key, bundle.text, "x"), {"j:00000001": now})
    assert record.value == _PAY | {"started_at": 1.0, "status": "running", "attempt": 1}
    [event] = _project([record])["wf_transitions"]
    assert (event["name"], event["status"], event["attempt"], event["detail"]) == ("pay", "running", 1, "{}")


async def test_a_long_run_is_sent_in_batches_and_every_record_arrives_once() -> None:
    rt = Runtime()
    try:
        steps = 3 * BATCH
        handle = await rt.client.run(_linear(steps), {}, execution_id="long")
        assert (await handle.result(timeout=60)).ok
        await rt.drained(["long"])
        rt.exactly_once()
        # A batch per BATCH commits (each commit is one step), plus the few sent at once
        # as the execution started and ended: not one per commit.
        assert rt.d1.calls <= steps // BATCH + 6
        statuses = [s["status"] for s in rt.table("wf_steps")]
        assert statuses == ["completed"] * steps
        seqs = [e["seq"] for e in rt.table("wf_transitions")]
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        await rt.close()


async def test_a_run_sends_its_batches_as_it_goes() -> None:
    """A batch goes every BATCH commits while the run goes on, not all at its end (on the
    system clock, faster than the linger)."""
    d1 = LocalD1()
    seen: list[int] = []

    def look(input: Any, prev: Any, ctx: Any) -> int:
        seen.append(d1.rows("SELECT count(*) AS n FROM wf_steps WHERE status = 'completed'")[0]["n"])
        return 0

    flow = _linear(3 * BATCH).step("look", look)
    async with LocalNamespace(None, env={"HISTORY_DB": d1}) as ns:
        client = create_durable_workflow(ns, history=d1)
        handle = await client.run(flow, {}, execution_id="batches")
        assert (await handle.result(timeout=60)).ok
        await ns.idle()
    # Each step is one commit: two batches at least were in D1 as the last step ran.
    assert seen[0] >= 2 * BATCH
    assert len(d1.rows("SELECT * FROM wf_steps")) == 3 * BATCH + 1


async def test_a_long_steps_start_shows_before_it_ends() -> None:
    """No write follows a step's start until it ends: the linger sends it anyway."""
    rt = Runtime()
    release = asyncio.Event()

    async def slow(input: Any, prev: Any, ctx: Any) -> int:
        await release.wait()
        return 1

    flow = Workflow(f"slow-{next(_names)}").step("quick", lambda i, p, c: 0).step("slow", slow)
    try:
        handle = await rt.client.start(flow, {}, execution_id="slow")
        for _ in range(200):
            await rt.clock.sleep(0.1)
            running = [s for s in rt.table("wf_steps") if s["name"] == "slow"]
            if running:
                break
        assert [s["status"] for s in running] == ["running"]
        release.set()
        assert (await handle.result(timeout=60)).ok
        await rt.drained(["slow"])
        rt.exactly_once()
    finally:
        release.set()
        await rt.close()


async def test_sequences_go_on_past_the_reservation_after_a_restart(tmp_path: Any) -> None:
    """The head is written once per block of sequences: an object that restarts skips
    the rest of the block, and no event is ever written twice under one sequence."""
    path = str(tmp_path / "workflows.db")
    d1 = LocalD1(str(tmp_path / "history.db"))
    rt = Runtime(path, d1=d1)
    flow = (
        Workflow(f"restart-{next(_names)}", retry=RetryPolicy(max_attempts=1))
        .step("a", lambda i, p, c: 1)
        .wait_for_event("go", "go", timeout="1h")
        .step("b", lambda i, p, c: 2)
    )
    handle = await rt.client.run(flow, {}, execution_id="r")
    assert await handle.status() == "waiting"
    await rt.drained(["r"])
    head = jn.decode_record(HEAD, rt.ns.backend.list("r", HEAD, None, None, None, False)[HEAD])
    before = [e["seq"] for e in d1.rows("SELECT seq FROM wf_transitions ORDER BY seq")]
    assert head["reserved"] == head["seq"] + SEQ_BLOCK and max(before) <= head["seq"]
    await rt.ns.close()
    rt2 = Runtime(path, d1=d1, clock=rt.clock)
    try:
        await rt2.client.execution("r").send_event("go", "now")
        assert (await rt2.client.execution("r").result(timeout=3600)).ok
        await rt2.drained(["r"])
        after = [e["seq"] for e in d1.rows("SELECT seq FROM wf_transitions ORDER BY seq")]
        assert after[: len(before)] == before
        assert min(after[len(before) :]) == head["reserved"] + 1
        assert rt2.ns.backend.list("r", RECORD_PREFIX, None, None, None, False) == {}
    finally:
        await rt2.close()
        d1.close()


def test_a_commit_too_large_for_one_record_is_split_one_record_each() -> None:
    """A commit whose records do not fit in one stored value: a bundle per record, each
    with its own sequence, the execution's shortened (without its input) when it does not
    fit alone; in memory and as stored, the same records."""
    row = {"status": "running", "workflow": "w", "input": {"blob": "x" * 1_999_960}}
    step = jn.dumps({"v": 2, "kind": "step", "name": "s", "status": "retrying", "attempt": 1})
    pieces = [step_piece("j:00000002", step), execution_piece(row)]  # in key order, as captured
    first, second = bundles(7, 4.5, "x", pieces)
    assert (first.key, first.seq, second.key, second.seq) == ("o:000000000007", 7, "o:000000000008", 8)
    assert (first.at, first.execution_id, second.at, second.execution_id) == (4.5, "x", 4.5, "x")
    for bundle in (first, second):
        assert len(bundle.text.encode()) + len(bundle.key) <= jn.MAX_VALUE_BYTES
        assert records_of(bundle.key, bundle.text, "x") == bundle.records()
    [retry] = first.records()
    assert (retry.seq, retry.key, retry.value) == (7, "j:00000002", jn.loads(step))
    [execution] = second.records()
    assert (execution.seq, execution.key) == (8, jn.STATE)
    assert execution.value == {"status": "running", "workflow": "w", "truncated": True}


def test_a_version_1_execution_record_is_read_as_the_execution() -> None:
    execution = {"status": "completed", "phase": "done", "workflow": "w"}
    v1 = jn.dumps(
        {"v": 1, "seq": 3, "at": 2.5, "execution_id": "x", "kind": "execution"} | {"execution": execution}
    )
    assert records_of("o:000000000003", v1, "ignored") == [Record(3, 2.5, "x", jn.STATE, execution)]
