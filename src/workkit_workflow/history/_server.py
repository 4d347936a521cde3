"""``workkit-workflow serve``: the timeline pages over the stdlib HTTP server (local dev only)."""

from __future__ import annotations

import asyncio
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

from ._d1 import LocalD1
from ._query import HistoryQuery
from .page import history_page


def make_handler(history_path: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "workkit-workflow"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            db = LocalD1(history_path)
            try:
                status, html = asyncio.run(
                    history_page(HistoryQuery(db), url.path, dict(parse_qsl(url.query)))
                )
            finally:
                db.close()
            body = html.encode()
            self.send_response(status)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


def serve(history_path: str, host: str, port: int, out: TextIO) -> int:
    server = ThreadingHTTPServer((host, port), make_handler(history_path))
    print(
        f"serving executions of {history_path} on http://{host}:{server.server_port}/ (Ctrl-C stops)",
        file=out,
    )
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
