"""Engine scenarios that run unchanged on CPython (local runtime) and under real Pyodide
(DurableObjectStorage adapter over JavaScript fakes of Cloudflare's storage).

Each scenario drives ``ExecutionCore`` directly (not the HTTP layer, which needs
pydantic) through a *harness* that gives:

* ``clock``: a :class:`ManualClock` (time moves only when the driver says so);
* ``host(name)``: a fresh object instance over the durable storage of ``name``
  (a new host is a restart: memory is gone, storage is not).

Alarms are delivered by :func:`fire_alarms`, as Cloudflare does: the alarm is
cleared, the clock reaches its time, a fresh instance's ``alarm()`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from workkit_workflow import NonRetryableError, RetryPolicy, Workflow
from workkit_workflow.definitions._workflow import Registry
from workkit_workflow.engine._execution import ExecutionCore
from workkit_workflow.errors import ExecutionNotFoundError

START = 1_767_225_600.0


class ManualClock:
    """Wall time that moves only by ``set``; sleeps wait until cancelled (the phase
    suspends and an alarm takes over)."""

    def __init__(self, start: float = START) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def set(self, instant: float) -> None:
        self._now = max(self._now, instant)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await asyncio.get_running_loop().create_future()


class Crash(BaseException):
    """The process dies at a fault point (nothing in user code can catch it)."""


def crash_after_journal(step: str) -> Any:
    fired: list[str] = []

    def hook(point: str, **info: Any) -> None:
        if point == "after_journal" and info.get("step") == step and not fired:
            fired.append(step)
            raise Crash(f"crash after journaling {step}")

    return hook, fired


def core_of(harness: Any, name: str, registry: Registry, faults: Any = None) -> ExecutionCore:
    return ExecutionCore(harness.host(name), registry=registry, lease=30.0, faults=faults)


async def fire_alarms(harness: Any, name: str, registry: Registry, rounds: int = 20) -> int:
    """Deliver due alarms to fresh instances until none is set; returns how many fired."""
    for fired in range(rounds):
        host = harness.host(name)
        at = await host.storage.get_alarm()
        if at is None:
            return fired
        harness.clock.set(at)
        await host.storage.set_alarm(None)  # cleared as the handler starts
        core = ExecutionCore(host, registry=registry, lease=30.0)
        await asyncio.wait_for(core.alarm(), 10.0)
    raise AssertionError(f"alarms still set after {rounds} deliveries")


def order_flow(calls: Counter[str], *, charge_failures: int = 0, ship_error: Any = None) -> Workflow:
    async def reserve(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        calls["reserve"] += 1
        return {"reservation": f"res-{input['order_id']}", "key": ctx.idempotency_key}

    async def charge(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        calls["charge"] += 1
        if calls["charge"] <= charge_failures:
            raise ConnectionError(f"card network timeout #{calls['charge']}")
        return {"tx": f"tx-{input['order_id']}", "amount": 2.0, "reservation": prev["reservation"]}

    def ship(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        calls["ship"] += 1
        if ship_error is not None:
            raise ship_error
        return {"tracking": f"trk-{input['order_id']}", "tx": prev["tx"], "amount": prev["amount"]}

    async def undo(ctx: Any) -> None:
        calls["compensate"] += 1
        if "charge-card" in ctx.step_outputs:
            await ctx.step("refund", lambda: calls.update(["refund"]) or {"refunded": True})
        if "reserve-inventory" in ctx.step_outputs:
            await ctx.step("release", lambda: calls.update(["release"]) or {"released": True})

    return (
        Workflow("order", retry=RetryPolicy(max_attempts=3, initial_delay=5.0, jitter=0.0), register=False)
        .step("reserve-inventory", reserve)
        .step("charge-card", charge, idempotency_key=lambda input, ctx: f"charge:{input['order_id']}")
        .step("ship", ship)
        .on_failure(undo)
    )


def registry_of(*flows: Workflow) -> Registry:
    registry = Registry()
    for flow in flows:
        registry.register(flow)
    return registry


async def scenario_linear_replay(harness: Any) -> None:
    calls: Counter[str] = Counter()
    reg = registry_of(order_flow(calls))
    view, created = await core_of(harness, "lin", reg).execute(
        workflow="order", input={"order_id": "o-1"}, execution_id="lin", wait=True
    )
    assert created and view["status"] == "completed", view
    # Restart: a new instance reads everything back from storage.
    core = core_of(harness, "lin", reg)
    result = await core.result()
    assert result["ok"] and result["value"] == {"tracking": "trk-o-1", "tx": "tx-o-1", "amount": 2}, result
    journal = await core.journal()
    assert [e["name"] for e in journal] == ["reserve-inventory", "charge-card", "ship"], journal
    assert all(e["status"] == "completed" and e["attempt"] == 1 for e in journal)
    key = journal[0]["output"]["key"]
    assert isinstance(key, str) and key, journal[0]
    # Running it again is idempotent: nothing runs twice.
    _, again = await core.execute(workflow="order", input={"order_id": "o-1"}, execution_id="lin", wait=True)
    assert not again
    assert calls == Counter(reserve=1, charge=1, ship=1), calls
    assert await harness.host("lin").storage.get_alarm() is None


async def scenario_crash_and_resume(harness: Any) -> None:
    calls: Counter[str] = Counter()
    reg = registry_of(order_flow(calls))
    hook, fired = crash_after_journal("charge-card")
    with contextlib.suppress(Crash):
        await core_of(harness, "crash", reg, faults=hook).execute(
            workflow="order", input={"order_id": "o-2"}, execution_id="crash", wait=True
        )
    assert fired == ["charge-card"]
    # The lease alarm is what brings the execution back after the crash.
    assert await harness.host("crash").storage.get_alarm() is not None
    assert await fire_alarms(harness, "crash", reg) >= 1
    core = core_of(harness, "crash", reg)
    assert (await core.status())["status"] == "completed"
    assert calls == Counter(reserve=1, charge=1, ship=1), calls


async def scenario_retries_via_alarm(harness: Any) -> None:
    calls: Counter[str] = Counter()
    reg = registry_of(order_flow(calls, charge_failures=2))
    t0 = harness.clock.now()
    view, _ = await core_of(harness, "retry", reg).execute(
        workflow="order", input={"order_id": "o-3"}, execution_id="retry", wait=True
    )
    assert view["status"] in ("sleeping", "running"), view
    alarm = await harness.host("retry").storage.get_alarm()
    assert alarm is not None and alarm >= t0 + 5.0 - 0.001, (alarm, t0)
    assert await fire_alarms(harness, "retry", reg) >= 2
    core = core_of(harness, "retry", reg)
    assert (await core.status())["status"] == "completed"
    charge = next(e for e in await core.journal() if e["name"] == "charge-card")
    assert charge["attempt"] == 3 and len(charge["errors"]) == 2, charge
    assert calls == Counter(reserve=1, charge=3, ship=1), calls


async def scenario_non_retryable(harness: Any) -> None:
    calls: Counter[str] = Counter()
    flow = Workflow("strict", register=False).step(
        "validate", lambda input, prev, ctx: (_ for _ in ()).throw(NonRetryableError("bad address"))
    )
    reg = registry_of(flow)
    view, _ = await core_of(harness, "nonretry", reg).execute(
        workflow="strict", input=None, execution_id="nonretry", wait=True
    )
    assert view["status"] == "failed" and view["failed_step"] == "validate", view
    assert view["error"]["code"] == "non_retryable" and view["step_attempt"] == 1, view
    assert await harness.host("nonretry").storage.get_alarm() is None
    assert not calls


async def scenario_compensation(harness: Any) -> None:
    calls: Counter[str] = Counter()
    reg = registry_of(order_flow(calls, ship_error=NonRetryableError("carrier refused")))
    await core_of(harness, "comp", reg).execute(
        workflow="order", input={"order_id": "o-4"}, execution_id="comp", wait=True
    )
    await fire_alarms(harness, "comp", reg)
    core = core_of(harness, "comp", reg)
    view = await core.status()
    assert view["status"] == "failed" and view["failed_step"] == "ship", view
    assert view["compensation"]["status"] == "completed", view
    journal = await core.journal()
    comp = [e["name"] for e in journal if e["phase"] == "compensation"]
    assert comp == ["refund", "release"], journal
    assert calls == Counter(reserve=1, charge=1, ship=1, compensate=1, refund=1, release=1), calls


def nap_flow(calls: Counter[str]) -> Workflow:
    async def body(ctx: Any, input: Any) -> Any:
        await ctx.step("before", lambda: calls.update(["before"]) or 1)
        await ctx.sleep("nap", 3600)
        return await ctx.step("after", lambda: calls.update(["after"]) or 2)

    return Workflow("nap", body, register=False)


async def scenario_sleep(harness: Any) -> None:
    calls: Counter[str] = Counter()
    reg = registry_of(nap_flow(calls))
    t0 = harness.clock.now()
    view, _ = await core_of(harness, "nap", reg).execute(
        workflow="nap", input=None, execution_id="nap", wait=True
    )
    assert view["status"] == "sleeping" and abs(view["wake_at"] - (t0 + 3600)) < 0.01, view
    assert abs(await harness.host("nap").storage.get_alarm() - (t0 + 3600)) < 0.01
    assert await fire_alarms(harness, "nap", reg) == 1
    result = await core_of(harness, "nap", reg).result()
    assert result["ok"] and result["value"] == 2, result
    assert calls == Counter(before=1, after=1), calls


def approval_flow(calls: Counter[str]) -> Workflow:
    async def body(ctx: Any, input: Any) -> Any:
        await ctx.step("quote", lambda: calls.update(["quote"]) or {"price": 10})
        decision = await ctx.wait_for_event("approval", "approved", timeout=86400)
        return await ctx.step("ship", lambda: calls.update(["ship"]) or {"by": decision["by"]})

    return Workflow("approval", body, register=False)


async def scenario_wait_for_event(harness: Any) -> None:
    calls: Counter[str] = Counter()
    reg = registry_of(approval_flow(calls))
    view, _ = await core_of(harness, "wait", reg).execute(
        workflow="approval", input=None, execution_id="wait", wait=True
    )
    assert view["status"] == "waiting" and view["waiting_for"] == ["approved"], view
    # The wait's timeout is the only wake-up: an alarm a day ahead.
    alarm = await harness.host("wait").storage.get_alarm()
    assert alarm is not None and alarm > harness.clock.now() + 86000
    core = core_of(harness, "wait", reg)  # a restart while waiting
    outcome = await core.send_event("approved", {"by": "ana"}, "ev-1")
    assert outcome["accepted"]
    duplicate = await core.send_event("approved", {"by": "bob"}, "ev-1")
    assert duplicate["duplicate"]
    result = await asyncio.wait_for(core.result(wait=30.0), 10.0)
    assert result["ok"] and result["value"] == {"by": "ana"}, result
    assert calls == Counter(quote=1, ship=1), calls


def fan_out_flow(calls: Counter[str]) -> Workflow:
    async def square(i: int) -> int:
        calls[f"square-{i}"] += 1
        await asyncio.sleep(0)
        return i * i

    async def body(ctx: Any, input: Any) -> Any:
        squares = await asyncio.gather(*(ctx.step(f"square-{i}", square, i) for i in range(input["n"])))
        return sum(squares)

    return Workflow("fan-out", body, register=False)


async def scenario_fan_out_crash_mid_gather(harness: Any) -> None:
    calls: Counter[str] = Counter()
    reg = registry_of(fan_out_flow(calls))
    fired: list[str] = []

    def hook(point: str, **info: Any) -> None:
        # Die as branch 3 starts: branches 0-2 were started (and may be journaled).
        if point == "before_step" and info.get("step") == "square-3" and not fired:
            fired.append("square-3")
            raise Crash("crash inside the gather")

    with contextlib.suppress(Crash):
        await core_of(harness, "fan", reg, faults=hook).execute(
            workflow="fan-out", input={"n": 5}, execution_id="fan", wait=True
        )
    assert fired == ["square-3"]
    assert await fire_alarms(harness, "fan", reg) >= 1
    core = core_of(harness, "fan", reg)
    result = await core.result()
    assert result["ok"] and result["value"] == sum(i * i for i in range(5)), result
    journal = await core.journal()
    assert sorted(e["name"] for e in journal) == [f"square-{i}" for i in range(5)], journal
    # The crashed branch's handler never ran before the crash; no branch ran more than twice.
    assert calls["square-3"] == 1, calls
    assert all(n <= 2 for n in calls.values()), calls


async def scenario_replay_mismatch(harness: Any) -> None:
    calls: Counter[str] = Counter()
    order = ["a", "b"]

    async def body(ctx: Any, input: Any) -> Any:
        for name in order:
            await ctx.step(name, lambda n=name: calls.update([n]) or n)
            await ctx.sleep(f"after-{name}", 60)
        return "done"

    reg = registry_of(Workflow("evolving", body, register=False))
    view, _ = await core_of(harness, "mm", reg).execute(
        workflow="evolving", input=None, execution_id="mm", wait=True
    )
    assert view["status"] == "sleeping", view
    order.reverse()  # a deploy reorders the steps under the running execution
    await fire_alarms(harness, "mm", reg)
    result = await core_of(harness, "mm", reg).result()
    assert not result["ok"] and result["error"]["code"] == "replay_mismatch", result
    assert calls == Counter(a=1), calls


def undo_flow(calls: Counter[str]) -> Workflow:
    def undo(name: str) -> Any:
        return lambda info: (
            calls.update([f"undo-{name}"]) or {"undone": info.step, "key": info.idempotency_key}
        )

    return (
        Workflow("undo", retry=RetryPolicy(max_attempts=3, initial_delay=1.0, jitter=0.0), register=False)
        .step("reserve", lambda i, p, c: calls.update(["reserve"]) or {"r": 1}, undo=undo("reserve"))
        .step("charge", lambda i, p, c: calls.update(["charge"]) or {"tx": 2}, undo=undo("charge"))
        .step("ship", lambda i, p, c: (_ for _ in ()).throw(NonRetryableError("carrier refused")))
    )


async def scenario_undo_handlers_with_a_crash_inside_one(harness: Any) -> None:
    calls: Counter[str] = Counter()
    reg = registry_of(undo_flow(calls))
    hook, fired = crash_after_journal("undo:charge")
    with contextlib.suppress(Crash):
        await core_of(harness, "undo", reg, faults=hook).execute(
            workflow="undo", input=None, execution_id="undo", wait=True
        )
    assert fired == ["undo:charge"]
    await fire_alarms(harness, "undo", reg)
    core = core_of(harness, "undo", reg)
    view = await core.status()
    assert view["status"] == "failed" and view["compensation"]["status"] == "completed", view
    undos = [(u["step"], u["status"]) for u in view["compensation"]["undos"]]
    assert undos == [("charge", "completed"), ("reserve", "completed")], view
    journal = await core.journal()
    assert [e["name"] for e in journal if e["phase"] == "compensation"] == ["undo:charge", "undo:reserve"]
    assert calls == Counter({"reserve": 1, "charge": 1, "undo-charge": 1, "undo-reserve": 1}), calls


def state_flow() -> Workflow:
    async def body(ctx: Any, input: Any) -> Any:
        await ctx.set_state("progress", {"done": 1})
        await ctx.sleep("nap", 60)
        await ctx.set_state("progress", {"done": 2})
        return "ok"

    return Workflow("state", body, register=False)


async def scenario_live_state(harness: Any) -> None:
    reg = registry_of(state_flow())
    view, _ = await core_of(harness, "live", reg).execute(
        workflow="state", input=None, execution_id="live", wait=True
    )
    assert view["status"] == "sleeping", view
    # A fresh instance (a restart) reads what the first one wrote.
    assert await core_of(harness, "live", reg).live_state() == {"state": {"progress": {"done": 1}}}
    await fire_alarms(harness, "live", reg)
    core = core_of(harness, "live", reg)
    assert (await core.result())["value"] == "ok"
    assert await core.live_state("progress") == {"key": "progress", "found": True, "value": {"done": 2}}
    assert (await core.live_state("nope"))["found"] is False


async def scenario_blocked_until_its_version_returns(harness: Any) -> None:
    """versions: without its version the execution waits blocked, its alarm set (through the
    adapter), and carries on when the version is registered again."""
    calls: Counter[str] = Counter()
    v1 = nap_flow(calls)
    v2 = Workflow("nap", v1._fn, version="2", register=False)
    reg = registry_of(v1, v2)
    view, _ = await core_of(harness, "blk", reg).execute(
        workflow="nap", input=None, execution_id="blk", wait=True, version="1"
    )
    assert view["status"] == "sleeping" and view["version"] == "1", view
    reg.unregister("nap", "1")  # a deploy without version 1
    host = harness.host("blk")
    harness.clock.set(await host.storage.get_alarm())
    await host.storage.set_alarm(None)  # cleared as the handler starts
    await asyncio.wait_for(ExecutionCore(host, registry=reg, lease=30.0).alarm(), 10.0)
    view = await core_of(harness, "blk", reg).status()
    blocked = view["blocked"]
    assert view["status"] == "blocked" and blocked["reason"] == "version_unavailable", view
    assert blocked["deployed"] == ["2"] and calls == Counter(before=1), view
    assert abs(await harness.host("blk").storage.get_alarm() - blocked["retry_at"]) < 0.01
    reg.register(v1)  # the next deploy brings it back
    assert await fire_alarms(harness, "blk", reg) == 1
    result = await core_of(harness, "blk", reg).result()
    assert result["ok"] and result["value"] == 2 and result["version"] == "1", result
    assert calls == Counter(before=1, after=1), calls


class Peers:
    """The namespace the objects of a scenario reach each other through (``host.peers``).

    Each request goes to a fresh instance of the named object (as after an eviction) and
    to the operations the execution object's routes call: the HTTP layer validates with
    pydantic, which these runs do without. Instances are kept so their tasks live on."""

    def __init__(self, harness: Any, registry: Registry) -> None:
        self.harness = harness
        self.clock = harness.clock
        self.registry = registry
        self.cores: list[ExecutionCore] = []

    def host(self, name: str) -> Any:
        host = self.harness.host(name)
        host.peers = self
        return host

    async def request(self, name: str, method: str, path: str, body: Any = None, query: Any = None) -> Any:
        from workkit_workflow.cloudflare._object import error_response
        from workkit_workflow.engine._ports import WireResponse
        from workkit_workflow.errors import WorkflowError

        core = ExecutionCore(self.host(name), registry=self.registry, lease=30.0)
        self.cores.append(core)
        try:
            if path == "/execute":
                view, created = await core.execute(
                    workflow=body["workflow"],
                    input=body.get("input"),
                    execution_id=body["execution_id"],
                    wait=False,
                    parent=body.get("parent"),
                )
                return WireResponse(201 if created else 200, {"execution": view, "created": created})
            if path == "/event":
                outcome = await core.send_event(body["type"], body.get("payload"), body.get("id"))
                return WireResponse(202 if outcome["accepted"] else 200, outcome)
            view, changed = await core.cancel(body.get("reason"))
            return WireResponse(200, {"execution": view, "cancelled": changed})
        except WorkflowError as exc:
            return error_response(exc)


async def _settle() -> None:
    for _ in range(200):
        await asyncio.sleep(0)


async def scenario_child_workflows_across_objects(harness: Any) -> None:
    """Children: each start and outcome crosses objects through the mail outbox, and every
    delivery meets a fresh instance; the children sleep, so alarms drive them to their end."""
    calls: Counter[str] = Counter()

    async def pack(ctx: Any, n: Any) -> Any:
        packed = await ctx.step(f"pack-{n}", lambda: calls.update([f"pack-{n}"]) or n * 10)
        await ctx.sleep("dry", 60)
        return packed

    async def family(ctx: Any, input: Any) -> Any:
        return await asyncio.gather(*(ctx.child("kid", n, name=f"kid-{n}") for n in range(2)))

    reg = registry_of(Workflow("kid", pack, register=False), Workflow("family", family, register=False))
    peers = Peers(harness, reg)
    view, _ = await ExecutionCore(peers.host("fam"), registry=reg, lease=30.0).execute(
        workflow="family", input=None, execution_id="fam", wait=True
    )
    assert view["status"] == "waiting" and len(view["waiting_for"]) == 2, view
    await _settle()  # the start messages are delivered
    for n in range(2):
        await fire_alarms(peers, f"fam.{n}-kid-{n}", reg)
        await _settle()  # the child's outcome reaches the parent
    await fire_alarms(peers, "fam", reg)
    result = await ExecutionCore(peers.host("fam"), registry=reg, lease=30.0).result()
    assert result["ok"] and result["value"] == [0, 10], result
    assert [c["status"] for c in result["children"]] == ["completed", "completed"], result
    child = await ExecutionCore(peers.host("fam.1-kid-1"), registry=reg, lease=30.0).status()
    assert child["parent"] == {"execution_id": "fam", "workflow": "family", "op": 1}, child
    assert calls == Counter({"pack-0": 1, "pack-1": 1}), calls


async def scenario_retention_deletes_storage(harness: Any) -> None:
    """The settle write sets the retention alarm; when it fires, every key and the alarm go."""
    flow = Workflow("kept", lambda ctx, input: ctx.step("a", lambda: 1), register=False, retention=60)
    reg = registry_of(flow)
    t0 = harness.clock.now()
    view, _ = await core_of(harness, "kept", reg).execute(
        workflow="kept", input=None, execution_id="kept", wait=True
    )
    assert view["status"] == "completed" and abs(view["delete_at"] - (t0 + 60)) < 0.01, view
    assert abs(await harness.host("kept").storage.get_alarm() - (t0 + 60)) < 0.01
    assert await harness.host("kept").storage.list()
    assert await fire_alarms(harness, "kept", reg) == 1
    storage = harness.host("kept").storage
    assert await storage.list() == {} and await storage.get_alarm() is None
    try:
        await core_of(harness, "kept", reg).status()
    except ExecutionNotFoundError:
        pass
    else:
        raise AssertionError("a deleted execution still answers its status")


async def scenario_delete_many_keys(harness: Any) -> None:
    """``delete`` of an execution with more keys than one storage delete call takes (128)."""

    async def body(ctx: Any, input: Any) -> int:
        for n in range(140):
            await ctx.step(f"s{n}", lambda n=n: n)
        return 140

    reg = registry_of(Workflow("many", body, register=False))
    core = core_of(harness, "many", reg)
    view, _ = await core.execute(workflow="many", input=None, execution_id="many", wait=True)
    assert view["status"] == "completed", view
    assert len(await harness.host("many").storage.list()) > 140
    assert (await core.delete())["deleted"] is True
    storage = harness.host("many").storage
    assert await storage.list() == {} and await storage.get_alarm() is None


async def scenario_pause_during_sleep(harness: Any) -> None:
    """Paused, the execution has no alarm; its sleep comes due; continuing makes it due now."""
    calls: Counter[str] = Counter()
    reg = registry_of(nap_flow(calls))
    core = core_of(harness, "paused", reg)
    await core.execute(workflow="nap", input=None, execution_id="paused", wait=True)
    view, changed = await core.pause()
    assert changed and view["status"] == "paused", view
    await fire_alarms(harness, "paused", reg)  # the pause's own wake-up parks it, with no alarm
    assert await harness.host("paused").storage.get_alarm() is None
    harness.clock.set(harness.clock.now() + 7200)
    core = core_of(harness, "paused", reg)
    assert (await core.status())["status"] == "paused"
    view, changed = await core.unpause()
    assert changed, view
    result = await asyncio.wait_for(core.result(wait=30.0), 10.0)
    assert result["ok"] and result["value"] == 2, result
    assert calls == Counter(before=1, after=1), calls


SCENARIOS = [
    scenario_linear_replay,
    scenario_crash_and_resume,
    scenario_retries_via_alarm,
    scenario_non_retryable,
    scenario_compensation,
    scenario_sleep,
    scenario_wait_for_event,
    scenario_fan_out_crash_mid_gather,
    scenario_replay_mismatch,
    scenario_undo_handlers_with_a_crash_inside_one,
    scenario_live_state,
    scenario_blocked_until_its_version_returns,
    scenario_child_workflows_across_objects,
    scenario_retention_deletes_storage,
    scenario_delete_many_keys,
    scenario_pause_during_sleep,
]
