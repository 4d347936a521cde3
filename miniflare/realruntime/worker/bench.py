"""Where a step's time goes, measured inside a real Python Durable Object.

``Bench`` (a Durable Object of the test Worker) runs, on its own storage, in one request:

* ``engine_sql``: a workflow of N steps through the package's execution object over the real
  ``ctx.storage`` as a Durable Object gets it (``CloudflareHost``: the SQL journal of
  ``SqlJournalStorage`` on this SQLite-backed object), counting the Storage-port calls it makes;
* ``engine_kv``: the same over the key-value adapter (``DurableObjectStorage``: one awaited
  ``put`` per commit), what objects without SQL and the package before the SQL journal get;
* ``engine_memory``: the same workflow over an in-memory Storage port: the engine's CPU in
  Pyodide (journal encoding included), no JavaScript and no storage;
* ``engine_memory_js_await``: in memory, but each commit awaits a resolved JS promise: the
  engine plus the JavaScript → Python wake-up a real storage call costs, without storage;
* ``engine_sql_history``: ``engine_sql`` with the history projection on, its D1 a stand-in
  over this object's own SQLite (``SqlD1``: the projection's SQL runs here, in the object's
  thread, as the local bench's ``LocalD1`` runs it in process), until every step's row is in;
* ``engine_sql_history_offbox``: the same, the stand-in running no SQL: what the object itself
  spends on its history when D1 runs elsewhere, as on Cloudflare (capture, projection, the
  batch's conversion to JS);
* ``engine_sql_waiting`` and ``engine_sql_waiting_history``: ``engine_sql`` without and with
  the history (its SQL in the object), each step awaiting a resolved JS promise as a step's
  ``fetch`` does: the run suspends at every step, so the history delivers while it runs
  (the steps above wait for nothing: their history goes out when the run ends);
* floors, each N times with a value of the size the engine committed per step:
  ``put`` (awaited ``ctx.storage.put(key, text)``), ``adapter_commit`` (the adapter's
  ``DurableObjectStorage.commit({key: text})``: size check, ``to_js``, ``put``),
  ``sql_commit`` (``SqlJournalStorage.commit({key: text})``: size check, ``transactionSync``
  around one upsert), ``transaction_sync`` (an empty ``transactionSync``), ``to_js``
  (the dict → JS object conversion alone), ``sql_exec`` (a synchronous insert),
  ``await_js`` (awaiting an already resolved JS promise: one JS → Python wake-up) and
  ``asyncio_hop`` (``await asyncio.sleep(0)``: one turn of Pyodide's event loop).

``loop_turns_per_step`` counts the callbacks the engine runs schedule on Pyodide's event loop.
Times come from ``Date.now()`` (milliseconds), read after awaited storage calls, over whole
loops, after one unmeasured warm-up run of each engine variant; each figure is the median of ``rounds`` rounds (ROUNDS by default), per step or per call.
"""

import asyncio
import json
import statistics

from js import Date, Promise

from workkit_workflow import workflow
from workkit_workflow.cloudflare._host import CloudflareHost
from workkit_workflow.cloudflare._object import ExecutionObject
from workkit_workflow.cloudflare._sql_storage import SqlJournalStorage
from workkit_workflow.cloudflare._storage import DurableObjectStorage
from workkit_workflow.cloudflare._workers import to_js
from workkit_workflow.engine._ports import KEEP_ALARM, WireRequest
from workkit_workflow.history._schema import migration_statements

ROUNDS = 5
OUTPUT = {"order": "o-1", "items": [{"sku": f"sku-{i}", "quantity": i} for i in range(6)], "note": "n" * 100}


def _output():
    return OUTPUT


async def _output_waiting():
    await Promise.resolve(None)  # as a step's fetch answers: the step suspends
    return OUTPUT


@workflow("bench-steps")
async def bench_steps(ctx, data):
    fn = _output_waiting if data.get("waits") else _output
    for i in range(data["steps"]):
        await ctx.step(f"s{i}", fn)
    return "done"


class MemoryStorage:
    """The Storage port in a dict: no JavaScript, no I/O."""

    def __init__(self):
        self.data = {}
        self.alarm = None

    async def get(self, key):
        return self.data.get(key)

    async def get_many(self, keys):
        return {k: self.data[k] for k in keys if k in self.data}

    async def list(self, *, prefix=None, start=None, end=None, limit=None, reverse=False):
        keys = sorted(k for k in self.data if (prefix is None or k.startswith(prefix)))
        keys = [k for k in keys if (start is None or k >= start) and (end is None or k < end)]
        if reverse:
            keys.reverse()
        return {k: self.data[k] for k in keys[:limit]}

    async def commit(self, puts, deletes=(), alarm=KEEP_ALARM):
        self.data.update(puts)
        for key in deletes:
            self.data.pop(key, None)
        if alarm is not KEEP_ALARM:
            self.alarm = alarm

    async def get_alarm(self):
        return self.alarm

    async def set_alarm(self, at):
        self.alarm = at


class JsAwaitStorage(MemoryStorage):
    """In memory, but every commit awaits a resolved JS promise, as a real storage call does."""

    async def commit(self, puts, deletes=(), alarm=KEEP_ALARM):
        await super().commit(puts, deletes, alarm)
        await Promise.resolve(None)


class CountingStorage:
    """Counts the engine's Storage-port calls and the bytes it commits."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = {}
        self.put_bytes = 0
        self.puts = 0
        self.loop_turns = 0

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    async def get(self, key):
        self._count("get")
        return await self.inner.get(key)

    async def get_many(self, keys):
        self._count("get_many")
        return await self.inner.get_many(keys)

    async def list(self, **options):
        self._count("list")
        return await self.inner.list(**options)

    async def commit(self, puts, deletes=(), alarm=KEEP_ALARM):
        self._count("commit")
        self.puts += len(puts)
        self.put_bytes += sum(len(k) + len(v.encode()) for k, v in puts.items())
        return await self.inner.commit(puts, deletes, alarm)

    async def get_alarm(self):
        self._count("get_alarm")
        return await self.inner.get_alarm()

    async def set_alarm(self, at):
        self._count("set_alarm")
        return await self.inner.set_alarm(at)


class SqlD1:
    """A D1-shaped binding (``prepare``, ``bind``, ``batch``) over this object's own SQLite:
    a batch is one ``transactionSync``, as a D1 batch is one transaction. ``run_sql=False``
    takes each batch and runs nothing (D1 elsewhere). Counts the statements it was sent."""

    def __init__(self, storage, *, run_sql=True):
        self.storage = storage
        self.run_sql = run_sql
        self.statements = 0

    def create_tables(self):
        for sql in migration_statements(()):
            self.storage.sql.exec(sql)

    def prepare(self, sql):
        return _D1Statement(self, sql, ())

    def _exec(self, statement):
        return self.storage.sql.exec(statement.sql, *statement.args)

    async def batch(self, statements):
        items = list(statements)  # a JS array of the statements' proxies: back to Python
        self.statements += len(items)
        if self.run_sql:

            def run():
                for statement in items:
                    self._exec(statement)

            self.storage.transactionSync(run)
        return []

    def rows(self, sql):
        return [row.to_py() for row in self.storage.sql.exec(sql).toArray()]


def _projected(d1):
    """What the stand-in D1 holds of the one execution run on it."""
    execution = d1.rows("SELECT status FROM wf_executions")
    return {
        "executions": [row["status"] for row in execution],
        "completed_steps": d1.rows("SELECT count(*) AS n FROM wf_steps WHERE status = 'completed'")[0]["n"],
        "transitions": d1.rows("SELECT count(*) AS n FROM wf_transitions")[0]["n"],
    }


class _D1Result:
    def __init__(self, results):
        self.results = results


class _D1Statement:
    def __init__(self, db, sql, args):
        self.db, self.sql, self.args = db, sql, args

    def bind(self, *args):
        return _D1Statement(self.db, self.sql, args)

    async def all(self):
        if not self.db.run_sql:
            return _D1Result([])
        return _D1Result([row.to_py() for row in self.db._exec(self).toArray()])

    run = all


def _count_loop_turns(loop):
    """Count the callbacks scheduled on Pyodide's event loop (each one a turn of it:
    task steps, future callbacks) until ``del loop.call_soon``."""
    turns = [0]
    original = loop.call_soon

    def call_soon(*args, **kwargs):
        turns[0] += 1
        return original(*args, **kwargs)

    loop.call_soon = call_soon
    return turns


async def _engine_run(ctx, storage, steps, execution_id, history=None, waits=False):
    host = CloudflareHost(ctx)
    host.object_name = None  # one object runs several measured executions, one at a time
    counting = CountingStorage(host.storage if storage is None else storage)
    host.storage = counting
    runner = ExecutionObject(host, lease=30.0, history=history)
    data = {"steps": steps, "waits": waits}
    body = json.dumps({"workflow": "bench-steps", "input": data, "execution_id": execution_id})
    loop = asyncio.get_running_loop()
    turns = _count_loop_turns(loop)
    t0 = Date.now()
    try:
        response = await runner.handle(WireRequest("POST", "/execute", body=body.encode()))
        if history is not None:
            # Until the history is in D1 too: its last records go out as the run ends.
            for observer in runner.core.execution.observers:
                if not await observer.settle():
                    raise RuntimeError("the history could not deliver its records")
        await ctx.storage.get("fence")  # I/O, so the clock has moved past the work
        elapsed = Date.now() - t0
    finally:
        del loop.call_soon  # back to the class's method
    counting.loop_turns = turns[0]
    status = response.body.get("execution", {}).get("status")
    if status != "completed":
        raise RuntimeError(f"bench run ended {response.status} {json.dumps(response.body)[:500]}")
    return elapsed, counting


def _nothing():
    return None


async def _reset(storage):
    await storage.deleteAll()
    await storage.deleteAlarm()


async def measure(ctx, steps, rounds=ROUNDS):
    storage = ctx.storage
    adapter = DurableObjectStorage(storage)
    names = (
        "engine_sql",
        "engine_kv",
        "engine_memory",
        "engine_memory_js_await",
        "engine_sql_history",
        "engine_sql_history_offbox",
        "engine_sql_waiting",
        "engine_sql_waiting_history",
        "put",
        "adapter_commit",
        "sql_commit",
        "transaction_sync",
        "to_js",
        "sql_exec",
        "await_js",
        "asyncio_hop",
    )
    rows = {name: [] for name in names}
    counted = None
    turns = {}
    history_rows = {}
    history_calls = {}
    projected = None
    # Not measured: the first runs pay for imports and for V8 and WebAssembly warming up.
    for warm, port in enumerate((None, adapter, MemoryStorage(), JsAwaitStorage())):
        await _reset(storage)
        await _engine_run(ctx, port, max(10, steps // 4), f"bench-warm-{warm}")
    await _reset(storage)
    SqlD1(storage).create_tables()
    await _engine_run(ctx, None, max(10, steps // 4), "bench-warm-history", history=SqlD1(storage))
    await _reset(storage)
    SqlD1(storage).create_tables()
    await _engine_run(
        ctx, None, max(10, steps // 4), "bench-warm-waiting", history=SqlD1(storage), waits=True
    )
    for round_no in range(rounds):
        await _reset(storage)
        elapsed, counted = await _engine_run(ctx, None, steps, f"bench-sql-{round_no}")
        if not isinstance(counted.inner, SqlJournalStorage):
            raise RuntimeError(f"the host chose {type(counted.inner).__name__} on a SQLite-backed object")
        rows["engine_sql"].append(elapsed / steps)
        turns["engine_sql"] = counted.loop_turns / steps
        await _reset(storage)
        elapsed, on_kv = await _engine_run(ctx, adapter, steps, f"bench-kv-{round_no}")
        rows["engine_kv"].append(elapsed / steps)
        turns["engine_kv"] = on_kv.loop_turns / steps
        await _reset(storage)
        elapsed, in_memory = await _engine_run(ctx, MemoryStorage(), steps, f"bench-mem-{round_no}")
        rows["engine_memory"].append(elapsed / steps)
        turns["engine_memory"] = in_memory.loop_turns / steps
        elapsed, js_await = await _engine_run(ctx, JsAwaitStorage(), steps, f"bench-js-{round_no}")
        rows["engine_memory_js_await"].append(elapsed / steps)
        turns["engine_memory_js_await"] = js_await.loop_turns / steps
        for name, run_sql in (("engine_sql_history", True), ("engine_sql_history_offbox", False)):
            await _reset(storage)
            d1 = SqlD1(storage, run_sql=run_sql)
            d1.create_tables()
            run_id = f"bench-history-{round_no}"
            elapsed, with_history = await _engine_run(ctx, None, steps, run_id, history=d1)
            rows[name].append(elapsed / steps)
            turns[name] = with_history.loop_turns / steps
            history_calls[name] = with_history.calls
            history_rows[name] = d1.statements
            if run_sql:
                projected = _projected(d1)
                if projected["completed_steps"] != steps:
                    raise RuntimeError(f"the history projected {projected} for {steps} steps")
        for name, d1 in (("engine_sql_waiting", None), ("engine_sql_waiting_history", SqlD1(storage))):
            await _reset(storage)
            if d1 is not None:
                d1.create_tables()
            run_id = f"bench-waiting-{round_no}"
            elapsed, waiting = await _engine_run(ctx, None, steps, run_id, history=d1, waits=True)
            rows[name].append(elapsed / steps)
            turns[name] = waiting.loop_turns / steps
            if d1 is not None and _projected(d1)["completed_steps"] != steps:
                raise RuntimeError(f"the history projected {_projected(d1)} for {steps} steps")

        text = "v" * max(1, counted.put_bytes // max(1, counted.calls.get("commit", 1)))
        t0 = Date.now()
        for i in range(steps):
            await storage.put(f"raw-{i}", text)
        rows["put"].append((Date.now() - t0) / steps)
        t0 = Date.now()
        for i in range(steps):
            await adapter.commit({f"adapter-{i}": text})
        rows["adapter_commit"].append((Date.now() - t0) / steps)
        await _reset(storage)  # else the SQL adapter would first adopt the key-value floors' keys
        sql_adapter = SqlJournalStorage(storage, storage.sql)
        await sql_adapter.commit({"warm": text})
        t0 = Date.now()
        for i in range(steps):
            await sql_adapter.commit({f"sql-adapter-{i}": text})
        await storage.get("fence")
        rows["sql_commit"].append((Date.now() - t0) / steps)
        t0 = Date.now()
        for _ in range(steps):
            storage.transactionSync(_nothing)
        await storage.get("fence")
        rows["transaction_sync"].append((Date.now() - t0) / steps)
        t0 = Date.now()
        for i in range(steps * 10):
            to_js({f"conv-{i}": text})
        await storage.get("fence")
        rows["to_js"].append((Date.now() - t0) / (steps * 10))
        # (deleteAll drops SQL tables too)
        storage.sql.exec("CREATE TABLE IF NOT EXISTS bench (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        t0 = Date.now()
        for i in range(steps):
            storage.sql.exec("INSERT INTO bench (k, v) VALUES (?, ?)", f"sql-{i}", text)
        await storage.get("fence")
        rows["sql_exec"].append((Date.now() - t0) / steps)
        t0 = Date.now()
        for _ in range(steps):
            await Promise.resolve(1)
        await storage.get("fence")
        rows["await_js"].append((Date.now() - t0) / steps)
        t0 = Date.now()
        for _ in range(steps):
            await asyncio.sleep(0)
        await storage.get("fence")
        rows["asyncio_hop"].append((Date.now() - t0) / steps)
    await _reset(storage)
    medians = {name: round(statistics.median(values), 4) for name, values in rows.items()}
    return {
        "steps": steps,
        "rounds": rounds,
        "ms_per_step_or_call": medians,
        "all_rounds": {k: [round(v, 4) for v in vs] for k, vs in rows.items()},
        "port_calls_per_run": counted.calls,
        "history_port_calls_per_run": history_calls,
        "loop_turns_per_step": {k: round(v, 2) for k, v in turns.items()},
        "commits_per_step": round(counted.calls.get("commit", 0) / steps, 3),
        "history_statements_per_run": history_rows,
        "history_projected": projected,
        "committed_bytes_per_step": round(counted.put_bytes / steps, 1),
        "sentinel": "bench:reached",
    }
