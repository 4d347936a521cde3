"""Serve the example Worker (worker/) from a real workerd 1.20241112.0 and check it over HTTP.

    python3 miniflare/workerd/worker_checks.py      # prints one line per check, then
                                                    # "N passed, N failed"; exit 1 on a failure

What runs where: the Python Worker (worker/entry.py + app.py + order_flow.py and the pure
modules of workkit_workflow, as pythonModule entries; no workers module in this runtime, and
no pydantic: the example's request models run on the tests' pydantic stand-in,
miniflare/realruntime/standin, as in the real-runtime tier) serves the API and drives
executions through a REAL Durable Object namespace binding (WORKFLOW_DO, with SQLite-backed
DO storage on disk) whose class is a JavaScript double of WorkflowExecutionDO
(js/workflow_double.js): Python Durable Objects cannot run in this workerd.
A second Python Worker (probe_worker.py) shows which modules load, sends a request from a step
through workkit_workflow.http (JS fetch, with the Idempotency-Key) to a local HTTP server, and
re-runs the pyodide-http attempt. The API_TOKEN secret is a text binding, as secrets appear.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TOKEN = "test-token-123"
SKIP = {"testing.py", "cloudflare/_wire.py"}  # pytest plugin; pydantic request models (not loadable here)
STANDIN = ROOT / "miniflare" / "realruntime" / "standin" / "pydantic" / "__init__.py"
"""The tests' pydantic stand-in (strict mode only), for the example Worker's request models."""



def pyodide_http_dir() -> Path:
    """pyodide-http from PyPI (fetched once, not vendored in the repository)."""
    sys.path.insert(0, str(HERE.parent))
    from fetch_pyodide_http import fetch

    return fetch()

def package_modules() -> list[tuple[str, Path]]:
    pkg = ROOT / "src" / "workkit_workflow"
    return [
        (f"workkit_workflow/{p.relative_to(pkg).as_posix()}", p)
        for p in sorted(pkg.rglob("*.py"))
        if p.relative_to(pkg).as_posix() not in SKIP and p.parent.name != "local"
    ]


def build(dest: Path) -> None:
    files: dict[str, Path] = {
        "entry.py": ROOT / "worker" / "entry.py",
        "app.py": ROOT / "worker" / "app.py",
        "order_flow.py": ROOT / "worker" / "order_flow.py",
        "probe.py": HERE / "probe_worker.py",
        "workflow_double.js": HERE / "js" / "workflow_double.js",
        "pydantic/__init__.py": STANDIN,
    }
    for name, path in package_modules():
        files[name] = path
    for path in sorted(pyodide_http_dir().glob("*.py")):
        files[f"pyodide_http/{path.name}"] = path
    for name, path in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / name)

    def modules(main: str, extra: list[str]) -> str:
        names = [main, *extra, *(n for n, _ in package_modules())]
        return ",\n    ".join(f'(name = "{n}", pythonModule = embed "{n}")' for n in names)

    pyodide_http = [f"pyodide_http/{p.name}" for p in sorted(pyodide_http_dir().glob("*.py"))]
    binding = (
        '(name = "WORKFLOW_DO", '
        'durableObjectNamespace = (className = "WorkflowExecutionDO", serviceName = "do"))'
    )
    (dest / "config.capnp").write_text(
        f"""using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .api),
    (name = "probe", worker = .probe),
    (name = "do", worker = .double),
    (name = "loopback", network = (allow = ["local"])),
    (name = "do-storage", disk = (path = "/tmp/workkit-do-storage", writable = true)),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:0", http = (), service = "main"),
    (name = "probe", address = "127.0.0.1:0", http = (), service = "probe"),
  ],
);
const api :Workerd.Worker = (
  modules = [
    {modules("entry.py", ["app.py", "order_flow.py", "pydantic/__init__.py"])}
  ],
  compatibilityDate = "2024-11-01",
  compatibilityFlags = ["python_workers"],
  bindings = [{binding}, (name = "API_TOKEN", text = "{TOKEN}")],
);
const probe :Workerd.Worker = (
  modules = [
    {modules("probe.py", pyodide_http)}
  ],
  compatibilityDate = "2024-11-01",
  compatibilityFlags = ["python_workers"],
  bindings = [{binding}],
  globalOutbound = "loopback",
);
const double :Workerd.Worker = (
  modules = [(name = "workflow_double.js", esModule = embed "workflow_double.js")],
  compatibilityDate = "2024-11-01",
  durableObjectNamespaces = [(className = "WorkflowExecutionDO", uniqueKey = "workkit-workflow-double")],
  durableObjectStorage = (localDisk = "do-storage"),
);
"""
    )


class Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        data = json.dumps({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(data.encode())

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello-from-local-http")

    def log_message(self, *args: Any) -> None:
        pass


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> tuple[int, Any, str]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        request.add_header("content-type", content_type)
    if token is not None:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text, ctype = (
                response.status,
                response.read().decode(),
                response.headers.get("content-type"),
            )
    except urllib.error.HTTPError as exc:
        status, text, ctype = exc.code, exc.read().decode(), exc.headers.get("content-type")
    try:
        return status, json.loads(text), ctype or ""
    except ValueError:
        return status, text, ctype or ""


def checks(port: int, probe: int, echo: int) -> list[tuple[str, Any]]:
    """(name, thunk) pairs; a thunk raises AssertionError on failure."""
    order = {"order_id": "w1", "amount": 25.5, "items": [{"sku": "book-1", "quantity": 2}]}
    big = {**order, "order_id": "w2", "amount": 5000}
    out: list[tuple[str, Any]] = []

    def check(name: str) -> Any:
        def register(fn: Any) -> Any:
            out.append((name, fn))
            return fn

        return register

    @check("GET / answers the route table")
    def _() -> None:
        status, body, _ = call(port, "GET", "/", token=None)
        assert status == 200 and "POST /orders" in body["routes"], body

    @check("POST /orders starts an execution through the real DO binding")
    def _() -> None:
        status, body, ctype = call(port, "POST", "/orders", order)
        assert status == 201 and body["created"] is True, body
        assert ctype == "application/json"
        view = body["execution"]
        assert view["execution_id"] == "order-w1" and view["status"] == "completed", view
        seen = view["seen"]  # what the DO received from the Python client
        assert seen["method"] == "POST" and seen["contentType"] == "application/json", seen
        assert seen["body"] == {
            "workflow": "order",
            "input": {**order, "currency": "EUR"},
            "execution_id": "order-w1",
            "wait": False,
        }, seen

    @check("the same order again is the same execution")
    def _() -> None:
        status, body, _ = call(port, "POST", "/orders", order)
        assert status == 200 and body["created"] is False, body

    @check("status, journal and result through the client")
    def _() -> None:
        assert call(port, "GET", "/executions/order-w1")[1]["execution"]["status"] == "completed"
        status, journal, _ = call(port, "GET", "/executions/order-w1/journal")
        assert status == 200 and [e["name"] for e in journal["entries"]] == [
            "reserve-inventory",
            "charge-card",
        ]
        status, result, _ = call(port, "GET", "/executions/order-w1/result")
        assert status == 200 and result == {
            "ok": True,
            "status": "completed",
            "value": {"tracking": "trk-w1"},
        }

    @check("a large order waits; its result is 409 until approved")
    def _() -> None:
        status, body, _ = call(port, "POST", "/orders", big)
        assert status == 201 and body["execution"]["status"] == "waiting", body
        status, body, _ = call(port, "GET", "/executions/order-w2/result")
        assert status == 409 and body["error"]["code"] == "execution_not_finished", body

    @check("approval resumes the wait (event id deduplicated)")
    def _() -> None:
        approval = {"approved": True, "by": "ana", "event_id": "appr-w2"}
        status, body, _ = call(port, "POST", "/executions/order-w2/approval", approval)
        assert status == 202 and body == {"accepted": True}, body
        seen = call(port, "GET", "/executions/order-w2")[1]["execution"]["seen"]
        assert seen["body"] == {
            "type": "approval",
            "payload": {"approved": True, "by": "ana"},
            "id": "appr-w2",
        }
        status, body, _ = call(port, "POST", "/executions/order-w2/approval", approval)
        assert status == 409 and body["error"]["code"] == "execution_conflict", body

    @check("cancel goes through; a finished execution is left alone")
    def _() -> None:
        call(port, "POST", "/orders", {**big, "order_id": "w3"})
        status, body, _ = call(port, "POST", "/executions/order-w3/cancel", {"reason": "customer"})
        assert status == 200 and body == {"cancelled": True}, body
        status, body, _ = call(port, "POST", "/executions/order-w1/cancel", {})
        assert status == 200 and body == {"cancelled": False}, body

    bad: list[tuple[str, str, str, dict[str, Any], int, str]] = [
        ("missing fields", "POST", "/orders", {"body": {}}, 400, "invalid_request"),
        ("amount as text", "POST", "/orders", {"body": {**order, "amount": "1"}}, 400, "invalid_request"),
        ("unknown field", "POST", "/orders", {"body": {**order, "x": 1}}, 400, "invalid_request"),
        ("invalid JSON", "POST", "/orders", {"raw": b"{nope"}, 400, "invalid_json"),
        ("JSON array", "POST", "/orders", {"raw": b"[]"}, 400, "invalid_request"),
        (
            "text/plain body",
            "POST",
            "/orders",
            {"body": order, "content_type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        ("oversize body", "POST", "/orders", {"raw": b"x" * 70_000}, 413, "too_large"),
        ("wrong method", "GET", "/orders", {}, 405, "method_not_allowed"),
        ("unknown route", "GET", "/nowhere", {}, 404, "not_found"),
        ("bad execution id", "GET", "/executions/a%20b", {}, 400, "invalid_request"),
        ("unknown execution (from the DO)", "GET", "/executions/nobody", {}, 404, "execution_not_found"),
        (
            "bad approval",
            "POST",
            "/executions/order-w1/approval",
            {"body": {"approved": 1, "by": "x"}},
            400,
            "invalid_request",
        ),
        ("no token", "POST", "/orders", {"body": order, "token": None}, 401, "unauthorized"),
        ("wrong token", "GET", "/executions/order-w1", {"token": "nope"}, 401, "unauthorized"),
    ]
    for label, method, path, kw, want, code in bad:

        def bad_input(
            method: str = method, path: str = path, kw: Any = kw, want: int = want, code: str = code
        ) -> None:
            status, body, ctype = call(port, method, path, **kw)
            assert (status, ctype) == (want, "application/json"), (status, ctype, body)
            assert body["error"]["code"] == code and body["error"]["message"], body

        out.append((f"4xx JSON for bad input: {label}", bad_input))

    @check("probe: workkit_workflow loads without pydantic or the workers module")
    def _() -> None:
        status, body, _ = call(probe, "GET", "/facts", token=None)
        assert status == 200 and body["python"].startswith("3.12"), body
        assert "ModuleNotFoundError" in body["pydantic"] and "ModuleNotFoundError" in body["workers"], body
        assert body["_wire loaded"] is False and body["pydantic loaded"] is False, body

    @check("probe: http.fetch from a step sends the Idempotency-Key through JS fetch")
    def _() -> None:
        url = f"http://127.0.0.1:{echo}/charge"
        status, body, _ = call(probe, "GET", f"/http?url={url}", token=None)
        assert status == 200 and body["status"] == 200, body
        got = body["body"]
        assert got["headers"]["idempotency-key"] == "ex-9:charge:stable", got
        assert got["headers"]["content-type"] == "application/json" and got["body"] == '{"amount":12.5}', got

    @check("probe: pyodide-http cannot work in a Worker (no XHR; urllib fails)")
    def _() -> None:
        url = f"http://127.0.0.1:{echo}/hello"
        status, body, _ = call(probe, "GET", f"/pyodide_http?url={url}", token=None)
        assert status == 200 and body["has XMLHttpRequest"] is False and body["should_patch"] is False, body
        assert "hello-from-local-http" not in body["urlopen"] and "Error" in body["urlopen"], body

    return out


def main() -> int:
    workerd = ROOT / "miniflare" / "node_modules" / "workerd" / "bin" / "workerd"
    if not workerd.exists():
        print(f"workerd missing: {workerd} (run npm install in miniflare/)")
        return 2
    with tempfile.TemporaryDirectory(prefix="workkit-worker-") as tmp:
        work = Path(tmp)
        build(work)
        (work / "state" / "do-storage").mkdir(parents=True)
        server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        t0 = time.monotonic()
        control = work / "control"
        with open(control, "w") as ctl, open(work / "workerd.log", "w") as log:
            proc = subprocess.Popen(
                [
                    str(workerd),
                    "serve",
                    "config.capnp",
                    "--experimental",
                    "--directory-path",
                    f"do-storage={work / 'state' / 'do-storage'}",
                    "--control-fd",
                    str(ctl.fileno()),
                ],
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(ctl.fileno(),),
            )
        try:
            ports: dict[str, int] = {}
            while len(ports) < 2 and time.monotonic() - t0 < 90:
                if proc.poll() is not None:
                    print((work / "workerd.log").read_text())
                    print("0 passed, 1 failed")
                    return 1
                for line in control.read_text().splitlines():
                    event = json.loads(line)
                    if event.get("event") == "listen":
                        ports[event["socket"]] = event["port"]
                time.sleep(0.05)
            if len(ports) < 2:
                print((work / "workerd.log").read_text())
                print("0 passed, 1 failed")
                return 1
            print(f"workerd listening after {time.monotonic() - t0:.1f} s: {ports}")
            passed = failed = 0
            for name, fn in checks(ports["http"], ports["probe"], server.server_address[1]):
                t = time.monotonic()
                try:
                    fn()
                except Exception:
                    failed += 1
                    print(f"FAIL {name}\n{traceback.format_exc()}")
                else:
                    passed += 1
                    print(f"PASS {name} ({(time.monotonic() - t) * 1000:.0f} ms)")
            if failed:
                print((work / "workerd.log").read_text()[-3000:])
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            server.shutdown()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
