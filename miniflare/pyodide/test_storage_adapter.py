# ruff: noqa: PT017  (runs under pyo_test.py in Pyodide, where pytest is not available)
"""The Storage contract through ``DurableObjectStorage`` over the JS fake: raw (workerd
without the SDK / an old SDK: nothing converted for us) and behind the SDK-style wrapper
(which converts Python containers itself)."""

import json

import cf_runtime
import fake_workers
from storage_contract import CONTRACT

from workkit_workflow.cloudflare._storage import DurableObjectStorage
from workkit_workflow.errors import SerializationError


def adapters():
    yield "raw", DurableObjectStorage(cf_runtime.newStorage())
    yield "sdk-wrapped", DurableObjectStorage(fake_workers.BindingWrapper(cf_runtime.newStorage()))


async def test_contract_raw_and_wrapped():
    ran = 0
    for check in CONTRACT:
        for mode, storage in adapters():
            try:
                await check(storage)
            except BaseException as exc:
                raise AssertionError(f"{check.__name__} [{mode}]: {exc!r}") from exc
            ran += 1
    assert ran == 2 * len(CONTRACT)


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
