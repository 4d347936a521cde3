"""The pre-deploy replay check: the function for tests, the CLI, and the export it reads."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from workkit_workflow import Workflow, workflow
from workkit_workflow.cli import build_parser, main
from workkit_workflow.engine._export import EXPORT_FORMAT, read_export
from workkit_workflow.engine._replay_check import check_journal
from workkit_workflow.errors import InvalidRequestError
from workkit_workflow.testing import WorkflowTestEnv, check_replay, check_replay_async, load_journal

from conftest import unique

GOLDEN = Path(__file__).parent / "golden" / "journal_v1.json"
_modules = itertools.count()

# The golden journal: reserve-inventory and charge-card completed, ship running.
GOLDEN_FLOW = """
from workkit_workflow import Workflow

def handler(name):
    def run(input, prev, ctx):
        raise AssertionError(f"the replay check ran the handler of {{name}}")
    return run

flow = Workflow({name!r}, version={version!r})
for step in {steps!r}:
    flow.step(step, handler(step))
"""

ORIGINAL = ["reserve-inventory", "charge-card", "ship"]
CHANGES = {
    "reordered": (["charge-card", "reserve-inventory", "ship"], 0, "reserve-inventory", "charge-card"),
    "renamed": (["reserve-inventory", "charge-the-card", "ship"], 1, "charge-card", "charge-the-card"),
    "removed": (["reserve-inventory", "ship"], 1, "charge-card", "ship"),
}


def _never(name: str) -> Any:
    def run(*args: Any) -> Any:
        raise AssertionError(f"the replay check ran the handler of {name}")

    return run


def _builder(name: str, steps: list[str], version: str = "1", register: bool = False) -> Workflow:
    flow = Workflow(name, version=version, register=register)
    for step in steps:
        flow.step(step, _never(step))
    return flow


def _app(tmp_path: Path, name: str, steps: list[str], version: str = "1") -> str:
    """A module defining the workflow, importable by the CLI's --app (from tmp_path)."""
    module = f"replay_app_{next(_modules)}"
    source = GOLDEN_FLOW.format(name=name, version=version, steps=steps)
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    return module


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out), out.getvalue()


# -- the function for the user's tests -----------------------------------------------


def test_the_golden_journal_replays_on_unchanged_code() -> None:
    report = check_replay(_builder("golden-order-flow", ORIGINAL), GOLDEN)
    assert report.ok and report.outcome == "replays"
    assert report.replayed == 2  # reserve and charge; ship is the journal's unfinished tail
    assert report.describe() == "replays (2 operations)"


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_step_is_a_mismatch_naming_the_operation(change: str) -> None:
    steps, op, expected, found = CHANGES[change]
    report = check_replay(_builder("golden-order-flow", steps), GOLDEN)
    assert not report.ok and report.outcome == "mismatch" and report.mismatch is not None
    details = report.mismatch.details
    assert details["position"] == op
    assert details["expected"] == {"kind": "step", "name": expected}
    assert details["found"] == {"kind": "step", "name": found}
    assert f"operation #{op}" in report.describe() and repr(expected) in report.describe()


def test_a_removed_last_step_is_a_mismatch_where_the_code_ends() -> None:
    report = check_replay(_builder("golden-order-flow", ORIGINAL[:1]), GOLDEN)
    assert report.outcome == "mismatch" and report.mismatch is not None
    assert report.mismatch.details["position"] == 1
    assert report.mismatch.details["found"] == {"kind": None, "name": None}
    assert "the code ends there" in report.describe()


def test_a_step_of_another_kind_under_the_same_name_is_a_mismatch() -> None:
    flow = Workflow("golden-order-flow", register=False).step("reserve-inventory", _never("r"))
    flow.sleep("charge-card", "1h")
    report = check_replay(flow, GOLDEN)
    assert report.mismatch is not None
    assert report.mismatch.details["found"] == {"kind": "sleep", "name": "charge-card"}


def test_code_first_replays_outputs_gather_and_a_recorded_failure() -> None:
    @workflow(unique("code-first"), register=False)
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step("first", _never("first"))
        both = await asyncio.gather(ctx.step("left", _never("left")), ctx.step("right", _never("right")))
        try:
            await ctx.step("flaky", _never("flaky"))
        except Exception:
            await ctx.sleep("after-failure", "1m")
        return [first, both]

    def entry(op: int, name: str, kind: str = "step", **fields: Any) -> dict[str, Any]:
        return {"op": op, "kind": kind, "name": name, "status": "completed", "output": name, **fields}

    journal = [
        entry(0, "first"),
        entry(1, "left"),
        entry(2, "right"),
        entry(3, "flaky", status="failed", error={"code": "boom", "message": "boom"}),
        entry(4, "after-failure", kind="sleep"),
    ]
    report = check_replay(flow, journal)
    assert report.ok and report.replayed == 5
    swapped = [journal[0], {**journal[1], "op": 2}, {**journal[2], "op": 1}, *journal[3:]]
    assert check_replay(flow, swapped).mismatch is not None


async def test_live_state_operations_replay_by_key(env: WorkflowTestEnv) -> None:
    """``ctx.set_state`` is a journal operation: the check matches it by key, never by value."""

    name = unique("state-replay")

    def flow_with(key: str, register: bool = False) -> Workflow:
        async def body(ctx: Any, input: Any) -> Any:
            await ctx.set_state(key, {"at": "start"})
            await ctx.wait_for_event("go", "go")
            return "done"

        return Workflow(name, body, register=register)

    flow = flow_with("progress", register=True)
    handle = await env.run(flow, None)
    document = await handle.export()
    assert [(e["kind"], e["name"]) for e in document["entries"]] == [("state", "progress"), ("wait", "go")]
    assert (await check_replay_async(flow, document)).ok
    renamed = await check_replay_async(flow_with("stage"), document)
    assert renamed.mismatch is not None and "state 'progress'" in renamed.describe()


async def test_live_state_under_gather_takes_its_position_at_the_call(env: WorkflowTestEnv) -> None:
    """As the engine numbers operations: a ``set_state`` gathered with a step is numbered when
    called, not when its coroutine first runs (the check reported a mismatch for unchanged
    code, and passed code whose order had changed)."""

    name = unique("state-gather")

    def flow_with(state_first: bool, register: bool = False) -> Workflow:
        async def body(ctx: Any, input: Any) -> Any:
            state, step = ctx.set_state("progress", "starting"), ctx.step("a", lambda: 1)
            await (asyncio.gather(state, step) if state_first else asyncio.gather(step, state))
            await ctx.wait_for_event("go", "go")
            return "done"

        return Workflow(name, body, register=register)

    flow = flow_with(state_first=True, register=True)
    handle = await env.run(flow, None)
    document = await handle.export()
    assert [(e["kind"], e["name"]) for e in document["entries"]] == [
        ("state", "progress"),
        ("step", "a"),
        ("wait", "go"),
    ]
    assert (await check_replay_async(flow, document)).ok
    swapped = flow_with(state_first=False)

    async def steps_first(ctx: Any, input: Any) -> Any:
        step, state = ctx.step("a", lambda: 1), ctx.set_state("progress", "starting")
        await asyncio.gather(state, step)
        return "done"

    reordered = await check_replay_async(Workflow(name, steps_first, register=False), document)
    assert reordered.mismatch is not None and reordered.describe().startswith("MISMATCH")
    assert (await check_replay_async(swapped, document)).ok  # the same calls, gathered otherwise


async def test_the_async_variant_and_a_body_that_raises() -> None:
    @workflow(unique("raises"), register=False)
    async def flow(ctx: Any, input: Any) -> Any:
        value = await ctx.step("s", _never("s"))
        return value["missing"]  # new code that cannot read what the journal recorded

    report = await check_replay_async(flow, [{"op": 0, "kind": "step", "name": "s", "status": "completed"}])
    assert report.outcome == "error" and "TypeError" in (report.error or "")
    with pytest.raises(RuntimeError, match="check_replay_async"):
        check_replay(flow, [])


def test_bad_journal_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="not a workkit-workflow export"):
        read_export({"format": "something else"})
    with pytest.raises(InvalidRequestError, match="format version 9"):
        read_export({"format": EXPORT_FORMAT, "format_version": 9})
    with pytest.raises(InvalidRequestError, match="no integer op"):
        read_export(
            {"format": EXPORT_FORMAT, "format_version": 1, "meta": {"workflow": "w"}, "entries": [{}]}
        )


# -- a recorded failure: the body raised -------------------------------------------------

FAILING_FLOW = """
from workkit_workflow import Workflow

async def body(ctx, input):
    for step in {steps!r}:
        await ctx.step(step, lambda: 1)
    if {raises} is not None and input.get("bad"):
        raise {raises}(f"order {{input['order']}} is invalid")
    return "shipped"

flow = Workflow({name!r}, body)
"""


def _failing(name: str, steps: list[str], raises: type[Exception] | None, register: bool = False) -> Workflow:
    """Runs ``steps``, then raises ``raises`` when the input is bad (the module of ``FAILING_FLOW``)."""

    async def body(ctx: Any, input: Any) -> Any:
        for step in steps:
            await ctx.step(step, lambda: 1)
        if raises is not None and input.get("bad"):
            raise raises(f"order {input['order']} is invalid")
        return "shipped"

    return Workflow(name, body, register=register)


async def test_unchanged_code_replays_a_failure_its_body_raised(env: WorkflowTestEnv) -> None:
    """The journal records the body's error (its type and code) as the execution's: the same
    code raising it again at the same point replays (the check reported ``the body raised``)."""
    name = unique("body-raised")
    handle = await env.run(_failing(name, ["a", "b"], ValueError, register=True), {"order": 7, "bad": True})
    document = await handle.export()
    assert document["state"]["status"] == "failed" and document["state"]["error"]["type"] == "ValueError"
    report = await check_replay_async(_failing(name, ["a", "b"], ValueError), document)
    assert report.ok and report.replayed == 2, report.describe()
    assert report.describe() == "replays (2 operations)"
    # Another error type is not the recorded failure: the code changed.
    other = await check_replay_async(_failing(name, ["a", "b"], KeyError), document)
    assert other.outcome == "error" and other.describe().startswith("ERROR: the body raised KeyError")
    # The same error raised before the journal's last operation: it fails elsewhere.
    early = await check_replay_async(_failing(name, ["a"], ValueError), document)
    assert early.outcome == "mismatch" and early.mismatch is not None
    assert early.mismatch.details["position"] == 1
    assert early.mismatch.details["expected"] == {"kind": "step", "name": "b"}
    # Code that no longer raises there (the bug was fixed) replays what was recorded.
    assert (await check_replay_async(_failing(name, ["a", "b"], None), document)).ok


async def test_a_body_raising_where_the_recorded_one_did_not_is_an_error(env: WorkflowTestEnv) -> None:
    name = unique("body-now-raises")
    completed = await env.run(_failing(name, ["a"], ValueError, register=True), {"order": 1, "bad": False})
    document = await completed.export()
    assert document["state"]["status"] == "completed"
    report = await check_replay_async(
        _failing(name, ["a"], ValueError),
        {**document, "meta": {**document["meta"], "input": {"order": 1, "bad": True}}},
    )
    assert report.outcome == "error" and "ValueError: order 1 is invalid" in (report.error or "")


def test_a_recorded_failure_is_matched_by_type_and_code_not_by_message() -> None:
    class Refused(Exception):
        code = "refused"

    flow = _failing(unique("by-code"), ["a"], Refused)
    entries = [{"op": 0, "kind": "step", "name": "a", "status": "completed", "output": 1}]

    def journal(**error: Any) -> dict[str, Any]:
        state = {"status": "failed", "failed_step": None, "error": {"message": "worded otherwise", **error}}
        return {
            "format": EXPORT_FORMAT,
            "format_version": 1,
            "state": state,
            "entries": entries,
            "meta": {"workflow": flow.name, "input": {"order": 2, "bad": True}},
        }

    assert check_replay(flow, journal(code="refused", type="Refused")).ok
    assert not check_replay(flow, journal(code="Refused", type="Refused")).ok
    assert not check_replay(flow, journal(code="refused", type="Other")).ok
    # A step's failure is not the body's own: the body raising is then unexplained.
    stepped = journal(code="refused", type="Refused")
    stepped["state"]["failed_step"] = "a"
    assert check_replay(flow, stepped).outcome == "error"


async def test_a_timeout_error_the_body_raises_is_its_own(env: WorkflowTestEnv) -> None:
    """The check's own time limit raises TimeoutError too: a body raising one is not taken
    for the body being too slow (it reported "did not reach its next operation within 30s")."""
    name = unique("body-timeout")
    handle = await env.run(_failing(name, ["a"], TimeoutError, register=True), {"order": 4, "bad": True})
    document = await handle.export()
    assert (await check_replay_async(_failing(name, ["a"], TimeoutError), document)).ok
    completed = {**document, "state": {**document["state"], "status": "completed", "error": None}}
    report = await check_replay_async(_failing(name, ["a"], TimeoutError), completed)
    assert report.outcome == "error" and report.error == "the body raised TimeoutError: order 4 is invalid"


async def test_a_body_too_slow_is_still_the_checks_timeout() -> None:
    @workflow(unique("slow"), register=False)
    async def flow(ctx: Any, input: Any) -> Any:
        await asyncio.sleep(1)  # not an operation: the check waits for it

    report = await check_journal(flow, load_journal([]), timeout=0.01)
    assert (
        report.outcome == "error" and report.error == "the body did not reach its next operation within 0.01s"
    )


# -- the CLI ---------------------------------------------------------------------------


def test_cli_check_replay_of_the_golden_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _cli(
        "check-replay", "--app", _app(tmp_path, "golden-order-flow", ORIGINAL), "--journal", str(GOLDEN)
    )
    assert code == 0, out
    assert "golden-1  golden-order-flow@1  replays (2 operations)" in out
    steps, op, expected, found = CHANGES["renamed"]
    code, out = _cli(
        "check-replay", "--app", _app(tmp_path, "golden-order-flow", steps), "--journal", str(GOLDEN)
    )
    assert code == 1
    assert (
        f"MISMATCH at operation #{op}: the journal has step {expected!r}, the code calls step {found!r}"
        in out
    )
    code, out = _cli(
        "check-replay", "--app", _app(tmp_path, "golden-order-flow", ORIGINAL), "--journal", "nope.json"
    )
    assert code == 1


async def _parked_runtime_file(path: Path, name: str, ids: list[str]) -> None:
    """A real local runtime file with executions parked after their first step."""
    flow = Workflow(name).step("a", lambda i, p, c: 1).sleep("nap", "1h").step("b", lambda i, p, c: 2)
    env = WorkflowTestEnv(path=str(path))
    try:
        for execution_id in ids:
            await env.run(flow, None, execution_id=execution_id)
        done = Workflow(unique("done")).step("x", lambda i, p, c: 1)
        await env.run(done, None, execution_id="finished-1")
    finally:
        await env.close()


def test_cli_check_replay_of_a_local_runtime_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "workflows.db"
    name = unique("runtime")
    asyncio.run(_parked_runtime_file(db, name, ["r-1", "r-2"]))
    code, out = _cli(
        "check-replay", "--app", _app(tmp_path, name, ["a", "nap-renamed", "b"]), "--db", str(db)
    )
    assert code == 1 and out.count("MISMATCH at operation #1") == 2, out
    assert "finished-1" not in out  # finished executions never replay again
    same = textwrap.dedent(f"""
        from workkit_workflow import Workflow
        flow = Workflow({name!r}).step("a", lambda i, p, c: 1).sleep("nap", "1h").step("b", lambda i, p, c: 2)
    """)
    module = f"replay_app_{next(_modules)}"
    (tmp_path / f"{module}.py").write_text(same)
    code, out = _cli("check-replay", "--app", module, "--db", str(db), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and [e["execution_id"] for e in report["executions"]] == ["r-1", "r-2"]
    code, out = _cli("check-replay", "--app", module, "--db", str(db), "--version", "9")
    assert code == 1 and "UNAVAILABLE" in out and "no version '9'" in out


def test_cli_check_replay_of_a_recorded_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--all`` and ``--journal``: an execution failed by its body replays on unchanged code."""
    monkeypatch.chdir(tmp_path)
    db, exported = tmp_path / "workflows.db", tmp_path / "failed.json"
    name = unique("cli-raised")

    async def record() -> None:
        env = WorkflowTestEnv(path=str(db))
        try:
            flow = _failing(name, ["a", "b"], ValueError, register=True)
            handle = await env.run(flow, {"order": 3, "bad": True}, execution_id="f-1")
            exported.write_text(json.dumps(await handle.export()))
        finally:
            await env.close()

    asyncio.run(record())

    def app(raises: str) -> str:
        module = f"replay_app_{next(_modules)}"
        source = FAILING_FLOW.format(name=name, steps=["a", "b"], raises=raises)
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        return module

    same = app("ValueError")
    for source in (["--db", str(db), "--all"], ["--journal", str(exported)]):
        code, out = _cli("check-replay", "--app", same, *source)
        assert code == 0 and f"f-1  {name}@1  replays (2 operations)" in out, out
    changed = app("RuntimeError")
    for source in (["--db", str(db), "--all"], ["--journal", str(exported)]):
        code, out = _cli("check-replay", "--app", changed, *source)
        assert code == 1 and "ERROR: the body raised RuntimeError: order 3 is invalid" in out, out


# -- exports -----------------------------------------------------------------------------


async def test_export_round_trip(env: WorkflowTestEnv) -> None:
    flow = Workflow(unique("export"), version="v3").step("a", lambda i, p, c: {"n": 1})
    flow.wait_for_event("approval", "approved").step("b", lambda i, p, c: 2)
    handle = await env.run(flow, {"order": 7})
    document = json.loads(json.dumps(await handle.export()))
    assert document["format"] == EXPORT_FORMAT and document["format_version"] == 1
    assert document["meta"]["workflow"] == flow.name and document["meta"]["version"] == "v3"
    assert document["meta"]["input"] == {"order": 7} and document["state"]["status"] == "waiting"
    assert [(e["op"], e["name"], e["status"]) for e in document["entries"]] == [
        (0, "a", "completed"),
        (1, "approval", "waiting"),
    ]
    report = await check_replay_async(flow, document)
    assert report.ok and report.replayed == 1 and report.version == "v3"
    if env.path is not None:  # the CLI reads the runtime file: the same document
        out_file = Path(env.path).with_name("export.json")
        args = build_parser().parse_args(
            ["export", handle.execution_id, "--db", env.path, "--out", str(out_file)]
        )
        out = io.StringIO()
        assert await args.run(args, out) == 0 and "2 entries" in out.getvalue()
        assert json.loads(out_file.read_text()) == document


def test_cli_move_runs_a_blocked_execution_on_the_new_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "workflows.db"
    name = unique("cli-move")
    asyncio.run(_parked_runtime_file(db, name, ["m-1"]))
    # The new code has only version 2, with the same operations.
    module = f"replay_app_{next(_modules)}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(f"""
        from workkit_workflow import Workflow
        flow = Workflow({name!r}, version="2").step("a", lambda i, p, c: 1).sleep("nap", "1h")
        flow.step("b", lambda i, p, c: 2)
    """)
    )
    code, out = _cli("check-replay", "--app", module, "--db", str(db), "--version", "2")
    assert code == 0 and "m-1  " + name + "@2  replays (1 operation)" in out
    code, out = _cli("move", "m-1", "--to-version", "2", "--app", module, "--db", str(db), "--timeout", "5")
    assert code == 0 and out.strip() == "moved m-1 to version '2'; it is now completed", out
    code, out = _cli("list", "--db", str(db))
    assert any(line.split()[:4] == ["m-1", name, "completed", "2"] for line in out.splitlines()), out
    code, out = _cli("move", "m-1", "--to-version", "3", "--app", module, "--db", str(db))
    assert code == 1
