"""Cloudflare's own local Workflows engine in the newest workerd, serving a Python Worker.

Config generation and the process driver for the real-runtime tier of the Cloudflare
Workflows backend (``tests/test_realruntime_cfworkflows.py``). The Python Worker in
``worker/`` (``entry.py`` + ``flows.py``) and the package's sources are embedded as
``pythonModule`` entries; each workflow gets one engine service (the unmodified
``binding.worker.js`` of miniflare, extracted by ``../shared/runtime/cfworkflows/
fetch_engine.sh``) wired the way miniflare's ``plugins/workflows`` wires it (see the
last section of ``../shared/runtime/README.md``). ``self.env.<BINDING>`` in Python is
then the runtime SDK's wrapper around the engine's ``WorkflowImpl``, as deployed.

Used from CPython only (tests, by hand)::

    python miniflare/cfworkflows-real/runtime.py KIT_DIR ENGINE_DIR   # serve until Ctrl-C
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SRC = ROOT / "src"
WORKER = HERE / "worker"
ENGINE_FILES = ("binding.worker.js", "wrapped-binding.worker.js", "zod.worker.js")
ENGINE_COMPAT_DATE = "2024-10-22"
"""The engine service's own date and flags, as miniflare sets them."""


@dataclass(frozen=True)
class Binding:
    """One ``[[workflows]]`` entry of a wrangler config."""

    name: str
    """The Workflow's name (wrangler ``name``)."""
    binding: str
    """``env.<binding>`` in the Worker."""
    class_name: str
    """The ``WorkflowEntrypoint`` class exported by the entry module."""


# The workflows of worker/flows.py, one engine service each (wrangler's [[workflows]]).
BINDINGS = (
    Binding("retry-flow", "RETRY_FLOW", "RetryFlow"),
    Binding("saga-flow", "SAGA_FLOW", "SagaFlow"),
    Binding("nap-flow", "NAP_FLOW", "NapFlow"),
    Binding("approval-flow", "APPROVAL_FLOW", "ApprovalFlow"),
    Binding("long-flow", "LONG_FLOW", "LongFlow"),
    Binding("count-flow", "COUNT_FLOW", "CountFlow"),
    Binding("big-flow", "BIG_FLOW", "BigFlow"),
    Binding("plain-flow", "PLAIN_FLOW", "PlainFlow"),
)


@dataclass(frozen=True)
class Settings:
    """What differs between runs of the same Worker: the compatibility date and flags."""

    date: str
    flags: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.date


def _capnp_str(text: str) -> str:
    return json.dumps(text)


def _modules(folder: Path) -> list[tuple[str, Path]]:
    """The entry module first, then the Worker's other modules and the package's sources."""
    modules = [("entry.py", WORKER / "entry.py")]
    modules += [(p.name, p) for p in sorted(WORKER.glob("*.py")) if p.name != "entry.py"]
    package = SRC / "workkit_workflow"
    for path in sorted(package.rglob("*.py")):
        modules.append((str(path.relative_to(SRC)), path))
    copied = []
    for name, path in modules:
        target = folder / "modules" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied.append((name, Path("modules") / name))
    return copied


def _const_name(b: Binding) -> str:
    # capnp declaration names are camelCase, no underscores.
    return "engine" + "".join(part.capitalize() for part in b.binding.split("_"))


def _engine_service(b: Binding) -> str:
    const = _const_name(b)
    return f"""const {const} :Workerd.Worker = (
  modules = [ (name = "workflows.mjs", esModule = embed "engine/binding.worker.js") ],
  compatibilityDate = "{ENGINE_COMPAT_DATE}",
  compatibilityFlags = ["experimental"],
  durableObjectNamespaces = [ (className = "Engine", enableSql = true,
    uniqueKey = {_capnp_str("miniflare-workflows-" + b.name)}, preventEviction = true) ],
  durableObjectStorage = (localDisk = "disk"),
  bindings = [
    (name = "ENGINE", durableObjectNamespace = "Engine"),
    (name = "USER_WORKFLOW", service = (name = "main", entrypoint = {_capnp_str(b.class_name)})),
    (name = "BINDING_NAME", json = {_capnp_str(json.dumps(b.binding))}),
    (name = "WORKFLOW_NAME", json = {_capnp_str(json.dumps(b.name))}),
    (name = "WORKFLOW_STORAGE", service = "disk"),
  ],
);
"""


def write_config(
    folder: Path, engine: Path, settings: Settings, bindings: Sequence[Binding] = BINDINGS
) -> Path:
    """Write ``folder/config.capnp`` (and copy what it embeds) for one run."""
    (folder / "engine").mkdir(parents=True, exist_ok=True)
    for name in ENGINE_FILES:
        shutil.copyfile(engine / name, folder / "engine" / name)
    (folder / "data").mkdir(exist_ok=True)
    modules = ",\n    ".join(
        f"(name = {_capnp_str(name)}, pythonModule = embed {_capnp_str(str(path))})"
        for name, path in _modules(folder)
    )
    services = ",\n    ".join(f'(name = "engine-{b.name}", worker = .{_const_name(b)})' for b in bindings)
    wrapped = ",\n    ".join(
        f'(name = {_capnp_str(b.binding)}, wrapped = (moduleName = "workflows:local-wrapped-binding", '
        f'innerBindings = [ (name = "binding", service = (name = "engine-{b.name}", '
        f'entrypoint = "WorkflowBinding")) ]))'
        for b in bindings
    )
    flags = ", ".join(_capnp_str(f) for f in settings.flags)
    config = f"""using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .mainWorker),
    (name = "disk", disk = (path = {_capnp_str(str(folder / "data"))}, writable = true)),
    {services}
  ],
  sockets = [ (name = "http", address = "127.0.0.1:0", http = (), service = "main") ],
  extensions = [ (modules = [
    (name = "miniflare:zod", esModule = embed "engine/zod.worker.js"),
    (name = "workflows:local-wrapped-binding", esModule = embed "engine/wrapped-binding.worker.js",
     internal = true),
  ]) ],
);
const mainWorker :Workerd.Worker = (
  modules = [
    {modules}
  ],
  compatibilityDate = {_capnp_str(settings.date)},
  compatibilityFlags = [{flags}],
  bindings = [
    {wrapped}
  ],
);
""" + "".join(_engine_service(b) for b in bindings)
    path = folder / "config.capnp"
    path.write_text(config)
    return path


@dataclass
class Runtime:
    """One workerd process serving the Worker on a free loopback port."""

    args: list[str]
    folder: Path
    lifetime: float = 900.0
    """Hard cap on the process (``timeout``), so a lost process cannot outlive a run."""
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_lines: list[str] = field(default_factory=list)

    def start(self, ready_timeout: float = 90.0) -> None:
        read_fd, write_fd = os.pipe()
        log = open(self.folder / "workerd.log", "wb")  # noqa: SIM115 (kept open for the process)
        cmd = ["timeout", "-s", "KILL", str(int(self.lifetime)), *self.args]
        cmd += ["--socket-addr", "http=127.0.0.1:0", f"--control-fd={write_fd}"]
        self.proc = subprocess.Popen(
            cmd, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,)
        )
        os.close(write_fd)
        log.close()
        try:
            self.port = _listen_port(read_fd, self.proc, ready_timeout)
        finally:
            os.close(read_fd)
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                self.post("/ping", timeout=30)
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"the Worker did not answer /ping:\n{self.log()[-4000:]}") from None
                time.sleep(0.2)

    def post(self, path: str, timeout: float = 60.0, **body: Any) -> Any:
        """POST ``body`` as JSON to ``path``; the JSON answer."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            raise AssertionError(f"{path} answered {exc.code}: {text[:3000]}") from None

    def log(self) -> str:
        try:
            return (self.folder / "workerd.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        # `timeout` execs nothing: kill workerd (its child) first, then timeout itself.
        for child in _children(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc = None


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _listen_port(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> int:
    buffer = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buffer += chunk
        for line in buffer.decode(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "listen" and event.get("socket") == "http":
                return int(event["port"])
    raise RuntimeError("workerd reported no listening port")


def start(kit_args: Sequence[str], engine: Path, settings: Settings, folder: Path | None = None) -> Runtime:
    """Write the config into ``folder`` (a new temporary one by default) and start workerd.

    ``kit_args`` is the kit's ``serve_args`` without the config (``[workerd, "serve"]``
    comes from it: the config path is inserted third).
    """
    folder = folder or Path(tempfile.mkdtemp(prefix="cfw-real-"))
    config = write_config(folder, engine, settings)
    args = [kit_args[0], kit_args[1], str(config), *kit_args[2:]]
    runtime = Runtime(args=args, folder=folder)
    runtime.start()
    return runtime


if __name__ == "__main__":  # pragma: no cover (manual use)
    kit, engine = Path(sys.argv[1]), Path(sys.argv[2])
    date = sys.argv[3] if len(sys.argv) > 3 else "2025-09-20"
    flags = ("python_workers", "python_workers_development", "python_workflows")
    rt = start(
        [
            str(kit / "bin" / "workerd"),
            "serve",
            "--experimental",
            f"--pyodide-bundle-disk-cache-dir={kit / 'bundle'}",
            f"--pyodide-package-disk-cache-dir={kit / 'bundle'}",
        ],
        engine,
        Settings(date, flags),
    )
    print(f"serving on http://127.0.0.1:{rt.port} from {rt.folder}", flush=True)
    try:
        while rt.proc is not None and rt.proc.poll() is None:
            time.sleep(1)
    finally:
        rt.stop()
