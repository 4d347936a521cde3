"""``workkit-workflow serve``: the timeline pages over the stdlib HTTP server (local dev only).

With ``--app``, serve also owns the runtime file: it runs the
``LocalNamespace`` (alarms fire, interrupted executions carry on), publishes
its address in the file's lock file, and takes commands for executions, so
``workkit-workflow cancel`` and ``resume`` work while it runs:

* ``POST /api/executions/<id>/cancel``: ``{"reason"?, "wait"?}`` → ``{"cancelled", "status"}``
* ``POST /api/executions/<id>/event``: ``{"type", "payload"?, "id"?, "wait"?}`` → ``{"accepted", "status"}``
* ``POST /api/executions/<id>/restart``: ``{"from_step", "execution_id"?, "wait"?}`` →
  ``{"execution_id", "status"}`` (the new execution's)
* ``POST /api/executions/<id>/pause``, ``.../unpause``, ``.../delete``: ``{"wait"?}`` →
  ``{"paused" | "unpaused" | "deleted", "status"}``

``wait`` (seconds, at most 300) lets the execution act on the command before
the answer. The pages' action buttons post to these (no token: the server
binds to a local address and serves one developer); without ``--app`` the
buttons are disabled and say why. Any page with ``?fragment=1`` answers only
the region the page refreshes while an execution runs.

Errors are ``{"error": {"code", "message", ...}}`` with a 4xx status. Every
method gets a proper answer: HEAD as GET without a body, OPTIONS the allowed
methods, anything else 405 with an ``Allow`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import InvalidRequestError, WorkflowError
from ._actions import Action, parse_action, perform
from ._d1 import LocalD1
from ._journals import JournalFile, JournalQuery
from ._live import READ_ONLY, Actions
from ._outcomes import Outcomes, file_outcomes
from ._query import ExecutionReader, HistoryQuery
from .page import history_page

log = logging.getLogger("workkit_workflow.serve")

MAX_BODY = 1 << 20
MAX_WAIT = 300.0
"""Longest a command lets its execution run on before answering (seconds)."""

PAGE_METHODS = "GET, HEAD, OPTIONS"
API_METHODS = "POST, OPTIONS"


class Commands:
    """The owner's side of the API: runs commands on the runtime's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Any, namespace: Any) -> None:
        self.loop = loop
        self.client = client
        self.namespace = namespace

    def run(self, make: Callable[[], Coroutine[Any, Any, dict[str, Any]]], wait: float) -> dict[str, Any]:
        # Called from a server thread; the runtime lives on the loop's thread.
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        return future.result(timeout=wait + 30.0)

    async def _settle(self, execution_id: str, wait: float) -> str:
        # Let the execution act on the command (compensation, the next steps)
        # before answering, as the CLI does when it runs the file itself.
        with contextlib.suppress(TimeoutError):
            await self.namespace.idle(timeout=wait, name=execution_id)
        return str(await self.client.execution(execution_id).status())

    async def act(self, execution_id: str, action: Action, wait: float) -> dict[str, Any]:
        answer = await perform(self.client, execution_id, action)
        if action.verb == "delete":
            return {**answer, "status": None}  # nothing left to ask about
        # A restart answers for the new execution: that is the one to let run on.
        settles = answer.get("execution_id", execution_id)
        return {**answer, "status": await self._settle(settles, wait)}


LOCAL_ACTIONS = Actions("/api")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _wait(body: dict[str, Any]) -> float:
    wait = body.get("wait", 0.0)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0.0 <= wait <= MAX_WAIT:
        raise InvalidRequestError(f"'wait' must be a number of seconds from 0 to {MAX_WAIT:g}")
    return float(wait)


class Handler(BaseHTTPRequestHandler):
    """The pages (GET, HEAD) and, when the server owns the runtime, the API (POST)."""

    server_version = "workkit-workflow"
    history_path: str = ""
    """The history database whose pages this server draws."""
    journals: str = ""
    """The runtime file the outputs are read from."""
    commands: Commands | None = None
    """The runtime's commands, when the server owns it (``serve --app``)."""
    actions: Actions = READ_ONLY
    """What the page offers to do."""

    async def _outcomes(self, execution_id: str) -> Outcomes | None:
        return file_outcomes(self.journals, execution_id)

    def __getattr__(self, name: str) -> Any:
        # The stdlib answers a method without a do_<METHOD> with 501; every
        # method this server does not take is a 405 with an Allow header.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _is_api(self) -> bool:
        return urlsplit(self.path).path.startswith("/api/")

    def _allowed(self) -> str:
        return API_METHODS if self._is_api() else PAGE_METHODS

    def _not_allowed(self) -> None:
        allowed = self._allowed()
        self._send_json(
            405,
            _error("method_not_allowed", f"{self.command} is not allowed here; use {allowed}"),
            headers={"allow": allowed},
        )

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self.send_header("allow", self._allowed())
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self._is_api():
            self._not_allowed()
            return
        status, html = self._page()
        self._send(status, "text/html; charset=utf-8", html.encode())

    do_HEAD = do_GET  # _send leaves the body out

    def do_POST(self) -> None:
        if not self._is_api():
            self._not_allowed()
            return
        try:
            status, answer = self._command()
        except Exception:
            log.exception("workkit-workflow serve: command %s failed", self.path)
            status, answer = 500, _error("internal_error", "the command failed; see the server log")
        self._send_json(status, answer)

    def _reader(self) -> tuple[ExecutionReader, Callable[[], None]]:
        """What the pages read, and how to close it. The owner reads its history tables;
        a plain serve only reads, as ``list`` and ``show`` do: the runtime file's journals
        (every execution, history bound or not), else its history tables, opened read-only."""
        if self.commands is None and self.history_path == self.journals:
            journals = JournalFile.open(self.journals)
            if journals.has_journals():
                return JournalQuery(journals), journals.close
            journals.close()
        db = LocalD1(self.history_path, read_only=self.commands is None)
        return HistoryQuery(db), db.close

    def _page(self) -> tuple[int, str]:
        url = urlsplit(self.path)
        try:
            reader, close = self._reader()
            try:
                page = history_page(
                    reader,
                    url.path,
                    dict(parse_qsl(url.query)),
                    outcomes=self._outcomes,
                    actions=self.actions,
                )
                return asyncio.run(page)
            finally:
                close()
        except Exception as exc:
            # A page that cannot be drawn is the server's fault, but the
            # client still gets an answer, never a dropped connection.
            log.exception("workkit-workflow serve: page %s failed", self.path)
            return 500, f"<!doctype html><h1>Server error</h1><p>{type(exc).__name__}</p>"

    def _command(self) -> tuple[int, dict[str, Any]]:
        commands = self.commands
        if commands is None:
            return 404, _error("not_found", "this server does not run the runtime (serve --app)")
        parts = urlsplit(self.path).path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["api", "executions"]:
            return 404, _error("not_found", f"no route {urlsplit(self.path).path!r}")
        execution_id, verb = unquote(parts[2]), parts[3]
        try:
            self._same_site()
            body = self._json_body()
            wait = _wait(body)
            action = parse_action(verb, body, extra=frozenset({"wait"}))
            return 200, commands.run(lambda: commands.act(execution_id, action, wait), wait)
        except WorkflowError as exc:
            from ..cloudflare._object import error_response

            response = error_response(exc)
            return response.status, response.body

    def _same_site(self) -> None:
        # The commands take no token, so another site open in the same
        # browser must not be able to send them (a cross-site form post):
        # browsers name the page's origin on every POST; the CLI sends none.
        origin = self.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != self.headers.get("host"):
            raise InvalidRequestError(
                f"commands come from this server's own pages, not from {origin}", status=403
            )

    def _json_body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            raise InvalidRequestError("content-length must be a number") from None
        if not 0 <= length <= MAX_BODY:
            raise InvalidRequestError(f"the body must be at most {MAX_BODY} bytes", status=413)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidRequestError("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise InvalidRequestError("the body must be a JSON object")
        return body

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(body).encode(), headers=headers)

    def _send(
        self,
        status: int,
        content_type: str,
        payload: bytes,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def make_handler(
    history_path: str, commands: Commands | None = None, db_path: str | None = None
) -> type[BaseHTTPRequestHandler]:
    """The request handler; ``db_path`` is the runtime file the outputs are read
    from (default: ``history_path``, the usual one file)."""
    attributes = {
        "history_path": history_path,
        "journals": db_path or history_path,
        "commands": commands,
        "actions": LOCAL_ACTIONS if commands is not None else READ_ONLY,
    }
    return type("Handler", (Handler,), attributes)


def _announce(server: ThreadingHTTPServer, host: str, history_path: str, out: TextIO, owner: bool) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    address = f"http://{shown}:{server.server_port}"
    what = "and running the runtime of " if owner else ""
    print(f"serving executions {what}{history_path} on {address}/ (Ctrl-C stops)", file=out)
    out.flush()
    return address


def serve(history_path: str, host: str, port: int, out: TextIO) -> int:
    """Serve the timeline pages only (read-only: another process may own the file)."""
    server = ThreadingHTTPServer((host, port), make_handler(history_path))
    _announce(server, host, history_path, out, owner=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


async def serve_runtime(db_path: str, history_path: str, host: str, port: int, out: TextIO) -> int:
    """Own ``db_path``: run its runtime, serve the pages and take commands until stopped."""
    from ..client._client import create_durable_workflow
    from ..client._schedules import Scheduler
    from ..local import LocalNamespace

    history = LocalD1(history_path)
    try:
        namespace = LocalNamespace(db_path, env={"HISTORY_DB": history})
    except BaseException:
        history.close()
        raise
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    server: ThreadingHTTPServer | None = None
    scheduler: asyncio.Task[None] | None = None
    try:
        client = create_durable_workflow(namespace, history=history)
        await namespace.start()
        # Schedules: the app's registered schedules fire at their ticks, as Cron Triggers would.
        scheduler = loop.create_task(Scheduler(client, namespace.clock).run())
        commands = Commands(loop, client, namespace)
        server = ThreadingHTTPServer((host, port), make_handler(history_path, commands, db_path))
        server.daemon_threads = True
        namespace.advertise(_announce(server, host, history_path, out, owner=True))
        threading.Thread(target=server.serve_forever, name="workkit-serve", daemon=True).start()
        await stop.wait()
    finally:
        if scheduler is not None:
            scheduler.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()
        await namespace.close()
        history.close()
    return 0
