"""The local namespace's background loop looks at the stored alarms again only when
an alarm comes before its next planned look (each look reads every stored alarm),
and still delivers every alarm at its time."""

from __future__ import annotations

import asyncio
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


async def test_a_later_alarm_does_not_wake_the_loop_an_earlier_one_does() -> None:
    Armed.deliveries = []
    clock = VirtualClock()
    async with LocalNamespace(clock=clock, object_class=Armed, idle_eviction=None) as ns:
        start = clock.now()
        await ns.request("far", "POST", "/arm", query={"in": "100"})
        await _settle_loop()
        looks = _Looks(ns)
        assert ns._planned == start + 100
        await ns.request("farther", "POST", "/arm", query={"in": "200"})
        await _settle_loop()
        assert looks.count == 0  # after the planned look: nothing to look at before it
        await ns.request("near", "POST", "/arm", query={"in": "10"})
        await _settle_loop()
        assert looks.count == 1 and ns._planned == start + 10
        await clock.sleep(300)
        assert Armed.deliveries == [("near", start + 10), ("far", start + 100), ("farther", start + 200)]


async def test_a_removed_alarm_does_not_wake_the_loop() -> None:
    Armed.deliveries = []
    clock = VirtualClock()
    async with LocalNamespace(clock=clock, object_class=Armed, idle_eviction=None) as ns:
        start = clock.now()
        await ns.request("a", "POST", "/arm", query={"in": "50"})
        await ns.request("b", "POST", "/arm", query={"in": "60"})
        await _settle_loop()
        looks = _Looks(ns)
        ns.backend.commit("a", {}, (), None)
        ns._alarm_recorded("a", None)  # as a commit through the object's storage does
        await _settle_loop()
        assert looks.count == 0
        # The planned look finds nothing due and plans the next one.
        await clock.sleep(100)
        assert Armed.deliveries == [("b", start + 60)]
