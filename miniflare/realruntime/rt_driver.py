"""Serve the package in the real local runtime (workerd with Python Durable Objects).

CPython-side driver of the real-runtime tier: it writes a workerd config that embeds the
package's modules, starts workerd on loopback with free ports, and gives tests start / stop /
SIGKILL / restart and a small JSON HTTP client.

One process serves several Python Workers (``services``), each on its own socket:

* ``example``: the example Worker exactly as shipped (every module of ``worker/``, its entry
  module first, its ``Default`` class and the package's ``WorkflowExecutionDO`` bound as
  ``WORKFLOW_DO``);
* ``scenarios``: the test Worker of ``worker/`` beside this file, which drives the engine's
  contract scenarios through a real ``durableObjectNamespace`` binding, with side-effect
  counters in a separate Durable Object (and the Storage contract of
  ``../pyodide/storage_contract.py``, run on the real storage by ``worker/probes.py``);
* ``bare``: the package and a minimal Worker, without the pydantic stand-in: what a Worker
  that does not vendor pydantic gets.

Each Worker exists once per compatibility date given (the date of wrangler.toml, 2025-09-20:
``fetch``/``alarm`` on classes; ``2025-08-01``: ``on_fetch``/``on_alarm``; the kit's newest
date, with the flags that make it load the kit's bundle). Every Worker except ``bare`` embeds
the test stand-in of pydantic (``standin/pydantic``; see its docstring), because the runtime
has none. Durable Object storage is a writable disk service under the state folder, so it
survives a SIGKILL and restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = ROOT / "src" / "workkit_workflow"
EXAMPLE = ROOT / "worker"
SCENARIOS = HERE / "worker"
STANDIN = HERE / "standin"
STORAGE_CONTRACT = HERE.parent / "pyodide" / "storage_contract.py"
"""The Storage port's contract (also run under Pyodide in Node and on CPython)."""

NEW_STYLE_DATE: str = tomllib.loads((ROOT / "wrangler.toml").read_text())["compatibility_date"]
"""The date of wrangler.toml, so the example runs as shipped. Handlers ``fetch``/``alarm`` on
classes (python_no_global_handlers is on from 2025-08-14)."""
OLD_STYLE_DATE = "2025-08-01"
"""Handlers ``on_fetch``/``on_alarm``."""
BASE_FLAGS = ("python_workers", "python_workers_development")
"""Enough before 2025-09-29 to load the kit's locally built Pyodide bundle (kit README)."""


@dataclass(frozen=True)
class Module:
    name: str
    """The module's name in the Worker, e.g. ``workkit_workflow/cloudflare/_object.py``."""
    source: Path


@dataclass(frozen=True)
class Service:
    key: str
    """``<kind>-<date>``: the socket name and the key tests use."""
    modules: tuple[Module, ...]
    date: str
    durable_objects: tuple[tuple[str, str], ...]
    """(class name, binding name) pairs."""


def package_modules() -> list[Module]:
    """Every Python file of the package, under its dotted path."""
    return [
        Module("workkit_workflow/" + p.relative_to(PACKAGE).as_posix(), p)
        for p in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in p.parts
    ]


def _folder_modules(folder: Path, main: str) -> list[Module]:
    files = sorted(folder.glob("*.py"), key=lambda p: (p.name != main, p.name))
    return [Module(p.name, p) for p in files]


def standin_modules() -> list[Module]:
    return [Module(p.relative_to(STANDIN).as_posix(), p) for p in sorted(STANDIN.rglob("*.py"))]


KINDS = ("example", "scenarios", "bare")
KEY_VALUE_CLASSES = frozenset({"KeyValueExecutionDO"})
"""Classes declared without SQL (``new_classes`` on Cloudflare): key-value storage only."""


def services_for(dates: Sequence[str], kinds: Sequence[str] = KINDS) -> list[Service]:
    """The ``kinds`` of Workers for each date (``bare`` for the first date only)."""
    out = []
    for date in dates:
        if "example" in kinds:
            out.append(
                Service(
                    f"example-{date}",
                    (*_folder_modules(EXAMPLE, "entry.py"), *package_modules(), *standin_modules()),
                    date,
                    (("WorkflowExecutionDO", "WORKFLOW_DO"),),
                )
            )
        if "scenarios" in kinds:
            out.append(
                Service(
                    f"scenarios-{date}",
                    (
                        *_folder_modules(SCENARIOS, "scenario_entry.py"),
                        Module("storage_contract.py", STORAGE_CONTRACT),
                        *package_modules(),
                        *standin_modules(),
                    ),
                    date,
                    (
                        ("ScenarioExecutionDO", "WORKFLOW_DO"),
                        ("KeyValueExecutionDO", "KV_WORKFLOW_DO"),
                        ("Counters", "COUNTERS"),
                        ("Bench", "BENCH"),
                        ("Probe", "PROBE"),
                    ),
                )
            )
    if "bare" in kinds:
        out.append(
            Service(
                f"bare-{dates[0]}",
                (Module("bare_entry.py", HERE / "bare" / "bare_entry.py"), *package_modules()),
                dates[0],
                (("WorkflowExecutionDO", "WORKFLOW_DO"),),
            )
        )
    return out


def _capnp_str(text: str) -> str:
    return json.dumps(text)


def render_config(
    services: Sequence[Service], flags: Mapping[str, Sequence[str]], ports: dict[str, int]
) -> str:
    """The workerd config: one worker and one socket per service, one disk for all storage."""
    lines = ['using Workerd = import "/workerd/workerd.capnp";', "const config :Workerd.Config = ("]
    entries = [f"(name = {_capnp_str(s.key)}, worker = .w{i})" for i, s in enumerate(services)]
    entries.append('(name = "do-disk", disk = (path = "do-storage", writable = true))')
    lines.append(f"  services = [{', '.join(entries)}],")
    sockets = [
        f'(name = "{s.key}", address = "127.0.0.1:{ports[s.key]}", http = (), service = "{s.key}")'
        for s in services
    ]
    lines.append(f"  sockets = [{', '.join(sockets)}],")
    lines.append(");")
    for i, s in enumerate(services):
        modules = ", ".join(
            f"(name = {_capnp_str(m.name)}, pythonModule = embed {_capnp_str(_embed_path(s, m))})"
            for m in s.modules
        )
        namespaces = ", ".join(
            f'(className = "{cls}", uniqueKey = "{s.key}-{cls}", '
            f"enableSql = {'false' if cls in KEY_VALUE_CLASSES else 'true'})"
            for cls, _ in s.durable_objects
        )
        bindings = ", ".join(
            f'(name = "{binding}", durableObjectNamespace = "{cls}")' for cls, binding in s.durable_objects
        )
        flag_list = ", ".join(_capnp_str(f) for f in flags.get(s.date, BASE_FLAGS))
        lines += [
            f"const w{i} :Workerd.Worker = (",
            f"  modules = [{modules}],",
            f'  compatibilityDate = "{s.date}",',
            f"  compatibilityFlags = [{flag_list}],",
            f"  durableObjectNamespaces = [{namespaces}],",
            '  durableObjectStorage = (localDisk = "do-disk"),',
            f"  bindings = [{bindings}],",
            ");",
        ]
    return "\n".join(lines) + "\n"


def _embed_path(service: Service, module: Module) -> str:
    return f"src/{service.key}/{module.name}"


def stage(
    folder: Path, services: Sequence[Service], flags: Mapping[str, Sequence[str]], ports: dict[str, int]
) -> Path:
    """Copy every module under ``folder/src`` (embed paths are relative to the config) and
    write ``folder/config.capnp``."""
    shutil.rmtree(folder / "src", ignore_errors=True)
    for service in services:
        for module in service.modules:
            target = folder / _embed_path(service, module)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(module.source, target)
    (folder / "do-storage").mkdir(parents=True, exist_ok=True)
    config = folder / "config.capnp"
    config.write_text(render_config(services, flags, ports))
    return config


class _PortsBusy(Exception):
    pass


@dataclass
class Reply:
    status: int
    body: Any
    text: str


@dataclass
class RealRuntime:
    """One workerd process serving ``services``; restartable over the same storage."""

    serve_args: Callable[[Path], list[str]]
    folder: Path
    dates: Sequence[str] = (NEW_STYLE_DATE, OLD_STYLE_DATE)
    kinds: Sequence[str] = KINDS
    flags: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Compatibility flags by date; BASE_FLAGS for a date not given."""
    ready_timeout: float = 90.0
    services: list[Service] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    config: Path = field(init=False)
    log_path: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    aliases: dict[str, str] = field(default_factory=dict)
    """Other names of dates, e.g. ``newest``."""

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.services = services_for(self.dates, self.kinds)
        # Fixed for the object's life, so a restart serves the same URLs.
        self.ports = {s.key: free_port() for s in self.services}
        self.config = stage(self.folder, self.services, self.flags, self.ports)
        self.log_path = self.folder / "workerd.log"

    # -- process -------------------------------------------------------------

    def start(self) -> None:
        """Start workerd; retried while a killed predecessor still holds the ports."""
        deadline = time.monotonic() + 60
        while True:
            try:
                self._start_once()
                return
            except _PortsBusy:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the ports stayed busy; log:\n{self.log_tail()}") from None
                time.sleep(1.0)

    def _start_once(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        args = ["timeout", "--signal=KILL", "1200", *self.serve_args(self.config.relative_to(self.folder))]
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            offset = log.tell()
            self.process = subprocess.Popen(
                args,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while not all(_listening(port) for port in self.ports.values()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                since = self.log_path.read_bytes()[offset:].decode(errors="replace")
                self.kill()
                if "Address already in use" in since:
                    raise _PortsBusy()
                raise RuntimeError(f"workerd did not listen on every socket; log:\n{since[-4000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL workerd (the whole session: ``timeout`` and workerd), like a crash."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None
        # workerd itself (a child of ``timeout``) may close its sockets a moment later.
        deadline = time.monotonic() + 10
        while any(_listening(port) for port in self.ports.values()) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    # -- HTTP ------------------------------------------------------------------

    def service(self, kind: str, date: str) -> str:
        """The key of the ``kind`` Worker (example, scenarios, bare) of ``date`` (or its alias)."""
        return f"{kind}-{self.aliases.get(date, date)}"

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def request(
        self,
        service: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 120.0,
    ) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        sent = {"content-type": "application/json"} if data is not None else {}
        sent.update(headers or {})
        req = urllib.request.Request(self.url(service, path), data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return Reply(status, parsed, text)

    def wait_ready(self, service: str, path: str = "/") -> float:
        """Poll until the service answers 200 (the Python isolate's cold start); seconds taken."""
        t0 = time.monotonic()
        deadline = t0 + self.ready_timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                reply = self.request(service, "GET", path, timeout=60)
                if reply.status == 200:
                    return time.monotonic() - t0
                last = reply.text[:500]
            except OSError as exc:
                last = exc
            if self.process is None or self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"{service} never answered 200 ({last!r}); log:\n{self.log_tail()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def poll(fn: Callable[[], Any], *, timeout: float, every: float = 0.25, what: str = "condition") -> Any:
    """Call ``fn`` until it returns something truthy; that value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} not reached in {timeout} s (last: {value!r})")


def run_bench(serve_args: Callable[[Path], list[str]], steps: int, rounds: int = 5) -> Reply:
    """worker/bench.py's figures (``rounds`` rounds of ``steps``-step workflows), from a
    workerd serving only the test Worker (wrangler.toml's date), started and stopped here."""
    with _test_worker(serve_args, "workkit-rt-bench-") as (rt, service):
        return rt.request(service, "POST", f"/bench?steps={steps}&rounds={rounds}&id=cli", timeout=600)


@contextlib.contextmanager
def _test_worker(serve_args: Callable[[Path], list[str]], prefix: str) -> Iterator[tuple[RealRuntime, str]]:
    """A workerd serving only the test Worker (wrangler.toml's date), ready; stopped after."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        rt = RealRuntime(serve_args, Path(folder), dates=(NEW_STYLE_DATE,), kinds=("scenarios",))
        rt.start()
        try:
            service = rt.service("scenarios", NEW_STYLE_DATE)
            rt.wait_ready(service)
            yield rt, service
        finally:
            rt.stop()


CPU_REQUESTS = (
    ("bare", "GET", "/", None),
    ("new_object", "POST", "/probe/none?id={id}", None),
    ("storage_floor", "POST", "/probe/storage_floor?id={id}", None),
    ("run_1", "POST", "/run?workflow=bench-steps&id={id}", {"steps": 1}),
    ("run_10", "POST", "/run?workflow=bench-steps&id={id}", {"steps": 10}),
)
"""What ``run_cpu`` measures, each ``executions`` times a round: a request the Worker answers
itself; one to a new Durable Object of the test Worker that answers at once (``Probe``, no
such probe); one to a new such object that does a 1-step execution's storage work itself, no
engine (``probes.storage_floor``); an execution of 1 and of 10 steps through the client's
``run`` (``/run``: a new ``ScenarioExecutionDO`` each, over the SQL journal, driven to its end
in the request)."""


def _stat_fields(path: Path) -> list[str]:
    """The fields of a /proc/<pid>/stat after the command's name (the state first)."""
    stat = path.read_text()
    return stat[stat.rindex(")") + 2 :].split()


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user and system, every thread) process ``pid`` has used."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workerd_pid(rt: RealRuntime) -> int:
    """The workerd process itself (the runtime is started under ``timeout``)."""
    assert rt.process is not None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat_fields(entry / "stat")[1])
            except OSError:
                continue
            if parent == rt.process.pid:
                return int(entry.name)
    raise RuntimeError("no workerd process under the runtime's timeout")


def run_cpu(
    serve_args: Callable[[Path], list[str]], executions: int = 200, rounds: int = 3
) -> dict[str, Any]:
    """The workerd process's CPU per request of each of ``CPU_REQUESTS``, in ms: what
    Cloudflare bills is the isolate's part of it (the runtime's own I/O, here in the same
    process, is not billed there). Read from /proc, not from the clock a Worker sees (wall
    time to the millisecond, in this workerd moving while code runs too, blind to the
    runtime's other threads). The kinds alternate within each round, one after the other,
    after warm-up requests of each; each execution's outcome is checked after its round."""
    with _test_worker(serve_args, "workkit-rt-cpu-") as (rt, service):
        pid = workerd_pid(rt)
        per_round: dict[str, list[float]] = {name: [] for name, *_ in CPU_REQUESTS}
        for round_no in [-1, *range(rounds)]:  # round -1 warms up, unmeasured
            count = 20 if round_no < 0 else executions
            for name, method, path, body in CPU_REQUESTS:
                before = process_cpu(pid)
                for i in range(count):
                    target = path.format(id=f"cpu-{name}-{round_no}-{i}")
                    reply = rt.request(service, method, target, body)
                    if name.startswith("run") and (reply.status != 200 or not reply.body["created"]):
                        raise RuntimeError(f"/run answered {reply.status}: {reply.text[:500]}")
                    if name == "storage_floor" and reply.status != 200:
                        raise RuntimeError(f"the storage floor answered {reply.status}: {reply.text[:500]}")
                if round_no >= 0:
                    per_round[name].append(1000 * (process_cpu(pid) - before) / count)
            for name, *_ in CPU_REQUESTS:
                if name.startswith("run"):
                    last = rt.request(service, "GET", f"/result?id=cpu-{name}-{round_no}-{count - 1}")
                    if last.body is None or last.body.get("status") != "completed":
                        raise RuntimeError(f"an execution of {name} did not complete: {last.text[:500]}")
    return {
        "executions": executions,
        "rounds": rounds,
        "clock_ticks_per_second": os.sysconf("SC_CLK_TCK"),
        "cpu_ms_per_request": {name: statistics.median(values) for name, values in per_round.items()},
        "all_rounds": per_round,
    }


def run_profile(
    serve_args: Callable[[Path], list[str]],
    executions: int = 400,
    steps: int = 1,
    top: int = 40,
    callers: str | None = None,
) -> dict[str, str]:
    """cProfile's view of ``executions`` executions of ``steps`` steps through the client's
    ``run`` in workerd, each a new execution object, after 30 unprofiled ones: what pstats
    prints, by sort (``tottime``, ``cumulative``), and with ``callers`` (a regular expression
    of function names) who called the functions it matches. The test Worker's ``/profile`` routes
    (worker/scenario_entry.py) profile both the Worker's side and the object's."""
    with _test_worker(serve_args, "workkit-rt-profile-") as (rt, service):
        for n in range(30 + executions):
            if n == 30:
                rt.request(service, "GET", "/profile/stats")  # the warm-up's profile, dropped
            reply = rt.request(service, "POST", f"/profile/run?id=profile-{n}&steps={steps}")
            if reply.status != 200 or not reply.body["created"]:
                raise RuntimeError(f"/profile/run answered {reply.status}: {reply.text[:500]}")
        query = urllib.parse.urlencode({"top": top, **({"callers": callers} if callers else {})})
        reply = rt.request(service, "GET", f"/profile/stats?{query}")
        if reply.status != 200:
            raise RuntimeError(f"/profile/stats answered {reply.status}: {reply.text[:500]}")
        stats: dict[str, str] = reply.body
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    """``python miniflare/realruntime/rt_driver.py bench [STEPS [ROUNDS]]``: the step-cost
    figures of worker/bench.py as JSON; ``... cpu [EXECUTIONS [ROUNDS]]``: ``run_cpu``'s
    (``python -m bench --real-runtime`` prints both as tables); ``... profile [EXECUTIONS
    [STEPS [CALLERS]]]``: ``run_profile``'s, as pstats prints it (by tottime, then cumulative,
    then the callers of the functions the regular expression CALLERS names)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("bench", "cpu", "profile"):
        print(main.__doc__, file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "tests"))
    from _runtime_kit import kit

    if args[0] == "profile":
        executions = int(args[1]) if len(args) > 1 else 400
        steps = int(args[2]) if len(args) > 2 else 1
        callers = args[3] if len(args) > 3 else None
        for text in run_profile(kit().serve_args, executions, steps, callers=callers).values():
            print(text)
        return 0
    if args[0] == "cpu":
        executions = int(args[1]) if len(args) > 1 else 200
        rounds = int(args[2]) if len(args) > 2 else 3
        print(json.dumps(run_cpu(kit().serve_args, executions, rounds), indent=2))
        return 0
    steps = int(args[1]) if len(args) > 1 else 200
    rounds = int(args[2]) if len(args) > 2 else 5

    reply = run_bench(kit().serve_args, steps, rounds)
    print(json.dumps(reply.body, indent=2) if reply.body is not None else reply.text)
    return 0 if reply.status == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
