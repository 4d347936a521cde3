"""The shared outbox delivery (``engine._outbox.Delivery``) on its own, under a toy
outbox over dict storage: the mail and history outboxes are tested end to end in
tests/test_mail.py and tests/test_history_projection.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import pytest

from workkit_workflow.engine._outbox import MAX_BACKOFF, Delivery
from workkit_workflow.engine._ports import KEEP_ALARM
from workkit_workflow.local import VirtualClock


class _Storage:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.alarm: float | None = None

    async def list(self, *, prefix: str | None = None, limit: int | None = None, **_: Any) -> dict[str, str]:
        keys = sorted(k for k in self.data if k.startswith(prefix or ""))[:limit]
        return {k: self.data[k] for k in keys}

    async def commit(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> None:
        self.data.update(puts)
        for key in deletes:
            self.data.pop(key, None)

    async def get_alarm(self) -> float | None:
        return self.alarm

    async def set_alarm(self, at: float | None) -> None:
        self.alarm = at


class _Core:
    execution_id = "x-1"
    workflow_name = "toy"

    def __init__(self, *, auto_advance: bool = False) -> None:
        self.storage = _Storage()
        self.clock = VirtualClock(auto_advance=auto_advance)

    def fault(self, point: str, **_: Any) -> None:
        pass

    def now(self) -> float:
        return self.clock.now()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro)


class _Toy(Delivery):
    """Delivers one page at a time to ``sent``, or fails while ``down``."""

    def __init__(self, core: _Core) -> None:
        super().__init__(
            core, record_prefix="t:0", batch=2, undelivered=True, log=logging.getLogger("toy"), what="toy"
        )
        self.sent: list[list[str]] = []
        self.down = False
        self.on_page: Any = None

    async def _deliver_page(self, found: dict[str, str]) -> bool:
        if self.down:
            await self._back_off("toy delivery failed (%d pending)", len(found))
            return False
        if self.on_page is not None:
            await self.on_page()
        self.sent.append(list(found))
        await self.core.storage.commit({}, list(found))
        return True


async def test_pages_go_in_key_order_and_a_commit_during_a_delivery_is_seen() -> None:
    core = _Core()
    core.storage.data = {f"t:00{i}": "{}" for i in range(3)}
    toy = _Toy(core)

    async def commit_meanwhile() -> None:
        toy.on_page = None
        core.storage.data["t:009"] = "{}"
        toy.kick()  # a delivery is running: it must look again, not start a second one

    toy.on_page = commit_meanwhile
    assert await toy.settle() is True
    assert toy.sent == [["t:000", "t:001"], ["t:002", "t:009"]]
    assert toy.undelivered is False
    assert core.storage.data == {}


async def test_failures_back_off_doubling_up_to_the_cap_and_bring_the_alarm_forward(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = _Core()
    core.storage.data = {"t:000": "{}"}
    toy = _Toy(core)
    toy.down = True
    waits = []
    for _ in range(11):
        start = core.now()
        # The retry alarm fired and the execution parked again with its far wake-up.
        core.storage.alarm = start + 86_400.0
        assert await toy.settle() is False
        assert await toy.settle() is False  # backing off: returns at once, sends nothing
        waits.append(toy._retry_at - start)
        assert core.storage.alarm == toy._retry_at
        core.clock.advance(toy._retry_at - start)
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, MAX_BACKOFF, MAX_BACKOFF]
    assert "toy delivery failed (1 pending); next try in 300s" in caplog.text

    toy.down = False
    assert await toy.settle() is True
    assert toy.sent == [["t:000"]] and toy._retry_at == 0.0 and toy._failures == 0


class _SleepOnly:
    """A clock a user wrote: ``now`` and ``sleep`` only, no ``call_later``."""

    def __init__(self) -> None:
        self._inner = VirtualClock()

    def now(self) -> float:
        return self._inner.now()

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@pytest.mark.parametrize("sleep_only", [False, True], ids=["call_later", "sleep only"])
async def test_a_receiver_that_does_not_answer_times_out_on_the_core_clock(sleep_only: bool) -> None:
    core = _Core(auto_advance=True)  # time jumps once every task waits
    if sleep_only:
        core.clock = _SleepOnly()  # type: ignore[assignment]
    toy = _Toy(core)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def hung() -> None:
        await never

    start = core.now()
    with pytest.raises(TimeoutError, match=r"'peer' did not answer within 15s"):
        await toy._within(hung(), 15.0, "'peer'")
    assert core.now() == start + 15.0


async def test_a_receiver_is_awaited_in_the_delivery_task_with_no_task_of_its_own() -> None:
    core = _Core()
    toy = _Toy(core)
    here = asyncio.current_task()
    tasks = len(asyncio.all_tasks())

    async def answer() -> str:
        assert asyncio.current_task() is here and len(asyncio.all_tasks()) == tasks
        await asyncio.sleep(0)
        return "ok"

    assert await toy._within(answer(), 15.0, "'peer'") == "ok"
    # The timer is dropped: the clock has nothing left to wake, and the task's own
    # cancellation count is untouched.
    assert core.clock._next_deadline() is None and here is not None and here.cancelling() == 0
    core.clock.advance(60)
    await asyncio.sleep(0)  # nothing fires late into this task
    assert here.cancelling() == 0


async def test_a_cancel_from_outside_is_not_taken_for_a_timeout() -> None:
    core = _Core(auto_advance=True)
    toy = _Toy(core)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def hung() -> None:
        await never

    delivering = asyncio.ensure_future(toy._within(hung(), 15.0, "'peer'"))
    await asyncio.sleep(0)
    delivering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await delivering
    assert core.clock._next_deadline() is None  # its timer went with it
