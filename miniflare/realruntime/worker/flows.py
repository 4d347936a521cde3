"""Test workflows of the real-runtime tier, and the side-effect counters their steps bump.

Counters live in a separate Durable Object (``Counters``, bound as ``COUNTERS``) so that they
survive what happens to an execution object (SIGKILL, abort) and count every time a step's
code really ran. Keys are ``<execution id>:<name>``. Delays are short so the tier stays fast.
"""

import asyncio
import json
from urllib.parse import quote

from workkit_workflow import NonRetryableError, RetryPolicy, current_step, workflow

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.2, jitter=0.0)
STATE = {"env": None, "ctx_by_id": {}, "constructed": {}}
"""What the execution objects of this isolate were given (steps need ``env`` and ``ctx``), and
how many times each execution's object was constructed (module state outlives an object)."""


def bind(ctx, env):
    STATE["env"] = env
    name = getattr(ctx.id, "name", None)
    if isinstance(name, str):
        STATE["ctx_by_id"][name] = ctx
        STATE["constructed"][name] = STATE["constructed"].get(name, 0) + 1


def counters_stub(env=None):
    env = env or STATE["env"]
    return env.COUNTERS.get(env.COUNTERS.idFromName("counters"))


async def bump(name):
    """Count one real run of ``name`` in the current execution; the new count."""
    step = current_step()
    key = f"{step.execution_id}:{name}"
    response = await counters_stub().fetch(f"https://counters/incr?key={quote(key)}", method="POST")
    return json.loads(await response.text())["n"]


async def counted(name):
    return {"name": name, "n": await bump(name)}


async def flaky(name, failures):
    n = await bump(name)
    if current_step().attempt <= failures:
        raise RuntimeError(f"{name}: transient failure on attempt {current_step().attempt}")
    return {"name": name, "n": n, "attempt": current_step().attempt}


@workflow("rt-three", retry=FAST_RETRY)
async def three(ctx, data):
    a = await ctx.step("a", counted, "a")
    b = await ctx.step("b", flaky, "b", 2)
    c = await ctx.step("c", counted, "c")
    return {"a": a["n"], "b": b["attempt"], "c": c["n"], "input": data}


async def charge(name):
    await bump(name)
    raise NonRetryableError("card declined", reason="declined")


@workflow("rt-saga", retry=FAST_RETRY)
async def saga(ctx, data):
    await ctx.step("reserve", counted, "reserve")
    await ctx.step("charge", charge, "charge")
    return "unreachable"


async def undo_saga(ctx):
    if "reserve" in ctx.step_outputs:
        await ctx.step("release", counted, "release")


saga.on_failure(undo_saga)


async def hang_first_attempt(name, seconds):
    """Counts a start, hangs on the first attempt (the test kills or evicts the object then),
    counts an end."""
    await bump(name + ":start")
    if current_step().attempt == 1:
        await asyncio.sleep(seconds)
    await bump(name + ":end")
    return {"attempt": current_step().attempt}


@workflow("rt-kill", retry=FAST_RETRY)
async def kill_mid_step(ctx, data):
    await ctx.step("one", counted, "one")
    two = await ctx.step("two", hang_first_attempt, "two", 60)
    await ctx.step("three", counted, "three")
    return {"two_attempt": two["attempt"]}


@workflow("rt-nap", retry=FAST_RETRY)
async def nap(ctx, data):
    await ctx.step("before", counted, "before")
    await ctx.sleep("nap", data.get("seconds", 4))
    await ctx.step("after", counted, "after")
    return "rested"


async def slow_prep(name, seconds):
    await bump(name)
    await asyncio.sleep(seconds)
    return "prepared"


@workflow("rt-events", retry=FAST_RETRY)
async def events(ctx, data):
    await ctx.step("prep", slow_prep, "prep", 1.5)
    early = await ctx.wait_for_event("early-wait", "early", timeout=120)
    late = await ctx.wait_for_event("late-wait", "late", timeout=120)
    await ctx.step("finish", counted, "finish")
    return {"early": early, "late": late}


async def slow_work(name, seconds):
    await bump(name + ":start")
    await asyncio.sleep(seconds)
    await bump(name + ":end")
    return "worked"


@workflow("rt-cancel", retry=FAST_RETRY)
async def cancellable(ctx, data):
    await ctx.step("work", slow_work, "work", 4)
    await ctx.step("after-work", counted, "after-work")
    return "not cancelled"


async def undo_cancellable(ctx):
    await ctx.step("undo", counted, "undo")


cancellable.on_failure(undo_cancellable)


def too_big():
    return "x" * 2_100_000


@workflow("rt-oversize", retry=FAST_RETRY)
async def oversize(ctx, data):
    await ctx.step("big", too_big)
    return "unreachable"


@workflow("rt-once", retry=FAST_RETRY)
async def once(ctx, data):
    only = await ctx.step("only", counted, "only")
    return {"n": only["n"]}


async def abort_first_attempt(name):
    """Counts a start; on the first attempt resets this execution's object the way the runtime
    evicts one (``ctx.abort()``: in-memory state is gone, storage and the alarm stay)."""
    step = current_step()
    await bump(name + ":start")
    if step.attempt == 1:
        # From a plain timer callback: called inside the step's task, abort() leaves this
        # Pyodide unable to run any later request ("Cannot enter a promising task ...").
        from js import setTimeout
        from pyodide.ffi import create_once_callable

        ctx = STATE["ctx_by_id"][step.execution_id]
        setTimeout(create_once_callable(lambda: ctx.abort("evicted by the real-runtime test")), 0)
        await asyncio.sleep(30)  # the object is gone before this ends
    await bump(name + ":end")
    return {"attempt": step.attempt}


@workflow("rt-evict", retry=FAST_RETRY)
async def evicted(ctx, data):
    await ctx.step("first", counted, "first")
    second = await ctx.step("second", abort_first_attempt, "second")
    await ctx.step("last", counted, "last")
    return {"second_attempt": second["attempt"]}


async def keyed(name):
    """Counts one run and returns the idempotency key its step was given."""
    return {"n": await bump(name), "key": current_step().idempotency_key}


@workflow("rt-keyed", retry=FAST_RETRY)
async def keyed_steps(ctx, data):
    """Steps with idempotency keys: the first journals its running entry and its completion as
    the keyed texts; the second asks for the same key and reuses that output without running;
    the third resets its object on its first attempt, so a fresh instance replays the first
    two from their keyed entries before the third runs again (its ``lost`` attempt)."""
    order = data["order"]
    charged = await ctx.step("charge", keyed, "charge", idempotency_key=f"charge:{order}")
    again = await ctx.step("charge-again", keyed, "charge-again", idempotency_key=f"charge:{order}")
    shipped = await ctx.step("ship", abort_first_attempt, "ship", idempotency_key=f"ship:{order}")
    return {"charged": charged, "again": again, "ship_attempt": shipped["attempt"]}


@workflow("rt-adopt", retry=FAST_RETRY)
async def adopted(ctx, data):
    """Started through the key-value adapter, continued over the SQL journal (probes.adopt)."""
    one = await ctx.step("one", counted, "one")
    go = await ctx.wait_for_event("go-wait", "go", timeout=120)
    two = await ctx.step("two", counted, "two")
    return {"one": one["n"], "go": go, "two": two["n"]}


@workflow("rt-child-kid", retry=FAST_RETRY)
async def child_kid(ctx, data):
    packed = await ctx.step("pack", counted, f"pack-{data['n']}")
    return {"n": data["n"], "runs": packed["n"]}


@workflow("rt-child-parent", retry=FAST_RETRY)
async def child_parent(ctx, data):
    """Two children, each in its own object, started and answered object to object through
    the ``WORKFLOW_DO`` binding the execution object finds in its ``env``."""
    kids = await asyncio.gather(*(ctx.child(child_kid, {"n": n}, name=f"kid-{n}") for n in range(2)))
    return {"kids": kids}

async def refund(info):
    """An undo handler (module level: found again by name after the object restarts)."""
    await bump(f"undo:{info.step}")
    return {"undid": info.step, "output": info.output, "input": info.input}


@workflow("rt-undo", retry=FAST_RETRY)
async def undo_and_state(ctx, data):
    await ctx.set_state("stage", "reserving")
    await ctx.step("reserve", counted, "reserve", undo=refund)
    await ctx.step("pay", counted, "pay", undo=refund, undo_retry=FAST_RETRY)
    await ctx.set_state("stage", "charging")
    await ctx.step("charge", charge, "charge")
    return "unreachable"


@workflow("rt-retain", retry=FAST_RETRY, retention=1)
async def retained(ctx, data):
    """Deleted by its own alarm a second after it settles."""
    return await ctx.step("only", counted, "only")


@workflow("rt-many", retry=FAST_RETRY)
async def many_steps(ctx, data):
    """More journal keys than one key-value ``delete`` call takes (128)."""
    for n in range(data.get("steps", 140)):
        await ctx.step(f"s{n}", lambda n=n: n)
    return data.get("steps", 140)
