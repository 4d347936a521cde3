# A Python Worker (wrangler 3.92.0 dev, real local D1) that runs workflows with
# the history projection pointed at env.HISTORY_DB, through a D1 outage, and
# reports what D1 holds. Driven by tests/test_history_d1_wrangler.py.
import asyncio
import json
import sys
import traceback

from js import Object, Response
from pyodide.ffi import to_js

from workkit_workflow import NonRetryableError, RetryPolicy, Workflow
from workkit_workflow.history import HistoryQuery, _outbox
from workkit_workflow.local import LocalNamespace

PLAIN_PAGES = [0]
"""Pages of plain steps projected straight from the values the engine handed over."""
_plain_projection = _outbox.plain_projection


def _counted_plain_projection(execution_id, bundles):
    statements = _plain_projection(execution_id, bundles)
    if statements is not None:
        PLAIN_PAGES[0] += 1
    return statements


_outbox.plain_projection = _counted_plain_projection


class Switch:
    """env.HISTORY_DB behind a switch: batch() fails while `down` (a D1 outage)."""

    def __init__(self, db):
        self.db = db
        self.down = False
        self.failed = 0

    def prepare(self, sql):
        return self.db.prepare(sql)

    async def batch(self, statements):
        if self.down:
            self.failed += 1
            raise RuntimeError("D1_ERROR: Network connection lost.")
        return await self.db.batch(statements)


def make_flow(name, ship_fails):
    async def undo(ctx):
        await ctx.step("refund", lambda: {"refunded": True})

    def ship(i, p, c):
        if ship_fails:
            raise NonRetryableError("address rejected by carrier")
        return {"tracking": "t-1"}

    return (
        Workflow(name, retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
        .step("reserve", lambda i, p, c: {"reserved": True})
        .step("ship", ship)
        .on_failure(undo)
    )


FLOWS = [make_flow("wr-failing", True), make_flow("wr-ok", False)]

LONG_STEPS = 200
"""More than two history pages of plain steps (``BATCH`` commits each)."""
LONG = Workflow("wr-long")
for _i in range(LONG_STEPS):
    LONG = LONG.step(f"s{_i}", lambda i, p, c, n=_i: {"n": n})


async def execute(ns, execution_id, flow):
    # Straight to the execution core: the wire layer needs pydantic, which this
    # workerd has not got; the outbox path is the same.
    core = ns._instance(execution_id).instance._object.core
    view, _ = await core.execute(
        workflow=flow.name, input={"id": execution_id}, execution_id=execution_id, wait=True
    )
    return view["status"]


async def roundtrip(env):
    switch = Switch(env.HISTORY_DB)
    ns = LocalNamespace(None, env={"HISTORY_DB": switch})
    await ns.start()
    out = {"statuses": {}}
    ids = [f"wr-{i}" for i in range(4)]
    switch.down = True
    for i, eid in enumerate(ids):
        out["statuses"][eid] = await execute(ns, eid, FLOWS[i % 2])
    for _ in range(200):  # let compensation finish
        if all(
            ns.backend.get_many(e, ["state"])
            and json.loads(ns.backend.get_many(e, ["state"])["state"])["phase"] == "done"
            for e in ids
        ):
            break
        await asyncio.sleep(0.02)
    for _ in range(100):  # each execution's end sends its history at once: it fails
        if switch.failed >= len(ids):
            break
        await asyncio.sleep(0.02)
    query = HistoryQuery(env.HISTORY_DB)
    out["rows_during_outage"] = len((await query.list_executions()).executions)
    out["failed_sends"] = switch.failed
    switch.down = False
    for _ in range(300):
        pending = sum(len(ns.backend.list(e, "o:0", None, None, None, False)) for e in ids)
        if pending == 0:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    out["pending_after"] = pending
    page = await query.list_executions(limit=10)
    out["executions"] = {
        e.execution_id: [e.status, e.phase, (e.compensation or {}).get("status"), e.failed_step]
        for e in page.executions
    }
    out["histories"] = {}
    for eid in ids:
        h = await query.get_execution(eid)
        out["histories"][eid] = {
            "steps": [[s.phase, s.name, s.status, s.attempt] for s in h.steps],
            "events": [[e.seq, e.kind, e.phase, e.name, e.status] for e in h.events],
        }
    out["alarms"] = {e: ns.backend.get_alarm(e) for e in ids}
    # A long run of plain steps: its pages go out from the values the engine built.
    out["long_status"] = await execute(ns, "wr-long", LONG)
    for _ in range(300):
        steps = (await query.get_execution("wr-long")).steps
        if len(steps) == LONG_STEPS and all(s.status == "completed" for s in steps):
            break
        await asyncio.sleep(0.05)
    out["long_steps"] = [[s.phase, s.name, s.status, s.attempt] for s in steps]
    out["plain_pages"] = PLAIN_PAGES[0]
    await ns.close()
    out["sentinel"] = "HISTORY_ROUNDTRIP_OK"
    return out


async def on_fetch(request, env):
    from urllib.parse import urlparse

    path = urlparse(request.url).path
    try:
        if path == "/hello":
            return Response.new(f"hello {sys.version.split()[0]}")
        if path == "/roundtrip":
            body = json.dumps(await roundtrip(env))
            return Response.new(
                body, headers=to_js({"content-type": "application/json"}, dict_converter=Object.fromEntries)
            )
        return Response.new("not found", status=404)
    except BaseException:
        return Response.new(traceback.format_exc(), status=500)
