"""The migrations and the projection against wrangler 3.92.0's real local D1.

* ``wrangler d1 migrations apply --local`` accepts ``migrations/`` and creates the tables;
* a Python Worker under ``wrangler dev`` (workerd's Pyodide) runs workflows with
  the history binding pointed at the real local D1, through a D1 outage, and
  every row arrives exactly once afterwards; then a run of 200 plain steps, whose pages
  are projected from the values the engine built.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from workkit_workflow.history import MIGRATIONS

ROOT = Path(__file__).parents[1]
WRANGLER = ROOT / "miniflare" / "node_modules" / ".bin" / "wrangler"

pytestmark = pytest.mark.workerd

CONFIG = """\
name = "workkit-history-check"
main = "src/entry.py"
compatibility_date = "2024-11-01"
compatibility_flags = ["python_workers"]

[[d1_databases]]
binding = "HISTORY_DB"
database_name = "history"
database_id = "00000000-0000-0000-0000-000000000005"
migrations_dir = "migrations"
"""


def test_the_migrations_are_the_schema_the_code_uses() -> None:
    assert sorted(p.name for p in (ROOT / "migrations").iterdir()) == list(MIGRATIONS)
    for name, sql in MIGRATIONS.items():
        assert (ROOT / "migrations" / name).read_text() == sql


def _require_wrangler() -> Path:
    if not WRANGLER.exists() or shutil.which("node") is None:
        message = f"wrangler 3.92.0 is not installed ({WRANGLER}): run npm install in miniflare/"
        if os.environ.get("WORKKIT_REQUIRE_RUNTIME") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return WRANGLER


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    wrangler = _require_wrangler()
    assert wrangler
    (tmp_path / "wrangler.toml").write_text(CONFIG)
    shutil.copytree(ROOT / "migrations", tmp_path / "migrations")
    shutil.copytree(
        ROOT / "src" / "workkit_workflow",
        tmp_path / "src" / "workkit_workflow",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "tests" / "wrangler_history" / "entry.py", tmp_path / "src" / "entry.py")
    env = {
        **os.environ,
        "WRANGLER_SEND_METRICS": "false",
        "WRANGLER_REGISTRY_PATH": str(tmp_path / "registry"),
        "WRANGLER_LOG_PATH": str(tmp_path / "logs"),
        "NO_COLOR": "1",
        "FORCE_COLOR": "0",
    }
    return tmp_path, env


def _wrangler(project: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess[str]:
    folder, env = project
    return subprocess.run(
        [str(WRANGLER), *args],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _migrate(project: tuple[Path, dict[str, str]], names: Sequence[str] = tuple(MIGRATIONS)) -> None:
    state = str(project[0] / "state")
    applied = _wrangler(project, "d1", "migrations", "apply", "HISTORY_DB", "--local", "--persist-to", state)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for name in names:
        assert name in applied.stdout


def _sql(project: tuple[Path, dict[str, str]], command: str) -> list[dict[str, Any]]:
    state = str(project[0] / "state")
    where = ("--local", "--persist-to", state)
    done = _wrangler(project, "d1", "execute", "HISTORY_DB", *where, "--json", "--command", command)
    assert done.returncode == 0, done.stdout + done.stderr
    return list(json.loads(done.stdout)[0]["results"])


def test_wrangler_applies_the_migrations(project: tuple[Path, dict[str, str]]) -> None:
    """A database made by the first release (0001 only, with its events and a step's row) is
    brought to the newest by applying the rest: its events stay, the view shows them once,
    and the step's row is in ``wf_steps``, now a view."""
    folder = project[0]
    later = [name for name in MIGRATIONS if name != "0001_workkit_history.sql"]
    for name in later:
        (folder / "migrations" / name).rename(folder / name)
    _migrate(project, ["0001_workkit_history.sql"])
    _sql(
        project,
        "INSERT INTO wf_events VALUES ('old', 1, 1.0, 'step', 'main', 0, 'a', 'running', 1, '{}'), "
        "('old', 2, 2.0, 'step', 'main', 0, 'a', 'completed', 1, '{}')",
    )
    _sql(
        project,
        "INSERT INTO wf_steps (execution_id, phase, op, name, kind, status, attempt, started_at, "
        "finished_at, errors, seq) VALUES ('old', 'main', 0, 'a', 'step', 'completed', 1, 1.0, 2.0, '[]', 2)",
    )
    for name in later:
        (folder / name).rename(folder / "migrations" / name)
    _migrate(project, later)
    names = [
        row["name"]
        for row in _sql(
            project,
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'index', 'view') AND name LIKE 'wf_%' "
            "ORDER BY name",
        )
    ]
    assert names == [
        "wf_events",
        "wf_executions",
        "wf_executions_created",
        "wf_executions_status",
        "wf_executions_workflow",
        "wf_step_pages",
        "wf_step_rows",
        "wf_steps",
        "wf_transitions",
    ]
    steps = _sql(project, "SELECT op, status, finished_at FROM wf_steps WHERE execution_id = 'old'")
    assert steps == [{"op": 0, "status": "completed", "finished_at": 2.0}]
    rows = _sql(project, "SELECT seq, status FROM wf_transitions WHERE execution_id = 'old' ORDER BY seq")
    assert rows == [{"seq": 1, "status": "running"}, {"seq": 2, "status": "completed"}]
    # Applying again is a no-op, as wrangler tracks applied migrations.
    state = str(folder / "state")
    again = _wrangler(project, "d1", "migrations", "apply", "HISTORY_DB", "--local", "--persist-to", state)
    assert again.returncode == 0 and "No migrations to apply" in again.stdout + again.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 60) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_projection_round_trip_through_a_d1_outage_in_wrangler_dev(
    project: tuple[Path, dict[str, str]],
) -> None:
    _migrate(project)
    folder, env = project
    port, inspector = _free_port(), _free_port()
    log = (folder / "dev.log").open("w")
    server = subprocess.Popen(
        [
            str(WRANGLER),
            "dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--inspector-port",
            str(inspector),
            "--persist-to",
            str(folder / "state"),
        ],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if _get(base + "/hello", timeout=30)[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, (folder / "dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "wrangler dev never answered"
            time.sleep(0.2)
        status, body = _get(base + "/roundtrip")
        assert status == 200, body
        out: dict[str, Any] = json.loads(body)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    assert out["sentinel"] == "HISTORY_ROUNDTRIP_OK"
    # During the outage the workflows finished and D1 held nothing.
    assert out["statuses"] == {"wr-0": "failed", "wr-1": "completed", "wr-2": "failed", "wr-3": "completed"}
    assert out["rows_during_outage"] == 0 and out["failed_sends"] >= 4
    # Afterwards: every row, once.
    assert out["pending_after"] == 0
    assert out["alarms"] == {f"wr-{i}": None for i in range(4)}
    assert out["executions"] == {
        "wr-0": ["failed", "done", "completed", "ship"],
        "wr-1": ["completed", "done", None, None],
        "wr-2": ["failed", "done", "completed", "ship"],
        "wr-3": ["completed", "done", None, None],
    }
    failed = out["histories"]["wr-0"]
    assert failed["steps"] == [
        ["main", "reserve", "completed", 1],
        ["main", "ship", "failed", 1],
        ["compensation", "refund", "completed", 1],
    ]
    for eid, history in out["histories"].items():
        seqs = [event[0] for event in history["events"]]
        assert seqs == list(range(1, len(seqs) + 1)), eid
    # 200 plain steps: the page between the run's first (its start) and last (its end) holds
    # only steps, projected from the engine's values (``plain_projection``).
    assert out["long_status"] == "completed"
    assert out["long_steps"] == [["main", f"s{i}", "completed", 1] for i in range(200)]
    assert out["plain_pages"] >= 1
    assert [e[1:] for e in failed["events"]] == [
        ["execution", "main", None, "running"],  # created by the request that drives it
        ["step", "main", "reserve", "running"],
        ["step", "main", "reserve", "completed"],
        ["step", "main", "ship", "running"],
        ["step", "main", "ship", "failed"],
        ["execution", "compensation", None, "failed"],
        ["execution", "compensation", None, "failed"],
        ["step", "compensation", "refund", "running"],
        ["step", "compensation", "refund", "completed"],
        ["execution", "done", None, "failed"],
    ]
