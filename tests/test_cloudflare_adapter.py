"""The adapter's CPython-visible parts (the SQL journal over a real SQLite among them), and the
runtime-test plumbing (skip vs fail)."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workkit_workflow import create_durable_workflow
from workkit_workflow.cloudflare._host import storage_of
from workkit_workflow.cloudflare._sql_storage import JOURNAL_TABLE, SqlJournalStorage
from workkit_workflow.cloudflare._storage import DurableObjectStorage, _ms
from workkit_workflow.cloudflare._workers import IN_PYODIDE, DurableObjectBase, headers_of, to_js, to_py
from workkit_workflow.errors import SerializationError

from _cf_harness import require, summary
from conftest import unique


def test_on_cpython_nothing_is_converted_and_the_class_is_plain() -> None:
    assert not IN_PYODIDE and DurableObjectBase is object
    value = {"a": [1]}
    assert to_js(value) is value and to_py(value) is value and to_py(None) is None


def test_alarm_milliseconds_round_up() -> None:
    assert _ms(1_767_225_601.0890045) == 1_767_225_601_090
    assert _ms(1_767_225_600.25) == 1_767_225_600_250
    assert _ms(12.0) == 12_000


def test_headers_of_lowercases_names() -> None:
    class Message:
        def items(self) -> list[tuple[str, str]]:
            return [("Content-Type", "application/json"), ("X-A", "1")]

    assert headers_of(Message()) == {"content-type": "application/json", "x-a": "1"}
    assert headers_of(None) == {}


def test_a_non_binding_is_refused_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="namespace binding"):
        create_durable_workflow(object())


def test_missing_runtime_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Path("/nonexistent/workkit/runtime")
    monkeypatch.delenv("WORKKIT_REQUIRE_RUNTIME", raising=False)
    with pytest.raises(pytest.skip.Exception, match="runtime missing"):
        require(missing)
    monkeypatch.setenv("WORKKIT_REQUIRE_RUNTIME", "1")
    with pytest.raises(pytest.fail.Exception, match="runtime missing"):
        require(missing)


def test_the_sentinel_line_is_required() -> None:
    assert summary("PASS x\n3 passed, 0 failed\n") == (3, 0)
    assert summary("check: 2 passed, 1 failed, 0 skipped") == (2, 1)
    with pytest.raises(AssertionError, match="no 'N passed, N failed' line"):
        summary("Traceback ...")


# -- the SQL journal over a real SQLite, on CPython ---------------------------------------


class _Cursor:
    def __init__(self, rows: list[list[Any]]) -> None:
        self._rows = rows

    def raw(self) -> _Cursor:
        return self

    def toArray(self) -> list[list[Any]]:
        return self._rows


class _Sql:
    """``ctx.storage.sql`` over sqlite3, with the runtime's refusals (shared/RUNTIME.md)."""

    def __init__(self, db: sqlite3.Connection, fail: Callable[[str], bool] = lambda q: False) -> None:
        self.db = db
        self.fail = fail
        self.statements: list[str] = []

    def exec(self, query: str, *args: Any) -> _Cursor:
        if len(args) > 100:
            raise ValueError("too many SQL variables")
        if any(isinstance(a, int) and abs(a) >= 2**53 for a in args):
            raise ValueError("Value out of range")
        if self.fail(query):
            raise RuntimeError(f"injected failure: {query[:30]}")
        self.statements.append(query)
        return _Cursor([list(row) for row in self.db.execute(query, args).fetchall()])


class _SqliteBackedStorage:
    """The parts of a SQLite-backed object's ``ctx.storage`` the adapters use."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None)  # every statement commits alone
        self.sql = _Sql(self.db)
        self.entries: dict[str, str] = {}
        """What the key-value API holds."""
        self.alarm: int | None = None
        self.sync_lists = 0

    @property
    def kv(self) -> Any:
        """The synchronous key-value API of SQLite-backed objects (``list`` only)."""
        return _SyncKv(self)

    def transactionSync(self, fn: Callable[[], Any]) -> Any:
        kv, alarm = dict(self.entries), self.alarm
        self.db.execute("SAVEPOINT t")
        try:
            result = fn()
        except BaseException:
            self.db.execute("ROLLBACK TO t")
            self.db.execute("RELEASE t")
            self.entries, self.alarm = kv, alarm
            raise
        self.db.execute("RELEASE t")
        return result

    async def _done(self, value: Any = None) -> Any:
        return value

    def setAlarm(self, ms: int) -> Any:
        self.alarm = ms
        return self._done()

    def deleteAlarm(self) -> Any:
        self.alarm = None
        return self._done()

    def getAlarm(self) -> Any:
        return self._done(self.alarm)

    def put(self, entries: dict[str, str]) -> Any:
        self.entries.update(entries)
        return self._done()

    def delete(self, keys: list[str]) -> Any:
        for key in keys:
            self.entries.pop(key, None)
        return self._done(len(keys))

    def list(self, options: Any = None) -> Any:
        return self._done(dict(sorted(self.entries.items(), key=lambda kv: kv[0].encode())))

    def get(self, key: Any) -> Any:
        if isinstance(key, list):
            return self._done({k: self.entries[k] for k in key if k in self.entries})
        return self._done(self.entries.get(key))

    def rows(self) -> dict[str, str]:
        return dict(self.db.execute(f"SELECT key, value FROM {JOURNAL_TABLE} ORDER BY key").fetchall())


class _SyncKv:
    def __init__(self, storage: _SqliteBackedStorage) -> None:
        self._storage = storage

    def list(self, options: dict[str, Any]) -> Any:
        self._storage.sync_lists += 1
        return iter(sorted(self._storage.entries.items())[: options.get("limit")])


class _NoSql:
    """A key-value-backed object's storage: ``sql`` is there, every statement throws."""

    class sql:
        @staticmethod
        def exec(query: str, *args: Any) -> Any:
            raise RuntimeError("SQL is not enabled for this Durable Object class.")


def _contract() -> list[Callable[[Any], Any]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "miniflare" / "pyodide"))
    from storage_contract import CONTRACT

    return list(CONTRACT)


@pytest.mark.parametrize("check", _contract(), ids=lambda c: c.__name__)
async def test_the_storage_contract_on_the_sql_journal(check: Callable[[Any], Any]) -> None:
    storage = storage_of(_SqliteBackedStorage())
    assert isinstance(storage, SqlJournalStorage)
    await check(storage)


def test_objects_without_sql_keep_the_key_value_adapter() -> None:
    assert isinstance(storage_of(_NoSql()), DurableObjectStorage)


async def test_a_step_commit_is_one_statement_and_others_one_transaction() -> None:
    raw = _SqliteBackedStorage()
    storage = storage_of(raw)
    await storage.get("warm")
    raw.sql.statements.clear()
    await storage.commit({"state": "{}", "j:00000001": "{}"})
    assert len(raw.sql.statements) == 1 and raw.sql.statements[0].startswith("INSERT")
    puts = {f"k{i:03d}": str(i) for i in range(120)}
    await storage.commit(puts, ["state"], 12.5)
    assert raw.rows() == {"j:00000001": "{}", **puts} and raw.alarm == 12_500


async def test_a_steps_commit_is_made_at_the_call_once_the_journal_is_adopted() -> None:
    raw = _SqliteBackedStorage()
    raw.entries = {"meta": '{"v":1}'}  # a key-value journal, not adopted yet
    storage = storage_of(raw)
    assert isinstance(storage, SqlJournalStorage)
    # Adopting it awaits the runtime: not at the call. Nothing is written then.
    assert storage.commit_now({"state": "{}"}) is False and raw.rows() == {}
    await storage.commit({"state": "{}"})
    raw.sql.statements.clear()
    assert storage.commit_now({"state": "{1}", "j:00000000": "{}"}) is True  # no await
    assert raw.sql.statements == [raw.sql.statements[0]] and raw.sql.statements[0].startswith("INSERT")
    assert raw.rows() == {"meta": '{"v":1}', "state": "{1}", "j:00000000": "{}"}
    many = {f"k{i:03d}": "x" for i in range(60)}  # more rows than one statement binds
    assert storage.commit_now(many) is False and "k000" not in raw.rows()
    with pytest.raises(SerializationError):
        storage.commit_now({"state": "{2}", "big": "x" * 2_000_001})
    raw.sql.fail = lambda q: q.startswith("INSERT")
    with pytest.raises(RuntimeError, match="injected"):
        storage.commit_now({"state": "{3}"})
    assert raw.rows()["state"] == "{1}"


async def test_a_failure_inside_a_commit_keeps_nothing() -> None:
    raw = _SqliteBackedStorage()
    storage = storage_of(raw)
    await storage.commit({"a": "1", "gone": "x"}, (), 10.0)
    raw.sql.fail = lambda q: q.startswith("DELETE")
    with pytest.raises(RuntimeError, match="injected"):
        await storage.commit({"a": "2", "b": "2"}, ["gone"], 20.0)
    assert raw.rows() == {"a": "1", "gone": "x"} and raw.alarm == 10_000
    raw.sql.fail = lambda q: False
    with pytest.raises(sqlite3.IntegrityError):
        storage._upsert({"a": "3", "b": None})  # type: ignore[dict-item]
    assert raw.rows() == {"a": "1", "gone": "x"}
    with pytest.raises(SerializationError):
        await storage.commit({"a": "4", "big": "x" * 2_000_001})
    with pytest.raises(SerializationError, match="lone surrogate"):
        await storage.commit({"a": "5", "s": "\ud800"})
    with pytest.raises(TypeError):
        await storage.commit({"a": 2**60})  # type: ignore[dict-item]
    assert raw.rows() == {"a": "1", "gone": "x"}


async def test_a_key_value_journal_moves_into_the_table_once() -> None:
    raw = _SqliteBackedStorage()
    raw.entries = {"meta": '{"v":1}', "state": "{}", "j:00000000": "{}"}
    raw.alarm = 5_000
    storage = storage_of(raw)
    assert await storage.list() == {"j:00000000": "{}", "meta": '{"v":1}', "state": "{}"}
    assert raw.entries == {} and raw.alarm == 5_000
    raw.entries = {"stray": "x"}
    again = storage_of(raw)
    assert await again.get("stray") is None and raw.entries == {"stray": "x"}


async def test_a_new_object_looks_for_a_key_value_journal_without_awaiting() -> None:
    for raw, synchronous in ((_SqliteBackedStorage(), True), (_WithoutSyncKv(), False)):
        awaited: list[Any] = []

        def listed(options: Any = None, raw: Any = raw, awaited: list[Any] = awaited) -> Any:
            awaited.append(options)
            return raw._done({})

        raw.list = listed  # type: ignore[method-assign]
        assert await storage_of(raw).get_many(["meta", "state"]) == {}
        # Where the runtime has the synchronous API it says there is nothing to adopt, and
        # the table is not looked at; else list() is awaited, as before.
        looked = any(q.startswith("SELECT 1 FROM") for q in raw.sql.statements)
        assert (raw.sync_lists, len(awaited), looked) == ((1, 0, False) if synchronous else (0, 1, True))


class _WithoutSyncKv(_SqliteBackedStorage):
    kv = None  # type: ignore[assignment]  # a runtime without ``ctx.storage.kv``


async def test_a_failed_move_keeps_the_key_value_journal() -> None:
    raw = _SqliteBackedStorage()
    raw.entries = {"meta": '{"v":1}', "state": "{}"}
    storage = storage_of(raw)
    raw.sql.fail = lambda q: q.startswith("INSERT")
    with pytest.raises(RuntimeError, match="injected"):
        await storage.get("meta")
    assert raw.entries == {"meta": '{"v":1}', "state": "{}"} and raw.rows() == {}
    raw.sql.fail = lambda q: False
    assert await storage.get("meta") == '{"v":1}' and raw.entries == {}


class _KeyValueStorage(_NoSql):
    """A key-value-backed object's storage that, as the runtime does, refuses more than
    128 keys in one put or delete."""

    def __init__(self) -> None:
        self.kv: dict[str, str] = {}
        self.calls: list[tuple[str, int]] = []

    async def _done(self, value: Any = None) -> Any:
        return value

    def put(self, entries: dict[str, str]) -> Any:
        if len(entries) > 128:
            raise RuntimeError("put() supports at most 128 keys")
        self.calls.append(("put", len(entries)))
        self.kv.update(entries)
        return self._done()

    def delete(self, keys: list[str]) -> Any:
        if len(keys) > 128:
            raise RuntimeError("delete() supports at most 128 keys")
        self.calls.append(("delete", len(keys)))
        for key in keys:
            self.kv.pop(key, None)
        return self._done(len(keys))


async def test_a_commit_of_many_keys_is_split_in_calls_the_runtime_takes() -> None:
    raw = _KeyValueStorage()
    storage = storage_of(raw)
    assert isinstance(storage, DurableObjectStorage)
    puts = {f"o:{i:012d}": "x" for i in range(300)}
    await storage.commit(puts, [f"gone-{i}" for i in range(130)])
    assert raw.kv == puts
    assert raw.calls == [("put", 128), ("put", 128), ("put", 44), ("delete", 128), ("delete", 2)]


class _SdkWrapper:
    """What the runtime's SDK wraps ``env`` in, once per class level of a subclass: it keeps
    the object it wraps as ``_env`` and hands out its bindings."""

    def __init__(self, env: Any) -> None:
        self._env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


def test_env_under_several_sdk_wrappers_reaches_the_object_under_one() -> None:
    from workkit_workflow.cloudflare._workers import once_wrapped_env, unwrapped_env

    raw = type("Env", (), {"OTHER_DO": "binding"})()
    once = _SdkWrapper(raw)
    assert once_wrapped_env(_SdkWrapper(_SdkWrapper(once))._env) is once
    assert once_wrapped_env(_SdkWrapper(once)) is once
    assert once_wrapped_env(once) is once
    assert once_wrapped_env(raw) is raw  # no wrapper: the local runtime's, an older SDK's
    assert once_wrapped_env({"OTHER_DO": 1}) == {"OTHER_DO": 1}
    assert unwrapped_env(_SdkWrapper(_SdkWrapper(once))) is raw
    other = type("Other", (), {"_env": raw})()  # a wrapper of another kind is not the SDK's
    assert once_wrapped_env(_SdkWrapper(other)) is not other


class _StepWrapper:
    """The SDK's step wrapper: it keeps the step it wraps as ``_js_step``."""

    def __init__(self, step: Any) -> None:
        self._js_step = step


def test_a_step_under_several_sdk_wrappers_reaches_the_run_under_one() -> None:
    from workkit_workflow.cloudflare._workers import once_wrapped_step

    engine_step = object()
    once = _StepWrapper(engine_step)
    assert once_wrapped_step(_StepWrapper(_StepWrapper(once))) is once
    assert once_wrapped_step(once) is once
    assert once_wrapped_step(engine_step) is engine_step


async def test_a_subclass_sees_self_env_as_a_direct_subclass_of_the_sdk_would(tmp_path: Path) -> None:
    """A subclass of WorkflowExecutionDO gets env wrapped once per class level in workerd
    (``miniflare/realruntime``: its flows reach their bindings through ``self.env``); here
    the local runtime hands it an env under two wrappers, as such a subclass gets it."""
    from workkit_workflow import WorkflowExecutionDO, workflow
    from workkit_workflow.local import LocalNamespace

    seen: list[Any] = []

    class Mine(WorkflowExecutionDO):  # type: ignore[misc]
        lease = 5.0

        def __init__(self, ctx: Any, env: Any) -> None:
            super().__init__(ctx, env)
            seen.append(self.env)

    @workflow("wrapped-env")
    async def flow(ctx: Any, data: Any) -> str:
        return "done"

    raw = type("Env", (), {"OTHER_DO": "binding"})()
    once = _SdkWrapper(raw)
    ns = LocalNamespace(str(tmp_path / "w.db"), object_class=Mine, env=_SdkWrapper(once))
    try:
        handle = await create_durable_workflow(ns).run(flow, None, execution_id="e1")
        assert await handle.status() == "completed"
    finally:
        await ns.close()
    assert seen and all(env is once for env in seen)
    assert seen[0].OTHER_DO == "binding"


async def test_a_subclass_fetch_that_awaits_the_base_one_serves_its_requests(tmp_path: Path) -> None:
    """``fetch`` is a plain function returning the handler's coroutine (a frame less per
    request in flight): an ``async def`` override that awaits ``super().fetch`` still serves
    every request, the one driving the execution included."""
    from workkit_workflow import WorkflowExecutionDO, workflow
    from workkit_workflow.local import LocalNamespace

    served: list[str] = []

    class Mine(WorkflowExecutionDO):  # type: ignore[misc]
        async def fetch(self, request: Any) -> Any:
            served.append(request.path)
            return await super().fetch(request)

    @workflow(unique("override-fetch"))
    async def flow(ctx: Any, data: Any) -> str:
        return await ctx.step("s", lambda: "done")

    ns = LocalNamespace(str(tmp_path / "o.db"), object_class=Mine)
    try:
        handle = await create_durable_workflow(ns).run(flow, None, execution_id="o1")
        assert (await handle.result()).value == "done"
    finally:
        await ns.close()
    assert served[0] == "/execute" and "/result" in served
