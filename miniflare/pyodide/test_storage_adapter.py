# ruff: noqa: PT017  (runs under pyo_test.py in Pyodide, where pytest is not available)
"""The Storage contract through ``DurableObjectStorage`` over the JS fake: raw (workerd
without the SDK / an old SDK: nothing converted for us) and behind the SDK-style wrapper
(which converts Python containers itself); and through ``SqlJournalStorage`` over the fake of
a SQLite-backed object's ``ctx.storage.sql`` (cf_runtime.mjs ``FakeSql``), raw and wrapped."""

import json

import cf_runtime
import fake_workers
from storage_contract import CONTRACT

from workkit_workflow.cloudflare._host import storage_of
from workkit_workflow.cloudflare._sql_storage import SqlJournalStorage
from workkit_workflow.cloudflare._storage import DurableObjectStorage
from workkit_workflow.errors import SerializationError


def adapters():
    yield "raw", DurableObjectStorage(cf_runtime.newStorage())
    yield "sdk-wrapped", DurableObjectStorage(fake_workers.BindingWrapper(cf_runtime.newStorage()))
    yield "sql-raw", storage_of(cf_runtime.newSqliteStorage())
    yield "sql-wrapped", storage_of(fake_workers.BindingWrapper(cf_runtime.newSqliteStorage()))


async def test_contract_raw_and_wrapped():
    ran = 0
    for check in CONTRACT:
        for mode, storage in adapters():
            try:
                await check(storage)
            except BaseException as exc:
                raise AssertionError(f"{check.__name__} [{mode}]: {exc!r}") from exc
            ran += 1
    assert ran == 4 * len(CONTRACT)


async def test_commit_is_one_coalesced_batch():
    for wrap in (lambda s: s, fake_workers.BindingWrapper):
        raw = cf_runtime.newStorage()
        storage = DurableObjectStorage(wrap(raw))
        await storage.commit({"a": "1"})
        raw.clearLog()
        await storage.commit({"state": "{}", "j:00000001": "{}"}, ["e:000000000001"], 1_767_225_600.0)
        batches = json.loads(raw.batchesJson())
        assert batches == [
            [["put", "state", "j:00000001"], ["delete", "e:000000000001"], ["setAlarm", 1_767_225_600_000]]
        ], batches


async def test_oversize_value_writes_nothing():
    raw = cf_runtime.newStorage()
    storage = DurableObjectStorage(raw)
    try:
        await storage.commit({"a": "1", "big": "x" * 2_000_001})
    except SerializationError as exc:
        assert exc.details["limit"] == 2_000_000
    else:
        raise AssertionError("oversize commit should raise SerializationError")
    assert raw.snapshot().to_py() == {} and json.loads(raw.batchesJson()) == []


async def test_values_never_leak_js_proxies():
    raw = cf_runtime.newStorage()
    storage = DurableObjectStorage(raw)
    await storage.commit({"b": "2", "a": "1"})
    for value in (await storage.list(), await storage.get_many(["a", "b"])):
        assert type(value) is dict and all(type(v) is str for v in value.values())
    assert type(await storage.get("a")) is str
    await storage.set_alarm(12.5)
    alarm = await storage.get_alarm()
    assert type(alarm) is float and alarm == 12.5


async def test_alarm_milliseconds_round_up_never_early():
    raw = cf_runtime.newStorage()
    storage = DurableObjectStorage(raw)
    # Rounded down, this alarm would fire 4.5 µs before the wake-up it serves, find
    # nothing due and park again at the same millisecond, forever.
    await storage.set_alarm(1_767_225_601.0890045)
    assert await raw.getAlarm() == 1_767_225_601_090
    await storage.set_alarm(1_767_225_600.25)
    assert await raw.getAlarm() == 1_767_225_600_250


# -- the SQL journal ----------------------------------------------------------------


def test_storage_of_picks_sql_only_where_it_works():
    assert isinstance(storage_of(cf_runtime.newSqliteStorage()), SqlJournalStorage)
    assert isinstance(
        storage_of(fake_workers.BindingWrapper(cf_runtime.newSqliteStorage())), SqlJournalStorage
    )
    assert isinstance(storage_of(cf_runtime.newStorage()), DurableObjectStorage)
    assert isinstance(storage_of(fake_workers.BindingWrapper(cf_runtime.newStorage())), DurableObjectStorage)


async def test_sql_commit_is_one_batch_and_a_step_is_one_statement():
    for wrap in (lambda s: s, fake_workers.BindingWrapper):
        raw = cf_runtime.newSqliteStorage()
        storage = storage_of(wrap(raw))
        await storage.commit({"a": "1"})
        # A SQL commit does not return to the event loop, so the fake's batch stays open
        # (on Cloudflare, back-to-back commits coalesce the same way): let it close.
        await raw.getAlarm()
        raw.clearLog()
        before = raw.sql.statements
        await storage.commit({"state": "{}", "j:00000001": "{}"})
        assert raw.sql.statements - before == 1
        await raw.getAlarm()
        await storage.commit({"state": "{}", "j:00000002": "{}"}, ["e:000000000001"], 1_767_225_600.0)
        batches = json.loads(raw.batchesJson())
        assert batches == [
            [["sql", "upsert", "state", "j:00000001"]],
            [
                ["sql", "upsert", "state", "j:00000002"],
                ["sql", "delete", "e:000000000001"],
                ["setAlarm", 1_767_225_600_000],
            ],
        ], batches


async def test_sql_commit_that_throws_keeps_nothing():
    raw = cf_runtime.newSqliteStorage()
    storage = storage_of(raw)
    await storage.commit({"a": "1", "gone": "x"}, (), 100.0)
    before = (raw.sql.snapshot().to_py(), await storage.get_alarm())

    def throw_after_the_alarm(at):
        type(storage)._issue_alarm(storage, at)  # a JS promise, dropped: the fake's settles
        raise RuntimeError("injected")

    storage._issue_alarm = throw_after_the_alarm
    try:
        await storage.commit({"a": "2", "b": "2"}, ["gone"], 200.0)
    except RuntimeError as exc:
        assert "injected" in str(exc)
    else:
        raise AssertionError("the injected failure did not reach the caller")
    assert (raw.sql.snapshot().to_py(), await storage.get_alarm()) == before
    try:
        await storage.commit({"a": "3", "big": "x" * 2_000_001})
    except SerializationError:
        pass
    else:
        raise AssertionError("oversize commit should raise SerializationError")
    assert raw.sql.snapshot().to_py()["a"] == "1"


async def test_sql_commit_of_many_keys_is_chunked_in_one_transaction():
    raw = cf_runtime.newSqliteStorage()
    storage = storage_of(raw)
    puts = {f"k{i:04d}": str(i) for i in range(230)}
    await storage.commit(puts, [f"x{i}" for i in range(150)])
    assert await storage.list() == dict(sorted(puts.items()))


async def test_a_key_value_journal_is_moved_into_the_table_once():
    raw = cf_runtime.newSqliteStorage()
    old = DurableObjectStorage(raw)
    await old.commit({"meta": '{"v":1}', "state": '{"phase":"main"}', "j:00000000": "{}"}, (), 50.0)
    storage = storage_of(raw)
    assert await storage.get("state") == '{"phase":"main"}'
    assert raw.snapshot().to_py() == {}
    assert sorted(raw.sql.snapshot().to_py()) == ["j:00000000", "meta", "state"]
    assert await storage.get_alarm() == 50.0
    batches = json.loads(raw.batchesJson())
    assert batches[-1] == [
        ["sql", "upsert", "j:00000000", "meta", "state"],
        ["delete", "j:00000000", "meta", "state"],
    ]
    # Once the table holds the journal, key-value entries are not read again.
    await raw.put("stray", "x")
    assert await storage_of(raw).get("stray") is None
