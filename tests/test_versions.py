"""Workflow versions: side by side in the registry, kept per execution, blocked when
absent, moved on request. Over both local storages (the ``env`` fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from workkit_workflow import REGISTRY, Workflow, workflow
from workkit_workflow.definitions._versions import DEFAULT_VERSION
from workkit_workflow.definitions._workflow import Registry
from workkit_workflow.engine._versions import BLOCKED_MAX_RETRY, retry_delay
from workkit_workflow.errors import (
    DefinitionError,
    ExecutionConflictError,
    UnknownWorkflowError,
    VersionUnavailableError,
)
from workkit_workflow.testing import WorkflowTestEnv, step_names

from conftest import unique


def _flows(name: str, calls: list[str]) -> tuple[Workflow, Workflow]:
    """v1: a, an hour's sleep, b. v2: a, the sleep, c (b renamed)."""

    def record(step: str) -> Any:
        return lambda i, p, c: calls.append(step) or step

    v1 = Workflow(name, version="v1").step("a", record("a@v1")).sleep("nap", "1h").step("b", record("b@v1"))
    v2 = Workflow(name, version="v2").step("a", record("a@v2")).sleep("nap", "1h").step("c", record("c@v2"))
    return v1, v2


async def _alarm_of(env: WorkflowTestEnv, execution_id: str) -> float | None:
    return env.ns.backend.alarms().get(execution_id)


# -- the registry ---------------------------------------------------------------------


def test_the_newest_version_is_the_one_registered_last() -> None:
    registry = Registry()
    one = Workflow("r", register=False).step("s", lambda i, p, c: 1)
    two = Workflow("r", version="2", register=False).step("s", lambda i, p, c: 2)
    registry.register(one)
    registry.register(two)
    assert registry.get("r") is two and registry.get("r", "1") is one
    assert registry.versions("r") == ["1", "2"]
    again = Workflow("r", register=False).step("s", lambda i, p, c: 3)
    registry.register(again)  # the same name and version replaces, and becomes the newest
    assert registry.get("r") is again and registry.versions("r") == ["2", "1"]
    registry.unregister("r", "1")
    assert registry.get("r") is two
    with pytest.raises(VersionUnavailableError) as caught:
        registry.get("r", "1")
    assert caught.value.details["deployed"] == ["2"] and isinstance(caught.value, UnknownWorkflowError)
    registry.unregister("r", "2")
    assert registry.names() == [] and registry.versions("r") == []
    with pytest.raises(UnknownWorkflowError, match="no workflow named 'r'"):
        registry.get("r")


def test_version_labels_are_checked_where_they_are_given() -> None:
    assert Workflow(unique("default"), register=False).version == DEFAULT_VERSION == "1"

    @workflow(unique("decorated"), version="2026-11-30", register=False)
    async def flow(ctx: Any, input: Any) -> None:
        return None

    assert flow.version == "2026-11-30"
    for bad in ("", "v 2", "-1", "x" * 65, 2):
        with pytest.raises(DefinitionError, match="version must be"):
            Workflow(unique("bad"), version=bad, register=False)  # type: ignore[arg-type]


def test_the_retry_delay_of_a_blocked_execution_is_bounded() -> None:
    delays = [retry_delay(n) for n in range(1, 10)]
    assert delays[:4] == [5.0, 10.0, 20.0, 40.0]
    assert max(delays) == BLOCKED_MAX_RETRY and delays == sorted(delays)


# -- executions keep their version ------------------------------------------------------


async def test_started_on_v1_finishes_on_v1_after_v2_is_registered(env: WorkflowTestEnv) -> None:
    calls: list[str] = []
    name = unique("keep")
    v1, _ = _flows(name, calls)
    handle = await env.run(v1, None)
    assert await handle.status() == "sleeping"
    _, v2 = _flows(name, calls)  # the deploy: v2 registered after v1, so the newest
    assert REGISTRY.get(name) is v2
    result = await env.result(handle)
    assert result.ok and result.value == "b@v1"
    assert calls == ["a@v1", "b@v1"]
    assert (await handle.describe())["version"] == "v1"
    assert (await handle.meta())["version"] == "v1"
    fresh = await env.run(name, None)  # a new execution by name runs the newest
    assert (await fresh.describe())["version"] == "v2"
    assert (await env.result(fresh)).value == "c@v2"


async def test_a_workflow_object_starts_its_own_version(env: WorkflowTestEnv) -> None:
    calls: list[str] = []
    v1, _v2 = _flows(unique("explicit"), calls)
    handle = await env.run(v1, None)
    assert (await handle.describe())["version"] == "v1"
    by_name = await env.client.run(v1.name, None, version="v1")
    assert (await by_name.describe())["version"] == "v1"
    with pytest.raises(VersionUnavailableError, match="no version 'v9'"):
        await env.client.run(v1.name, None, version="v9")


async def test_without_its_version_an_execution_waits_blocked_and_carries_on_when_it_returns(
    env: WorkflowTestEnv,
) -> None:
    calls: list[str] = []
    name = unique("blocked")
    v1, _v2 = _flows(name, calls)
    handle = await env.run(v1, None)
    REGISTRY.unregister(name, "v1")  # a deploy without v1
    await env.clock.sleep(3600)  # the sleep's alarm fires: v1 is needed and missing
    await env.settle()
    view = await handle.describe()
    assert view["status"] == "blocked"
    blocked = view["blocked"]
    assert (blocked["reason"], blocked["version"], blocked["deployed"]) == (
        "version_unavailable",
        "v1",
        ["v2"],
    )
    assert await _alarm_of(env, handle.execution_id) == blocked["retry_at"] == view["wake_at"]
    assert calls == ["a@v1"]  # nothing ran, v2's code least of all
    if env.path is not None:  # what `show` and the page say, read from the runtime file
        from workkit_workflow.history._journals import JournalFile
        from workkit_workflow.history._timeline import headline

        journals = JournalFile.open(env.path)
        try:
            record = journals.execution(handle.execution_id).record()
        finally:
            journals.close()
        assert (
            headline(record)
            == "Blocked: version 'v1' of its workflow is not deployed; it carries on once it is."
        )
    await env.clock.sleep(blocked["retry_at"] - env.clock.now())  # still missing: tries again later
    await env.settle()
    again = (await handle.describe())["blocked"]
    assert again["tries"] == 2 and again["since"] == blocked["since"]
    assert again["retry_at"] - blocked["retry_at"] == retry_delay(2)
    REGISTRY.register(v1)  # the next deploy brings v1 back
    result = await env.result(handle)
    assert result.ok and result.value == "b@v1"
    assert calls == ["a@v1", "b@v1"]
    view = await handle.describe()
    assert view["blocked"] is None and view["version"] == "v1"


async def test_an_unknown_workflow_blocks_the_same_way(env: WorkflowTestEnv) -> None:
    calls: list[str] = []
    v1, _ = _flows(unique("gone"), calls)
    REGISTRY.unregister(v1.name, "v2")
    handle = await env.run(v1, None)
    REGISTRY.unregister(v1.name)
    await env.clock.sleep(3600)
    await env.settle()
    view = await handle.describe()
    assert view["status"] == "blocked" and view["blocked"]["reason"] == "unknown_workflow"
    assert view["blocked"]["deployed"] == []
    assert await _alarm_of(env, handle.execution_id) is not None
    REGISTRY.register(v1)
    assert (await env.result(handle)).value == "b@v1"


async def test_a_blocked_execution_can_be_cancelled_and_compensates_once_its_code_is_back(
    env: WorkflowTestEnv,
) -> None:
    undone: list[str] = []
    name = unique("cancel-blocked")
    v1 = (
        Workflow(name)
        .step("a", lambda i, p, c: 1)
        .sleep("nap", "1h")
        .on_failure(lambda ctx: undone.append("x"))
    )
    handle = await env.run(v1, None)
    REGISTRY.unregister(name)
    await env.clock.sleep(3600)
    await env.settle()
    assert await handle.status() == "blocked"
    assert await handle.cancel("deploy gone wrong")
    await env.settle()
    view = await handle.describe()
    assert view["status"] == "cancelled" and view["blocked"] is not None and not view["settled"]
    REGISTRY.register(v1)
    result = await env.result(handle)
    assert result.status == "cancelled" and undone == ["x"]


async def test_an_execution_moves_to_another_version(env: WorkflowTestEnv) -> None:
    calls: list[str] = []
    name = unique("move")
    v1, v2 = _flows(name, calls)
    # v2 keeps v1's operations (a, nap, b) and changes b's code.
    v2_same_shape = (
        Workflow(name, version="v2")
        .step("a", lambda i, p, c: calls.append("a@v2") or "a")
        .sleep("nap", "1h")
        .step("b", lambda i, p, c: calls.append("b@v2") or "b@v2")
    )
    handle = await env.run(v1, None)
    REGISTRY.unregister(name, "v1")
    await env.clock.sleep(3600)
    await env.settle()
    assert await handle.status() == "blocked"
    assert v2 is not v2_same_shape and REGISTRY.get(name) is v2_same_shape
    assert await handle.move_to_version("v2") is True
    await env.settle()
    assert await handle.status() == "completed"  # at once: the move wakes the runner, no alarm needed
    result = await env.result(handle)
    assert result.ok and result.value == "b@v2"
    assert calls == ["a@v1", "b@v2"]  # a replayed from the journal, not run again by v2
    meta = await handle.meta()
    assert meta["version"] == "v2" and [(m["from"], m["to"]) for m in meta["moved"]] == [("v1", "v2")]
    with pytest.raises(ExecutionConflictError):
        await handle.move_to_version("v2")  # finished: nothing to move
    with pytest.raises(VersionUnavailableError):
        await (await env.run(v2_same_shape, None)).move_to_version("v7")


async def test_restart_runs_the_version_asked_for(env: WorkflowTestEnv) -> None:
    calls: list[str] = []
    v1, _v2 = _flows(unique("restart"), calls)
    first = await env.run(v1, None)
    assert (await env.result(first)).ok
    moved = await env.client.restart(first.execution_id, from_step="nap", kind="sleep", version="v2")
    assert (await moved.describe())["version"] == "v2"
    assert step_names(await moved.journal())[:1] == ["a"]


async def test_executions_from_before_versions_run_the_default_version(env: WorkflowTestEnv) -> None:
    import json

    calls: list[str] = []
    name = unique("legacy")
    Workflow(name).step("a", lambda i, p, c: calls.append("a@1") or 1)
    Workflow(name, version="2").step("a", lambda i, p, c: calls.append("a@2") or 2)
    meta = {"v": 1, "execution_id": "legacy-1", "workflow": name, "input": None, "created_at": 0.0}
    meta.update(deadline=None, restarted_from=None)  # the meta of 0.2: no version
    state = {"v": 1, "status": "pending", "phase": "main", "created_at": 0.0, "updated_at": 0.0}
    env.ns.backend.commit(
        "legacy-1", {"meta": json.dumps(meta), "state": json.dumps(state)}, (), env.clock.now()
    )
    handle = env.client.execution("legacy-1")
    result = await env.result(handle)
    assert result.ok and calls == ["a@1"]
    assert (await handle.describe())["version"] == "1" and (await handle.meta())["version"] == "1"


# -- where the version shows ---------------------------------------------------------


async def _shown(db: str, name: str) -> None:
    from workkit_workflow.history import HistoryQuery
    from workkit_workflow.history.page import render_execution_page

    env = WorkflowTestEnv(path=db, history=True)
    try:
        flow = Workflow(name, version="2026-11-30").step("a", lambda i, p, c: 1)
        handle = await env.run(flow, None, execution_id="shown-1")
        assert (await env.result(handle)).ok
        history = await HistoryQuery(env.history).get_execution("shown-1")
        assert history.execution.version == "2026-11-30"
        assert "version <code>2026-11-30</code>" in render_execution_page(history)
    finally:
        await env.close()


def test_the_cli_and_the_timeline_page_show_the_version(tmp_path: Any) -> None:
    import asyncio
    import io

    from workkit_workflow.cli import main

    db, name = str(tmp_path / "workflows.db"), unique("shown")
    asyncio.run(_shown(db, name))
    out = io.StringIO()
    assert main(["list", "--db", db], out) == 0
    header, row = out.getvalue().splitlines()[:2]
    assert header.split()[:4] == ["EXECUTION", "WORKFLOW", "STATUS", "VERSION"]
    assert row.split()[:4] == ["shown-1", name, "completed", "2026-11-30"]
    out = io.StringIO()
    assert main(["show", "shown-1", "--db", db], out) == 0
    assert "version 2026-11-30" in out.getvalue()


def test_the_readme_versions_example_prints_what_its_comments_say(tmp_path: Any) -> None:
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    found = re.search(
        r"<!-- versions-example -->\n```python\n(.*?)```", (root / "README.md").read_text(), re.S
    )
    assert found is not None
    (tmp_path / "example.py").write_text(found[1])
    run = subprocess.run(
        [sys.executable, "-W", "error", "example.py"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(root / "src")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == [
        "sleeping 1",
        "MISMATCH at operation #0: the journal has step 'reserve', the code calls step 'reserve-stock'",
        "blocked version_unavailable ['2']",
        "{'tx': 'tx-o-1'}",
    ]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (
            "/execute",
            {"workflow": "versioned-w", "execution_id": "obj", "version": "a b"},
            400,
            "invalid_request",
        ),
        (
            "/execute",
            {"workflow": "versioned-w", "execution_id": "obj", "version": "9"},
            404,
            "version_unavailable",
        ),
        ("/version", {"version": ""}, 400, "invalid_request"),
        ("/version", {"version": "2", "extra": 1}, 400, "invalid_request"),
        ("/version", {"version": "2"}, 404, "execution_not_found"),
    ],
)
async def test_bad_version_requests_get_structured_4xx(path: str, body: Any, status: int, code: str) -> None:
    import json

    from workkit_workflow.engine._ports import WireRequest
    from workkit_workflow.local import LocalNamespace

    Workflow("versioned-w", version="2").step("s", lambda i, p, c: 1)
    async with LocalNamespace() as ns:
        request = WireRequest(method="POST", path=path, body=json.dumps(body).encode(), query={})
        response = await ns.fetch("obj", request)
        assert response.status == status, response.body
        assert response.body["error"]["code"] == code
        assert ns.backend.list("obj", None, None, None, None, False) == {}


def _waiting_flows(name: str, calls: list[str]) -> tuple[Workflow, Workflow]:
    def record(step: str) -> Any:
        return lambda i, p, c: calls.append(step) or step

    v1 = Workflow(name, version="v1").step("a", record("a@v1")).wait_for_event("w", "go")
    v1.step("b", record("b@v1"))
    v2 = Workflow(name, version="v2").step("a", record("a@v2")).wait_for_event("w", "go")
    v2.step("b", record("b@v2"))
    return v1, v2


@pytest.mark.parametrize("turns", range(0, 40, 3))
async def test_a_move_at_any_turn_of_a_start_is_observed(env: WorkflowTestEnv, turns: int) -> None:
    """The move is a signal to the runner (``_runner``): wherever the start is when it
    arrives, the execution ends on the new version and no step runs twice."""
    import asyncio

    calls: list[str] = []
    v1, _ = _waiting_flows(unique("move-sweep"), calls)
    handle = await env.start(v1, None)
    for _ in range(turns):
        await asyncio.sleep(0)
    assert await handle.move_to_version("v2") is True
    await env.settle()
    assert await handle.status() == "waiting"  # whoever drove after the move parked at the wait
    await handle.send_event("go", None, event_id="go-1")
    result = await env.result(handle)
    assert result.ok and (await handle.meta())["version"] == "v2"
    # "a" ran once, on whichever version drove first; the wake-up replayed on v2.
    assert len(calls) == 2 and calls[0] in ("a@v1", "a@v2") and calls[1] == "b@v2", calls
