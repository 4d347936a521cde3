"""The query API: filters, time ranges, cursors, one execution's full history."""

from __future__ import annotations

from typing import Any

import pytest

import workkit_workflow.history as history_module
from workkit_workflow import Workflow, create_durable_workflow
from workkit_workflow.errors import ExecutionNotFoundError, InvalidRequestError
from workkit_workflow.history import HistoryQuery, LocalD1
from workkit_workflow.local import LocalNamespace, VirtualClock


def test_public_names() -> None:
    assert sorted(history_module.__all__) == sorted(
        [
            "MIGRATIONS",
            "SCHEMA",
            "TABLES",
            "VIEWS",
            "D1Error",
            "D1Port",
            "EventRecord",
            "ExecutionHistory",
            "ExecutionPage",
            "ExecutionRecord",
            "HistoryQuery",
            "LocalD1",
            "StepRecord",
        ]
    )


@pytest.fixture
async def populated() -> Any:
    clock = VirtualClock()
    d1 = LocalD1()
    ok = Workflow("q-ok").step("a", lambda i, p, c: 1)

    def boom(i: Any, p: Any, c: Any) -> None:
        raise ValueError("boom")

    from workkit_workflow import RetryPolicy

    bad = Workflow("q-bad", retry=RetryPolicy(max_attempts=1)).step("b", boom)
    async with LocalNamespace(None, clock, env={"HISTORY_DB": d1}) as ns:
        client = create_durable_workflow(ns, history=d1)
        for i in range(7):
            flow = ok if i % 3 else bad
            await (await client.run(flow, {"i": i}, execution_id=f"q-{i}")).result(timeout=60)
            await clock.sleep(60)  # one execution a minute
        await clock.sleep(5)
        assert client.history is not None
        yield client.history, clock


async def test_list_newest_first_with_a_cursor(populated: Any) -> None:
    query, _ = populated
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await query.list_executions(limit=3, cursor=cursor)
        seen += [e.execution_id for e in page.executions]
        pages += 1
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == [f"q-{i}" for i in range(6, -1, -1)]
    assert pages == 3


async def test_filters_by_workflow_status_and_time(populated: Any) -> None:
    query, _ = populated
    bad = await query.list_executions(workflow="q-bad")
    assert [e.execution_id for e in bad.executions] == ["q-6", "q-3", "q-0"]
    failed = await query.list_executions(status="failed")
    assert {e.execution_id for e in failed.executions} == {"q-0", "q-3", "q-6"}
    both = await query.list_executions(status=["failed", "completed"])
    assert len(both.executions) == 7
    first = (await query.list_executions(limit=200)).executions[-1].created_at
    window = await query.list_executions(since=first + 60, until=first + 180)
    assert [e.execution_id for e in window.executions] == ["q-2", "q-1"]
    none = await query.list_executions(workflow="q-ok", status="failed")
    assert none.executions == [] and none.cursor is None


async def test_one_execution_in_full(populated: Any) -> None:
    query, _ = populated
    history = await query.get_execution("q-0")
    assert history.execution.status == "failed"
    assert history.execution.failed_step == "b"
    assert history.execution.error and history.execution.error["message"] == "boom"
    assert history.execution.input == {"i": 0}
    [step] = history.main_steps
    assert (step.name, step.status, step.attempt) == ("b", "failed", 1)
    assert step.errors[0]["code"] == "ValueError"
    assert history.compensation_steps == []
    assert [e.seq for e in history.events] == list(range(1, len(history.events) + 1))
    assert history.events[-1].detail["phase"] == "done"


async def test_bad_queries_are_structured_errors(populated: Any) -> None:
    query, _ = populated
    with pytest.raises(ExecutionNotFoundError):
        await query.get_execution("nope")
    with pytest.raises(InvalidRequestError):
        await query.list_executions(cursor="not-a-cursor")
    with pytest.raises(InvalidRequestError):
        await query.list_executions(limit=0)
    with pytest.raises(InvalidRequestError):
        await query.list_executions(status=[])


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("limit", 2.5),  # was a D1Error
        ("limit", True),
        ("since", "x"),  # was a raw ValueError
        ("until", float("nan")),
        ("since", float("inf")),
        ("status", "bogus"),  # silently matched nothing, where the CLI refuses it
        ("status", ["failed", "bogus"]),
        ("workflow", 5),
    ],
)
async def test_a_filter_the_query_cannot_use_is_refused_naming_it(
    populated: Any, option: str, value: Any, tmp_path: Any
) -> None:
    # The same checks over D1 and over a runtime file's journals (the CLI's list).
    query, _ = populated
    with pytest.raises(InvalidRequestError) as caught:
        await query.list_executions(**{option: value})
    assert caught.value.details["field"] == option
    from workkit_workflow.history._journals import JournalFile

    path = str(tmp_path / "runtime.db")
    async with LocalNamespace(path) as ns:
        await create_durable_workflow(ns).run(Workflow("q-file").step("a", lambda i, p, c: 1))
    journals = JournalFile.open(path)
    try:
        with pytest.raises(InvalidRequestError) as caught:
            journals.list_executions(**{option: value})
        assert caught.value.details["field"] == option
    finally:
        journals.close()


async def test_one_interface_over_any_d1_shaped_binding() -> None:
    class Recording:
        """A binding like env.HISTORY_DB: only prepare/bind/all/batch are used."""

        def __init__(self) -> None:
            self.inner = LocalD1()
            self.sql: list[str] = []

        def prepare(self, sql: str) -> Any:
            self.sql.append(sql)
            return self.inner.prepare(sql)

        async def batch(self, statements: Any) -> Any:
            return await self.inner.batch(statements)

    binding = Recording()
    page = await HistoryQuery(binding).list_executions(status="failed", since=None)
    assert page.executions == []
    assert "status IN (?)" in binding.sql[-1]
    with pytest.raises(TypeError):
        HistoryQuery(object())
