"""``Runner.until_ended``: a request waits for the runner without owning it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from workkit_workflow.engine._runner import Runner


class _Died(BaseException):
    """What a runner raises when its object dies under it."""


class _Body:
    """A runner body that runs until released; counts its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.error: BaseException | None = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.ensure_future(coro)

    async def drive(self) -> None:
        self.runs += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error

    def failure(self, run: asyncio.Task[None]) -> BaseException | None:
        return None if run.cancelled() else run.exception()


def _runner(body: _Body) -> Runner:
    return Runner(body)


async def test_a_waiter_that_gives_up_leaves_the_runner_to_the_others() -> None:
    body = _Body()
    runner = _runner(body)
    first, second = runner.until_ended(), runner.until_ended()
    task = runner.task
    assert task is not None and body.runs == 0
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    assert runner.active and not task.cancelled()
    body.release.set()
    await second
    assert task.done() and not task.cancelled() and body.runs == 1
    assert runner.task is None and not runner.active


async def test_the_waiters_raise_the_bodys_failure() -> None:
    body = _Body()
    body.error = _Died()
    runner = _runner(body)
    first, second = runner.until_ended(), runner.until_ended()
    body.release.set()
    for waiter in (first, second):
        with pytest.raises(_Died):
            await waiter


async def test_a_runner_woken_before_the_last_ones_end_is_delivered_is_waited_for() -> None:
    body = _Body()
    runner = _runner(body)
    old = runner.until_ended()
    body.release.set()
    old_task = runner.task
    assert old_task is not None
    await asyncio.sleep(0)
    # The runner has ended; its done callbacks are scheduled, not run yet.
    assert old_task.done() and runner._task is old_task
    body.release = asyncio.Event()
    new = runner.until_ended()
    new_task = runner.task
    assert new_task is not None and new_task is not old_task
    await old
    await asyncio.sleep(0)
    assert not new.done() and runner.active
    body.release.set()
    await new
    assert new_task.done() and body.runs == 2
    assert runner.task is None


async def test_cancelling_the_runner_settles_its_waiters() -> None:
    body = _Body()
    runner = _runner(body)
    waiter = runner.until_ended()
    task = runner.task
    assert task is not None
    task.cancel()
    await waiter  # settled, not cancelled: the body's failure for a cancelled run is None
    assert task.cancelled()
