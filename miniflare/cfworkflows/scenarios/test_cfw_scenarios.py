"""The Durable Object backend's scenarios, on the Cloudflare Workflows backend.

Runs under real Pyodide (miniflare/run_pyodide.mjs + pyo_test.py): the entry
point made by ``Workflow.as_cloudflare_workflow()`` runs against the JavaScript
fake engine (``cf_engine``, miniflare/cfworkflows/engine.mjs) through either the
stand-in ``workers`` SDK (``../standin``, which can also act as an SDK older than
1.9.0) or the real workers-runtime-sdk (with ``../sdk-stubs`` for the two modules
workerd provides), and the client drives the fake binding.
"""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import cf_engine
from js import Object
from pyodide.ffi import create_proxy, to_js

try:  # the stand-in SDK next to this file; absent when the real workers-runtime-sdk is mounted
    from workers import SDK
except ImportError:
    SDK = None

from workkit_workflow import NonRetryableError, RetryPolicy, Workflow, create_durable_workflow, workflow
from workkit_workflow.errors import InvalidRequestError, SerializationError, StepFailedError

_n = [0]


def unique(name):
    _n[0] += 1
    return f"{name}-{_n[0]}"


class Env:
    """One fake engine running one definition, and the client over its binding."""

    def __init__(self, flow, *, native=True, error_as_string=False, subclass=False):
        # The stand-in SDK emulates an old SDK (no native NonRetryableError) and the
        # adapter detects it; the real SDK (1.9.5) has it, so the fallback is forced.
        native_retries = None
        if SDK is not None:
            SDK.native_non_retryable = native
        elif not native:
            native_retries = False
        self.flow = flow
        if subclass:
            # The class-statement form an entry module uses.
            class Entry(flow.as_cloudflare_workflow(native_retries=native_retries)):
                pass

            self.entry = Entry
        else:
            self.entry = flow.as_cloudflare_workflow("Entry", native_retries=native_retries)

        async def runner(event, step):
            return await self.entry(None, None).run(event, step)

        self._runner = create_proxy(runner)
        options = {"name": flow.name, "errorAsString": error_as_string}
        self.engine = cf_engine.createEngine(self._runner, to_js(options, dict_converter=Object.fromEntries))
        binding = self.engine.binding
        if SDK is None:
            # As a Worker sees it: env.ORDER_FLOW through the real SDK's env wrapper
            # (a WorkflowImpl becomes its _WorkflowBindingWrapper).
            from workers.rpc import _EnvWrapper

            js_env = to_js({"ORDER_FLOW": binding}, dict_converter=Object.fromEntries)
            binding = _EnvWrapper(js_env).ORDER_FLOW
            assert type(binding).__name__ == "_WorkflowBindingWrapper", type(binding)
        self.client = create_durable_workflow(binding)

    def state(self, execution_id):
        return json.loads(self.engine.json(execution_id))

    async def settle(self, execution_id):
        await self.engine.settled(execution_id)


class Effects:
    def __init__(self):
        self.calls = {}
        self.keys = []
        self.attempts = []

    def call(self, name, ctx=None):
        self.calls[name] = self.calls.get(name, 0) + 1
        if ctx is not None:
            self.keys.append(ctx.idempotency_key)
            self.attempts.append((name, ctx.attempt))
        return self.calls[name]


def order_flow(effects, *, charge_failures=0, ship_error=None, compensate=True, retry=None):
    async def reserve(input, prev, ctx):
        effects.call("reserve", ctx)
        return {"reservation_id": f"res-{input['order_id']}"}

    async def charge(input, prev, ctx):
        n = effects.call("charge", ctx)
        if n <= charge_failures:
            raise ConnectionError(f"card network timeout #{n}")
        return {"transaction_id": f"tx-{input['order_id']}", "reservation": prev["reservation_id"]}

    def ship(input, prev, ctx):
        effects.call("ship", ctx)
        if ship_error is not None:
            raise ship_error
        return {"tracking": f"trk-{input['order_id']}", "transaction": prev["transaction_id"]}

    async def undo(ctx):
        effects.call("compensate")
        effects.compensation = {
            "failed_step": ctx.failed_step,
            "error": ctx.error,
            "outputs": ctx.step_outputs,
        }
        if "charge-card" in ctx.step_outputs:
            await ctx.step("refund", lambda: effects.call("refund") and {"refunded": True})
        if "reserve-inventory" in ctx.step_outputs:
            await ctx.step("release", lambda: effects.call("release") and {"released": True})

    flow = (
        Workflow(unique("order-flow"), retry=retry or RetryPolicy(max_attempts=3, initial_delay=1.0))
        .step("reserve-inventory", reserve)
        .step("charge-card", charge, idempotency_key=lambda input, ctx: f"charge:{input['order_id']}")
        .step("ship", ship, retry=RetryPolicy(max_attempts=5, initial_delay=2.0))
    )
    if compensate:
        flow.on_failure(undo)
    return flow


def keys_of(state, event):
    return [e["key"] for e in state["log"] if e["event"] == event]


# -- linear flow -------------------------------------------------------------------


def test_the_intended_sdk_is_in_use():
    import workers

    real = SDK is None
    assert real == (cf_engine.flags.sdk == "real"), (workers.__file__, cf_engine.flags.sdk)
    if real:
        import _cloudflare_compat_flags

        assert hasattr(workers, "Response") and hasattr(workers, "python_from_rpc")
        assert _cloudflare_compat_flags.python_workflows_implicit_dependencies == cf_engine.flags.implicit


async def test_linear_flow_completes_each_step_once():
    effects = Effects()
    env = Env(order_flow(effects), subclass=True)
    handle = await env.client.run(env.flow, {"order_id": "o-1"}, execution_id="o-1")
    assert handle.created is True
    result = await handle.result(timeout=10)
    assert result.ok, result.error
    assert result.value == {"tracking": "trk-o-1", "transaction": "tx-o-1"}
    assert effects.calls == {"reserve": 1, "charge": 1, "ship": 1}
    assert await handle.status() == "completed"
    state = env.state("o-1")
    assert keys_of(state, "success") == ["reserve-inventory-1", "charge-card-1", "ship-1"]
    assert state["invalidConfigs"] == []
    # Idempotency keys: the user's for charge, execution id + step for the others.
    assert effects.keys == ["o-1:reserve-inventory", "charge:o-1", "o-1:ship"]
    assert await handle.journal() == []
    meta = await handle.meta()
    assert meta["backend"] == "cf-workflows" and meta["engine_status"] == "complete"


async def test_duplicate_start_is_idempotent():
    effects = Effects()
    env = Env(order_flow(effects))
    first = await env.client.run(env.flow, {"order_id": "o-2"}, execution_id="dup-1")
    await first.result(timeout=10)
    again = await env.client.run(env.flow, {"order_id": "o-2"}, execution_id="dup-1")
    assert again.created is False
    assert env.engine.creates == 1
    assert (await again.result(timeout=1)).ok
    assert effects.calls == {"reserve": 1, "charge": 1, "ship": 1}


# -- retries ------------------------------------------------------------------------


async def test_retries_are_the_engines_with_the_translated_config():
    effects = Effects()
    env = Env(order_flow(effects, charge_failures=2))
    handle = await env.client.run(env.flow, {"order_id": "o-3"}, execution_id="retry-1")
    result = await handle.result(timeout=10)
    assert result.ok, result.error
    assert effects.calls["charge"] == 3
    assert [a for n, a in effects.attempts if n == "charge"] == [1, 2, 3]
    assert len({k for k in effects.keys if k.startswith("charge:")}) == 1  # stable across attempts
    state = env.state("retry-1")
    assert state["configs"]["charge-card-1"]["retries"] == {
        "limit": 2,
        "delay": "1 second",
        "backoff": "exponential",
    }
    assert state["configs"]["ship-1"]["retries"] == {
        "limit": 4,
        "delay": "2 seconds",
        "backoff": "exponential",
    }
    assert [w["ms"] for w in state["retryWaits"]] == [1000, 2000]


async def test_retries_exhausted_fail_and_compensate():
    effects = Effects()
    env = Env(order_flow(effects, charge_failures=10))
    handle = await env.client.run(env.flow, {"order_id": "o-4"}, execution_id="retry-2")
    result = await handle.result(timeout=10)
    assert not result.ok and result.status == "failed"
    assert effects.calls["charge"] == 3
    assert effects.compensation["failed_step"] == "charge-card"
    assert effects.compensation["error"]["code"] == "ConnectionError"
    assert effects.compensation["error"]["attempt"] == 3
    assert effects.calls.get("release") == 1 and "refund" not in effects.calls
    assert "charge-card" in result.error.message


async def test_step_timeouts_are_the_engines():
    effects = Effects()

    async def slow():
        effects.call("slow")
        await asyncio.sleep(0.2)
        return "too late"

    @workflow(unique("timeout"))
    async def timed(ctx, input):
        once_more = RetryPolicy(max_attempts=2, initial_delay=0.0)
        return await ctx.step("slow", slow, timeout="2s", retry=once_more)

    timed.on_failure(lambda ctx: effects.__dict__.update(error=ctx.error))
    env = Env(timed)
    handle = await env.client.run(timed, None, execution_id="timeout-1")
    result = await handle.result(timeout=10)
    assert result.status == "failed"
    state = env.state("timeout-1")
    assert state["configs"]["slow-1"]["timeout"] == "2 seconds"
    assert state["configs"]["slow-1"]["retries"]["limit"] == 1
    assert effects.calls["slow"] == 2
    assert effects.error["attempt"] == 2 and "timed out" in effects.error["message"]


# -- non-retryable ---------------------------------------------------------------------


async def test_non_retryable_reaches_the_engine_as_such():
    effects = Effects()
    env = Env(order_flow(effects, ship_error=NonRetryableError("address rejected by carrier")))
    handle = await env.client.run(env.flow, {"order_id": "o-5"}, execution_id="nr-1")
    result = await handle.result(timeout=10)
    assert result.status == "failed"
    assert effects.calls["ship"] == 1  # max_attempts=5, yet one attempt
    state = env.state("nr-1")
    failed = [e for e in state["log"] if e["event"] == "attempt-failed"]
    assert [(e["key"], e["nonRetryable"]) for e in failed] == [("ship-1", True)]
    assert state["status"] == "errored"
    # Compensation ran as journaled steps, with the completed steps' outputs.
    assert effects.calls["refund"] == 1 and effects.calls["release"] == 1
    assert set(effects.compensation["outputs"]) == {"reserve-inventory", "charge-card"}
    assert effects.compensation["error"]["code"] == "non_retryable"
    assert "compensation: refund-1" in keys_of(state, "success")
    assert "compensation: release-1" in keys_of(state, "success")


class AddressRejected(Exception):
    retryable = False


async def test_any_final_error_is_converted_to_the_sdks_non_retryable():
    effects = Effects()
    env = Env(order_flow(effects, ship_error=AddressRejected("no such street")))
    handle = await env.client.run(env.flow, {"order_id": "o-5b"}, execution_id="nr-1b")
    result = await handle.result(timeout=10)
    assert result.status == "failed"
    assert effects.calls["ship"] == 1
    failed = [e for e in env.state("nr-1b")["log"] if e["event"] == "attempt-failed"]
    assert [(e["key"], e["nonRetryable"], e["message"]) for e in failed] == [
        ("ship-1", True, "no such street")
    ]
    assert effects.compensation["error"]["code"] == "AddressRejected"
    assert effects.compensation["error"]["retryable"] is False


async def test_non_retryable_on_an_old_sdk_falls_back_to_limit_zero():
    effects = Effects()
    env = Env(order_flow(effects, ship_error=NonRetryableError("address rejected")), native=False)
    handle = await env.client.run(env.flow, {"order_id": "o-6"}, execution_id="nr-2")
    result = await handle.result(timeout=10)
    assert result.status == "failed"
    assert effects.calls["ship"] == 1
    state = env.state("nr-2")
    assert all(c["retries"]["limit"] == 0 for k, c in state["configs"].items())
    assert effects.calls["refund"] == 1


async def test_old_sdk_retries_are_driven_with_durable_sleeps():
    effects = Effects()
    env = Env(order_flow(effects, charge_failures=2), native=False)
    handle = await env.client.run(env.flow, {"order_id": "o-7"}, execution_id="nr-3")
    result = await handle.result(timeout=10)
    assert result.ok, result.error
    assert [a for n, a in effects.attempts if n == "charge"] == [1, 2, 3]
    state = env.state("nr-3")
    assert [s["name"] for s in state["sleeps"]] == ["charge-card (retry 1)", "charge-card (retry 2)"]
    assert [s["duration"] for s in state["sleeps"]] == ["1 second", "2 seconds"]
    # A replay runs nothing again.
    before = dict(effects.calls)
    await env.engine.evict("nr-3")
    assert effects.calls == before
    assert env.state("nr-3")["output"] == result.value


# -- sleeps ------------------------------------------------------------------------------


async def test_sleeps_are_strings_or_dates_never_numbers():
    effects = Effects()
    until = datetime.now(UTC) + timedelta(hours=2)

    @workflow(unique("sleepy"))
    async def sleepy(ctx, input):
        await ctx.step("before", effects.call, "before")
        await ctx.sleep("cool-down", "1h")
        await ctx.sleep("short", 0.2)
        await ctx.sleep_until("until", until)
        await ctx.sleep_until("past", datetime.now(UTC) - timedelta(seconds=5))
        return await ctx.step("after", effects.call, "after")

    env = Env(sleepy)
    handle = await env.client.run(sleepy, None, execution_id="sleep-1")
    assert (await handle.result(timeout=10)).value == 1
    sleeps = env.state("sleep-1")["sleeps"]
    assert [(s["name"], s["kind"]) for s in sleeps] == [
        ("cool-down", "sleep"),
        ("short", "sleep"),
        ("until", "sleepUntil"),
    ]
    assert sleeps[0]["duration"] == "3600 seconds" and sleeps[1]["duration"] == "1 second"
    assert abs(sleeps[2]["ms"] - 7_200_000) < 60_000


# -- wait for event / resume ------------------------------------------------------------------


async def test_wait_for_event_and_resume():
    effects = Effects()
    flow = (
        Workflow(unique("approval"))
        .step("quote", lambda i, p, c: effects.call("quote") and {"amount": 10})
        .wait_for_event("decision", "approved", timeout="7d")
        .step("ship", lambda i, p, c: effects.call("ship") and {"approved_by": p["by"]})
    )
    env = Env(flow)
    handle = await env.client.run(flow, {}, execution_id="wait-1")
    for _ in range(100):
        if await handle.status() == "waiting":
            break
        await asyncio.sleep(0.01)
    assert await handle.status() == "waiting"
    assert (await handle.describe())["engine_status"] == "waiting"
    assert await handle.resume("approved", {"by": "ada"})
    result = await handle.result(timeout=10)
    assert result.value == {"approved_by": "ada"}
    assert env.state("wait-1")["waits"] == [
        {"name": "decision", "key": "decision-1", "type": "approved", "timeout": "604800 seconds"}
    ]


async def test_an_event_sent_before_the_wait_is_kept():
    gate = asyncio.Event()

    @workflow(unique("early"))
    async def early(ctx, input):
        await ctx.step("slow", gate.wait)
        return await ctx.wait_for_event("go", "go")

    env = Env(early)
    handle = await env.client.run(early, None, execution_id="early-1")
    await handle.send_event("go", {"n": 1})
    gate.set()
    assert (await handle.result(timeout=10)).value == {"n": 1}


async def test_wait_timeouts_default_or_fail():
    effects = Effects()

    @workflow(unique("timeouts"))
    async def timeouts(ctx, input):
        got = await ctx.wait_for_event("maybe", "nope", timeout="2s", default={"default": True})
        await ctx.step("noted", effects.call, "noted")
        await ctx.wait_for_event("must", "nope", timeout="2s")
        return got

    timeouts.on_failure(lambda ctx: effects.__dict__.update(failure=(ctx.failed_step, ctx.error["code"])))
    env = Env(timeouts)
    handle = await env.client.run(timeouts, None, execution_id="to-1")
    result = await handle.result(timeout=10)
    assert result.status == "failed"
    assert effects.calls == {"noted": 1}
    assert effects.failure == ("must", "wait_timeout")


# -- fan-out ----------------------------------------------------------------------------------------


async def test_fan_out_with_gather_uses_unique_step_names():
    effects = Effects()

    async def work(i):
        effects.call(f"item-{i}")
        await asyncio.sleep(0.001 * (5 - i))
        return i * i

    @workflow(unique("fan-out"))
    async def fan(ctx, input):
        squares = await asyncio.gather(*(ctx.step("square", work, i) for i in range(5)))
        total = await ctx.step("sum", sum, squares)
        return {"squares": squares, "total": total}

    env = Env(fan)
    handle = await env.client.run(fan, None, execution_id="fan-1")
    result = await handle.result(timeout=10)
    assert result.value == {"squares": [0, 1, 4, 9, 16], "total": 30}
    names = sorted(keys_of(env.state("fan-1"), "success"))
    assert names == sorted(["square-1", "square #2-1", "square #3-1", "square #4-1", "square #5-1", "sum-1"])
    assert all(effects.calls[f"item-{i}"] == 1 for i in range(5))
    await env.engine.evict("fan-1")
    assert all(effects.calls[f"item-{i}"] == 1 for i in range(5))
    assert env.state("fan-1")["output"] == result.value


async def test_a_failed_branch_lets_its_siblings_finish_before_compensation():
    effects = Effects()

    async def slow():
        await asyncio.sleep(0.05)
        effects.call("slow")
        return "slow-done"

    def fast():
        effects.call("fast")
        raise NonRetryableError("fast branch failed")

    @workflow(unique("branches"))
    async def branches(ctx, input):
        await ctx.step("first", effects.call, "first")
        return await asyncio.gather(ctx.step("slow", slow), ctx.step("fast", fast))

    async def undo(ctx):
        effects.seen = list(ctx.step_outputs.items())

    branches.on_failure(undo)
    env = Env(branches)
    handle = await env.client.run(branches, None, execution_id="branch-1")
    assert (await handle.result(timeout=10)).status == "failed"
    assert effects.seen == [("first", 1), ("slow", "slow-done")]
    effects.seen = None
    await env.engine.evict("branch-1")
    assert effects.seen == [("first", 1), ("slow", "slow-done")]
    assert effects.calls == {"first": 1, "slow": 1, "fast": 1}


# -- replay after a restart ----------------------------------------------------------------------------


async def test_replay_after_restart_calls_no_finished_handler():
    effects = Effects()
    env = Env(order_flow(effects))
    handle = await env.client.run(env.flow, {"order_id": "o-8"}, execution_id="replay-1")
    first = await handle.result(timeout=10)
    await env.engine.evict("replay-1")
    state = env.state("replay-1")
    assert state["runs"] == 2 and state["output"] == first.value
    assert effects.calls == {"reserve": 1, "charge": 1, "ship": 1}
    assert keys_of(state, "replay") == ["reserve-inventory-1", "charge-card-1", "ship-1"]


async def test_restart_while_waiting_resumes_from_the_cache():
    effects = Effects()
    flow = (
        Workflow(unique("evicted"))
        .step("one", lambda i, p, c: effects.call("one"))
        .wait_for_event("hold", "continue")
        .step("two", lambda i, p, c: effects.call("two") + p["n"])
    )
    env = Env(flow)
    handle = await env.client.run(flow, {}, execution_id="evict-1")
    for _ in range(100):
        if await handle.status() == "waiting":
            break
        await asyncio.sleep(0.01)
    second_run = env.engine.evict("evict-1")  # the object died while waiting
    await asyncio.sleep(0.01)
    await handle.send_event("continue", {"n": 10})
    await second_run
    result = await handle.result(timeout=10)
    assert result.value == 11
    assert effects.calls == {"one": 1, "two": 1}


async def test_replay_after_failure_keeps_the_structured_error():
    effects = Effects()
    env = Env(order_flow(effects, ship_error=NonRetryableError("address rejected")))
    handle = await env.client.run(env.flow, {"order_id": "o-9"}, execution_id="replay-2")
    await handle.result(timeout=10)
    first = effects.compensation
    await env.engine.evict("replay-2")
    assert effects.compensation == first
    assert effects.calls["ship"] == 1 and effects.calls["refund"] == 1 and effects.calls["compensate"] == 2


# -- client ------------------------------------------------------------------------------------------


async def test_cancel_terminates_and_maps_to_cancelled():
    @workflow(unique("cancel-me"))
    async def waits(ctx, input):
        return await ctx.wait_for_event("never", "never")

    env = Env(waits)
    handle = await env.client.run(waits, None, execution_id="cancel-1")
    await asyncio.sleep(0.01)
    assert await handle.cancel("no longer needed") is True
    assert await handle.status() == "cancelled"
    assert await handle.cancel() is False
    result = await handle.result(timeout=1)
    assert result.status == "cancelled" and not result.ok


async def test_errors_as_strings_and_oversize_outputs():
    @workflow(unique("too-big"))
    async def big(ctx, input):
        return await ctx.step("blob", lambda: "x" * (1 << 20))

    env = Env(big, error_as_string=True)
    handle = await env.client.run(big, None, execution_id="big-1")
    result = await handle.result(timeout=10)
    assert result.status == "failed"
    assert "1048576 bytes" in result.error.message
    failed = [e for e in env.state("big-1")["log"] if e["event"] == "attempt-failed"]
    assert len(failed) == 1 and failed[0]["nonRetryable"]


async def test_step_failures_are_catchable_in_code_first_workflows():
    def boom():
        raise NonRetryableError("nope")

    @workflow(unique("catches"))
    async def catches(ctx, input):
        try:
            await ctx.step("fails", boom)
        except StepFailedError as exc:
            return {"caught": exc.step, "code": exc.error["code"]}

    env = Env(catches)
    handle = await env.client.run(catches, None, execution_id="catch-1")
    assert (await handle.result(timeout=10)).value == {"caught": "fails", "code": "non_retryable"}


async def test_bad_instance_ids_and_inputs_are_refused_before_the_engine():
    env = Env(order_flow(Effects()))
    for bad in ("-leading-dash", "has space", "x" * 101):
        try:
            await env.client.run(env.flow, {}, execution_id=bad)
        except InvalidRequestError:
            pass
        else:
            raise AssertionError(f"{bad!r} accepted")
    try:
        await env.client.run(env.flow, {"blob": "x" * (1 << 20)}, execution_id="big-input")
    except SerializationError:
        pass
    else:
        raise AssertionError("oversize input accepted")
    assert env.engine.creates == 0


async def test_the_fake_engine_rejects_unknown_config_keys():
    assert (
        cf_engine.validateConfig(
            to_js({"retries": {"limit": 1, "delay": 1000}}, dict_converter=Object.fromEntries)
        )
        is None
    )
    bad = {"retries": {"limit": 1, "delay": 1000, "jitter": 0.1}}
    assert "jitter" in cf_engine.validateConfig(to_js(bad, dict_converter=Object.fromEntries))
    assert cf_engine.validateConfig(to_js({"timeout": 0}, dict_converter=Object.fromEntries)) is not None
    assert cf_engine.ms("10 seconds") == 10000 and cf_engine.ms("1 second") == 1000
