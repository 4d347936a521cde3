"""One runtime file, one owner: the lock, `serve --app` taking commands, and the server's HTTP answers."""

from __future__ import annotations

import asyncio
import base64
import copy
import http.client
import io
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from workkit_workflow.cli import main
from workkit_workflow.history import LocalD1, _server
from workkit_workflow.history._server import make_handler
from workkit_workflow.local import DatabaseInUseError, LocalNamespace
from workkit_workflow.local._lock import Owner

SRC = str(Path(__file__).resolve().parents[1] / "src")
DEADLINE = 60.0

APP = textwrap.dedent(
    """
    from workkit_workflow import workflow

    async def undo(ctx):
        await ctx.step("undo", lambda: {"undone": True})

    @workflow("owner-approval")
    async def approval(ctx, input):
        await ctx.step("request", lambda: {"sent": True})
        decision = await ctx.wait_for_event("await-approval", "approved")
        await ctx.step("apply", lambda: {"applied": decision})
        return decision

    approval.on_failure(undo)
    """
)

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from workkit_workflow.local import LocalNamespace

    async def hold():
        async with LocalNamespace(sys.argv[1]):
            print("holding", flush=True)
            await asyncio.sleep(120)

    asyncio.run(hold())
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("owner_app")
    (folder / "owner_app.py").write_text(APP)
    sys.path.insert(0, str(folder))
    return folder


def _populate(db: str) -> None:
    import owner_app

    from workkit_workflow import create_durable_workflow

    async def go() -> None:
        history = LocalD1(db)
        async with LocalNamespace(db, env={"HISTORY_DB": history}) as ns:
            client = create_durable_workflow(ns, history=history)
            for n in (1, 2):
                await client.run(owner_app.approval, {"n": n}, execution_id=f"approval-{n}")
            await ns.idle()
        history.close()

    asyncio.run(go())


@pytest.fixture
def db(app: Path, tmp_path: Path) -> str:
    path = str(tmp_path / "workflows.db")
    _populate(path)
    return path


def _cli(app: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workkit_workflow.cli", *argv],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=app,
        timeout=DEADLINE,
    )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def serving(app: Path, db: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``workkit-workflow serve --app`` owning ``db``, and its address."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workkit_workflow.cli",
            "serve",
            "--db",
            db,
            "--app",
            "owner_app",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=app,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "running the runtime of" in line, (line, process.stderr.read() if process.poll() else "")
        yield process, line.split(" on ")[1].split("/ ")[0]
    finally:
        _stop(process)


# -- the lock -------------------------------------------------------------------------


async def test_a_second_namespace_on_one_file_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = str(tmp_path / "one.db")
    first = LocalNamespace(path)
    try:
        with pytest.raises(DatabaseInUseError) as refused:
            LocalNamespace(path)
        assert refused.value.pid == os.getpid() and refused.value.path == path
        assert "already in use by process" in str(refused.value)
    finally:
        await first.close()
    second = LocalNamespace(path)  # released by close()
    await second.close()
    # In-memory namespaces share nothing and never lock.
    await LocalNamespace(None).close()


def test_another_process_owning_the_file_is_refused_and_its_death_frees_it(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(DatabaseInUseError) as refused:
            LocalNamespace(path)
        assert refused.value.pid == holder.pid
        os.kill(holder.pid, signal.SIGKILL)  # no close(), no cleanup: the kernel drops the lock
        holder.wait(timeout=10)
    finally:
        _stop(holder)

    async def reopen() -> None:
        await LocalNamespace(path).close()

    asyncio.run(reopen())


def test_the_cli_refuses_to_drive_a_file_owned_by_a_process_that_takes_no_commands(
    app: Path, db: str
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        result = _cli(app, "cancel", "approval-1", "--db", db, "--app", "owner_app")
        assert result.returncode == 1
        assert f"in use by process {holder.pid}" in result.stderr and "Traceback" not in result.stderr
        listed = _cli(app, "list", "--db", db)  # reading needs no ownership
        assert listed.returncode == 0 and "approval-1" in listed.stdout
    finally:
        _stop(holder)


# -- serve --app owns the file and takes commands --------------------------------------------


def test_cancel_and_resume_go_through_a_running_serve(
    app: Path, db: str, serving: tuple[subprocess.Popen[str], str]
) -> None:
    process, address = serving
    result = _cli(
        app,
        "resume",
        "approval-1",
        "approved",
        "--payload",
        '{"by": "ana"}',
        "--db",
        db,
        "--app",
        "owner_app",
    )
    assert result.returncode == 0, result.stderr
    assert "delivered 'approved' to approval-1; it is now completed" in result.stdout
    result = _cli(
        app, "cancel", "approval-2", "--reason", "changed my mind", "--db", db, "--app", "owner_app"
    )
    assert (result.returncode, result.stdout.strip()) == (0, "cancelled approval-2"), result.stderr
    result = _cli(app, "cancel", "approval-2", "--db", db, "--app", "owner_app")
    assert result.returncode == 1 and "already finished" in result.stdout
    result = _cli(app, "cancel", "nope", "--db", db, "--app", "owner_app")
    assert result.returncode == 1 and "no execution with this id" in result.stderr
    shown = _cli(app, "show", "approval-2", "--db", db)
    assert "Cancelled (changed my mind). Compensation ran and completed" in shown.stdout
    # serve is the one owner: a second serve, or an app, on the file is refused.
    second = _cli(app, "serve", "--db", db, "--app", "owner_app", "--port", "0")
    assert second.returncode == 1 and f"process {process.pid} (serving on {address})" in second.stderr
    with pytest.raises(DatabaseInUseError) as refused:
        LocalNamespace(db)
    assert refused.value.address == address
    assert process.poll() is None


def test_serve_hands_the_file_back_when_stopped(
    app: Path, db: str, serving: tuple[subprocess.Popen[str], str]
) -> None:
    process, _ = serving
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=DEADLINE) == 0
    code = main(["cancel", "approval-1", "--db", db, "--app", "owner_app"], io.StringIO())
    assert code == 0  # the file was free: the CLI opened it itself


# -- the server's HTTP answers ----------------------------------------------------------------


@pytest.fixture
def pages(db: str) -> Iterator[str]:
    """The read-only timeline server, in a thread of this process."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(db))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _ask(host: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, timeout=DEADLINE)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _raw_head(host: str, path: str) -> tuple[bytes, bytes]:
    """A HEAD on a bare socket: http.client would hide a body sent by mistake."""
    name, port = host.split(":")
    with socket.create_connection((name, int(port)), timeout=DEADLINE) as conn:
        conn.sendall(f"HEAD {path} HTTP/1.0\r\nhost: {host}\r\n\r\n".encode())
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    return head, rest


def test_head_is_get_without_a_body(pages: str) -> None:
    status, _, body = _ask(pages, "GET", "/executions/approval-1")
    head_status, head_headers, head_body = _ask(pages, "HEAD", "/executions/approval-1")
    assert (status, head_status) == (200, 200)
    assert head_body == b"" and head_headers["content-length"] == str(len(body))
    head, rest = _raw_head(pages, "/executions/approval-1")
    assert head.startswith(b"HTTP/1.0 200") and rest == b""
    assert _ask(pages, "HEAD", "/executions/nope")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "TRACE", "BREW"])
def test_methods_the_pages_do_not_take_get_405_with_allow(pages: str, method: str) -> None:
    status, headers, body = _ask(pages, method, "/", b"{}")
    assert status == 405, body
    assert headers["allow"] == "GET, HEAD, OPTIONS"
    assert json.loads(body)["error"]["code"] == "method_not_allowed"
    status, headers, _ = _ask(pages, "OPTIONS", "/")
    assert status == 204 and headers["allow"] == "GET, HEAD, OPTIONS"


def test_the_api_of_a_server_without_the_runtime(pages: str) -> None:
    status, headers, _ = _ask(pages, "GET", "/api/executions/approval-1/cancel")
    assert status == 405 and headers["allow"] == "POST, OPTIONS"
    head, rest = _raw_head(pages, "/api/executions/approval-1/cancel")
    assert head.startswith(b"HTTP/1.0 405") and b"allow: POST, OPTIONS" in head and rest == b""
    status, _, body = _ask(pages, "POST", "/api/executions/approval-1/cancel", b"{}")
    assert status == 404 and "serve --app" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize(
    "cursor",
    [
        "[" * 3000,
        base64.urlsafe_b64encode(b"[" * 3000).decode(),
        base64.urlsafe_b64encode(b"[" * 1500).decode(),  # deep enough to recurse, short enough to decode
        "x" * 20_000,
    ],
    ids=["raw", "encoded", "encoded-short", "long"],
)
def test_a_bad_cursor_is_a_400(pages: str, cursor: str) -> None:
    status, _, body = _ask(pages, "GET", f"/?cursor={cursor}")
    assert status == 400, body[:300]
    assert b"cursor is not one this API returned" in body
    assert len(body) < 10_000  # the cursor is not echoed back whole


async def test_a_deeply_nested_cursor_is_a_clear_error_in_the_query_api(db: str) -> None:
    from workkit_workflow.errors import InvalidRequestError
    from workkit_workflow.history import HistoryQuery

    history = LocalD1(db)
    try:
        with pytest.raises(InvalidRequestError):
            await HistoryQuery(history).list_executions(cursor=base64.urlsafe_b64encode(b"[" * 1500).decode())
    finally:
        history.close()


def test_api_commands_validate_their_body(
    app: Path, db: str, serving: tuple[subprocess.Popen[str], str]
) -> None:
    _, address = serving
    host = address.removeprefix("http://")
    for body, code in [
        (b"[1]", 400),
        (b"{bad", 400),
        (b"[" * 5000, 400),
        (b'{"payload": 1}', 400),  # no event type
        (b'{"type": "approved", "wait": -1}', 400),
    ]:
        status, _, answer = _ask(host, "POST", "/api/executions/approval-1/event", body)
        assert status == code, (body[:20], answer)
        assert json.loads(answer)["error"]["code"]
    status, _, answer = _ask(host, "POST", "/api/executions/approval-1/frobnicate", b"{}")
    assert status == 404
    status, _, answer = _ask(host, "POST", "/api/executions/approval-1/event", b'{"type": "approved"}')
    assert status == 200 and json.loads(answer)["accepted"] is True


def test_a_page_that_cannot_be_drawn_is_a_500_not_a_dropped_connection(
    pages: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="workkit_workflow")

    async def broken(*args: object, **kwargs: object) -> tuple[int, str]:
        raise ValueError("year 33715 is out of range")

    monkeypatch.setattr(_server, "history_page", broken)
    status, headers, body = _ask(pages, "GET", "/executions/approval-1")
    assert status == 500 and headers["content-type"].startswith("text/html")
    assert b"Server error" in body and b"33715" not in body


def test_the_in_use_error_pickles_and_copies(tmp_path: Path) -> None:
    error = DatabaseInUseError(str(tmp_path / "x.db"), Owner(123, "http://127.0.0.1:1"))
    for clone in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error)):
        assert isinstance(clone, DatabaseInUseError) and isinstance(clone, RuntimeError)
        assert (clone.path, clone.pid, clone.address, str(clone)) == (
            error.path,
            error.pid,
            error.address,
            str(error),
        )
