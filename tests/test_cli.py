"""``workkit-workflow``: list, show, cancel, resume over a local runtime file."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from workkit_workflow.cli import main

APP = textwrap.dedent(
    """
    from workkit_workflow import NonRetryableError, RetryPolicy, Workflow, workflow

    calls = {}

    def charge(input, prev, ctx):
        calls[input["order_id"]] = calls.get(input["order_id"], 0) + 1
        if calls[input["order_id"]] == 1:
            raise ConnectionError("card network timeout")
        return {"tx": "tx-" + input["order_id"]}

    def ship(input, prev, ctx):
        raise NonRetryableError("address rejected by carrier")

    async def undo(ctx):
        await ctx.step("refund-payment", lambda: {"refunded": True})
        await ctx.step("release-inventory", lambda: {"released": True})

    orders = (
        Workflow("cli-order", retry=RetryPolicy(max_attempts=3, initial_delay=0.01))
        .step("reserve-inventory", lambda i, p, c: {"reserved": True})
        .step("charge-card", charge)
        .step("ship", ship)
        .on_failure(undo)
    )

    async def undo_approval(ctx):
        await ctx.step("notify-cancelled", lambda: {"notified": True})

    @workflow("cli-approval")
    async def approval(ctx, input):
        await ctx.step("request", lambda: {"sent": True})
        decision = await ctx.wait_for_event("await-approval", "approved")
        await ctx.step("apply", lambda: {"applied": decision})
        return decision

    approval.on_failure(undo_approval)

    @workflow("cli-slow-after-event")
    async def slow_after_event(ctx, input):
        import asyncio

        got = await ctx.wait_for_event("go", "go")

        async def slow():
            await asyncio.sleep(0.5)
            return got

        return await ctx.step("slow", slow)

    @workflow("cli-many-waits")
    async def many_waits(ctx, input):
        import asyncio

        waits = [ctx.wait_for_event(f"w{n:02d}", f"signal-{n:02d}") for n in range(input["n"])]
        return len(await asyncio.gather(*waits))
    """
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("app")
    (folder / "cli_app.py").write_text(APP)
    sys.path.insert(0, str(folder))
    return folder


def populate(db: str) -> None:
    import cli_app

    from workkit_workflow import create_durable_workflow
    from workkit_workflow.history import LocalD1
    from workkit_workflow.local import LocalNamespace

    async def go() -> None:
        history = LocalD1(db)
        async with LocalNamespace(db, env={"HISTORY_DB": history}) as ns:
            client = create_durable_workflow(ns)
            order = {"order_id": uuid.uuid4().hex}  # the app counts charge attempts per order
            handle = await client.run(cli_app.orders, order, execution_id="order-1")
            await handle.result(timeout=10)
            for n in (1, 2):
                await client.run(cli_app.approval, {"n": n}, execution_id=f"approval-{n}")
            await ns.idle()
        history.close()

    asyncio.run(go())


@pytest.fixture
def db(app: Path, tmp_path: Path) -> str:
    path = str(tmp_path / "workflows.db")
    populate(path)
    return path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out)
    return code, out.getvalue()


def test_list_shows_every_execution(db: str) -> None:
    code, out = run("list", "--db", db)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["EXECUTION", "WORKFLOW", "STATUS"]
    assert {line.split()[0] for line in lines[1:]} == {"order-1", "approval-1", "approval-2"}
    assert "ship / compensation completed" in out


@pytest.mark.parametrize(("key", "value"), [("state", "{not json"), ("meta", "[1, 2]")])
def test_list_shows_an_execution_whose_records_cannot_be_read_as_damaged(
    db: str, capsys: Any, key: str, value: str
) -> None:
    # One damaged execution does not hide the others: it is a row of its own, exit 0.
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE kv SET value = ? WHERE obj = 'approval-1' AND key = ?", [value, key.encode()])
    code, out = run("list", "--db", db)
    assert code == 0, out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"order-1", "approval-1", "approval-2"}
    assert "damaged" in rows["approval-1"] and f"record '{key}'" in rows["approval-1"]
    assert "the records of approval-1 cannot be read" in capsys.readouterr().err
    code, out = run("list", "--db", db, "--json")
    damaged = [e for e in json.loads(out)["executions"] if e["status"] == "damaged"]
    assert [e["execution_id"] for e in damaged] == ["approval-1"]
    assert damaged[0]["error"]["code"] == "damaged_record"
    assert run("show", "approval-1", "--db", db)[0] == 1, "its own records stay an error"


def test_list_filters_and_pages(db: str) -> None:
    code, out = run("list", "--db", db, "--status", "waiting", "--json")
    assert code == 0
    body = json.loads(out)
    assert sorted(e["execution_id"] for e in body["executions"]) == ["approval-1", "approval-2"]
    code, out = run("list", "--db", db, "--limit", "2", "--json")
    first = json.loads(out)
    assert len(first["executions"]) == 2 and first["cursor"]
    code, out = run("list", "--db", db, "--limit", "2", "--json", "--cursor", first["cursor"])
    second = json.loads(out)
    seen = [e["execution_id"] for e in first["executions"] + second["executions"]]
    assert sorted(seen) == ["approval-1", "approval-2", "order-1"] and second["cursor"] is None
    code, out = run("list", "--db", db, "--workflow", "cli-order")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["order-1"]
    code, out = run("list", "--db", db, "--since", "2999-01-01")
    assert out.strip() == "no executions"


def test_show_tells_what_happened_to_a_failed_and_compensated_execution(db: str) -> None:
    code, out = run("show", "order-1", "--db", db)
    assert code == 0
    print(out)
    assert "[FAILED]" in out
    assert "Failed at step 'ship' (attempt 1): non_retryable: address rejected by carrier." in out
    assert "Compensation ran and completed" in out
    assert "2 attempts" in out  # charge-card
    assert "attempt 1  ✗ failed" in out and "ConnectionError: card network timeout" in out
    assert "backoff" in out
    steps = out[out.index("steps:") : out.index("compensation:")]
    assert steps.index("reserve-inventory") < steps.index("charge-card") < steps.index("ship")
    compensation = out[out.index("compensation:") :]
    assert "compensation: completed" in compensation
    assert "refund-payment" in compensation and "release-inventory" in compensation


def test_resume_delivers_an_event_and_the_execution_finishes(db: str) -> None:
    code, out = run("show", "approval-1", "--db", db)
    assert "Waiting for 'approved'" in out and "waiting for event 'approved'" in out
    code, out = run(
        "resume", "approval-1", "approved", "--payload", '{"by": "ana"}', "--db", db, "--app", "cli_app"
    )
    assert code == 0, out
    assert "delivered 'approved' to approval-1; it is now completed" in out
    code, out = run("show", "approval-1", "--db", db)
    assert "[COMPLETED]" in out and "received event 'approved'" in out


def test_cancel_runs_compensation(db: str) -> None:
    code, out = run("cancel", "approval-2", "--reason", "customer left", "--db", db, "--app", "cli_app")
    assert (code, out.strip()) == (0, "cancelled approval-2")
    code, out = run("show", "approval-2", "--db", db)
    assert "Cancelled (customer left). Compensation ran and completed" in out
    assert "notify-cancelled" in out
    code, out = run("cancel", "approval-2", "--db", db, "--app", "cli_app")
    assert code == 1 and "already finished" in out


def test_errors_are_one_line_with_exit_codes(db: str, tmp_path: Path, capsys: Any) -> None:
    assert run("show", "nope", "--db", db)[0] == 1
    assert "no execution 'nope'" in capsys.readouterr().err
    assert run("list", "--db", str(tmp_path / "missing.db"))[0] == 1
    assert "no runtime database" in capsys.readouterr().err
    assert run("resume", "approval-1", "x", "--payload", "{bad", "--db", db, "--app", "cli_app")[0] == 2
    assert run("cancel", "nope", "--db", db, "--app", "cli_app")[0] == 1
    assert "no execution with this id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as no_app:
        run("cancel", "approval-1", "--db", db)
    assert no_app.value.code == 2
    assert run("cancel", "approval-1", "--db", db, "--app", "no_such_module_here")[0] == 1
    assert "cannot import --app" in capsys.readouterr().err
    assert run("list", "--db", db, "--since", "yesterday")[0] == 2
    for instant in ("nan", "inf", "1e400"):  # nan listed everything
        assert run("list", "--db", db, "--since", instant)[0] == 2
        assert run("list", "--db", db, "--until", instant)[0] == 2
    with pytest.raises(SystemExit) as exit_info:
        run("frobnicate")
    assert exit_info.value.code == 2


def test_a_port_out_of_range_is_a_usage_error(db: str) -> None:
    for port in ("99999", "-1", "http"):
        with pytest.raises(SystemExit) as exit_info:
            run("serve", "--db", db, "--port", port)
        assert exit_info.value.code == 2


def test_console_script_help_runs_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "workkit_workflow.cli", "--help"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0
    for command in ("list", "show", "cancel", "resume", "serve", "demo"):
        assert command in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "workkit_workflow.cli", "show", "x", "--db", str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "no runtime database" in result.stderr


def test_resume_delivers_an_event_past_those_the_state_lists(app: Path, tmp_path: Path) -> None:
    # Waiting for 40 events, the state lists the first 32 and counts them all: an event
    # past those is still one it waits for, not a typo.
    import cli_app

    from workkit_workflow import create_durable_workflow
    from workkit_workflow.local import LocalNamespace

    db = str(tmp_path / "many.db")

    async def go() -> None:
        async with LocalNamespace(db) as ns:
            await create_durable_workflow(ns).run(cli_app.many_waits, {"n": 40}, execution_id="many-1")

    asyncio.run(go())
    code, out = run("resume", "many-1", "signal-39", "--db", db, "--app", "cli_app")
    assert code == 0, out
    assert "delivered 'signal-39' to many-1; it is now waiting" in out


def test_text_from_senders_and_steps_reaches_the_terminal_escaped(app: Path, tmp_path: Path) -> None:
    # Step names, error messages, cancel reasons and state are written by step code and
    # event senders: their control sequences (ESC, a C1 CSI, a bidi override) print escaped.
    from workkit_workflow import NonRetryableError, create_durable_workflow, workflow
    from workkit_workflow.local import LocalNamespace

    evil = "\x1b]0;title\x07\x1b[2J\x9b31m\u202e"

    @workflow("cli-escapes")
    async def escapes(ctx: Any, input: Any) -> None:
        await ctx.set_state("note", evil)
        got = await ctx.wait_for_event("w", "go")

        def boom() -> None:
            raise NonRetryableError("failed: " + got)

        await ctx.step("boom" + evil, boom)

    db = str(tmp_path / "escapes.db")

    async def go() -> None:
        async with LocalNamespace(db) as ns:
            client = create_durable_workflow(ns)
            handle = await client.run(escapes, None, execution_id="esc-1")
            await handle.resume("go", evil)
            await handle.result(timeout=10)
            await (await client.run(escapes, None, execution_id="esc-2")).cancel(evil)

    asyncio.run(go())
    for argv in (("list",), ("show", "esc-1"), ("journal", "esc-1"), ("show", "esc-2")):
        code, out = run(*argv, "--db", db)
        assert code == 0, out
        assert not any(c in out for c in "\x1b\x07\x9b\u202e"), (argv, out)
    assert "failed: \\x1b]0;title\\x07\\x1b[2J\\x9b31m\\u202e" in run("show", "esc-1", "--db", db)[1]
    assert "boom\\x1b]0;" in run("journal", "esc-1", "--db", db)[1]
    code, out = run("show", "esc-1", "--db", db, "--json")
    assert json.loads(out)["state"]["note"] == evil, "--json is JSON, which escapes them itself"
