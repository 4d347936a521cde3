"""``workkit-workflow pause``, ``unpause``, ``delete``, ``cancel --no-compensate`` and
``restart --kind --occurrence`` over a local runtime file (the app and file of test_cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_cli import app, db, run  # noqa: F401 - the fixtures of the CLI suite


def test_pause_then_unpause_a_waiting_execution(db: str) -> None:  # noqa: F811
    code, out = run("pause", "approval-1", "--db", db, "--app", "cli_app")
    assert (code, out.strip()) == (0, "paused approval-1; it is now paused")
    code, out = run("pause", "approval-1", "--db", db, "--app", "cli_app")
    assert (code, out.strip()) == (0, "approval-1 was already paused")
    code, out = run("list", "--db", db, "--json")
    rows = {row["execution_id"]: row for row in _json_lines(out)}
    assert rows["approval-1"]["status"] == "paused"
    code, out = run("resume", "approval-1", "approved", "--db", db, "--app", "cli_app", "--force")
    assert code == 0 and "it is now paused" in out, "the event waits in the inbox while paused"
    code, out = run("unpause", "approval-1", "--db", db, "--app", "cli_app")
    assert (code, out.strip()) == (0, "continued approval-1; it is now completed")
    code, out = run("unpause", "approval-1", "--db", db, "--app", "cli_app")
    assert (code, out.strip()) == (0, "approval-1 was not paused (it is completed)")


def test_cancel_without_compensation_then_delete(db: str) -> None:  # noqa: F811
    code, out = run("cancel", "approval-2", "--no-compensate", "--db", db, "--app", "cli_app")
    assert (code, out.strip()) == (0, "cancelled approval-2")
    code, out = run("show", "approval-2", "--db", db)
    assert "notify-cancelled" not in out
    code, out = run("delete", "approval-2", "--db", db, "--app", "cli_app")
    assert (code, out.strip()) == (0, "deleted approval-2")
    code, out = run("delete", "approval-2", "--db", db, "--app", "cli_app")
    assert code == 1


def test_delete_of_a_running_execution_is_refused(db: str, capsys: object) -> None:  # noqa: F811
    code, _ = run("delete", "approval-1", "--db", db, "--app", "cli_app")
    assert code == 1
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "only a finished execution can be deleted" in err


def test_restart_by_kind_and_occurrence(db: str, capsys: object) -> None:  # noqa: F811
    code, out = run(
        "restart", "order-1", "--from-step", "ship", "--kind", "step", "--occurrence", "1",
        "--new-id", "order-1b", "--db", db, "--app", "cli_app",
    )  # fmt: skip
    assert code == 0 and "restarted order-1 from step 'ship' as order-1b" in out
    code, _ = run(
        "restart", "order-1", "--from-step", "ship", "--kind", "sleep", "--db", db, "--app", "cli_app"
    )
    assert code == 1
    assert "no operation named 'ship' of kind sleep" in capsys.readouterr().err  # type: ignore[attr-defined]


def _json_lines(text: str) -> list[dict[str, object]]:
    import json

    data = json.loads(text)
    return list(data["executions"] if isinstance(data, dict) else data)


def test_the_page_actions_take_the_control_verbs() -> None:
    import pytest

    from workkit_workflow.errors import InvalidRequestError
    from workkit_workflow.history._actions import parse_action

    assert parse_action("pause", {}).verb == "pause"
    assert parse_action("cancel", {"compensate": False}).options == {"compensate": False}
    restart = parse_action("restart", {"from_step": "a", "kind": "sleep", "occurrence": 2})
    assert restart.options == {"kind": "sleep", "occurrence": 2}
    for verb, body in (
        ("cancel", {"compensate": "no"}),
        ("restart", {"from_step": "a", "occurrence": "2"}),
        ("delete", {"force": True}),
    ):
        with pytest.raises(InvalidRequestError):
            parse_action(verb, body)


def test_a_command_whose_timeout_runs_out_still_succeeds(app: Path, tmp_path: Path, capsys: Any) -> None:  # noqa: F811
    # The event is delivered (and committed, with the alarm that carries the execution on)
    # before the wait: a timeout running out is no failure, and a script retrying on exit 1
    # would deliver the event twice.
    import asyncio

    import cli_app

    from workkit_workflow import create_durable_workflow
    from workkit_workflow.local import LocalNamespace

    path = str(tmp_path / "slow.db")

    async def start() -> None:
        async with LocalNamespace(path) as ns:
            await create_durable_workflow(ns).run(cli_app.slow_after_event, None, execution_id="slow-1")

    asyncio.run(start())
    code, out = run(
        "resume", "slow-1", "go", "--payload", "1", "--db", path, "--app", "cli_app", "--timeout", "0"
    )
    assert (code, out.strip()) == (0, "delivered 'go' to slow-1; it is now running")
    err = capsys.readouterr().err
    assert "note: slow-1 was still running when --timeout (0 s) ran out" in err

    async def reopen() -> object:
        async with LocalNamespace(path) as ns:  # its stored alarm carries it on
            return (await create_durable_workflow(ns).execution("slow-1").result(timeout=10)).value

    assert asyncio.run(reopen()) == 1


def test_a_timeout_that_is_not_a_number_of_seconds_is_a_usage_error(db: str) -> None:  # noqa: F811
    import pytest

    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit) as exit_info:
            run("resume", "approval-1", "approved", "--db", db, "--app", "cli_app", "--timeout", bad)
        assert exit_info.value.code == 2
    _, out = run("show", "approval-1", "--db", db)
    assert "[WAITING]" in out, "nothing was delivered"
