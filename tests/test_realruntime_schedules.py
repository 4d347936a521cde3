"""Schedules and concurrency limits in the newest workerd with Python Durable Objects
(../shared/runtime kit): Cron Triggers delivered to the example Worker's ``scheduled``
handler, as Cloudflare does, by a JavaScript Worker calling ``Fetcher#scheduled()``
(workerd's experimental ``service_binding_extra_handlers``); and a limit whose
coordinator, wake-ups and releases go between real Durable Objects.

The Python Worker (``miniflare/realruntime/schedules/schedule_entry.py``) is the example
Worker as shipped plus a schedule and a limited workflow; cronsim is embedded as
``pywrangler`` would vendor it."""

from __future__ import annotations

import itertools
import shutil
import sys
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cronsim
import pytest

from _runtime_kit import ROOT, require_kit

sys.path.insert(0, str(ROOT / "miniflare" / "realruntime"))
import rt_driver
from rt_driver import BASE_FLAGS, NEW_STYLE_DATE, Module, RealRuntime, poll

pytestmark = pytest.mark.realruntime

HERE = ROOT / "miniflare" / "realruntime" / "schedules"
STATE = ROOT / ".cache" / "realruntime-schedules"
PYTHON = "sched"
TRIGGER = "trigger"


def python_modules() -> list[Module]:
    vendored = Path(cronsim.__file__).parent
    return [
        Module("schedule_entry.py", HERE / "schedule_entry.py"),
        *(Module(p.name, p) for p in sorted(rt_driver.EXAMPLE.glob("*.py"))),
        *rt_driver.package_modules(),
        *rt_driver.standin_modules(),
        *(Module(f"cronsim/{p.name}", p) for p in sorted(vendored.glob("*.py"))),
    ]


def render(flags: tuple[str, ...], ports: dict[str, int]) -> str:
    modules = ", ".join(f'(name = "{m.name}", pythonModule = embed "src/{m.name}")' for m in python_modules())
    flag_list = ", ".join(f'"{f}"' for f in flags)
    return f"""using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "{PYTHON}", worker = .py), (name = "{TRIGGER}", worker = .js),
              (name = "do-disk", disk = (path = "do-storage", writable = true))],
  sockets = [(name = "{PYTHON}", address = "127.0.0.1:{ports[PYTHON]}", http = (), service = "{PYTHON}"),
             (name = "{TRIGGER}", address = "127.0.0.1:{ports[TRIGGER]}", http = (), service = "{TRIGGER}")],
);
const py :Workerd.Worker = (
  modules = [{modules}],
  compatibilityDate = "{NEW_STYLE_DATE}",
  compatibilityFlags = [{flag_list}],
  durableObjectNamespaces = [(className = "WorkflowExecutionDO", uniqueKey = "sched-do", enableSql = true)],
  durableObjectStorage = (localDisk = "do-disk"),
  bindings = [(name = "WORKFLOW_DO", durableObjectNamespace = "WorkflowExecutionDO")],
);
const js :Workerd.Worker = (
  modules = [(name = "trigger.mjs", esModule = embed "src/trigger.mjs")],
  compatibilityDate = "{NEW_STYLE_DATE}",
  compatibilityFlags = ["service_binding_extra_handlers"],
  bindings = [(name = "TARGET", service = "{PYTHON}")],
);
"""


class ScheduleRuntime(RealRuntime):
    """RealRuntime's process handling over this test's own config."""

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.services = []
        self.ports = {PYTHON: rt_driver.free_port(), TRIGGER: rt_driver.free_port()}
        shutil.rmtree(self.folder / "src", ignore_errors=True)
        for module in python_modules():
            target = self.folder / "src" / module.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(module.source, target)
        shutil.copyfile(HERE / "trigger.mjs", self.folder / "src" / "trigger.mjs")
        (self.folder / "do-storage").mkdir(parents=True, exist_ok=True)
        self.config = self.folder / "config.capnp"
        self.config.write_text(render(tuple(self.flags.get(NEW_STYLE_DATE, BASE_FLAGS)), self.ports))
        self.log_path = self.folder / "workerd.log"


@pytest.fixture(scope="module")
def runtime() -> Iterator[ScheduleRuntime]:
    kit = require_kit()
    shutil.rmtree(STATE, ignore_errors=True)
    rt = ScheduleRuntime(kit.serve_args, STATE, dates=(NEW_STYLE_DATE,))
    rt.start()
    try:
        rt.wait_ready(PYTHON)
        yield rt
    finally:
        rt.stop()


def fire(rt: ScheduleRuntime, at: datetime) -> Any:
    query = urllib.parse.urlencode({"at": int(at.timestamp() * 1000), "cron": "*/5 * * * *"})
    reply = rt.request(TRIGGER, "GET", f"/?{query}")
    assert reply.status == 200, reply.text[:3000] + rt.log_tail()
    return reply.body


def status(rt: ScheduleRuntime, execution_id: str) -> dict[str, Any]:
    reply = rt.request(PYTHON, "GET", f"/describe/{urllib.parse.quote(execution_id)}")
    assert reply.status == 200, reply.text[:2000]
    return dict(reply.body["execution"])


def settled(rt: ScheduleRuntime, execution_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        view = status(rt, execution_id)
        return view if view["settled"] else None

    return dict(poll(check, timeout=60, what=f"{execution_id} settled"))


def test_a_cron_trigger_starts_the_due_tick_once(runtime: ScheduleRuntime) -> None:
    tick = datetime(2026, 11, 30, 3, 5, tzinfo=UTC)
    assert fire(runtime, tick)["outcome"] == "ok"
    view = settled(runtime, "rt-orders:2026-11-30T03:05Z")
    assert view["status"] == "completed", view
    # Cloudflare may deliver a trigger twice: the same tick, the same execution.
    assert fire(runtime, tick)["outcome"] == "ok"
    assert status(runtime, "rt-orders:2026-11-30T03:05Z")["created_at"] == view["created_at"]


def test_ticks_missed_between_triggers_are_caught_up(runtime: ScheduleRuntime) -> None:
    # "all": the ticks after the last recorded one (03:05) up to this trigger's time.
    assert fire(runtime, datetime(2026, 11, 30, 3, 20, tzinfo=UTC))["outcome"] == "ok"
    for minute in (10, 15, 20):
        assert settled(runtime, f"rt-orders:2026-11-30T03:{minute}Z")["status"] == "completed"


def test_a_limit_runs_one_at_a_time_in_order_between_real_objects(runtime: ScheduleRuntime) -> None:
    ids = [f"rt-lim-{i}" for i in range(4)]
    for i, execution_id in enumerate(ids):
        reply = runtime.request(PYTHON, "POST", f"/limited/{execution_id}?account=acme&i={i}")
        assert reply.status == 200, reply.text[:2000] + runtime.log_tail()
    assert [status(runtime, e)["status"] for e in ids[1:]] == ["queued"] * 3
    views = [settled(runtime, e) for e in ids]
    assert [v["status"] for v in views] == ["completed"] * 4
    spans = [(v["started_at"], v["finished_at"]) for v in views]
    # One at a time, in the order they asked: each starts after the previous finished.
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert started >= finished


def test_a_holder_that_does_not_exist_is_found_by_the_coordinators_alarm(runtime: ScheduleRuntime) -> None:
    coordinator = "/coordinator/" + urllib.parse.quote("limit:rt-limited:ghosts")
    body = {"op": "acquire", "execution_id": "rt-ghost", "max": 1}
    granted = runtime.request(PYTHON, "POST", coordinator, body)
    assert granted.status == 200 and granted.body["limit"]["granted"], granted.text[:2000]
    reply = runtime.request(PYTHON, "POST", "/limited/rt-after-ghost?account=ghosts&i=9")
    assert reply.status == 200 and reply.body["execution"]["status"] == "queued", reply.text[:2000]
    # The coordinator's alarm (every 30 s while it has holders) asks rt-ghost for its
    # status, gets 404, frees the slot and wakes the waiter.
    view = poll(lambda: (v := status(runtime, "rt-after-ghost"))["settled"] and v, timeout=120, what="waiter")
    assert view["status"] == "completed", view
    record = runtime.request(PYTHON, "GET", coordinator).body["limit"]
    assert record["holders"] == {} and record["queue"] == [], record
