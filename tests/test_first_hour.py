"""A new user's first hour with the CLI, by subprocess: every execution of a runtime file
without history, typos refused, restart from a step, JSON on every read, abandoned
waits that read as abandoned, and reads that work while another process owns the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workkit_workflow.cli import format_timeline
from workkit_workflow.history import ExecutionHistory, ExecutionRecord, StepRecord
from workkit_workflow.history._timeline import build
from workkit_workflow.history.page import render_execution_page

SRC = str(Path(__file__).parents[1] / "src")

# The README's "Local runtime" shape: a LocalNamespace on a file, no history binding.
APP = textwrap.dedent(
    """
    import asyncio, os, sys
    from workkit_workflow import NonRetryableError, RetryPolicy, Workflow, create_durable_workflow
    from workkit_workflow.local import LocalNamespace

    def ship(input, prev, ctx):
        if os.environ.get("CARRIER_DOWN"):
            raise NonRetryableError("carrier rejected the parcel")
        return {"tracking": "trk-" + input["order_id"]}

    orders = (
        Workflow("fh-order", retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
        .step("reserve", lambda i, p, c: {"reservation": "res-" + i["order_id"]})
        .step("ship", ship)
    )
    approval = (
        Workflow("fh-approval")
        .step("request", lambda i, p, c: {"sent": True})
        .wait_for_event("manager", "approved", timeout="2d")
        .step("apply", lambda i, p, c: {"applied": p})
    )
    cooling = Workflow("fh-cooling").step("start", lambda i, p, c: 1).sleep("cool-off", "1h").step(
        "finish", lambda i, p, c: 2
    )

    async def populate(db):
        async with LocalNamespace(db) as ns:
            client = create_durable_workflow(ns)
            os.environ["CARRIER_DOWN"] = "1"
            await (await client.run(orders, {"order_id": "o-1"}, execution_id="order-1")).result(timeout=10)
            del os.environ["CARRIER_DOWN"]
            await (await client.run(orders, {"order_id": "o-2"}, execution_id="order-2")).result(timeout=10)
            await client.run(approval, {}, execution_id="approval-1")
            await client.run(cooling, {}, execution_id="cooling-1")
            await ns.idle()

    async def hold(db):
        async with LocalNamespace(db):
            print("holding", flush=True)
            await asyncio.sleep(60)

    if __name__ == "__main__":
        asyncio.run({"populate": populate, "hold": hold}[sys.argv[1]](sys.argv[2]))
    """
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("first-hour")
    (folder / "fh_app.py").write_text(APP)
    return folder


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CARRIER_DOWN"} | {"PYTHONPATH": SRC}


@pytest.fixture
def db(project: Path) -> str:
    path = project / "workflows.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "fh_app.py", "populate", str(path)], cwd=project, env=env(), check=True, timeout=60
    )
    return str(path)


def cli(project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workkit_workflow", *argv],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_list_and_show_read_every_execution_from_the_journals_without_history(project: Path, db: str) -> None:
    listed = cli(project, "list", "--db", db)
    assert listed.returncode == 0, listed.stderr
    ids = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert sorted(ids) == ["approval-1", "cooling-1", "order-1", "order-2"]
    assert "failed" in listed.stdout and "waiting" in listed.stdout and "sleeping" in listed.stdout
    shown = cli(project, "show", "order-1", "--db", db)
    assert shown.returncode == 0, shown.stderr
    assert "[FAILED]" in shown.stdout and "carrier rejected the parcel" in shown.stdout
    done = cli(project, "show", "order-2", "--db", db)
    assert 'result: {"tracking": "trk-o-2"}' in done.stdout
    filtered = cli(project, "list", "--db", db, "--status", "waiting", "--workflow", "fh-approval")
    assert [line.split()[0] for line in filtered.stdout.splitlines()[1:]] == ["approval-1"]


def test_every_read_command_takes_json(project: Path, db: str) -> None:
    listed = json.loads(cli(project, "list", "--db", db, "--json").stdout)
    assert {e["execution_id"] for e in listed["executions"]} == {
        "approval-1",
        "cooling-1",
        "order-1",
        "order-2",
    }
    shown = json.loads(cli(project, "show", "order-2", "--db", db, "--json").stdout)
    assert shown["execution"]["status"] == "completed"
    assert shown["result"] == {"tracking": "trk-o-2"}
    assert [s["name"] for s in shown["steps"]] == ["reserve", "ship"]
    for command in ("journal", "steps"):
        journal = json.loads(cli(project, command, "order-2", "--db", db, "--json").stdout)
        assert [(e["name"], e["status"], e["output"]) for e in journal["entries"]] == [
            ("reserve", "completed", {"reservation": "res-o-2"}),
            ("ship", "completed", {"tracking": "trk-o-2"}),
        ]
    table = cli(project, "journal", "order-1", "--db", db)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == [
        "PHASE",
        "OP",
        "NAME",
        "KIND",
        "STATUS",
        "ATTEMPTS",
        "ERRORS",
    ]


def test_unknown_status_is_rejected_with_the_valid_ones(project: Path, db: str) -> None:
    bogus = cli(project, "list", "--db", db, "--status", "bogus")
    assert bogus.returncode == 2
    for status in ("pending", "running", "waiting", "sleeping", "completed", "failed", "cancelled"):
        assert status in bogus.stderr


def test_resume_with_a_typo_says_what_the_execution_waits_for(project: Path, db: str) -> None:
    typo = cli(project, "resume", "approval-1", "approvd", "--db", db, "--app", "fh_app")
    assert typo.returncode == 1
    assert "approval-1 is waiting for 'approved', not 'approvd'; nothing was delivered" in typo.stderr
    assert (
        json.loads(cli(project, "show", "approval-1", "--db", db, "--json").stdout)["execution"]["status"]
        == "waiting"
    )
    right = cli(
        project,
        "resume",
        "approval-1",
        "approved",
        "--payload",
        '{"by": "ana"}',
        "--db",
        db,
        "--app",
        "fh_app",
    )
    assert right.returncode == 0, right.stderr
    assert "delivered 'approved' to approval-1; it is now completed" in right.stdout
    again = cli(project, "resume", "approval-1", "approved", "--db", db, "--app", "fh_app")
    assert again.returncode == 1 and "already finished (completed)" in again.stderr


def test_restart_from_a_step_after_the_fix(project: Path, db: str) -> None:
    restarted = cli(
        project,
        "restart",
        "order-1",
        "--from-step",
        "ship",
        "--new-id",
        "order-1b",
        "--db",
        db,
        "--app",
        "fh_app",
    )
    assert restarted.returncode == 0, restarted.stderr
    assert "restarted order-1 from step 'ship' as order-1b; it is now completed" in restarted.stdout
    journal = json.loads(cli(project, "journal", "order-1b", "--db", db, "--json").stdout)["entries"]
    reserve, ship = journal
    assert reserve["restored_from"] == "order-1" and ship["status"] == "completed"
    unknown = cli(project, "restart", "order-1", "--from-step", "nope", "--db", db, "--app", "fh_app")
    assert unknown.returncode == 1 and "no operation named 'nope'" in unknown.stderr


def test_a_cancelled_executions_sleep_reads_as_abandoned(project: Path, db: str) -> None:
    cancelled = cli(
        project, "cancel", "cooling-1", "--reason", "customer left", "--db", db, "--app", "fh_app"
    )
    assert cancelled.returncode == 0, cancelled.stderr
    shown = cli(project, "show", "cooling-1", "--db", db)
    assert "[CANCELLED]" in shown.stdout
    assert "sleep abandoned: the execution ended before" in shown.stdout
    assert "sleeping until" not in shown.stdout
    entries = json.loads(cli(project, "journal", "cooling-1", "--db", db, "--json").stdout)["entries"]
    assert [(e["name"], e["status"]) for e in entries] == [("start", "completed"), ("cool-off", "abandoned")]


def test_reads_work_while_another_process_owns_the_file(project: Path, db: str) -> None:
    before = Path(db).read_bytes()
    with subprocess.Popen(
        [sys.executable, "fh_app.py", "hold", db], cwd=project, env=env(), stdout=subprocess.PIPE, text=True
    ) as owner:
        try:
            assert owner.stdout is not None and owner.stdout.readline().strip() == "holding"
            listed = cli(project, "list", "--db", db)
            assert listed.returncode == 0 and "order-2" in listed.stdout, listed.stderr
            assert cli(project, "show", "order-2", "--db", db).returncode == 0
            assert cli(project, "journal", "order-2", "--db", db, "--json").returncode == 0
            refused = cli(project, "cancel", "cooling-1", "--db", db, "--app", "fh_app")
            assert refused.returncode == 1 and "in use" in refused.stderr
        finally:
            owner.kill()
    time.sleep(0.1)
    assert Path(db).read_bytes() == before  # reading changed nothing


def _history(step: StepRecord, status: str = "cancelled") -> ExecutionHistory:
    execution = ExecutionRecord(
        execution_id="x-1",
        workflow="wf",
        status=status,
        phase="done",
        created_at=1_767_225_600.0,
        updated_at=1_767_225_700.0,
        started_at=1_767_225_600.0,
        finished_at=1_767_225_700.0,
        cancel_reason="customer left",
    )
    return ExecutionHistory(execution, [step], [])


def test_in_doubt_and_abandoned_entries_read_clearly_in_the_cli_and_on_the_page() -> None:
    in_doubt = StepRecord(
        phase="main",
        op=0,
        name="charge",
        kind="step",
        status="in_doubt",
        attempt=1,
        started_at=1_767_225_600.0,
        attempt_started_at=1_767_225_600.0,
    )
    text = format_timeline(build(_history(in_doubt)))
    assert "? charge" in text and "attempt 1 may have run: the execution ended while it ran" in text
    wait = StepRecord(
        phase="main",
        op=0,
        name="approval",
        kind="wait",
        status="abandoned",
        attempt=0,
        started_at=1_767_225_600.0,
        wake_at=1_767_400_000.0,
        event_type="approved",
    )
    text = format_timeline(build(_history(wait)))
    assert "⊘ approval (wait)" in text
    assert "wait abandoned: the execution ended before event 'approved' came" in text
    assert "waiting for" not in text and " - " not in text
    page = render_execution_page(_history(wait))
    assert "badge abandoned" in page and "wait abandoned" in page and "waiting for event" not in page
