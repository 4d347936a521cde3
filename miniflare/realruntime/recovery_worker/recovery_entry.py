"""Entry module of the crash-recovery Worker (``../recovery.py`` drives it).

Small orders shaped like the example's (``worker/app.py``: ``POST /orders`` with ``order_id``,
``amount``, ``items``; execution id ``order-<order_id>``), run by a flow of three steps that each
sleep the order's ``step_seconds`` (default ``STEP_SECONDS``; the example's steps take under a
millisecond, too short to SIGKILL the runtime in the middle of one). Each real run of a step is
counted in the ``Runs`` object, which outlives any crash of an execution object.

Two execution classes, both plain subclasses of the package's ``WorkflowExecutionDO`` that only
keep ``env`` for the steps: ``RecoveryExecutionDO`` keeps the package's default lease (what a
Worker gets out of the box), ``LongLeaseExecutionDO`` a 30 s lease, for comparison.

    GET  /                                  ready
    POST /orders?lease=default|long         start the order (body: the order)
    GET  /executions/<id>?lease=...         describe
    GET  /executions/<id>/journal?lease=... the journal
    GET  /runs?prefix=P                     runs counted, by ``<execution id>:<step>``
    POST /poisoned?id=ID                    start a poisoned order (``poisoned_order``)
    POST /executions/<id>/unpause           continue a paused execution
    GET  /executions/<id>/meta              its meta (``recoveries`` among it)
"""

import asyncio
import json
from urllib.parse import parse_qs, quote, urlsplit

from workers import DurableObject, Response, WorkerEntrypoint

from workkit_workflow import RetryPolicy, WorkflowExecutionDO, create_durable_workflow, current_step, workflow

__all__ = ["Default", "LongLeaseExecutionDO", "RecoveryExecutionDO", "Runs"]

STEP_SECONDS = 0.3
STEPS = ("reserve-inventory", "charge-card", "ship")
ENV = {"env": None}
"""The Worker's ``env``, kept by the execution objects: after a restart the lease alarm can
run a step before any request has reached the Worker."""


def reply(value, status=200):
    return Response(json.dumps(value), status=status, headers={"content-type": "application/json"})


async def count_run(key):
    """Count one more run of ``key`` in the ``Runs`` object: the new count."""
    env = ENV["env"]
    stub = env.RUNS.get(env.RUNS.idFromName("runs"))
    response = await stub.fetch(f"https://runs/incr?key={quote(key)}", method="POST")
    return json.loads(await response.text())["n"]


async def slow_step(name, seconds):
    """Count this run (the new count is the run's number), then take ``seconds``."""
    run = await count_run(f"{current_step().execution_id}:{name}")
    await asyncio.sleep(seconds)
    return {"step": name, "run": run}


@workflow("slow-order", retry=RetryPolicy(max_attempts=3, initial_delay=0.2, jitter=0.0))
async def slow_order(ctx, order):
    seconds = order.get("step_seconds", STEP_SECONDS)
    runs = {}
    for name in STEPS:
        runs[name] = (await ctx.step(name, slow_step, name, seconds))["run"]
    return {"order_id": order["order_id"], "runs": runs}


HUNG_ARRIVALS = 3
"""How many times the poisoned order's body hangs between its steps (``poisoned_order``)."""


@workflow("poisoned-order", max_recoveries=2)
async def poisoned_order(ctx, order):
    """An order whose body, outside any step, hangs its first ``HUNG_ARRIVALS`` times (where
    ``../recovery.py`` kills the runtime, as a CPU limit would): the recovery cap pauses it,
    and once continued it completes."""
    await ctx.step("reserve-inventory", slow_step, "reserve-inventory", 0.0)
    if await count_run(f"{ctx.execution_id}:body") <= HUNG_ARRIVALS:
        await asyncio.sleep(120)
    return await ctx.step("ship", slow_step, "ship", 0.0)


class RecoveryExecutionDO(WorkflowExecutionDO):
    """The package's execution object with its default lease."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ENV["env"] = env


class LongLeaseExecutionDO(WorkflowExecutionDO):
    """The same with a 30 s lease (the package's default before issue #10)."""

    lease = 30.0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ENV["env"] = env


class Runs(DurableObject):
    """Run counters: one synchronous SQL upsert per run, durable before the reply."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.ctx = ctx
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS runs (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")

    async def fetch(self, request):
        url = urlsplit(str(request.url))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        sql = self.ctx.storage.sql
        if url.path == "/incr":
            sql.exec(
                "INSERT INTO runs (k, n) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET n = n + 1", query["key"]
            )
            return reply({"n": int(sql.exec("SELECT n FROM runs WHERE k = ?", query["key"]).one().n)})
        rows = sql.exec("SELECT k, n FROM runs ORDER BY k").toArray().to_py()
        prefix = query.get("prefix", "")
        return reply({r["k"]: int(r["n"]) for r in rows if r["k"].startswith(prefix)})


def _namespace(env, lease):
    return env.LONG_LEASE_DO if lease == "long" else env.WORKFLOW_DO


async def serve(env, request):
    url = urlsplit(str(request.url))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    parts = [p for p in url.path.split("/") if p]
    if not parts:
        return reply({"ready": True})
    if parts == ["runs"]:
        stub = env.RUNS.get(env.RUNS.idFromName("runs"))
        response = await stub.fetch(f"https://runs/all?prefix={quote(query.get('prefix', ''))}")
        return reply(json.loads(await response.text()))
    client = create_durable_workflow(_namespace(env, query.get("lease", "default")))
    if parts == ["orders"]:
        order = json.loads(await request.text())
        handle = await client.start("slow-order", order, execution_id=f"order-{order['order_id']}")
        return reply({"created": handle.created}, status=201 if handle.created else 200)
    if parts[0] == "executions" and len(parts) == 2:
        return reply({"execution": await client.execution(parts[1]).describe()})
    if parts == ["poisoned"]:
        handle = await client.start("poisoned-order", {"order_id": query["id"]}, execution_id=query["id"])
        return reply({"created": handle.created}, status=201)
    if parts[0] == "executions" and parts[2:] == ["unpause"]:
        return reply({"unpaused": await client.execution(parts[1]).unpause()})
    if parts[0] == "executions" and parts[2:] == ["meta"]:
        return reply({"meta": await client.execution(parts[1]).meta()})
    if parts[0] == "executions" and parts[2:] == ["journal"]:
        return reply({"entries": await client.execution(parts[1]).journal()})
    return reply({"error": f"no route {url.path}"}, status=404)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        try:
            return await serve(self.env, request)
        except Exception as exc:
            return reply({"error": {"type": type(exc).__name__, "message": str(exc)}}, status=502)
