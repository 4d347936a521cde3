"""The Storage port contract, run over every local backend.

The Cloudflare adapter runs the same checks under Pyodide against JavaScript
fakes of Durable Object storage (tests/test_pyodide_*).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from workkit_workflow.engine._ports import KEEP_ALARM, Storage
from workkit_workflow.local import LocalNamespace, ObjectEvicted


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def ns(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[LocalNamespace]:
    path = None if request.param == "memory" else str(tmp_path / "s.db")
    namespace = LocalNamespace(path, deliver_alarms=False)
    try:
        yield namespace
    finally:
        await namespace.close()


def storage_of(ns: LocalNamespace, name: str = "obj") -> Storage:
    return ns._instance(name).storage


async def test_get_put_delete(ns: LocalNamespace) -> None:
    s = storage_of(ns)
    assert await s.get("missing") is None
    await s.commit({"a": "1", "b": '{"x":2}'})
    assert await s.get("a") == "1"
    assert await s.get_many(["a", "b", "zz"]) == {"a": "1", "b": '{"x":2}'}
    await s.commit({}, ["a", "nope"])
    assert await s.get("a") is None


async def test_get_many_answers_in_the_order_asked(ns: LocalNamespace) -> None:
    """Up to eight keys are one statement on SQLite, more one statement each: either way the
    keys found, in the order asked, a missing or repeated key changing nothing."""
    s = storage_of(ns)
    stored = {f"k{i}": str(i) for i in range(12)} | {"é": "accent", "state": "{}"}
    await s.commit(stored)
    for asked in (
        ["state", "é", "k3"],
        ["k3", "missing", "é", "k3"],
        ["missing", "absent"],
        [f"k{i}" for i in reversed(range(12))],
        ["é"],
    ):
        found = await s.get_many(asked)
        assert list(found) == list(dict.fromkeys(k for k in asked if k in stored))
        assert found == {k: stored[k] for k in asked if k in stored}


async def test_list_orders_by_utf8_bytes_with_options(ns: LocalNamespace) -> None:
    s = storage_of(ns)
    keys = ["j:00000002", "j:00000010", "j:00000001", "e:1", "state", "é", "z", "Z", "j:"]
    await s.commit({k: k for k in keys})
    assert list(await s.list()) == sorted(keys, key=str.encode)
    assert list(await s.list(prefix="j:")) == ["j:", "j:00000001", "j:00000002", "j:00000010"]
    assert list(await s.list(start="j:00000002", end="state")) == ["j:00000002", "j:00000010"]
    assert list(await s.list(prefix="j:", limit=2, reverse=True)) == ["j:00000010", "j:00000002"]
    assert list(await s.list(prefix="nothing")) == []


async def test_commit_is_atomic(ns: LocalNamespace) -> None:
    s = storage_of(ns)
    await s.commit({"keep": "1"})
    with pytest.raises(TypeError):
        await s.commit({"a": "1", "b": 2})  # type: ignore[dict-item]
    assert await s.list() == {"keep": "1"}


async def test_alarms(ns: LocalNamespace) -> None:
    s = storage_of(ns)
    assert await s.get_alarm() is None
    await s.commit({"k": "v"}, (), 1234.5)
    assert await s.get_alarm() == 1234.5
    await s.commit({"k": "w"}, (), KEEP_ALARM)
    assert await s.get_alarm() == 1234.5
    await s.set_alarm(None)
    assert await s.get_alarm() is None
    await s.set_alarm(99.0)
    assert ns.backend.alarms() == {"obj": 99.0}


async def test_objects_are_isolated(ns: LocalNamespace) -> None:
    await storage_of(ns, "one").commit({"k": "1"})
    await storage_of(ns, "two").commit({"k": "2"})
    assert await storage_of(ns, "one").get("k") == "1"
    assert await storage_of(ns, "two").get("k") == "2"


async def test_eviction_keeps_storage_and_kills_the_old_instance(ns: LocalNamespace) -> None:
    old = storage_of(ns)
    await old.commit({"k": "1"})
    ns.evict("obj")
    with pytest.raises(ObjectEvicted):
        await old.get("k")
    assert await storage_of(ns).get("k") == "1"


async def test_sqlite_storage_survives_reopening(tmp_path: Any) -> None:
    path = str(tmp_path / "durable.db")
    first = LocalNamespace(path, deliver_alarms=False)
    await storage_of(first).commit({"k": "v"}, (), 42.0)
    await first.close()
    second = LocalNamespace(path, deliver_alarms=False)
    try:
        assert await storage_of(second).get("k") == "v"
        assert second.backend.alarms() == {"obj": 42.0}
    finally:
        await second.close()


@pytest.mark.parametrize("rows", [1, 2, 8, 9])
async def test_sqlite_keys_are_their_utf8_bytes_on_every_write_path(tmp_path: Any, rows: int) -> None:
    """Up to eight puts are one statement, more (or a delete, or an alarm) a transaction:
    both store a key as its UTF-8 bytes, which reads and ordered lists rely on."""
    ns = LocalNamespace(str(tmp_path / "keys.db"), deliver_alarms=False)
    try:
        s = storage_of(ns)
        keys = ["é", "z", "Z", "j:00000002", "j:", "e:1", "state", "ü:1", "a"][:rows]
        await s.commit({k: f"v{k}" for k in keys})
        await s.commit({"old": "1"})
        await s.commit({k: f"w{k}" for k in keys}, ["old"])
        raw = ns.backend._db.execute("SELECT key, typeof(key) FROM kv ORDER BY key")  # type: ignore[attr-defined]
        assert [tuple(row) for row in raw] == [(k.encode(), "blob") for k in sorted(keys, key=str.encode)]
        assert await s.get_many([*keys, "old"]) == {k: f"w{k}" for k in keys}
        assert list(await s.list()) == sorted(keys, key=str.encode)
    finally:
        await ns.close()


async def test_other_requests_run_at_storage_awaits(ns: LocalNamespace) -> None:
    """As measured on Cloudflare: a storage await lets another request in."""
    s = storage_of(ns)
    order: list[str] = []

    async def reader(tag: str) -> None:
        order.append(f"{tag}-before")
        await s.get("k")
        order.append(f"{tag}-after")

    import asyncio

    await asyncio.gather(reader("a"), reader("b"))
    assert order == ["a-before", "b-before", "a-after", "b-after"]
