"""``workkit-workflow pause``, ``unpause``, ``delete``, ``cancel --no-compensate`` and
``restart --kind --occurrence`` over a local runtime file (the app and file of test_cli)."""

from __future__ import annotations

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
