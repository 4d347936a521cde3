"""What the SQL journal (``SqlJournalStorage``) relies on, checked inside a real Durable Object.

``Probe`` (a Durable Object of the test Worker) answers ``POST /probe/<name>``:

* ``rollback``: a commit that throws part-way (a multi-row upsert whose second row breaks a
  constraint, an injected failure after some of its SQL writes, or right after its alarm
  change) leaves the rows and the alarm as they were; the largest value the size check
  allows fits a row;
* ``torn_run?seconds=S`` / ``torn_state``: commits of 8 keys of 16 KiB each, all carrying the
  same counter n, back to back until S seconds have passed; odd commits also set an alarm
  encoding n (a ``transactionSync`` commit), even ones keep it (one multi-row upsert). The
  test SIGKILLs workerd in the middle, and ``torn_state`` after the restart shows whether
  any commit was torn (keys of different counters, or an alarm of another commit);
* ``contract``: the Storage port's contract (storage_contract.py, also run under Pyodide in
  Node against JS fakes) through ``SqlJournalStorage`` and ``DurableObjectStorage`` on this
  object's real storage;
* ``adopt``: an execution started through the key-value adapter (what the package before
  the SQL journal wrote) and then continued by an execution object over the SQL journal,
  which moves the key-value entries into its table in one transaction; ``adopt_start`` and
  ``adopt_finish?kv_keys=[...]`` are its two halves, for a restart of workerd in between;
* ``storage_floor``: the storage work of a 1-step execution in a new object, done directly
  (no engine): the floor of the CPU table of ``python -m bench --real-runtime``.

Each answers with a sentinel written after its last check.
"""

import asyncio
import json
import traceback

from js import Date
from storage_contract import CONTRACT

from workkit_workflow.cloudflare._host import CloudflareHost
from workkit_workflow.cloudflare._object import ExecutionObject
from workkit_workflow.cloudflare._sql_storage import _CREATE, JOURNAL_TABLE, SqlJournalStorage, _upsert
from workkit_workflow.cloudflare._storage import DurableObjectStorage
from workkit_workflow.definitions._json import MAX_VALUE_BYTES
from workkit_workflow.engine._ports import KEEP_ALARM, WireRequest


class ProbeFailed(Exception):
    pass


def expect(condition, what, **seen):
    if not condition:
        raise ProbeFailed(f"{what}: {json.dumps(seen, default=str)[:1500]}")


async def reset(storage):
    await storage.deleteAll()
    await storage.deleteAlarm()


class _FailingSql:
    """``ctx.storage.sql`` that throws on the ``fail_at``-th ``exec`` (1-based)."""

    def __init__(self, sql, fail_at):
        self._sql = sql
        self._left = fail_at

    def exec(self, query, *args):
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("injected failure inside the commit")
        return self._sql.exec(query, *args)


async def rollback(ctx):
    storage = ctx.storage
    await reset(storage)
    journal = SqlJournalStorage(storage, storage.sql)
    far = Date.now() / 1000.0 + 86_400
    await journal.commit({"a": "1", "gone": "x"}, (), far)
    before = {"rows": await journal.list(), "alarm": await journal.get_alarm()}
    seen = {}
    # One multi-row upsert (a step's commit) whose second row breaks a constraint: the
    # statement keeps none of its rows.
    seen["statement_throw"] = _throws(lambda: journal._upsert({"a": "5", "b": None}))
    seen["after_statement_throw"] = {"rows": await journal.list(), "alarm": await journal.get_alarm()}
    # The delete throws after the upsert: the upsert is rolled back, the alarm never changes.
    journal._sql = _FailingSql(storage.sql, 2)
    seen["sql_throw"] = await _commit_fails(journal, {"a": "2", "b": "2"}, ["gone"], far + 60)
    journal._sql = storage.sql
    seen["after_sql_throw"] = {"rows": await journal.list(), "alarm": await journal.get_alarm()}
    # Every write and the alarm change are issued, then the commit throws.
    issue = journal._issue_alarm

    def issue_then_throw(at):
        issue(at)
        raise RuntimeError("injected failure after the alarm change")

    journal._issue_alarm = issue_then_throw
    seen["alarm_throw"] = await _commit_fails(journal, {"a": "3", "b": "3"}, ["gone"], far + 120)
    journal._issue_alarm = issue
    seen["after_alarm_throw"] = {"rows": await journal.list(), "alarm": await journal.get_alarm()}
    # And a commit that does not throw lands whole.
    await journal.commit({"a": "4", "b": "4"}, ["gone"], None)
    seen["after_commit"] = {"rows": await journal.list(), "alarm": await journal.get_alarm()}
    # The largest value the size check lets through (key + value = 2,000,000 bytes) fits a row.
    largest = "L" * (MAX_VALUE_BYTES - len("big"))
    await journal.commit({"big": largest})
    seen["largest_value_stored"] = await journal.get("big") == largest
    await journal.commit({}, ["big"])
    expect(seen["after_statement_throw"] == before, "a failed statement kept rows", before=before, **seen)
    expect(seen["after_sql_throw"] == before, "a throw between SQL writes kept some", before=before, **seen)
    expect(
        seen["after_alarm_throw"] == before, "a throw after the alarm change kept some", before=before, **seen
    )
    expect(seen["largest_value_stored"], "the largest value allowed did not round-trip", **seen)
    expect(seen["after_commit"] == {"rows": {"a": "4", "b": "4"}, "alarm": None}, "commit", **seen)
    await reset(storage)
    return {"before": before, **seen, "sentinel": "rollback:reached"}


def _throws(call):
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    raise ProbeFailed("the statement did not throw")


async def _commit_fails(journal, puts, deletes, alarm):
    try:
        await journal.commit(puts, deletes, alarm)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    raise ProbeFailed("the injected failure did not reach the caller")


TORN_KEYS = 8
TORN_PAD = "p" * 16_384
TORN_BASE_MS = 4_000_000_000_000
"""Alarm of commit n: TORN_BASE_MS + n seconds (year 2096: never fires during the test)."""


async def torn_run(ctx, seconds):
    storage = ctx.storage
    await reset(storage)
    journal = SqlJournalStorage(storage, storage.sql)
    deadline = Date.now() + seconds * 1000
    n = 0
    while Date.now() < deadline:
        n += 1
        puts = {f"k{i}": f"{n}:{TORN_PAD}" for i in range(TORN_KEYS)}
        alarm = (TORN_BASE_MS + n * 1000) / 1000.0 if n % 2 else KEEP_ALARM
        await journal.commit(puts, (), alarm)
        # Let the implicit transaction reach the disk before the next commit.
        await asyncio.sleep(0.005)
    return {"commits": n, "sentinel": "torn_run:reached"}


async def torn_state(ctx):
    storage = ctx.storage
    journal = SqlJournalStorage(storage, storage.sql)
    rows = await journal.list()
    counters = sorted({int(value.split(":", 1)[0]) for value in rows.values()})
    alarm = await journal.get_alarm()
    alarm_n = None if alarm is None else round((alarm * 1000 - TORN_BASE_MS) / 1000)
    last_alarm = counters[0] if counters and counters[0] % 2 else (counters or [1])[0] - 1
    whole = len(rows) == TORN_KEYS and len(counters) == 1 and alarm_n == last_alarm
    state = {"keys": len(rows), "counters": counters, "alarm_n": alarm_n, "whole": whole}
    if whole:
        await reset(storage)
    return {**state, "sentinel": "torn_state:reached"}


async def _until(runner, path, done, what, seconds=20.0):
    deadline = Date.now() + seconds * 1000
    while True:
        body = (await runner.handle(WireRequest("GET", path))).body
        if done(body):
            return body
        expect(Date.now() < deadline, f"{what} not reached", last=body)
        await asyncio.sleep(0.05)


async def adopt_start(ctx):
    """The package before the SQL journal: an execution journaled through the key-value API,
    left waiting for the event ``go``."""
    storage = ctx.storage
    await reset(storage)
    eid = f"adopt-{int(Date.now())}"
    kv_host = CloudflareHost(ctx)
    kv_host.object_name = None
    kv_host.storage = DurableObjectStorage(storage)
    # The host made the SQL table; the old version never did.
    storage.sql.exec("DROP TABLE workkit_journal")
    before = ExecutionObject(kv_host, lease=30.0)
    body = json.dumps({"workflow": "rt-adopt", "input": {"n": 1}, "execution_id": eid}).encode()
    started = await before.handle(WireRequest("POST", "/execute", body=body))
    expect(started.status == 201, "start", started=started.body)
    await _until(before, "/status", lambda b: b["execution"]["status"] == "waiting", "waiting")
    kv_keys = sorted(await kv_host.storage.list())
    expect(
        kv_keys
        and not storage.sql.exec("SELECT name FROM sqlite_master WHERE name = 'workkit_journal'")
        .toArray()
        .to_py(),
        "a key-value journal and no SQL table",
        kv_keys=kv_keys,
    )
    return {
        "eid": eid,
        "kv_keys": kv_keys,
        "alarm": await kv_host.storage.get_alarm(),
        "sentinel": "adopt_start:reached",
    }


async def adopt_finish(ctx, kv_keys):
    """This version, on an object that has not used the SQL journal yet (a new instance after
    a restart, or the same one): the host picks the SQL journal, which moves the key-value
    entries into its table; the event then finishes the execution."""
    storage = ctx.storage
    sql_host = CloudflareHost(ctx)
    sql_host.object_name = None
    expect(
        isinstance(sql_host.storage, SqlJournalStorage), "host storage", got=type(sql_host.storage).__name__
    )
    after = ExecutionObject(sql_host, lease=30.0)
    event = json.dumps({"type": "go", "payload": {"by": "sql"}}).encode()
    sent = await after.handle(WireRequest("POST", "/event", body=event))
    expect(sent.status == 202, "event", sent=sent.body)
    result = await _until(after, "/result", lambda b: b["result"]["status"] == "completed", "completed")
    journal = (await after.handle(WireRequest("GET", "/journal"))).body["entries"]
    left_in_kv = sorted((await storage.list()).to_py())
    sql_keys = sorted(await sql_host.storage.list())
    seen = {
        "left_in_kv": left_in_kv,
        "sql_keys": sql_keys[:50],
        "result": result["result"],
        "journal": [e.get("name") for e in journal],
    }
    expect(result["result"]["value"] == {"one": 1, "go": {"by": "sql"}, "two": 1}, "result", **seen)
    expect(left_in_kv == [], "key-value entries left after the move", **seen)
    expect(set(kv_keys) <= set(sql_keys), "keys lost in the move", kv_keys=kv_keys, **seen)
    await reset(storage)
    return {**seen, "sentinel": "adopt_finish:reached"}


async def adopt(ctx):
    """adopt_start and adopt_finish in one request, on one instance."""
    started = await adopt_start(ctx)
    finished = await adopt_finish(ctx, started["kv_keys"])
    return {**started, **finished, "sentinel": "adopt:reached"}


class _FutureAlarms:
    """The port with alarm times moved 100 years ahead: the contract's alarms are in 2026,
    and a real object runs a past alarm at once (clearing it) while the contract reads it."""

    SHIFT = 3_153_600_000.0

    def __init__(self, port):
        self.port = port

    def __getattr__(self, name):
        return getattr(self.port, name)

    def _at(self, at):
        return at + self.SHIFT if isinstance(at, float) else at

    async def commit(self, puts, deletes=(), alarm=KEEP_ALARM):
        await self.port.commit(puts, deletes, self._at(alarm))

    async def set_alarm(self, at):
        await self.port.set_alarm(self._at(at))

    async def get_alarm(self):
        at = await self.port.get_alarm()
        return None if at is None else at - self.SHIFT


async def contract(ctx):
    storage = ctx.storage
    ran = []
    for check in CONTRACT:
        for adapter in (
            lambda: SqlJournalStorage(storage, storage.sql),
            lambda: DurableObjectStorage(storage),
        ):
            await reset(storage)
            port = adapter()
            try:
                await check(_FutureAlarms(port))
            except AssertionError as exc:
                where = traceback.extract_tb(exc.__traceback__)[-1]
                raise ProbeFailed(
                    f"{check.__name__} on {type(port).__name__}: {exc!r} at line {where.lineno}: {where.line}"
                ) from exc
            ran.append(f"{check.__name__}/{type(port).__name__}")
    await reset(storage)
    return {"ran": ran, "sentinel": "contract:reached"}


_EXECUTION_VALUES = {"meta": "m" * 144, "state": "s" * 344, "step": "r" * 91, "done": "c" * 138, "result": "v" * 22}
"""The sizes of what a 1-step execution of the bench's workflow writes (measured locally)."""


async def storage_floor(ctx):
    """What a 1-step execution asks of a new object's storage, without the engine: the
    journal's table, the read of the execution's records, its creation with the lease alarm
    (one ``transactionSync``, the alarm's promise awaited), the read of its journal, the
    step's start, and its end with the alarm deleted, each with values of the same size."""
    storage, sql, v = ctx.storage, ctx.storage.sql, _EXECUTION_VALUES
    sql.exec(_CREATE)  # as SqlJournalStorage makes it
    sql.exec(f"SELECT key, value FROM {JOURNAL_TABLE} WHERE key IN (?, ?, ?)", "meta", "state", "mail:head").raw().toArray()
    issued = []

    def create():
        sql.exec(_upsert(2), "meta", v["meta"], "state", v["state"])
        issued.append(storage.setAlarm(Date.now() + 30_000))

    storage.transactionSync(create)
    await issued.pop()
    sql.exec(f"SELECT key, value FROM {JOURNAL_TABLE} ORDER BY key LIMIT 1024").raw().toArray()
    sql.exec(_upsert(1), "j:00000000", v["step"])

    def settle():
        sql.exec(_upsert(3), "j:00000000", v["done"], "result", v["result"], "state", v["state"])
        issued.append(storage.deleteAlarm())

    storage.transactionSync(settle)
    await issued.pop()
    return {"sentinel": "storage_floor:reached"}


async def run(ctx, name, query):
    if name == "rollback":
        return await rollback(ctx)
    if name == "torn_run":
        return await torn_run(ctx, float(query.get("seconds", "5")))
    if name == "torn_state":
        return await torn_state(ctx)
    if name == "adopt":
        return await adopt(ctx)
    if name == "adopt_start":
        return await adopt_start(ctx)
    if name == "adopt_finish":
        return await adopt_finish(ctx, json.loads(query["kv_keys"]))
    if name == "contract":
        return await contract(ctx)
    if name == "storage_floor":
        return await storage_floor(ctx)
    raise ProbeFailed(f"no probe {name!r}")
