# ruff: noqa: PT017  (runs under pyo_test.py in Pyodide, where pytest is not available)
"""The JavaScript storage fake reproduces shared/RUNTIME.md's table, row by row, for calls
made from Python without conversion (workerd without the SDK, or an old SDK)."""

import json

import cf_runtime
from js import Array, Date, Object
from pyodide.ffi import JsException, to_js


def obj(d):
    return to_js(d, dict_converter=Object.fromEntries)


async def raises(awaitable, needle):
    try:
        await awaitable
    except JsException as exc:
        assert needle in str(exc), str(exc)
        return str(exc)
    raise AssertionError(f"expected a JsException containing {needle!r}")


async def test_get_missing_is_none():
    s = cf_runtime.newStorage()
    assert await s.get("nope") is None


async def test_put_none_raises_type_error():
    s = cf_runtime.newStorage()
    await raises(s.put("k", None), "put() called with undefined value")


async def test_put_unconverted_containers_raise_data_clone_error():
    s = cf_runtime.newStorage()
    for value in ({"a": 1}, [1, 2], (1, 2), b"ab"):
        await raises(s.put("k", value), "DataCloneError")
    assert await s.get("k") is None


async def test_put_scalars_round_trip_and_float_2_becomes_int():
    s = cf_runtime.newStorage()
    for key, value in (("s", "text"), ("i", 7), ("big", 2**60), ("f", 2.5), ("b", True)):
        await s.put(key, value)
        assert await s.get(key) == value
    await s.put("two", 2.0)
    got = await s.get("two")
    assert got == 2 and isinstance(got, int)


async def test_put_converted_object_returns_a_proxy_and_json_text_round_trips():
    s = cf_runtime.newStorage()
    await s.put("o", obj({"a": [1, {"b": None}]}))
    got = await s.get("o")
    assert not isinstance(got, dict) and got.to_py() == {"a": [1, {"b": None}]}
    text = json.dumps({"x": 2.0, "u": "é"})
    await s.put("j", text)
    assert await s.get("j") == text


async def test_batch_put_of_python_dict_silently_writes_nothing():
    s = cf_runtime.newStorage()
    await s.put({"a": "1", "b": "2"})
    assert s.snapshot().to_py() == {}
    await s.put(obj({"a": "1", "b": "2"}))
    assert s.snapshot().to_py() == {"a": "1", "b": "2"}


async def test_batch_put_oversize_is_not_atomic_but_unserializable_is():
    s = cf_runtime.newStorage()
    await raises(s.put(obj({"a": "1", "big": "x" * 2_300_000, "c": "3"})), "SQLITE_TOOBIG")
    assert s.snapshot().to_py() == {"a": "1"}
    s2 = cf_runtime.newStorage()
    entries = Object.fromEntries(to_js([["a", "1"], ["bad", {"py": "dict"}]]))
    await raises(s2.put(entries), "DataCloneError")
    assert s2.snapshot().to_py() == {}


async def test_no_key_count_limit_on_one_put():
    s = cf_runtime.newStorage()
    await s.put(obj({f"k{i:04d}": "v" for i in range(1000)}))
    assert s.snapshot().to_py().__len__() == 1000


async def test_unconverted_list_arguments_are_silently_wrong():
    s = cf_runtime.newStorage()
    await s.put(obj({"a": "1", "b": "2"}))
    assert await s.get(["a", "b"]) is None
    assert await s.delete(["a", "b"]) is False
    listed = (await s.list({"prefix": "a"})).to_py()
    assert listed == {"a": "1", "b": "2"}  # options ignored


async def test_get_array_and_list_give_maps_in_utf8_order():
    s = cf_runtime.newStorage()
    keys = ["b", "a", "\u00e9", "Z", "\U0001f600", "\uff5e"]
    await s.put(obj({k: k for k in keys}))
    found = await s.get(to_js(["\U0001f600", "missing", "a", "\uff5e"]))
    assert cf_runtime.typeOf(found) == "Map"
    assert list(found.to_py()) == ["a", "\uff5e", "\U0001f600"]  # UTF-8, not UTF-16 order
    listed = await s.list()
    assert list(listed.to_py()) == sorted(keys, key=lambda k: k.encode())
    assert listed.get("missing") is None and listed.size == len(keys)


async def test_list_options_object():
    s = cf_runtime.newStorage()
    await s.put(obj({f"j:{i}": str(i) for i in range(5)} | {"meta": "m"}))
    assert list((await s.list(obj({"prefix": "j:", "limit": 2}))).to_py()) == ["j:0", "j:1"]
    assert list((await s.list(obj({"prefix": "j:", "reverse": True, "limit": 1}))).to_py()) == ["j:4"]
    assert list((await s.list(obj({"start": "j:3", "end": "m"}))).to_py()) == ["j:3", "j:4"]
    assert list((await s.list(obj({"startAfter": "j:3", "prefix": "j:"}))).to_py()) == ["j:4"]


async def test_delete_returns_bool_and_count_and_delete_all_keeps_alarm():
    s = cf_runtime.newStorage()
    await s.put(obj({"a": "1", "b": "2", "c": "3"}))
    assert await s.delete("a") is True
    assert await s.delete("a") is False
    assert await s.delete(to_js(["b", "c", "zz"])) == 2
    await s.setAlarm(1000)
    await s.put("x", "1")
    await s.deleteAll()
    assert await s.getAlarm() == 1000 and s.snapshot().to_py() == {}


async def test_alarm_in_ms():
    s = cf_runtime.newStorage()
    assert await s.getAlarm() is None
    await s.setAlarm(1_767_225_600_123)
    assert await s.getAlarm() == 1_767_225_600_123
    await s.setAlarm(Date.new(5000))
    assert await s.getAlarm() == 5000
    await raises(s.setAlarm("soon"), "TypeError")
    await s.deleteAlarm()
    assert await s.getAlarm() is None


async def test_calls_return_promises_that_settle_later():
    s = cf_runtime.newStorage()
    promise = s.put("k", "v")
    assert hasattr(promise, "then")
    assert await s.get("k") == "v"  # written when issued, readable at once
    await promise


async def test_calls_with_no_await_between_them_are_one_batch():
    s = cf_runtime.newStorage()
    p1, p2, p3 = s.put(obj({"a": "1"})), s.delete("zz"), s.setAlarm(10)
    await p1
    await p2
    await p3
    await s.put("b", "2")
    batches = json.loads(s.batchesJson())
    assert batches == [[["put", "a"], ["delete", "zz"], ["setAlarm", 10]], [["put", "b"]]]


async def test_transaction_rolls_back_and_rethrows_as_python_error():
    s = cf_runtime.newStorage()
    await s.put("keep", "1")

    async def body(txn):
        await txn.put("inside", "x")
        raise ValueError("nope")

    await raises(s.transaction(body), "PythonError: ")
    assert s.snapshot().to_py() == {"keep": "1"}
    assert Array.isArray(to_js([1]))
