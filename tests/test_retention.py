"""Retention and delete: a finished execution's storage goes after its retention period
(on a virtual clock, driven by the object's own alarm) or at once with ``delete()``;
the alarm count returns to zero and the history rows in D1 stay."""

from __future__ import annotations

from typing import Any

import pytest

from workkit_workflow import WorkflowExecutionDO, create_durable_workflow, workflow
from workkit_workflow.errors import ExecutionConflictError, ExecutionNotFoundError, InvalidOptionError
from workkit_workflow.local import LocalNamespace, VirtualClock
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

DAY = 86400.0


def _stored(env: WorkflowTestEnv, execution_id: str) -> dict[str, str]:
    return env.ns.backend.list(execution_id, None, None, None, None, False)


async def _advance(env: WorkflowTestEnv, seconds: float) -> None:
    """Let ``seconds`` of virtual time pass (alarms due meanwhile fire), then settle."""
    await env.clock.sleep(seconds)
    await env.settle()
    await env.ns.idle()


async def _gone(env: WorkflowTestEnv, handle: Any) -> None:
    assert _stored(env, handle.execution_id) == {}
    assert handle.execution_id not in env.ns.backend.objects()
    assert env.ns.backend.alarms() == {}, "the alarm count returns to zero"
    with pytest.raises(ExecutionNotFoundError):
        await handle.status()


async def test_a_finished_execution_is_deleted_after_its_retention(env: WorkflowTestEnv) -> None:
    @workflow(unique("kept-a-day"), retention="1d")
    async def flow(ctx: Any, input: Any) -> int:
        await ctx.step("a", lambda: 1)
        return 1

    handle = await env.run(flow)
    view = await handle.describe()
    assert view["status"] == "completed"
    assert view["delete_at"] == view["finished_at"] + DAY
    assert env.ns.backend.alarms() == {handle.execution_id: view["delete_at"]}
    await _advance(env, DAY - 60)
    assert (await handle.result(timeout=0)).value == 1, "kept until its retention ends"
    await _advance(env, 120)
    await _gone(env, handle)


async def test_a_failed_and_compensated_execution_is_deleted_too(env: WorkflowTestEnv) -> None:
    undone: list[str] = []

    async def boom() -> None:
        raise ValueError("no")

    @workflow(unique("failed-kept-an-hour"), retention="1h")
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.step("boom", boom)

    handle = await env.run(flow.on_failure(lambda ctx: undone.append(ctx.status)))
    result = await env.result(handle)
    assert result.status == "failed" and undone == ["failed"]
    assert (await handle.describe())["delete_at"] is not None
    await _advance(env, 3600 + 1)
    await _gone(env, handle)


async def test_without_retention_the_storage_stays_and_no_alarm_is_left(env: WorkflowTestEnv) -> None:
    @workflow(unique("kept"))
    async def flow(ctx: Any, input: Any) -> int:
        return 2

    handle = await env.run(flow)
    assert (await handle.describe())["delete_at"] is None
    assert env.ns.backend.alarms() == {}
    await _advance(env, 400 * DAY)
    assert (await handle.result(timeout=0)).value == 2


async def test_retention_zero_deletes_right_after_settling(env: WorkflowTestEnv) -> None:
    @workflow(unique("kept-not-at-all"), retention=0)
    async def flow(ctx: Any, input: Any) -> int:
        return 3

    handle = await env.run(flow)
    await _advance(env, 0.01)
    await _gone(env, handle)


async def test_the_object_default_applies_to_workflows_without_their_own() -> None:
    class ShortLived(WorkflowExecutionDO):
        retention = "2h"

    @workflow(unique("default-retention"))
    async def flow(ctx: Any, input: Any) -> int:
        return 4

    @workflow(unique("own-retention"), retention="10d")
    async def own(ctx: Any, input: Any) -> int:
        return 5

    clock = VirtualClock()
    async with LocalNamespace(clock=clock, object_class=ShortLived) as ns:
        client = create_durable_workflow(ns)
        short = await client.run(flow, execution_id="short")
        long = await client.run(own, execution_id="long")
        now = clock.now()
        expected = {"short": pytest.approx(now + 7200), "long": pytest.approx(now + 10 * DAY)}
        assert ns.backend.alarms() == expected
        await clock.sleep(3 * 3600)
        await ns.idle()
        assert ns.backend.objects() == ["long"]
        with pytest.raises(ExecutionNotFoundError):
            await short.status()
        assert (await long.result(timeout=0)).value == 5


def test_a_bad_object_default_is_refused() -> None:
    class Broken(WorkflowExecutionDO):
        retention = "-3d"

    with pytest.raises(InvalidOptionError, match="retention"):
        Broken(_FakeCtx(), None)


class _FakeCtx:
    is_workkit_host = True


async def test_delete_removes_a_finished_execution_at_once(env: WorkflowTestEnv) -> None:
    @workflow(unique("deleted"), retention="30d")
    async def flow(ctx: Any, input: Any) -> int:
        await ctx.sleep("nap", "1m")
        return 6

    handle = await env.run(flow)
    with pytest.raises(ExecutionConflictError, match="cancel it first") as caught:
        await handle.delete()
    assert caught.value.details["status"] == "sleeping"
    assert (await env.result(handle)).value == 6
    await handle.delete()
    await _gone(env, handle)
    with pytest.raises(ExecutionNotFoundError):
        await handle.delete()
    # The id is free again: a new run with it starts a new execution.
    again = await env.run(flow, execution_id=handle.execution_id)
    assert again.created is True


async def test_history_rows_stay_after_deletion(tmp_path: Any) -> None:
    env = WorkflowTestEnv(history=True)
    try:

        @workflow(unique("history-kept"), retention="1h")
        async def flow(ctx: Any, input: Any) -> str:
            return await ctx.step("a", lambda: "x")

        handle = await env.run(flow)
        await _advance(env, 2 * 3600)
        await _gone(env, handle)
        assert env.client.history is not None
        history = await env.client.history.get_execution(handle.execution_id)
        assert history.execution.status == "completed"
        assert [s.name for s in history.main_steps] == ["a"]
    finally:
        await env.close()


async def test_deletion_waits_until_the_history_has_every_record() -> None:
    env = WorkflowTestEnv(history=True)
    try:

        @workflow(unique("history-down"), retention="1h")
        async def flow(ctx: Any, input: Any) -> str:
            return await ctx.step("a", lambda: "y")

        env.history.fail = True  # D1 is down from the start
        handle = await env.run(flow)
        with pytest.raises(ExecutionConflictError, match="records to deliver"):
            await handle.delete()
        await _advance(env, 2 * 3600)
        assert _stored(env, handle.execution_id), "kept while its history is undelivered"
        assert env.ns.backend.alarms(), "an alarm stays set to retry the delivery"
        env.history.fail = False
        await _advance(env, 600)
        await _gone(env, handle)
        history = await env.client.history.get_execution(handle.execution_id)  # type: ignore[union-attr]
        assert history.execution.status == "completed"
    finally:
        await env.close()


async def test_the_retention_alarm_survives_a_process_restart(env: WorkflowTestEnv) -> None:
    @workflow(unique("kept-across-restarts"), retention="1h")
    async def flow(ctx: Any, input: Any) -> int:
        return 7

    handle = await env.run(flow)
    await env.restart()  # memory gone (and, on SQLite, the file reopened): the alarm is stored
    assert (await handle.result(timeout=0)).value == 7
    await _advance(env, 3600 + 1)
    await _gone(env, handle)
