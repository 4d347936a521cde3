"""A journal longer than the drive's first read is read a page at a time (``engine._pages``).

The page sizes are made tiny here so a few dozen steps cross many pages; what must
hold is what holds with the whole journal in memory: journaled steps never run
again, a changed workflow is still caught, cancel and compensation see every
entry, recorded idempotency keys are found, and the window stays small.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from workkit_workflow import StepUndo, Workflow, WorkflowContext, workflow
from workkit_workflow.engine import _drive, _pages
from workkit_workflow.errors import StepFailedError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

STEPS = 30


@pytest.fixture(autouse=True)
def tiny_pages(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    monkeypatch.setattr(_pages, "FIRST_READ", 8)
    monkeypatch.setattr(_pages, "PAGE", 4)
    held = {"max": 0, "pages": 0}
    take = _pages.JournalWindow._take

    def spy(self: _pages.JournalWindow, texts: dict[int, str]) -> None:
        take(self, texts)
        held["pages"] += 1
        held["max"] = max(held["max"], len(self) + len(self.texts))

    monkeypatch.setattr(_pages.JournalWindow, "_take", spy)
    return held


def steps_then_wait(calls: Counter[str], steps: int = STEPS) -> Any:
    @workflow(unique("paged"))
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        total = 0
        for i in range(steps):
            total += await ctx.step(f"s{i:03d}", lambda i=i: calls.update([f"s{i:03d}"]) or i)
        event = await ctx.wait_for_event("go", "go")
        return {"total": total, "event": event}

    return flow


async def test_a_long_journal_replays_page_by_page_and_no_step_runs_twice(
    env: WorkflowTestEnv, tiny_pages: dict[str, int]
) -> None:
    calls: Counter[str] = Counter()
    flow = steps_then_wait(calls)
    handle = await env.run(flow, None)
    assert await handle.status() == "waiting"
    env.ns.evict(handle.execution_id)  # a cold object: memory is gone, storage is not
    await handle.send_event("go", "now")
    result = await env.result(handle)
    assert result.ok and result.value == {"total": sum(range(STEPS)), "event": "now"}
    assert set(calls.values()) == {1} and len(calls) == STEPS
    # Read in pages, and never more than a few pages held at once.
    assert tiny_pages["pages"] >= STEPS // _pages.PAGE
    assert 0 < tiny_pages["max"] <= 3 * _pages.PAGE


async def test_a_crash_mid_journal_resumes_from_the_pages(env: WorkflowTestEnv) -> None:
    calls: Counter[str] = Counter()
    flow = steps_then_wait(calls)
    env.faults.crash_at("before_step", step="s021")
    handle = await env.start(flow, None)
    await env.settle()
    for _ in range(5):
        if await handle.status() == "waiting":
            break
        await env.clock.sleep(60)
        await env.settle()
    assert await handle.status() == "waiting"
    assert env.faults.crashes
    await handle.send_event("go", 1)
    assert (await env.result(handle)).ok
    assert set(calls.values()) == {1} and len(calls) == STEPS


async def test_code_that_no_longer_reaches_a_paged_entry_is_a_mismatch(env: WorkflowTestEnv) -> None:
    calls: Counter[str] = Counter()
    name = unique("shrinking")
    reach = {"steps": STEPS}

    @workflow(name)
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        for i in range(reach["steps"]):
            await ctx.step(f"s{i:03d}", lambda i=i: calls.update([f"s{i:03d}"]) or i)
        if reach["steps"] == STEPS:
            await ctx.wait_for_event("go", "go")
        return "done"

    handle = await env.run(flow, None)
    assert await handle.status() == "waiting"
    reach["steps"] = 8  # a deploy changed the code: it now ends at a page boundary
    env.ns.evict(handle.execution_id)
    await handle.send_event("go", 1)
    result = await env.result(handle)
    assert not result.ok and result.error is not None
    assert result.error.code == "replay_mismatch"
    assert set(calls.values()) == {1}


async def test_cancel_and_compensation_see_every_entry_of_a_long_journal(env: WorkflowTestEnv) -> None:
    undone: list[dict[str, Any]] = []
    flow = Workflow(unique("paged-comp"))
    for i in range(STEPS):
        flow = flow.step(f"s{i:03d}", lambda inp, prev, ctx, i=i: i)
    flow = flow.wait_for_event("go", "go").on_failure(lambda ctx: undone.append(dict(ctx.step_outputs)))
    handle = await env.run(flow, None)
    assert await handle.status() == "waiting"
    env.ns.evict(handle.execution_id)
    await handle.cancel("no longer wanted")
    result = await env.result(handle)
    assert await handle.status() == "cancelled", result
    assert undone == [{f"s{i:03d}": i for i in range(STEPS)}]
    # The wait in flight when the cancel came was settled, far past the first read.
    journal = await handle.journal()
    assert [e["status"] for e in journal if e["name"] == "go"] == ["abandoned"]


async def test_a_recorded_idempotency_key_is_found_across_pages(env: WorkflowTestEnv) -> None:
    calls: Counter[str] = Counter()

    @workflow(unique("paged-keys"))
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        first = await ctx.step("charge", lambda: calls.update(["charge"]) or "tx-1", idempotency_key="K")
        for i in range(STEPS):
            await ctx.step(f"s{i:03d}", lambda i=i: i)
        await ctx.wait_for_event("go", "go")
        again = await ctx.step("charge-again", lambda: calls.update(["again"]) or "tx-2", idempotency_key="K")
        return [first, again]

    handle = await env.run(flow, None)
    env.ns.evict(handle.execution_id)
    await handle.send_event("go", 1)
    result = await env.result(handle)
    assert result.ok and result.value == ["tx-1", "tx-1"]
    assert calls == Counter({"charge": 1})


async def test_the_keys_of_completed_steps_hold_no_entry_in_memory(env: WorkflowTestEnv) -> None:
    # A later step finds a key through the storage key of the entry that recorded it, read
    # back only then: a long run of keyed steps holds one short string per key, not each
    # entry with its output (a cold replay of 10,000 keyed steps held about 15 MiB before).
    held: list[Any] = []

    @workflow(unique("keyed-memory"))
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        for i in range(STEPS):
            await ctx.step(f"k{i:03d}", lambda i=i: {"i": i}, idempotency_key=f"charge-{i}")
        held.extend(ctx._run.execution.keyed.values())
        return await ctx.step("again", lambda: "ran", idempotency_key="charge-7")

    result = await env.result(await env.run(flow, None))
    assert result.ok and result.value == {"i": 7}
    assert len(held) == STEPS and all(isinstance(key, str) for key in held)


async def test_the_history_projection_is_whole_after_a_paged_replay(tmp_path: Any) -> None:
    env = WorkflowTestEnv(path=str(tmp_path / "h.db"), history=True)
    try:
        calls: Counter[str] = Counter()
        handle = await env.run(steps_then_wait(calls), None)
        env.ns.evict(handle.execution_id)
        await handle.send_event("go", 1)
        assert (await env.result(handle)).ok
        for _ in range(20):
            await env.settle()
        steps = env.history.rows(
            "SELECT name, status FROM wf_steps WHERE execution_id = ?", [handle.execution_id]
        )
        assert len(steps) == STEPS + 1 and {s["status"] for s in steps} == {"completed"}
        done = env.history.rows(
            "SELECT status FROM wf_executions WHERE execution_id = ?", [handle.execution_id]
        )
        assert done == [{"status": "completed"}]
    finally:
        await env.close()


async def test_a_running_execution_holds_no_entry_for_the_steps_it_ran(env: WorkflowTestEnv) -> None:
    # A completed step's entry is written and forgotten: the main phase's memory does not
    # grow with the steps it runs (a 20,000-step run held ~15 MiB of entries before).
    # Only a step with an undo handler is kept, for the phase's end to plan its undo.
    held: list[int] = []

    @workflow(unique("live-window"))
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        await ctx.step("reserve", lambda: "r1", undo=_release)
        for i in range(STEPS):
            await ctx.step(f"s{i:03d}", lambda i=i: i)
            held.append(len(ctx._run.entries))
        await ctx.step("ship", _refuse)

    _RELEASED.clear()
    result = await env.result(await env.run(flow, None))
    assert not result.ok
    assert held == [1] * STEPS  # 'reserve' alone
    assert _RELEASED == ["reserve"]


_RELEASED: list[str] = []


def _release(info: StepUndo) -> None:
    _RELEASED.append(info.step)


async def test_the_undo_of_a_step_on_an_early_page_still_runs(env: WorkflowTestEnv) -> None:
    undone: list[str] = []
    flow = Workflow(unique("paged-undo")).step(
        "reserve", lambda inp, prev, ctx: {"r": 1}, undo=lambda info: undone.append("release")
    )
    for i in range(STEPS):
        flow = flow.step(f"s{i:03d}", lambda inp, prev, ctx, i=i: i)
    flow = flow.wait_for_event("go", "go").step("ship", lambda inp, prev, ctx: _refuse())
    handle = await env.run(flow, None)
    assert await handle.status() == "waiting"
    env.ns.evict(handle.execution_id)  # the replay reads 'reserve' on the first page, long before the end
    await handle.send_event("go", 1)
    result = await env.result(handle)
    assert not result.ok
    assert undone == ["release"]


def _refuse() -> Any:
    from workkit_workflow import NonRetryableError

    raise NonRetryableError("address rejected")


async def test_a_failed_step_called_before_pages_are_read_is_not_run_again(env: WorkflowTestEnv) -> None:
    # The failed step's call is made first and awaited last: reading the later pages in
    # between must not drop its entry (only a step replayed when called is forgotten).
    calls: Counter[str] = Counter()

    def refuse() -> Any:
        calls.update(["bad"])
        _refuse()

    @workflow(unique("paged-failed"))
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        total = await ctx.step("first", lambda: calls.update(["first"]) or 0)  # page 0 is read
        bad = ctx.step("bad", refuse)
        for i in range(STEPS):
            total += await ctx.step(f"s{i:03d}", lambda i=i: calls.update([f"s{i:03d}"]) or i)
        try:
            await bad
        except StepFailedError as exc:
            outcome = exc.error.get("message")
        await ctx.wait_for_event("go", "go")
        return {"total": total, "bad": outcome}

    handle = await env.run(flow, None)
    assert await handle.status() == "waiting"
    env.ns.evict(handle.execution_id)
    await handle.send_event("go", 1)
    result = await env.result(handle)
    assert result.ok and result.value == {"total": sum(range(STEPS)), "bad": "address rejected"}
    assert set(calls.values()) == {1} and len(calls) == STEPS + 2


async def test_a_cancel_that_lands_while_a_paged_replay_starts_still_undoes_every_step(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drive chose to read the journal by pages; the cancel came while the write that
    starts the incarnation was in flight, so the phase ends before its body read any
    page: its end reads them all, and the undo on the first page runs."""
    undone: list[str] = []
    flow = Workflow(unique("paged-cancel")).step(
        "reserve", lambda inp, prev, ctx: {"r": 1}, undo=lambda info: undone.append("release")
    )
    for i in range(STEPS):
        flow = flow.step(f"s{i:03d}", lambda inp, prev, ctx, i=i: i)
    flow = flow.wait_for_event("go", "go")
    handle = await env.run(flow, None)
    assert await handle.status() == "waiting"
    env.ns.evict(handle.execution_id)
    starts = _drive.Driver._start_incarnation
    cancelled: list[bool] = []

    async def start_then_cancel(self: _drive.Driver, definition: Any, state: Any, text: str) -> bool:
        began = await starts(self, definition, state, text)
        if not cancelled:
            cancelled.append(True)
            await handle.cancel("no longer wanted")  # the whole request, during that write
        return began

    monkeypatch.setattr(_drive.Driver, "_start_incarnation", start_then_cancel)
    await handle.send_event("go", 1)
    await env.result(handle)
    assert cancelled and await handle.status() == "cancelled"
    assert undone == ["release"]
    journal = await handle.journal()
    assert [e["status"] for e in journal if e["name"] == "go"] == ["abandoned"]


async def test_a_page_that_fails_to_read_is_not_an_exception_the_workflow_can_catch(
    env: WorkflowTestEnv,
) -> None:
    # A page is read while the body runs, inside ``ctx.step``: a storage failure there is the
    # engine's, not the step's. Were it an ``Exception``, a body that catches every exception
    # around its steps would take it as that step's and go on past the step unreplayed.
    calls: Counter[str] = Counter()
    swallowed: list[str] = []

    @workflow(unique("paged-catching"))
    async def flow(ctx: WorkflowContext, input: Any) -> Any:
        total = 0
        for i in range(STEPS):
            try:
                total += await ctx.step(f"s{i:03d}", lambda i=i: calls.update([f"s{i:03d}"]) or i)
            except Exception as exc:
                swallowed.append(f"s{i:03d}: {exc!r}")
        event = await ctx.wait_for_event("go", "go")
        return {"total": total, "event": event}

    handle = await env.run(flow, None)
    assert await handle.status() == "waiting"
    env.ns.evict(handle.execution_id)
    backend = env.ns.backend
    real_list = backend.list
    lists = {"n": 0}

    def failing_list(obj: str, prefix: Any, start: Any, *rest: Any) -> Any:
        if start is not None:  # a page's read (the drive's first read has no start)
            lists["n"] += 1
            if lists["n"] == 2:
                raise OSError("disk I/O error on read (injected)")
        return real_list(obj, prefix, start, *rest)

    backend.list = failing_list  # type: ignore[method-assign]
    await handle.send_event("go", "now")
    result = await env.result(handle)
    assert lists["n"] >= 2, "no page read failed"
    assert swallowed == []
    assert result.ok and result.value == {"total": sum(range(STEPS)), "event": "now"}
    assert set(calls.values()) == {1} and len(calls) == STEPS


class _ListedStorage:
    """A Storage port's ``list`` over a dict, in key order (as every port lists)."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records

    async def list(self, *, start: str | None = None, end: str | None = None, **_: Any) -> dict[str, str]:
        return {
            key: self.records[key]
            for key in sorted(self.records)
            if (start is None or key >= start) and (end is None or key < end)
        }


@pytest.mark.parametrize("stored", [[0, 1, 2, 3], [0, 1, 3], [1, 2, 3], [0, 2], [3], []])
async def test_a_page_pairs_each_text_with_its_operation_whole_or_with_holes(stored: list[int]) -> None:
    # A whole page (every operation stored) pairs texts and operations by position; a page
    # with holes (operations allocated and never written) reads each key's operation.
    from workkit_workflow.engine import _journal as jn

    records = {jn.op_key(jn.MAIN, op): f"text-{op}" for op in stored}
    records.update({jn.op_key(jn.MAIN, 4): "next page", jn.META: "{}", jn.op_key(jn.COMPENSATION, 1): "c"})
    window = _pages.JournalWindow(_ListedStorage(records), jn.MAIN, 5, {})  # type: ignore[arg-type]
    assert await window._read(0, 4) == {op: f"text-{op}" for op in stored}
    assert await window._read(4, 8) == {4: "next page"}  # the last page ends at the journal's end
