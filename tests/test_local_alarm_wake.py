"""The local namespace's background loop looks at the stored alarms (each look reads
every one of them) only when one is due: an alarm set before its next planned look
moves that look earlier, with no look now, and every alarm is still delivered at its
time, on a virtual clock, on the real one and on a clock without ``call_later``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from workkit_workflow.engine._ports import WireRequest, WireResponse
from workkit_workflow.local import LocalNamespace, VirtualClock


class Armed:
    """An object that sets its alarm ``in`` seconds ahead and records deliveries."""

    deliveries: list[tuple[str, float]] = []

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx

    async def fetch(self, request: WireRequest) -> WireResponse:
        delay = float(request.query["in"])
        await self.ctx.storage.set_alarm(self.ctx.clock.now() + delay)
        return WireResponse(200, {})

    async def alarm(self, info: dict[str, Any]) -> None:
        Armed.deliveries.append((self.ctx.object_name, self.ctx.clock.now()))


class _Looks:
    """Counts the loop's looks at the stored alarms."""

    def __init__(self, ns: LocalNamespace) -> None:
        self.count = 0
        look = ns._deliver_due

        def counted(now: float) -> tuple[bool, float | None]:
            self.count += 1
            return look(now)

        ns._deliver_due = counted  # type: ignore[method-assign]


async def _settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@asynccontextmanager
async def _armed(clock: Any = None) -> AsyncIterator[LocalNamespace]:
    """A namespace of :class:`Armed` objects (on ``clock``, else the real one), no delivery yet."""
    Armed.deliveries = []
    async with LocalNamespace(clock=clock, object_class=Armed, idle_eviction=None) as ns:
        yield ns


async def _arm(ns: LocalNamespace, name: str, seconds: str) -> None:
    """Set the alarm of ``name`` ``seconds`` ahead, and let the loop take what it does of it."""
    await ns.request(name, "POST", "/arm", query={"in": seconds})
    await _settle_loop()


async def test_an_alarm_moves_the_planned_look_earlier_without_a_look_now() -> None:
    clock = VirtualClock()
    async with _armed(clock) as ns:
        start = clock.now()
        await _arm(ns, "far", "100")
        looks = _Looks(ns)
        assert ns._planned == start + 100
        await _arm(ns, "farther", "200")
        assert looks.count == 0  # after the planned look: nothing to look at before it
        assert ns._planned == start + 100  # and the planned look stays where it was
        await _arm(ns, "near", "10")
        assert looks.count == 0 and ns._planned == start + 10  # moved, not looked
        await clock.sleep(300)
        assert Armed.deliveries == [("near", start + 10), ("far", start + 100), ("farther", start + 200)]
        # A look at each alarm's time, and one after each delivery (the handler's end).
        assert looks.count <= 6


async def test_a_removed_alarm_does_not_wake_the_loop() -> None:
    clock = VirtualClock()
    async with _armed(clock) as ns:
        start = clock.now()
        await ns.request("a", "POST", "/arm", query={"in": "50"})
        await _arm(ns, "b", "60")
        looks = _Looks(ns)
        ns.backend.commit("a", {}, (), None)
        ns._alarm_recorded("a", None)  # as a commit through the object's storage does
        await _settle_loop()
        assert looks.count == 0
        # The planned look finds nothing due and plans the next one.
        await clock.sleep(100)
        assert Armed.deliveries == [("b", start + 60)]


async def test_an_alarm_due_now_is_looked_at_now() -> None:
    clock = VirtualClock()
    async with _armed(clock) as ns:
        start = clock.now()
        await _arm(ns, "later", "100")
        looks = _Looks(ns)
        await _arm(ns, "now", "0")
        assert looks.count >= 1 and Armed.deliveries == [("now", start)]
        assert ns._planned == start + 100


async def test_the_real_clock_delivers_an_earlier_alarm_at_its_time() -> None:
    async with _armed() as ns:
        await _arm(ns, "far", "3600")
        looks = _Looks(ns)
        await _arm(ns, "near", "0.05")
        assert looks.count == 0
        for _ in range(200):
            if Armed.deliveries:
                break
            await asyncio.sleep(0.01)
        assert [name for name, _ in Armed.deliveries] == ["near"]


class _SleepOnlyClock:
    """A clock a user wrote: ``now`` and ``sleep``, no ``call_later``."""

    def __init__(self, inner: VirtualClock) -> None:
        self.inner = inner

    def now(self) -> float:
        return self.inner.now()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def test_a_clock_without_call_later_gets_its_looks_from_a_sleeping_task() -> None:
    inner = VirtualClock()
    clock = _SleepOnlyClock(inner)
    async with _armed(clock) as ns:
        start = clock.now()
        await ns.request("far", "POST", "/arm", query={"in": "100"})
        await _arm(ns, "near", "10")
        assert ns._planned == start + 10
        await inner.sleep(200)
        assert Armed.deliveries == [("near", start + 10), ("far", start + 100)]


async def test_closing_drops_the_planned_look() -> None:
    clock = VirtualClock()
    ns = LocalNamespace(clock=clock, object_class=Armed, idle_eviction=None)
    await _arm(ns, "far", "100")
    look = ns._look
    assert look is not None
    await ns.close()
    assert ns._look is None and ns._planned is None
    assert look.cancelled()
