"""``Runner``: a run as a task of its own (``wake``) or in the caller's task
(``drive_here``), and who waits for its end (``ended``) without owning it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from workkit_workflow.engine._runner import Runner


class _Died(BaseException):
    """What a runner raises when its object dies under it."""


class _Body:
    """A runner body that runs until released; counts its runs and their tasks."""

    def __init__(self) -> None:
        self.runs = 0
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.release = asyncio.Event()
        self.error: BaseException | None = None
        self.runner: Runner | None = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.ensure_future(coro)

    async def drive(self) -> None:
        assert self.runner is not None
        self.runs += 1
        self.tasks.append(asyncio.current_task())
        died: BaseException | None = None
        try:
            await self.release.wait()
            if self.error is not None:
                raise self.error
        except BaseException as exc:
            died = exc
            raise
        finally:
            self.runner.finished(died)

    def failure(self, exc: BaseException) -> BaseException | None:
        return None if isinstance(exc, asyncio.CancelledError) else exc


def _runner(body: _Body) -> Runner:
    runner = body.runner = Runner(body)
    return runner


def _waiter(runner: Runner) -> asyncio.Future[None]:
    ended = runner.ended()
    assert ended is not None
    return ended


async def test_a_waiter_that_gives_up_leaves_the_runner_to_the_others() -> None:
    body = _Body()
    runner = _runner(body)
    runner.wake()
    task = runner._task
    first, second = _waiter(runner), _waiter(runner)
    assert task is not None and body.runs == 0
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    assert runner.active and not task.cancelled()
    body.release.set()
    await second
    assert task.done() and not task.cancelled() and body.runs == 1
    assert runner.ended() is None and not runner.active


async def test_the_waiters_raise_the_bodys_failure() -> None:
    body = _Body()
    body.error = _Died()
    runner = _runner(body)
    runner.wake()
    task = runner._task
    first, second = _waiter(runner), _waiter(runner)
    body.release.set()
    for waiter in (first, second):
        with pytest.raises(_Died):
            await waiter
    await asyncio.sleep(0)
    # The run's task has its failure read (the waiters were told by the run's own
    # end): it is not reported as never retrieved when it is collected.
    assert task is not None and task.done() and not task._log_traceback  # type: ignore[attr-defined]


async def test_a_runner_woken_before_the_last_ones_end_is_delivered_is_waited_for() -> None:
    body = _Body()
    runner = _runner(body)
    runner.wake()
    old = _waiter(runner)
    old_task = runner._task
    body.release.set()
    await asyncio.sleep(0)
    # The run has ended and said so (its waiters are settled); its task's done callback
    # is scheduled, not run yet.
    assert old_task is not None and old_task.done() and runner._task is None and old.done()
    body.release = asyncio.Event()
    runner.wake()
    new = _waiter(runner)
    new_task = runner._task
    assert new_task is not None and new_task is not old_task
    await old
    await asyncio.sleep(0)
    assert not new.done() and runner.active
    body.release.set()
    await new
    assert new_task.done() and body.runs == 2
    assert runner._task is None


async def test_cancelling_the_runner_settles_its_waiters() -> None:
    body = _Body()
    runner = _runner(body)
    runner.wake()
    waiter = _waiter(runner)
    task = runner._task
    assert task is not None
    task.cancel()
    await waiter  # settled, not cancelled: the body's failure for a cancelled run is None
    assert task.cancelled()


async def test_a_request_drives_in_its_own_task_and_others_wait_for_it() -> None:
    body = _Body()
    runner = _runner(body)

    async def request() -> str:
        await runner.drive_here()
        return "answered"

    driver = asyncio.ensure_future(request())
    await asyncio.sleep(0)
    assert body.tasks == [driver] and runner.active
    runner.wake()  # a signal meanwhile starts no second runner
    other = runner.drive_here()  # nor does a second request: it waits
    assert isinstance(other, asyncio.Future) and body.runs == 1
    body.release.set()
    await other
    assert driver.done() and await driver == "answered"
    assert body.runs == 1 and not runner.active and runner.ended() is None


async def test_a_run_driven_here_passes_its_failure_to_its_waiters() -> None:
    body = _Body()
    body.error = _Died()
    runner = _runner(body)

    async def request() -> None:
        await runner.drive_here()

    driver = asyncio.ensure_future(request())
    await asyncio.sleep(0)
    waiter = _waiter(runner)
    body.release.set()
    for ended in (driver, waiter):
        with pytest.raises(_Died):
            await ended
    assert not runner.active


async def test_a_request_that_ends_without_driving_leaves_no_runner() -> None:
    body = _Body()
    runner = _runner(body)

    async def gives_up() -> None:
        run = runner.drive_here()
        assert runner.active
        run.close()  # type: ignore[attr-defined]

    await asyncio.ensure_future(gives_up())
    assert not runner.active
    runner.wake()  # the next signal starts a runner
    assert runner.active and body.runs == 0
    body.release.set()
    ended = _waiter(runner)
    await ended
    assert body.runs == 1
