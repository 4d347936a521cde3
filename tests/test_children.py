"""Child workflows: ``ctx.child`` starts another execution in its own object, the parent
parks, and the child's outcome (through the mail outbox) wakes it. Every test runs
over both local storages (memory and SQLite)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest

from workkit_workflow import NonRetryableError, Workflow, WorkflowContext, current_step, workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine._ports import WireResponse
from workkit_workflow.errors import DefinitionError, InvalidRequestError, StepFailedError, TransportError
from workkit_workflow.local._host import LocalStorage
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


class World:
    """What reached the outside world: step calls by name, effects by idempotency key."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.effects: Counter[str] = Counter()
        self.undone: list[str] = []

    def effect(self, label: str, value: Any = None) -> Any:
        step = current_step()
        assert step is not None
        self.calls[label] += 1
        self.effects[step.idempotency_key] += 1
        return value


def _kid(world: World, *, nap: float = 5.0, fail: bool = False) -> Any:
    async def undo(ctx: Any) -> None:
        await ctx.step("refund", lambda: world.undone.append(ctx.execution_id))

    @workflow(unique("kid"))
    async def kid(ctx: WorkflowContext, input: Any) -> Any:
        charged = await ctx.step("charge", lambda: world.effect("charge", input * 2))
        await ctx.sleep("settle", nap)
        if fail:
            await ctx.step("ship", _reject)
        return charged + 1

    return kid.on_failure(undo)


def _reject() -> None:
    raise NonRetryableError("the warehouse refused the order", code="refused")


def _parent(kid: Any, *, catch: bool = False) -> Any:
    @workflow(unique("parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        try:
            return {"kid": await ctx.child(kid, input)}
        except StepFailedError as exc:
            if not catch:
                raise
            return {"error": exc.error}

    return parent


@pytest.mark.parametrize("commits_at_call", [True, False], ids=["written-at-call", "awaited"])
async def test_a_child_returns_its_result_and_the_two_are_linked(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch, commits_at_call: bool
) -> None:
    # Both write paths tell the mail outbox after each write (``awaited`` is the path of
    # Cloudflare's storage, whose commit is done when awaited).
    monkeypatch.setattr(LocalStorage, "commits_at_call", commits_at_call)
    world = World()
    kid = _kid(world)
    parent = _parent(kid)
    handle = await env.run(parent, 5, execution_id="p-1")
    parked = await handle.describe()
    assert parked["status"] == "waiting"
    assert parked["waiting_for"] == ["child:p-1.0-" + kid.name]
    (row,) = parked["children"]
    assert row["execution_id"] == "p-1.0-" + kid.name and row["status"] == "running"
    result = await env.result(handle)
    assert result.ok and result.value == {"kid": 11}
    assert (await handle.describe())["children"][0]["status"] == "completed"
    child = await env.client.execution(row["execution_id"]).describe()
    assert child["status"] == "completed"
    assert child["parent"] == {"execution_id": "p-1", "workflow": parent.name, "op": 0}
    (entry,) = await handle.journal()
    assert entry["kind"] == "child" and entry["output"] == 11 and entry["child_id"] == row["execution_id"]


async def test_a_child_that_crashes_mid_step_finishes(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world)
    parent = _parent(kid)
    child_id = "p-2.0-" + kid.name
    env.faults.crash_at("after_side_effect", step="charge", execution_id=child_id)
    handle = await env.start(parent, 5, execution_id="p-2")
    result = await env.result(handle)
    assert result.ok and result.value == {"kid": 11}
    assert env.faults.crashes and env.faults.crashes[0][0] == child_id
    # The crashed attempt ran the step again (at least once), with one idempotency key.
    assert world.calls["charge"] == 2 and len(world.effects) == 1


async def test_a_parent_killed_while_its_child_runs_gets_the_result(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world, nap=60.0)
    parent = _parent(kid)
    handle = await env.run(parent, 5, execution_id="p-3")
    assert await handle.status() == "waiting"
    await env.restart()  # every object dies (SQLite: a new process on the same file)
    result = await env.result(handle)
    assert result.ok and result.value == {"kid": 11}
    assert world.calls["charge"] == 1


async def test_a_parent_crashing_before_the_start_is_sent_starts_one_child(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world)
    parent = _parent(kid)
    created: list[int] = []
    real = env.ns.request

    async def count(name: str, method: str, path: str, body: Any = None, query: Any = None) -> WireResponse:
        answer = await real(name, method, path, body, query)
        if path == "/execute" and name.startswith("p-4."):
            created.append(answer.status)
        return answer

    env.ns.request = count  # type: ignore[method-assign]
    # The parent dies with its start message written and not yet sent, twice.
    env.faults.crash_at("in_mail", execution_id="p-4", times=2)
    handle = await env.start(parent, 5, execution_id="p-4")
    result = await env.result(handle)
    assert result.ok and result.value == {"kid": 11}
    assert len(env.faults.crashes) == 2
    assert created == [201] and world.calls["charge"] == 1


async def test_a_repeated_start_finds_the_same_child(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world)
    parent = _parent(kid)
    answers: list[int] = []
    real = env.ns.request

    async def lose_first_answer(
        name: str, method: str, path: str, body: Any = None, query: Any = None
    ) -> WireResponse:
        answer = await real(name, method, path, body, query)
        if path == "/execute" and name.startswith("p-5."):
            answers.append(answer.status)
            if len(answers) == 1:
                raise TransportError("the answer was lost")  # delivered, not known to be
        return answer

    env.ns.request = lose_first_answer  # type: ignore[method-assign]
    handle = await env.start(parent, 5, execution_id="p-5")
    result = await env.result(handle)
    assert result.ok and result.value == {"kid": 11}
    assert answers == [201, 200]  # the second start found the child the first created
    assert world.calls["charge"] == 1


async def test_cancelling_the_parent_cancels_its_children_and_their_compensation_runs(
    env: WorkflowTestEnv,
) -> None:
    world = World()
    kid = _kid(world, nap=3600.0)

    @workflow(unique("fan-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return await asyncio.gather(ctx.child(kid, 1, name="a"), ctx.child(kid, 2, name="b"))

    handle = await env.run(parent, None, execution_id="p-6")
    await env.settle()
    kids = [env.client.execution(f"p-6.{op}-{n}") for op, n in ((0, "a"), (1, "b"))]
    assert [await k.status() for k in kids] == ["sleeping", "sleeping"]
    assert await handle.cancel("changed my mind")
    result = await env.result(handle)
    assert not result.ok and result.status == "cancelled"
    for k in kids:
        outcome = await env.result(k)
        assert outcome.status == "cancelled"
        described = await k.describe()
        assert described["compensation"]["status"] == "completed"
        assert described["cancel_reason"] == "parent p-6 cancelled"
    assert sorted(world.undone) == ["p-6.0-a", "p-6.1-b"]
    journal = await handle.journal()
    assert [e["status"] for e in journal] == ["abandoned", "abandoned"]
    # Each says when the cancel closed it.
    assert [e["settled_at"] >= e["started_at"] for e in journal] == [True, True]


async def test_a_parent_that_fails_cancels_the_child_still_running_and_says_why(
    env: WorkflowTestEnv,
) -> None:
    world = World()
    kid = _kid(world, nap=3600.0)

    @workflow(unique("failing-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        async def give_up() -> None:
            await ctx.sleep("a-while", 60)
            await ctx.step("give-up", _reject)

        return await asyncio.gather(ctx.child(kid, 1, name="slow"), give_up())

    handle = await env.run(parent, None, execution_id="p-fail")
    await env.settle()
    result = await env.result(handle)
    assert not result.ok and result.status == "failed"
    child = env.client.execution("p-fail.0-slow")
    assert (await env.result(child)).status == "cancelled"
    assert (await child.describe())["cancel_reason"] == "parent p-fail failed"
    assert world.undone == ["p-fail.0-slow"]


async def test_a_failed_child_raises_step_failed_in_the_parent(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world, fail=True)
    caught = _parent(kid, catch=True)
    handle = await env.run(caught, 5, execution_id="p-7")
    result = await env.result(handle)
    assert result.ok
    error = result.value["error"]
    assert error["code"] == "refused" and error["child_status"] == "failed"
    assert error["child_id"] == "p-7.0-" + kid.name
    assert error["child_failed_step"] == "ship"  # which of the child's steps failed
    assert "the warehouse refused the order" in error["message"]
    # Uncaught, it fails the parent at the child operation; the child compensated.
    uncaught = _parent(kid)
    handle = await env.run(uncaught, 5, execution_id="p-8")
    result = await env.result(handle)
    assert not result.ok and result.status == "failed"
    assert result.error is not None and result.error.code == "refused"
    assert (await handle.describe())["failed_step"] == kid.name
    assert world.undone == ["p-7.0-" + kid.name, "p-8.0-" + kid.name]


async def test_a_child_cancelled_on_its_own_fails_the_parent_operation(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world, nap=3600.0)
    parent = _parent(kid, catch=True)
    handle = await env.run(parent, 5, execution_id="p-9")
    await env.settle()
    assert await env.client.execution("p-9.0-" + kid.name).cancel("stop")
    result = await env.result(handle)
    assert result.ok and result.value["error"]["child_status"] == "cancelled"
    assert result.value["error"]["code"] == "cancelled"


async def test_fan_out_over_five_children_with_gather(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world)

    @workflow(unique("fan-out"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return await asyncio.gather(*(ctx.child(kid, n, name=f"part-{n}") for n in range(5)))

    handle = await env.run(parent, None, execution_id="p-10")
    assert len((await handle.describe())["waiting_for"]) == 5
    result = await env.result(handle)
    assert result.ok and result.value == [1, 3, 5, 7, 9]
    assert world.calls["charge"] == 5
    assert [c["status"] for c in (await handle.describe())["children"]] == ["completed"] * 5


async def test_an_unknown_child_workflow_fails_the_parent_cleanly(env: WorkflowTestEnv) -> None:
    @workflow(unique("orphan-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.child("no-such-workflow", input)

    handle = await env.run(parent, 1, execution_id="p-11")
    result = await env.result(handle)
    assert not result.ok and result.status == "failed"
    assert result.error is not None and result.error.code == "unknown_workflow"
    (entry,) = await handle.journal()
    assert entry["status"] == "failed" and entry["error"]["child_status"] == "not_started"
    error = entry["error"]
    assert error["message"].startswith("child workflow 'no-such-workflow' (p-11.0-no-such-workflow) could")
    assert "no-such-workflow" in error["message"].split("could not start: ")[1]  # the refusal's own words
    assert (error["type"], error["attempt"], error["retryable"]) == ("ChildWorkflowError", 1, False)
    assert error["started_at"] == entry["started_at"] and error["finished_at"] >= error["started_at"]


async def test_a_child_id_taken_by_another_execution_is_a_conflict(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world, nap=1.0)
    await env.run(kid, 1, execution_id="taken")

    @workflow(unique("conflict-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.child(kid, input, execution_id="taken")

    handle = await env.run(parent, 1, execution_id="p-12")
    result = await env.result(handle)
    assert not result.ok and result.error is not None and result.error.code == "execution_conflict"
    (entry,) = await handle.journal()
    refusal = entry["error"]["child_error"]
    assert refusal["message"] == (
        "execution 'taken' already exists and is not the child of 'p-12' at operation #0: "
        "give the child another id"
    )
    assert refusal["execution_id"] == "taken"


@pytest.mark.parametrize("bad", ["has space", "", "x" * 201])
async def test_a_bad_child_id_is_refused_before_anything_starts(env: WorkflowTestEnv, bad: str) -> None:
    world = World()
    kid = _kid(world)

    @workflow(unique("bad-id-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.child(kid, input, execution_id=bad)

    handle = await env.run(parent, 1, execution_id="p-13")
    result = await env.result(handle)
    assert not result.ok and result.error is not None and result.error.code == "invalid_option"
    assert world.calls["charge"] == 0


@pytest.mark.parametrize(
    ("reserved", "prefix"), [("limit:p-14:acme", "limit:"), ("schedule:nightly", "schedule:")]
)
async def test_a_child_id_naming_the_librarys_own_objects_is_refused(
    env: WorkflowTestEnv, reserved: str, prefix: str
) -> None:
    world = World()
    kid = _kid(world)

    @workflow(unique("reserved-id-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.child(kid, input, execution_id=reserved)

    handle = await env.run(parent, 1, execution_id="p-14")
    result = await env.result(handle)
    assert not result.ok and result.error is not None and result.error.code == "invalid_option"
    assert f"starts with {prefix!r}, which is reserved" in result.error.message
    assert world.calls["charge"] == 0
    assert reserved not in env.ns.live_objects()


async def test_a_builder_workflow_runs_a_child(env: WorkflowTestEnv) -> None:
    from workkit_workflow import Workflow

    world = World()
    kid = _kid(world, nap=1.0)
    flow = (
        Workflow(unique("builder-parent"))
        .step("quote", lambda input, prev, ctx: input["n"] + 1)
        .child("pack", kid, lambda input, prev: prev * 10)
        .step("done", lambda input, prev, ctx: {"packed": prev})
    )
    handle = await env.run(flow, {"n": 1}, execution_id="p-15")
    result = await env.result(handle)
    assert result.ok and result.value == {"packed": 41}
    kinds = [(e["name"], e["kind"]) for e in await handle.journal()]
    assert kinds == [("quote", "step"), ("pack", "child"), ("done", "step")]
    with pytest.raises(DefinitionError):
        Workflow(unique("bad-builder")).child("pack", kid, input="not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
async def test_show_and_the_page_link_parent_and_child(storage: str, tmp_path: Any) -> None:
    from workkit_workflow.cli._render import format_timeline
    from workkit_workflow.history._timeline import build
    from workkit_workflow.history.page import render_execution_page

    env = WorkflowTestEnv(history=True, path=None if storage == "memory" else str(tmp_path / "w.db"))
    try:
        world = World()
        kid = _kid(world, nap=1.0)
        parent = _parent(kid)
        handle = await env.run(parent, 5, execution_id="p-14")
        assert (await env.result(handle)).ok
        await env.settle()
        child_id = "p-14.0-" + kid.name
        parent_view = build(await env.client.history.get_execution("p-14"))
        child_view = build(await env.client.history.get_execution(child_id))
        assert parent_view.rows[0].child == child_id and parent_view.parent is None
        assert child_view.parent == {"execution_id": "p-14", "workflow": parent.name, "op": 0}
        assert f"child execution {child_id} completed" in format_timeline(parent_view)
        assert f"child of p-14 ({parent.name}, operation #0)" in format_timeline(child_view)
        assert f"href='./{child_id}'" in render_execution_page(parent_view)
        assert "href='./p-14'" in render_execution_page(child_view)
    finally:
        await env.close()


def test_the_readme_child_example_runs_as_written(tmp_path: Any) -> None:
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    section = (root / "README.md").read_text().split("### Child workflows", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    script = tmp_path / "children_example.py"
    script.write_text(code[1])
    run = subprocess.run(
        [sys.executable, str(script)],
        env={"PYTHONPATH": str(root / "src"), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[1:] == ["no gift wrap: unknown_workflow", "{'kg': 6}"]


@pytest.mark.parametrize("given", [None, "c" * 200])
async def test_the_longest_ids_still_connect_parent_and_child(
    env: WorkflowTestEnv, given: str | None
) -> None:
    world = World()
    kid = _kid(world, nap=1.0)

    @workflow(unique("long-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.child(kid, input, execution_id=given)

    handle = await env.run(parent, 5, execution_id="p" * 200)
    result = await env.result(handle)
    assert result.ok and result.value == 11
    (row,) = (await handle.describe())["children"]
    assert row["execution_id"] == given or row["execution_id"].startswith("p" * 150)
    assert len(row["execution_id"]) <= 200


async def test_a_waiting_parent_says_it_waits_for_its_child() -> None:
    from workkit_workflow.history._timeline import build

    env = WorkflowTestEnv(history=True)
    try:
        world = World()
        kid = _kid(world, nap=3600.0)
        handle = await env.run(_parent(kid), 5, execution_id="p-16")
        await env.settle()
        timeline = build(await env.client.history.get_execution("p-16"))
        assert timeline.headline == f"Waiting for child execution p-16.0-{kid.name}."
        assert await handle.cancel("done waiting")
        assert (await env.result(handle)).status == "cancelled"
    finally:
        await env.close()


async def _send_outcome(env: WorkflowTestEnv, parent: str, child: str, payload: Any) -> None:
    """An outcome event as a child's object sends it (its reserved type and its id)."""
    body = {"type": f"child:{child}", "payload": payload, "id": f"{child}:outcome"}
    answer = await env.ns.request(parent, "POST", "/event", body)
    assert answer.status == 202, answer.body


async def test_an_event_of_a_child_type_from_anyone_else_is_refused(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world, nap=60.0)
    handle = await env.run(_parent(kid), 5, execution_id="p-24")
    child = f"p-24.0-{kid.name}"
    forged = {"ok": True, "value": {"forged": True}}
    with pytest.raises(InvalidRequestError, match="is reserved") as refused:
        await handle.send_event(f"child:{child}", forged)  # the client refuses it
    assert refused.value.details["field"] == "type"
    # The object refuses it too, whatever else the request says, unless it carries the
    # id the child's object gives its outcome.
    for event_id in (None, "e-1", f"{child}:start", f"{kid.name}:outcome"):
        body: dict[str, Any] = {"type": f"child:{child}", "payload": forged}
        if event_id is not None:
            body["id"] = event_id
        answer = await env.ns.request("p-24", "POST", "/event", body)
        assert answer.status == 400 and answer.body["error"]["code"] == "invalid_request", answer.body
    # The parent still waits for its child, and gets the child's own result.
    result = await env.result(handle)
    assert result.ok and result.value == {"kid": 11}
    assert world.calls["charge"] == 1


def test_a_body_cannot_wait_for_a_child_outcome() -> None:
    @workflow(unique("thief"))
    async def thief(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.wait_for_event("steal", "child:someone-else.0-kid")

    with pytest.raises(DefinitionError, match="is reserved"):
        Workflow(unique("builder-thief")).wait_for_event("steal", "child:x")  # refused when added
    ctx = WorkflowContext(None, "e", thief.name, None)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="is reserved"):
        ctx.wait_for_event("steal", "child:someone-else.0-kid")


async def test_a_malformed_child_outcome_fails_the_operation_cleanly(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world, nap=3600.0)
    handle = await env.run(_parent(kid, catch=True), 5, execution_id="p-17")
    # An outcome the parent cannot read (a child's object of another version, a bug) is a
    # failure the operation can catch, never a crash or a stuck parent.
    await _send_outcome(env, "p-17", f"p-17.0-{kid.name}", "not an outcome " * 100)
    result = await env.result(handle)
    assert result.ok and result.value["error"]["code"] == "malformed_child_outcome"
    cause = result.value["error"]["child_error"]["message"]
    assert cause.startswith("unreadable outcome 'not an outcome") and len(cause) == 500  # cut there


async def test_the_parent_compensation_sees_its_completed_children(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world, nap=1.0)
    seen: list[Any] = []

    async def undo(ctx: Any) -> None:
        seen.append(dict(ctx.step_outputs))

    @workflow(unique("undoing-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        await ctx.child(kid, input, name="packed")
        await ctx.step("ship", _reject)

    handle = await env.run(parent.on_failure(undo), 5, execution_id="p-18")
    result = await env.result(handle)
    assert not result.ok and result.error is not None and result.error.code == "refused"
    assert seen == [{"packed": 11}]
    # The completed child stays completed: undoing it is the parent's handler's call.
    assert await env.client.execution("p-18.0-packed").status() == "completed"


def _one_step_kid() -> Any:
    @workflow(unique("quick-kid"))
    async def kid(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.step("double", lambda: input * 2)

    return kid


async def _bytes_per_child(
    env: WorkflowTestEnv, kid: Any, children: int, execution_id: str, *, together: bool = False
) -> float:
    """What the parent's object writes per child it runs, one after the other (``together``:
    all at once, with ``gather``)."""
    written: Counter[str] = Counter()

    def count(obj: str, puts: Any, deletes: Any) -> None:
        written[obj] += sum(len(k) + len(v) for k, v in puts.items())

    @workflow(unique("serial-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        if together:
            return list(await asyncio.gather(*(ctx.child(kid, i, name=f"part-{i}") for i in range(input))))
        return [await ctx.child(kid, i, name=f"part-{i}") for i in range(input)]

    env.ns.write_hook = count
    try:
        result = await env.result(await env.run(parent, children, execution_id=execution_id))
    finally:
        env.ns.write_hook = None
    assert result.ok and result.value == [2 * i for i in range(children)]
    return written[execution_id] / children


@pytest.mark.parametrize("together", [False, True], ids=["one-after-the-other", "gathered"])
async def test_a_parent_writes_the_same_bytes_per_child_however_many_it_runs(
    env: WorkflowTestEnv, together: bool
) -> None:
    # The state listed every child and was rewritten at each child's start and end, and a
    # gathering parent's listed every child it waited for, rewritten at each outcome: a
    # parent of n children wrote O(n^2) bytes (400 children: 31 MB one after the other,
    # 37 MB gathered). Children are now a record each (the state counts them), and the
    # state lists the first ``WAITING_LISTED`` event types waited for, with their count.
    kid = _one_step_kid()
    few = await _bytes_per_child(env, kid, 40, "few-kids", together=together)
    many = await _bytes_per_child(env, kid, 120, "many-kids", together=together)
    assert many < few * 1.1, (few, many)
    rows = (await env.client.execution("many-kids").describe())["children"]
    assert [(r["op"], r["status"]) for r in rows] == [(i, "completed") for i in range(120)]
    seventh = {"execution_id": "many-kids.7-part-7", "workflow": kid.name, "op": 7, "status": "completed"}
    assert rows[7] == seventh
    stored = json.loads(env.ns.backend.list("many-kids", None, None, None, None, False)["state"])
    assert stored["child_count"] == 120 and "children" not in stored


async def test_a_parent_holds_no_entry_for_the_children_that_finished(env: WorkflowTestEnv) -> None:
    # A finished child's entry (its output included) is forgotten as a completed step's is,
    # whether it finished in this drive or was replayed.
    kid = _one_step_kid()
    held: list[int] = []

    @workflow(unique("window-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        for i in range(input):
            await ctx.child(kid, i, name=f"part-{i}")
            held.append(len(ctx._run.entries))
        return "done"

    result = await env.result(await env.run(parent, 6))
    assert result.ok and result.value == "done"
    assert held and set(held) == {0}, held


async def test_a_parent_whose_state_lists_its_children_goes_on_with_new_ones(env: WorkflowTestEnv) -> None:
    # A parent written by a release whose state held the list of its children (and no
    # records of their own) is read, kept up to date, and extended by the children it starts.
    world = World()
    kid = _kid(world, nap=60.0)

    @workflow(unique("upgraded-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        first = await ctx.child(kid, 1, name="first")
        return [first, await ctx.child(kid, 2, name="second")]

    handle = await env.run(parent, None, execution_id="old-parent")
    assert await handle.status() == "waiting"
    # Back to the shape an earlier release wrote: the list in the state, no record, no count.
    backend, name = env.ns.backend, "old-parent"
    records = backend.list(name, None, None, None, None, False)
    state = json.loads(records["state"])
    state["children"] = [json.loads(records["children:00000000"]) | {"v": None}]
    del state["children"][0]["v"], state["child_count"]
    backend.commit(name, {"state": json.dumps(state)}, ["children:00000000"], backend.get_alarm(name))
    env.evict(name)
    assert [r["status"] for r in (await handle.describe())["children"]] == ["running"]
    result = await env.result(handle)
    assert result.ok and result.value == [3, 5]
    rows = (await handle.describe())["children"]
    assert [(r["execution_id"], r["status"]) for r in rows] == [
        ("old-parent.0-first", "completed"),
        ("old-parent.1-second", "completed"),
    ]
    stored = json.loads(backend.list(name, None, None, None, None, False)["state"])
    assert [r["status"] for r in stored["children"]] == ["completed"]  # the old list, kept up to date


async def test_a_parent_waiting_for_many_children_lists_the_first_and_counts_them(
    env: WorkflowTestEnv,
) -> None:
    world = World()
    kid = _kid(world, nap=60.0)

    @workflow(unique("wide-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return sum(await asyncio.gather(*(ctx.child(kid, n, name=f"part-{n:02d}") for n in range(input))))

    handle = await env.run(parent, 40, execution_id="wide")
    parked = await handle.describe()
    assert parked["status"] == "waiting" and parked["waiting_for_count"] == 40
    assert parked["waiting_for"] == sorted(f"child:wide.{n}-part-{n:02d}" for n in range(40))[:32]
    assert [c["status"] for c in parked["children"]] == ["running"] * 40
    result = await env.result(handle)
    assert result.ok and result.value == sum(2 * n + 1 for n in range(40))
    done = await handle.describe()
    assert done["waiting_for"] == [] and done["waiting_for_count"] == 0
    stored = json.loads(env.ns.backend.list("wide", None, None, None, None, False)["state"])
    assert stored["waiting_for_count"] is None  # the count went with the wait


async def test_the_history_row_of_a_parent_waiting_for_many_children_counts_them() -> None:
    """The history row lists what the state lists (the first 32) and the count, which the
    timeline page says; the count goes with the wait."""
    from workkit_workflow.history._timeline import build

    env = WorkflowTestEnv(history=True)
    try:

        @workflow(unique("wide-kid"))
        async def kid(ctx: WorkflowContext, input: Any) -> Any:
            await ctx.sleep("nap", 100.0 - input)  # the last listed finish last
            return 2 * input + 1

        @workflow(unique("wide-history"))
        async def parent(ctx: WorkflowContext, input: Any) -> Any:
            return sum(await asyncio.gather(*(ctx.child(kid, n, name=f"part-{n:02d}") for n in range(input))))

        handle = await env.run(parent, 40, execution_id="wide-h")
        await env.settle()
        parked = (await env.client.history.get_execution("wide-h")).execution
        assert parked.status == "waiting" and parked.waiting_for_count == 40
        assert len(parked.waiting_for) == jn.WAITING_LISTED
        headline = build(await env.client.history.get_execution("wide-h")).headline
        assert headline.startswith("Waiting for child execution") and headline.endswith(" and 8 more.")
        # The first child to finish is one past the listed: the list is the same, the count not.
        await env.clock.sleep(61.5)
        await env.settle()
        fewer = (await env.client.history.get_execution("wide-h")).execution
        assert fewer.waiting_for == parked.waiting_for and fewer.waiting_for_count == 39
        assert (await env.result(handle)).ok
        await env.settle()
        done = (await env.client.history.get_execution("wide-h")).execution
        assert done.status == "completed" and done.waiting_for == [] and done.waiting_for_count is None
    finally:
        await env.close()


async def test_a_caught_child_failure_replays_as_the_same_failure(env: WorkflowTestEnv) -> None:
    # A failed child's entry is replayed (the parent woke for something else) as the same
    # StepFailedError, caught the same way, and is not kept in the running window.
    world = World()
    kid = _kid(world, fail=True, nap=1.0)
    held: list[int] = []

    @workflow(unique("catching-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        try:
            await ctx.child(kid, input, name="ship-it")
        except StepFailedError as exc:
            caught = exc.error["code"]
        held.append(len(ctx._run.entries))
        return [caught, await ctx.wait_for_event("more", "go")]

    handle = await env.run(parent, 5, execution_id="p-19")
    while await handle.status() != "waiting" or (await handle.describe())["waiting_for"] != ["go"]:
        await env.clock.sleep(1.0)
        await env.settle()
    env.evict("p-19")  # a cold replay: the failed child's entry is read back from storage
    await handle.send_event("go", "later")
    result = await env.result(handle)
    assert result.ok and result.value == ["refused", "later"]
    assert held == [0, 0]
    assert world.calls["charge"] == 1


async def test_a_parent_that_times_out_waiting_for_a_child_names_it(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world, nap=3600.0)

    @workflow(unique("impatient-parent"), timeout=60)
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.child(kid, input, name="slow-kid")

    handle = await env.run(parent, 5, execution_id="p-20")
    result = await env.result(handle)
    assert not result.ok and result.error is not None and result.error.code == "workflow_timeout"
    assert (await handle.describe())["failed_step"] == "slow-kid"


async def test_an_outcome_without_an_error_fails_the_operation_as_child_failed(env: WorkflowTestEnv) -> None:
    world = World()
    kid = _kid(world, nap=3600.0)
    handle = await env.run(_parent(kid, catch=True), 5, execution_id="p-21")
    await _send_outcome(env, "p-21", f"p-21.0-{kid.name}", {"ok": False})
    result = await env.result(handle)
    assert result.ok
    error = result.value["error"]
    assert (error["code"], error["child_status"], error["child_error"]) == ("child_failed", "failed", None)
    assert error["message"] == f"child workflow {kid.name!r} (p-21.0-{kid.name}) failed: "


async def test_a_child_result_too_large_to_travel_fails_the_operation_and_says_so(
    env: WorkflowTestEnv,
) -> None:
    # The child's result fits its own storage, not a message to its parent: the parent
    # gets a failure that says why (the result stays readable on the child).
    big = "x" * 1_999_800

    @workflow(unique("big-kid"))
    async def kid(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.step("make", lambda: big)

    handle = await env.run(_parent(kid, catch=True), None, execution_id="p-22")
    result = await env.result(handle)
    assert result.ok
    error = result.value["error"]
    assert error["child_status"] == "failed" and error["code"] == error["child_error"]["code"]
    assert error["child_error"]["message"].startswith("message to 'p-22' is ")
    assert "the limit per stored value is 2000000 bytes" in error["child_error"]["message"]
    child = await env.result(env.client.execution(f"p-22.0-{kid.name}"))
    assert child.ok and child.value == big


@pytest.mark.parametrize(
    ("waiting", "listed", "count"),
    [
        (0, 0, None),
        (jn.WAITING_LISTED, jn.WAITING_LISTED, None),
        (jn.WAITING_LISTED + 1, jn.WAITING_LISTED, 33),
    ],
)
def test_the_state_lists_the_first_event_types_and_counts_them_past_that(
    waiting: int, listed: int, count: int | None
) -> None:
    types = [f"t{n:02d}" for n in range(waiting)]
    fields = jn.waiting_fields({}, types)
    # None listed is an empty tuple, not a list (``_state.decode_state``).
    assert fields["waiting_for"] == (types[:listed] or ()) and fields.get("waiting_for_count") == count
    # A count left from an earlier wait goes with it; none is written where none was.
    assert jn.waiting_fields({"waiting_for_count": 40}, types[:1]) == {
        "waiting_for": types[:1] or (),
        "waiting_for_count": None,
    }
    assert "waiting_for_count" not in jn.waiting_fields({}, types[:1])


def _sent(env: WorkflowTestEnv, paths: list[tuple[str, str]]) -> None:
    """Record each request to an object (its name and path) in ``paths``: the client's and
    the mail between objects."""
    real = env.ns.request

    async def record(name: str, method: str, path: str, body: Any = None, query: Any = None) -> WireResponse:
        paths.append((name, path))
        return await real(name, method, path, body, query)

    env.ns.request = record  # type: ignore[method-assign]


def _stored(env: WorkflowTestEnv, name: str) -> dict[str, str]:
    return env.ns.backend.list(name, None, None, None, None, False)


async def test_two_gathered_operations_naming_one_child_start_it_once(env: WorkflowTestEnv) -> None:
    # Both operations waited for ``child:shared``: the child's object refused the second
    # start, and that refusal, arriving first, ended the operation that owned the child,
    # while the second took the child's result. The second is now refused by the parent
    # itself, as when the two run one after the other, and its start is never sent.
    world = World()
    kid = _kid(world)
    sent: list[tuple[str, str]] = []
    _sent(env, sent)

    @workflow(unique("twin-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        async def one(n: int) -> Any:
            try:
                return await ctx.child(kid, n, execution_id="shared", name=f"kid-{n}")
            except StepFailedError as exc:
                return exc.error

        return await asyncio.gather(one(1), one(2))

    handle = await env.run(parent, None, execution_id="p-23")
    assert (await handle.describe())["waiting_for"] == ["child:shared"]
    env.evict("p-23")  # the second's failure and the first's wait are replayed from storage
    result = await env.result(handle)
    assert result.ok
    first, second = result.value
    assert first == 3 and world.calls["charge"] == 1
    assert (second["code"], second["child_status"], second["child_id"]) == (
        "execution_conflict",
        "not_started",
        "shared",
    )
    assert second["child_error"]["message"] == (
        "execution 'shared' already exists and is not the child of 'p-23' at operation #1: "
        "give the child another id"
    )
    assert (await env.client.execution("shared").describe())["parent"]["op"] == 0
    journal = await handle.journal()
    assert [(e["op"], e["status"]) for e in journal] == [(0, "completed"), (1, "failed")]
    rows = (await handle.describe())["children"]
    assert [(r["op"], r["status"]) for r in rows] == [(0, "completed"), (1, "not_started")]
    assert ("shared", "/execute") in sent and sent.count(("shared", "/execute")) == 1
    assert not [k for k in _stored(env, "p-23") if k.startswith("mailx:")]


async def test_a_child_id_an_earlier_drive_started_is_refused_to_another_operation(
    env: WorkflowTestEnv,
) -> None:
    # The owner was started by an earlier drive (its row is read from storage), and is
    # still waiting when the second operation names the same child.
    world = World()
    kid = _kid(world, nap=60.0)

    @workflow(unique("late-twin-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        async def later() -> Any:
            await ctx.sleep("pause", 1.0)
            try:
                return await ctx.child(kid, 2, execution_id="shared-late", name="second")
            except StepFailedError as exc:
                return exc.error["code"]

        return await asyncio.gather(ctx.child(kid, 1, execution_id="shared-late", name="first"), later())

    handle = await env.run(parent, None, execution_id="p-24")
    env.evict("p-24")
    result = await env.result(handle)
    assert result.ok and result.value == [3, "execution_conflict"]
    assert world.calls["charge"] == 1
    assert [(e["op"], e["kind"], e["status"]) for e in await handle.journal()] == [
        (0, "child", "completed"),
        (1, "sleep", "completed"),
        (2, "child", "failed"),
    ]


@pytest.mark.parametrize("bad", ["set", "oversize"])
async def test_a_child_input_that_cannot_be_sent_fails_the_operation_before_anything_starts(
    env: WorkflowTestEnv, bad: str
) -> None:
    # The input was found unsendable as the start was composed, after the entry was
    # recorded: SerializationError escaped into the body (past ``except StepFailedError``),
    # the entry stayed in memory, was marked abandoned at the phase's end, and a /cancel
    # went to a child that never existed (a dead letter).
    world = World()
    kid = _kid(world)
    sent: list[tuple[str, str]] = []
    _sent(env, sent)

    @workflow(unique("unsendable-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        try:
            await ctx.child(kid, {"tags": {1, 2}} if input == "set" else "x" * 2_000_001, name="kid")
        except StepFailedError as exc:
            caught = exc.error
        await ctx.sleep("pause", 1.0)
        return caught

    handle = await env.run(parent, bad, execution_id=f"p-25-{bad}")
    env.evict(f"p-25-{bad}")  # the failure is replayed from its entry, the same
    result = await env.result(handle)
    await env.clock.sleep(5.0)
    await env.settle()
    assert result.ok
    error = result.value
    child = f"p-25-{bad}.0-kid"
    assert (error["code"], error["child_status"]) == ("serialization_error", "not_started")
    assert error["child_id"] == child
    assert error["child_error"]["message"].startswith(f"the start message of child {child!r} (its input) is ")
    said = error["child_error"]["message"]
    assert error["message"] == f"child workflow {kid.name!r} ({child}) could not start: {said}"
    journal = await handle.journal()
    assert [(e["op"], e["kind"], e["status"]) for e in journal] == [
        (0, "child", "failed"),
        (1, "sleep", "completed"),
    ]
    assert [(r["op"], r["status"]) for r in (await handle.describe())["children"]] == [(0, "not_started")]
    assert [name for name, _ in sent if name != handle.execution_id] == []
    assert child not in env.ns.backend.objects()
    assert not [k for k in _stored(env, f"p-25-{bad}") if k.startswith("mail")]


@pytest.mark.parametrize("read", ["id", "rows"])
async def test_a_failed_read_of_the_children_stops_the_run_and_the_retry_goes_on(
    env: WorkflowTestEnv, read: str
) -> None:
    # The children an earlier drive started are read inside the body, at the next start
    # (``id``: the record of the child's id; ``rows``: every child's row, for a parent
    # whose children are not all recorded by id): a read that fails stops the run as a
    # journal page's does (the body's ``except Exception`` never sees it), and the alarm's
    # retry starts the child once.
    world = World()
    kid = _kid(world, nap=1.0)
    caught: list[str] = []

    @workflow(unique("unread-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        first = await ctx.child(kid, 1, name="first")
        try:
            second = await ctx.child(kid, 2, name="second")
        except Exception as exc:  # what a body that guards everything sees
            caught.append(type(exc).__name__)
            raise
        return [first, second]

    backend = env.ns.backend
    real_list, real_get = backend.list, backend.get_many
    failed: list[str] = []

    def fail_once(obj: str, what: str | None) -> None:
        if obj == "p-26" and what is not None and not failed:
            failed.append(what)
            raise OSError("disk I/O error on read (injected)")

    def list_rows(obj: str, prefix: str | None, *rest: Any) -> dict[str, str]:
        fail_once(obj, prefix if prefix == jn.CHILDREN else None)
        return real_list(obj, prefix, *rest)

    def get_id(obj: str, keys: Any) -> dict[str, str]:
        fail_once(obj, next((k for k in keys if k.startswith(jn.CHILD_IDS)), None))
        return real_get(obj, keys)

    handle = await env.run(parent, None, execution_id="p-26")
    assert await handle.status() == "waiting"
    if read == "rows":  # back to a state that does not count the id records (written before)
        records = backend.list("p-26", None, None, None, None, False)
        state = json.loads(records["state"])
        del state["child_id_records"]
        ids = [k for k in records if k.startswith(jn.CHILD_IDS)]
        backend.commit("p-26", {"state": json.dumps(state)}, ids, backend.get_alarm("p-26"))
        env.evict("p-26")
    backend.list, backend.get_many = list_rows, get_id  # type: ignore[method-assign]
    # The first child's outcome wakes the parent: its next drive reads the children first
    # (no request reads them meanwhile: ``describe`` lists them too).
    await env.clock.sleep(1.5)
    await env.settle()
    assert failed == [jn.CHILDREN if read == "rows" else jn.CHILD_IDS + "p-26.1-second"]
    assert caught == []
    result = await env.result(handle)
    assert result.ok and result.value == [3, 5]
    assert world.calls["charge"] == 2
