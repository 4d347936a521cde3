"""The Storage port's contract, run on CPython (local runtime backends) and under Pyodide
(the Durable Object storage adapter over the JS fake, with and without the SDK wrapper)."""

from workkit_workflow.engine._ports import KEEP_ALARM

UNICODE_KEYS = ["b", "a", "\u00e9", "Z", "\U0001f600", "\uff5e"]


async def contract_get_put(storage):
    assert await storage.get("missing") is None
    await storage.commit({"meta": '{"v":1}', "f": "2.0", "u": "\u00e9\U0001f600"})
    assert await storage.get("meta") == '{"v":1}'
    assert await storage.get("f") == "2.0"
    assert await storage.get("u") == "\u00e9\U0001f600"
    assert await storage.get_many(["meta", "nope", "f"]) == {"meta": '{"v":1}', "f": "2.0"}
    assert await storage.get_many([]) == {}


async def contract_list(storage):
    await storage.commit({k: k for k in UNICODE_KEYS} | {f"j:{i:08d}": str(i) for i in range(5)})
    everything = await storage.list()
    assert list(everything) == sorted(everything, key=lambda k: k.encode())
    assert set(UNICODE_KEYS) <= set(everything)
    assert list(await storage.list(prefix="j:", limit=2)) == ["j:00000000", "j:00000001"]
    assert list(await storage.list(prefix="j:", reverse=True, limit=1)) == ["j:00000004"]
    assert list(await storage.list(start="j:00000003", end="j:00000005")) == ["j:00000003", "j:00000004"]


async def contract_deletes_and_alarm(storage):
    await storage.commit({"a": "1", "b": "2", "c": "3"}, alarm=1_767_225_600.25)
    assert await storage.get_alarm() == 1_767_225_600.25
    await storage.commit({"d": "4"}, ["a", "b", "zz"])
    assert await storage.get_many(["a", "b", "c", "d"]) == {"c": "3", "d": "4"}
    assert await storage.get_alarm() == 1_767_225_600.25  # kept
    await storage.commit({}, ["c"], KEEP_ALARM)
    await storage.commit({}, (), None)
    assert await storage.get_alarm() is None
    await storage.set_alarm(1_767_225_700.5)
    assert await storage.get_alarm() == 1_767_225_700.5
    await storage.set_alarm(None)
    assert await storage.get_alarm() is None
    assert await storage.get("d") == "4"


async def contract_rejects_non_text(storage):
    for bad in ({"a": 1}, 5, None):
        try:
            await storage.commit({"k": bad})
        except TypeError:
            pass
        else:
            raise AssertionError(f"commit of {bad!r} should raise TypeError")
    assert await storage.get("k") is None


CONTRACT = [contract_get_put, contract_list, contract_deletes_and_alarm, contract_rejects_non_text]
