"""Entry module of the real-runtime test Worker.

Exports the package's execution object (subclassed only for a 2 s lease, so an alarm takes
over quickly after a crash) as ``ScenarioExecutionDO``, the ``Counters`` object, and
``Default``, whose routes drive the scenarios through the ``WORKFLOW_DO`` binding:

    GET  /                          ready
    POST /check/<name>?id=ID         run an in-runtime scenario of checks.py
    POST /probe/<name>?id=ID         run a probe of probes.py (in the ``Probe`` object ID)
    POST /bench?steps=N&rounds=R     bench.py (in the ``Bench`` object)
    POST /run?workflow=W&id=ID       run, as create_durable_workflow(...).run does (body: the input)
    POST /start?workflow=W&id=ID     start without waiting (body: the input)
    GET  /result?id=ID               the outcome (timeout 0), /describe, /journal likewise
    POST /cancel?id=ID               cancel
    POST /event?id=ID&type=T         send an event (body: the payload)
    GET  /counters?prefix=P          side-effect counters
    GET  /runtime                    handlers called, objects constructed, storage adapters chosen
    POST /profile/run?id=ID&steps=N  a run of bench-steps through the client, under cProfile
    GET  /profile/stats?top=K[&callers=RE]  the profile of the runs since the last stats, as pstats
                                     prints it (and the callers of the functions RE matches)

``&storage=kv`` on /check, /start, /result, ... sends the requests to ``KeyValueExecutionDO``
(a key-value-backed class) instead of ``ScenarioExecutionDO`` (SQLite-backed).

Both handler styles are defined: ``fetch``/``alarm`` (compatibility dates from 2025-08-14) and
``on_fetch``/``on_alarm`` (earlier).
"""

import functools
import json
import sys
import traceback
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import bench
import checks
import flows
import probes
from workers import DurableObject, Response, WorkerEntrypoint

from workkit_workflow import WorkflowExecutionDO, create_durable_workflow

__all__ = ["Bench", "Counters", "Default", "KeyValueExecutionDO", "Probe", "ScenarioExecutionDO"]


def reply(value, status=200):
    return Response(json.dumps(value), status=status, headers={"content-type": "application/json"})


HANDLERS = Counter()
"""Calls of each handler, as ``name/number of arguments`` (the package's ``on_fetch`` and
``on_alarm`` delegate to ``fetch`` and ``alarm``, so those count them too)."""


STORAGE_KINDS = Counter()
"""Execution objects constructed, by the Storage adapter their host chose."""

ENV_WRAPPERS = Counter()
"""The SDK wrappers of the ``env`` each execution object was given, and of its ``self.env``."""


def _record(name, extra_args):  # the first argument is the request or the alarm info
    HANDLERS[f"{name}/{1 + len(extra_args)}"] += 1


def _recording(name):
    """The package's handler ``name``, counting its calls; ``functools.wraps`` keeps its
    signature visible (the runtime passes a handler as many arguments as it declares)."""
    original = getattr(WorkflowExecutionDO, name)

    @functools.wraps(original)
    async def handler(self, *args):
        _record(name, args[1:])
        return await original(self, *args)

    return handler


def _scenario_class(name):
    """The package's execution object with a 2 s lease and counted handlers, a subclass of
    ``WorkflowExecutionDO`` as a user writes one. This SDK wraps ``__init__`` once per class
    level, so ``env`` arrives wrapped twice, and through the outer wrapper a namespace
    binding's stubs refuse ``fetch`` (``fetch() takes 1 positional argument but 2 were
    given``). The object's ``self.env`` is wrapped once: the flows' steps reach their
    bindings (the counters they bump) through it, and ``/runtime`` reports its wrappers."""

    def __init__(self, ctx, env):
        WorkflowExecutionDO.__init__(self, ctx, env)
        flows.bind(ctx, self.env)
        STORAGE_KINDS[type(self._object.host.storage).__name__] += 1
        ENV_WRAPPERS[f"given {_wrappers(env)}, self.env {_wrappers(self.env)}"] += 1

    namespace = {
        "lease": 2.0,
        "__init__": __init__,
        "__module__": __name__,
        "fetch": _recording("fetch"),
        "alarm": _recording("alarm"),
        "on_fetch": _recording("on_fetch"),
        "on_alarm": _recording("on_alarm"),
    }
    return type(name, (WorkflowExecutionDO,), namespace)


def _wrappers(env):
    """How many of the SDK's wrappers ``env`` is under (each keeps what it wraps as ``_env``)."""
    depth = 0
    while getattr(env, "_env", None) is not None:
        env, depth = env._env, depth + 1
    return depth


ScenarioExecutionDO = _scenario_class("ScenarioExecutionDO")
KeyValueExecutionDO = _scenario_class("KeyValueExecutionDO")
"""The same object on a key-value-backed class (no ``enableSql``): the adapter falls back to
the key-value API there."""


class Counters(DurableObject):
    """Side-effect counters: one synchronous SQL upsert per bump, so concurrent bumps (another
    request can run at every await) never lose a count."""

    def __init__(self, ctx, env):
        try:
            super().__init__(ctx, env)
        except TypeError:  # SDKs whose DurableObject has no constructor
            pass
        self.ctx = ctx
        self.env = env
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS c (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")

    async def fetch(self, request):
        url = urlsplit(str(request.url))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        sql = self.ctx.storage.sql
        if url.path == "/incr":
            sql.exec(
                "INSERT INTO c (k, n) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET n = n + 1", query["key"]
            )
            n = sql.exec("SELECT n FROM c WHERE k = ?", query["key"]).one().n
            return reply({"n": int(n)})
        rows = (
            sql.exec("SELECT k, n FROM c WHERE k >= ? ORDER BY k", query.get("prefix", "")).toArray().to_py()
        )
        prefix = query.get("prefix", "")
        return reply({"counters": {r["k"]: int(r["n"]) for r in rows if r["k"].startswith(prefix)}})

    async def on_fetch(self, request, *_runtime_args):
        return await self.fetch(request)


class Bench(DurableObject):
    """Runs bench.py on its own storage: POST /bench?steps=N."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.ctx = ctx

    async def fetch(self, request):
        query = {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}
        steps, rounds = int(query.get("steps", "50")), int(query.get("rounds", bench.ROUNDS))
        return reply(await bench.measure(self.ctx, steps, rounds))

    async def on_fetch(self, request, *_runtime_args):
        return await self.fetch(request)


class Probe(DurableObject):
    """Runs a probe of probes.py on its own storage: POST /probe/<name>."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.ctx = ctx
        flows.bind(ctx, env)

    async def fetch(self, request):
        url = urlsplit(str(request.url))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            return reply(await probes.run(self.ctx, url.path.split("/")[-1], query))
        except probes.ProbeFailed as exc:
            return reply({"failed": str(exc)}, status=500)
        except Exception as exc:
            return reply({"crashed": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}, 500)

    async def on_fetch(self, request, *_runtime_args):
        return await self.fetch(request)

    async def alarm(self, *_info):
        pass  # the probes' alarms are far in the future; one that fires has nothing to do

    async def on_alarm(self, *_info):
        pass


class _KeyValueEnv:
    """``env`` with ``WORKFLOW_DO`` bound to the key-value-backed class."""

    def __init__(self, env):
        self._env = env
        self.WORKFLOW_DO = env.KV_WORKFLOW_DO

    def __getattr__(self, name):
        return getattr(self._env, name)


async def serve(env, request):
    url = urlsplit(str(request.url))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    path = url.path
    if path == "/":
        return reply({"ready": True, "python": sys.version.split()[0]})
    if path == "/runtime":
        return reply(
            {
                "handlers": dict(HANDLERS),
                "constructed": flows.STATE["constructed"],
                "storage_kinds": dict(STORAGE_KINDS),
                "env_wrappers": dict(ENV_WRAPPERS),
            }
        )
    if path == "/bench":
        stub = env.BENCH.get(env.BENCH.idFromName(query.get("id", "bench")))
        response = await stub.fetch(f"https://bench/bench?{url.query}", method="POST")
        return Response(
            await response.text(), status=response.status, headers={"content-type": "application/json"}
        )
    if path.startswith("/profile/"):
        return reply(await _profile(env, path, query))
    if path.startswith("/probe/"):
        stub = env.PROBE.get(env.PROBE.idFromName(query.get("id", "probe")))
        response = await stub.fetch(f"https://probe{path}?{url.query}", method="POST")
        return Response(
            await response.text(), status=response.status, headers={"content-type": "application/json"}
        )
    if query.get("storage") == "kv":
        env = _KeyValueEnv(env)
    if path == "/counters":
        stub = flows.counters_stub(env)
        response = await stub.fetch(f"https://counters/all?prefix={query.get('prefix', '')}")
        return reply(json.loads(await response.text()))
    eid = query["id"]
    if path.startswith("/check/"):
        name = path.split("/")[-1]
        try:
            return reply(await checks.CHECKS[name](env, eid))
        except checks.CheckFailed as exc:
            return reply({"failed": str(exc)}, status=500)
        except Exception as exc:
            return reply(
                {"crashed": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}, status=500
            )
    client = create_durable_workflow(env.WORKFLOW_DO)
    handle = client.execution(eid)
    if path == "/run":
        text = await request.text()
        ran = await client.run(query["workflow"], json.loads(text) if text else None, execution_id=eid)
        return reply({"created": ran.created})
    if path == "/start":
        text = await request.text()
        started = await client.start(query["workflow"], json.loads(text) if text else None, execution_id=eid)
        return reply({"created": started.created})
    if path == "/result":
        result = await handle.result(timeout=0)
        error = result.error.to_dict() if result.error is not None else None
        return reply({"ok": result.ok, "status": result.status, "value": result.value, "error": error})
    if path == "/describe":
        return reply(await handle.describe())
    if path == "/journal":
        return reply(await handle.journal())
    if path == "/cancel":
        return reply({"cancelled": await handle.cancel("the test cancels")})
    if path == "/event":
        text = await request.text()
        accepted = await handle.send_event(query["type"], json.loads(text) if text else None)
        return reply({"accepted": accepted})
    return reply({"error": f"no route {path}"}, status=404)


PROFILE = []
"""The ``cProfile.Profile`` of ``/profile/run`` since the last ``/profile/stats``, if any."""


async def _profile(env, path, query):
    """``/profile/run``: one execution of ``bench-steps`` through ``client.run`` with the
    profiler on. The Worker's request and the execution object's run in this thread (the
    object is in this isolate), so the profile holds both sides: the client, the object's
    request and response, the engine and its storage calls. Here the clock moves while code
    runs (to the millisecond), so the times are a sample: read them over hundreds of runs.
    ``/profile/stats``: the profile, sorted by ``tottime`` and by ``cumulative``; the next
    run starts a new one."""
    import cProfile
    import io
    import pstats

    if path == "/profile/run":
        if not PROFILE:
            PROFILE.append(cProfile.Profile())
        client = create_durable_workflow(env.WORKFLOW_DO)
        PROFILE[0].enable()
        try:
            ran = await client.run("bench-steps", {"steps": int(query.get("steps", "1"))}, execution_id=query["id"])
        finally:
            PROFILE[0].disable()
        return {"created": ran.created}
    stats = {}
    profile = PROFILE.pop()
    for sort in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats(sort).print_stats(int(query.get("top", "40")))
        stats[sort] = text.getvalue()
    if query.get("callers"):
        text = io.StringIO()
        pstats.Stats(profile, stream=text).print_callers(query["callers"])
        stats["callers"] = text.getvalue()
    return stats


async def serve_safely(env, request):
    try:
        return await serve(env, request)
    except Exception as exc:
        code = getattr(exc, "code", None)
        return reply({"error": {"type": type(exc).__name__, "code": code, "message": str(exc)}}, status=502)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return await serve_safely(self.env, request)

    async def on_fetch(self, request, *_runtime_args):
        return await serve_safely(self.env, request)
