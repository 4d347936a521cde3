"""A storage failure a request meets, read or write, is refused as retryable, and the client
asks again.

A failed read of the object's storage is a storage failure, as a failed write is: the object
answers 503 ``storage_unavailable`` (retryable: nothing was written), not 500
``internal_error``, and a run that meets it retries on its alarm. Each Storage port raises
``StorageReadError`` from its reads: the local runtime's, and both of Cloudflare's (the SQL
journal and the key-value adapter, over stand-ins of ``ctx.storage``). The client sends such a
refused request again, twice at most (``STORAGE_RETRIES``), before the error is the caller's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from test_cloudflare_adapter import _SqliteBackedStorage
from test_fault_matrix import FailingReads
from workkit_workflow import DurableWorkflows, ExecutionHandle, Workflow, workflow
from workkit_workflow.client._answers import STORAGE_RETRIES
from workkit_workflow.cloudflare._sql_storage import SqlJournalStorage
from workkit_workflow.cloudflare._storage import DurableObjectStorage
from workkit_workflow.engine._ports import StorageReadError, WireResponse
from workkit_workflow.errors import WorkflowError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_request_whose_read_fails_is_refused_as_retryable(backend: str, tmp_path: Any) -> None:
    env = WorkflowTestEnv(path=None if backend == "memory" else str(tmp_path / "w.db"))
    flow = Workflow(unique("read-fails")).wait_for_event("go", "go").step("after", lambda i, p, c: p)
    body = {"workflow": flow.name, "input": {}, "execution_id": "read-fails-1", "wait": True}
    try:
        seen = FailingReads(env.ns, at=1)  # the request's first read: is the execution there?
        answer = await env.ns.request("read-fails-1", "POST", "/execute", body)
        assert seen.failed == 1
        assert answer.status == 503, answer.body
        error = answer.body["error"]
        assert error["code"] == "storage_unavailable" and error["retryable"] is True
        assert "storage read failed" in error["message"] and "disk I/O error on read" in error["message"]
        # Nothing was written: the same request, sent again, is what takes effect.
        answer = await env.ns.request("read-fails-1", "POST", "/execute", body)
        assert answer.status == 201 and answer.body["execution"]["status"] == "waiting"
        seen = FailingReads(env.ns, at=1)  # the event's duplicate check
        answer = await env.ns.request("read-fails-1", "POST", "/event", {"type": "go", "payload": "went"})
        assert answer.status == 503 and answer.body["error"]["code"] == "storage_unavailable"
        assert await env.client.execution("read-fails-1").send_event("go", "went")
        result = await env.result(env.client.execution("read-fails-1"))
        assert result.ok and result.value == "went"
    finally:
        await env.close()


@pytest.mark.parametrize("fault", ["read", "write"])
async def test_the_client_sends_a_refused_request_again(fault: str) -> None:
    env = WorkflowTestEnv()
    flow = Workflow(unique("client-again")).wait_for_event("go", "go").step("after", lambda i, p, c: p)
    failed = {"n": 0}

    def fail_write(obj: str, puts: Any, deletes: Any) -> None:
        if failed["n"] < 1:
            failed["n"] += 1
            raise OSError("disk I/O error (injected)")

    try:
        if fault == "read":
            seen = FailingReads(env.ns, at=1)
        else:
            env.ns.write_hook = fail_write
        handle = await env.run(flow, {})  # refused once, then taken
        env.ns.write_hook = None
        assert (seen.failed if fault == "read" else failed["n"]) == 1
        assert handle.created and await handle.status() == "waiting"
        # Refused every time: the client gives up after its repeats, and says why.
        calls = {"n": 0}
        real = env.ns.request

        async def refused(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            return WireResponse(
                503, {"error": {"code": "storage_unavailable", "message": "m", "retryable": True}}
            )

        env.ns.request = refused  # type: ignore[method-assign]
        with pytest.raises(WorkflowError) as caught:
            await handle.send_event("go", "went")
        env.ns.request = real  # type: ignore[method-assign]
        assert caught.value.code == "storage_unavailable" and caught.value.retryable
        assert calls["n"] == 1 + len(STORAGE_RETRIES)
        assert await handle.send_event("go", "went")
        assert (await env.result(handle)).value == "went"
    finally:
        await env.close()


async def test_a_run_whose_read_fails_retries_on_its_alarm_and_logs_no_engine_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = WorkflowTestEnv()
    flow = Workflow(unique("run-read-fails")).step("a", lambda i, p, c: "a").step("b", lambda i, p, c: "b")
    try:
        handle = await env.start(flow, {})
        failing = FailingReads(env.ns, at=1)  # the run's read of the journal, in its alarm
        result = await env.result(handle)
        assert failing.failed == 1
        assert result.ok and result.value == "b"
        assert not [r for r in caplog.records if r.getMessage() == "workkit_workflow: the runner failed"]
    finally:
        await env.close()


class _FailingKeyValue:
    """``ctx.storage`` whose reads fail, as the call is made (``sync``) or as it is awaited."""

    def __init__(self, sync: bool) -> None:
        self.sync = sync

    def _fail(self) -> Any:
        if self.sync:
            raise RuntimeError("storage refused the read")

        async def failed() -> Any:
            raise RuntimeError("storage refused the read")

        return failed()

    def get(self, key: Any) -> Any:
        return self._fail()

    def list(self, options: Any = None) -> Any:
        return self._fail()

    def getAlarm(self) -> Any:
        return self._fail()


@pytest.mark.parametrize("sync", [True, False], ids=["thrown", "rejected"])
async def test_the_key_value_adapter_names_a_failed_read(sync: bool) -> None:
    storage = DurableObjectStorage(_FailingKeyValue(sync))
    for read in (
        lambda: storage.get("meta"),
        lambda: storage.get_many(["meta", "state"]),
        lambda: storage.list(prefix="j:"),
        lambda: storage.list(),
        storage.get_alarm,
    ):
        with pytest.raises(StorageReadError) as caught:
            await read()
        assert isinstance(caught.value.cause, RuntimeError)


async def test_the_sql_journal_names_a_failed_read() -> None:
    raw = _SqliteBackedStorage()
    storage = SqlJournalStorage(raw, raw.sql)
    await storage.commit({"meta": "{}"})

    def refuse(query: str, *args: Any) -> Any:
        raise RuntimeError("SQLITE_IOERR (injected)")

    raw.sql.exec = refuse  # type: ignore[method-assign]
    for read in (
        lambda: storage.get("meta"),
        lambda: storage.get_many(["meta", "state"]),
        lambda: storage.list(prefix="j:"),
    ):
        with pytest.raises(StorageReadError) as caught:
            await read()
        assert "SQLITE_IOERR" in str(caught.value.cause)
    raw.getAlarm = _FailingKeyValue(sync=False).getAlarm  # type: ignore[method-assign]
    with pytest.raises(StorageReadError):
        await storage.get_alarm()


def test_a_request_in_flight_holds_nothing_for_its_repeat() -> None:
    # A closure for the repeat would make each variable it captures a cell of the caller's
    # frame, made at every call: three more objects per execution in flight through
    # client.run, each walked by every full garbage collection (the bench's concurrency).
    for method in (DurableWorkflows.run, DurableWorkflows.restart, ExecutionHandle._call):
        assert method.__code__.co_cellvars == (), method.__qualname__


async def test_a_keyed_steps_lookup_that_fails_to_read_is_not_the_steps_exception() -> None:
    # A step with a business key looks up what an earlier step with that key recorded, inside
    # the body. A failed read there is the engine's signal: the body's ``except Exception``
    # must not take it for the step's failure and go on without the step's output.
    env = WorkflowTestEnv()
    calls: list[str] = []
    swallowed: list[str] = []
    armed = {"on": False, "failed": 0}
    backend = env.ns.backend
    real_get_many = backend.get_many

    def get_many(*args: Any) -> Any:
        if armed["on"]:
            armed["on"] = False
            armed["failed"] += 1
            raise OSError("disk I/O error on read (injected)")
        return real_get_many(*args)

    backend.get_many = get_many  # type: ignore[method-assign]

    @workflow(unique("keyed-lookup"))
    async def flow(ctx: Any, input: Any) -> Any:
        first = await ctx.step("charge", lambda: calls.append("first") or {"tx": 1}, idempotency_key="k-9")
        await ctx.step("arm", lambda: armed.update(on=True))
        await asyncio.sleep(0)  # what the steps wrote is in storage, not waiting in memory
        try:
            second = await ctx.step(
                "charge-again", lambda: calls.append("second") or {"tx": 2}, idempotency_key="k-9"
            )
        except Exception as exc:
            swallowed.append(repr(exc))
            second = None
        return [first, second]

    try:
        handle = await env.run(flow, {})
        result = await env.result(handle)
        assert armed["failed"] == 1, "the lookup read nothing from storage"
        assert swallowed == []
        assert result.ok and result.value == [{"tx": 1}, {"tx": 1}]
        assert calls == ["first"]
    finally:
        await env.close()
