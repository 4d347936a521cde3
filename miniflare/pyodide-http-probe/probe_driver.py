"""Serve the probe Worker (probe_entry.py) in the real local runtime, beside loopback HTTP and
HTTPS servers that record which probes reached them.

The Worker embeds, as ``pythonModule`` files: the package (``src/workkit_workflow``), the tests'
pydantic stand-in (the execution object validates requests with it), and the pure-Python wheels
of pyodide-http, requests and requests' dependencies (certifi's CA file as a ``data`` module),
downloaded from PyPI with ``pip download`` into ``.cache/pyodide-http-probe/`` (never committed;
the runtime has no packages of its own). Its outgoing requests go to a ``network`` service that
allows local addresses only (workerd's default outbound refuses private addresses). The HTTPS
server's certificate is self-signed, made once with the openssl CLI into the same cache.

    PYTHONPATH=src python miniflare/pyodide-http-probe/probe_driver.py    # the probe's JSON
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = ROOT / "src" / "workkit_workflow"
STANDIN = ROOT / "miniflare" / "realruntime" / "standin"
"""The tests' pydantic stand-in (the runtime has no pydantic; see its docstring)."""
CACHE = ROOT / ".cache" / "pyodide-http-probe"

WHEELS = {
    "pyodide-http": "0.2.2",
    "requests": "2.34.2",
    "urllib3": "2.8.0",
    "idna": "3.20",
    "charset-normalizer": "3.5.3",
    "certifi": "2026.10.19.post1",
}
"""Pinned so the probe measures the same code on every run."""

DATE = "2025-09-01"
"""The compatibility date of the repository's ``wrangler.toml``."""
FLAGS = ("python_workers", "python_workers_development")


def fetch_wheels(folder: Path = CACHE / "wheels") -> list[Path]:
    """The pinned pure-Python wheels, downloaded once with pip."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [
        f"{name}=={version}"
        for name, version in WHEELS.items()
        if not list(folder.glob(f"{name.replace('-', '_')}-{version}-py3-none-any.whl"))
    ]
    if missing:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--platform",
                "any",
                "--implementation",
                "py",
                "--python-version",
                "3.14",
                "-d",
                str(folder),
                *missing,
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return sorted(folder.glob("*-py3-none-any.whl"))


def vendored_modules(wheels: list[Path], target: Path) -> list[str]:
    """Unpack the wheels' modules under ``target``; their names."""
    names = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                # certifi's CA bundle is data: requests checks that the file exists.
                if (name.endswith(".py") or name == "certifi/cacert.pem") and ".dist-info/" not in name:
                    (target / name).parent.mkdir(parents=True, exist_ok=True)
                    (target / name).write_bytes(archive.read(name))
                    names.append(name)
    return names


def render_config(modules: list[str], port: int, flags: tuple[str, ...], date: str) -> str:
    """One Worker (``probe``) with the probe and execution objects. Outbound traffic (fetch
    and sockets) goes to ``loopback``, a network service that trusts the test's self-signed
    certificate (``tls/cert.pem``), so TLS to the HTTPS recorder can verify."""
    kinds = {m: "pythonModule" if m.endswith(".py") else "data" for m in modules}
    entries = ", ".join(f'(name = "{m}", {kind} = embed "src/{m}")' for m, kind in kinds.items())
    flag_list = ", ".join(f'"{f}"' for f in flags)
    return f"""using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "probe", worker = .probe),
              (name = "loopback", network = (allow = ["local"],
                                             tlsOptions = (trustedCertificates = [embed "tls/cert.pem"]))),
              (name = "do-disk", disk = (path = "do-storage", writable = true))],
  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "probe")],
);
const probe :Workerd.Worker = (
  modules = [{entries}],
  compatibilityDate = "{date}",
  compatibilityFlags = [{flag_list}],
  durableObjectNamespaces = [
    (className = "ProbeDO", uniqueKey = "pyodide-http-probe", enableSql = true),
    (className = "WorkflowExecutionDO", uniqueKey = "pyodide-http-wf", enableSql = true)],
  durableObjectStorage = (localDisk = "do-disk"),
  bindings = [(name = "PROBE_DO", durableObjectNamespace = "ProbeDO"),
              (name = "WORKFLOW_DO", durableObjectNamespace = "WorkflowExecutionDO")],
  globalOutbound = "loopback",
);
"""


def stage(folder: Path, port: int, flags: tuple[str, ...] = FLAGS, date: str = DATE) -> Path:
    src = folder / "src"
    src.mkdir(parents=True, exist_ok=True)
    (folder / "do-storage").mkdir(exist_ok=True)
    modules = ["probe_entry.py"]
    (src / "probe_entry.py").write_bytes((HERE / "probe_entry.py").read_bytes())
    for path in sorted(PACKAGE.rglob("*.py")):
        name = "workkit_workflow/" + path.relative_to(PACKAGE).as_posix()
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(path.read_bytes())
        modules.append(name)
    for path in sorted(STANDIN.rglob("*.py")):
        name = path.relative_to(STANDIN).as_posix()
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(path.read_bytes())
        modules.append(name)
    modules += vendored_modules(fetch_wheels(), src)
    (folder / "tls").mkdir(exist_ok=True)
    (folder / "tls" / "cert.pem").write_bytes(certificate()[0].read_bytes())
    config = folder / "config.capnp"
    config.write_text(render_config(modules, port, flags, date))
    return config


def certificate(folder: Path = CACHE / "tls") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made once with the openssl CLI): (cert, key)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not cert.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return cert, key


@dataclass
class Recorder:
    """A loopback HTTP server that answers ``reached <probe>`` and records each probe name;
    with ``tls``, an HTTPS server with the certificate of :func:`certificate`."""

    tls: bool = False
    seen: list[str] = field(default_factory=list)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    """The request headers of each probe (lower-case names)."""
    bodies: dict[str, bytes] = field(default_factory=dict)
    """The request body of each probe."""
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hello"

    def clear(self) -> None:
        self.seen.clear()
        self.headers.clear()
        self.bodies.clear()

    @contextlib.contextmanager
    def running(self) -> Iterator[Recorder]:
        seen, headers, bodies = self.seen, self.headers, self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                probe = query.get("probe", ["?"])[0]
                seen.append(probe)
                headers[probe] = {k.lower(): v for k, v in self.headers.items()}
                bodies[probe] = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = int(query.get("status", ["200"])[0])
                time.sleep(float(query.get("delay", ["0"])[0]))
                body = f"reached {probe}".encode()
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*certificate())
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(timeout=10)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def workerd(serve_args: Callable[[Path], list[str]], folder: Path, **stage_kw: Any) -> Iterator[str]:
    """workerd serving the probe Worker; yields its base URL, and stops it by its PID."""
    port = free_port()
    config = stage(folder, port, **stage_kw)
    log = open(folder / "workerd.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        ["timeout", "--signal=KILL", "300", *serve_args(config.relative_to(folder))],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=60) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "the probe Worker never answered; log:\n"
                        + (folder / "workerd.log").read_text(errors="replace")[-4000:]
                    ) from None
                time.sleep(0.2)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        log.close()


def probe(base: str, route: str, target: str | None, **params: str) -> dict[str, Any]:
    query = urllib.parse.urlencode({**({"url": target} if target else {}), **params})
    with urllib.request.urlopen(f"{base}{route}?{query}", timeout=120) as response:
        return dict(json.loads(response.read()))


def main() -> int:
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from _runtime_kit import kit

    runtime = kit()
    out: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        Recorder().running() as server,
        Recorder(tls=True).running() as tls_server,
    ):
        for date, flags in ((DATE, FLAGS), (runtime.newest_date, runtime.newest_flags)):
            folder = Path(tmp) / date
            folder.mkdir()
            with workerd(runtime.serve_args, folder, flags=flags, date=date) as base:
                for route in ("/probe", "/probe-do", "/engine"):
                    server.clear()
                    tls_server.clear()
                    result = probe(base, route, server.url, id=f"engine-{date}", tls=tls_server.url)
                    result["server_saw"] = list(server.seen)
                    result["tls_server_saw"] = list(tls_server.seen)
                    result["server_headers"] = dict(server.headers)
                    out[f"{date} {route}"] = result
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
