"""The workflows of the real-runtime tier, written as a user writes them (README, "Two backends").

``MARKS`` records what each step really did (calls, attempts, compensation); the
Worker's ``/marks`` route returns it. The Workflows engine calls back into this same
Worker (a service binding to its ``WorkflowEntrypoint`` classes), so one isolate, one
``MARKS``: a scenario asserts that its steps ran by reading it.
"""

from __future__ import annotations

from typing import Any

from workkit_workflow import NonRetryableError, RetryPolicy, Workflow, workflow

MARKS: dict[str, Any] = {}


def mark(key: str, value: Any = None) -> int:
    """Count a call under ``key`` (and keep its last ``value``); the new count."""
    entry = MARKS.setdefault(key, {"calls": 0, "value": None})
    entry["calls"] += 1
    entry["value"] = value
    return int(entry["calls"])


# -- retries: a step that fails twice, then succeeds on its third attempt ---------------


def flaky(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
    mark(f"{ctx.execution_id}:flaky", ctx.attempt)
    if ctx.attempt < 3:
        raise RuntimeError(f"flaky attempt {ctx.attempt}")
    return {"attempt": ctx.attempt, "key": ctx.idempotency_key}


def finish(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
    mark(f"{ctx.execution_id}:finish")
    return {"flaky": prev, "order": input["order"]}


retry_flow = (
    Workflow("retry-flow", retry=RetryPolicy(max_attempts=3, initial_delay="1s", backoff_multiplier=1.0))
    .step("flaky", flaky)
    .step("finish", finish)
)


# -- a non-retryable failure and its compensation -----------------------------------------


def reserve(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
    mark(f"{ctx.execution_id}:reserve")
    return {"reserved": input["order"]}


def charge(input: Any, prev: Any, ctx: Any) -> None:
    mark(f"{ctx.execution_id}:charge", ctx.attempt)
    raise NonRetryableError("card declined")


async def compensate(ctx: Any) -> None:
    def release() -> dict[str, Any]:
        mark(
            f"{ctx.execution_id}:release",
            {
                "failed_step": ctx.failed_step,
                "code": (ctx.error or {}).get("code"),
                "outputs": ctx.step_outputs,
            },
        )
        return {"released": True}

    await ctx.step("release", release)


saga_flow = (
    Workflow("saga-flow", retry=RetryPolicy(max_attempts=3, initial_delay="1s"))
    .step("reserve", reserve)
    .step("charge", charge)
    .on_failure(compensate)
)


# -- a durable sleep ------------------------------------------------------------------------


def before_nap(input: Any, prev: Any, ctx: Any) -> float:
    mark(f"{ctx.execution_id}:before")
    return 1.0


def after_nap(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
    mark(f"{ctx.execution_id}:after")
    return {"slept": True, "prev": prev}


nap_flow = Workflow("nap-flow").step("before", before_nap).sleep("nap", "2s").step("after", after_nap)


# -- events: one sent before its wait, one after, one that never comes ------------------------


@workflow("approval-flow")
async def approval_flow(ctx: Any, input: Any) -> dict[str, Any]:
    await ctx.step("ready", mark, f"{ctx.execution_id}:ready")
    first = await ctx.wait_for_event("first", "first", timeout="60s")
    await ctx.step("between", mark, f"{ctx.execution_id}:between", first)
    second = await ctx.wait_for_event("second", "second", timeout="60s")
    third = await ctx.wait_for_event("third", "third", timeout="1s", default="no third")
    return {"first": first, "second": second, "third": third}


# -- terminate and pause: a step, then a long sleep -------------------------------------------


def started(input: Any, prev: Any, ctx: Any) -> None:
    mark(f"{ctx.execution_id}:started")


def never(input: Any, prev: Any, ctx: Any) -> None:
    mark(f"{ctx.execution_id}:never")


def undo_long(ctx: Any) -> None:
    mark(f"{ctx.execution_id}:compensated")


long_flow = (
    Workflow("long-flow")
    .step("started", started)
    .sleep("long", "10m")
    .step("never", never)
    .on_failure(undo_long)
)


# -- restart: a step that counts its runs --------------------------------------------------


def count(input: Any, prev: Any, ctx: Any) -> int:
    return mark(f"{ctx.execution_id}:count")


count_flow = Workflow("count-flow").step("count", count)


# -- the engine's 1 MiB limit on a step's result ------------------------------------------


def big(input: Any, prev: Any, ctx: Any) -> str:
    mark(f"{ctx.execution_id}:big", ctx.attempt)
    return "x" * (1 << 20)


big_flow = Workflow("big-flow", retry=RetryPolicy(max_attempts=3, initial_delay="1s")).step("big", big)


# -- the assignment form (no subclass) --------------------------------------------------------


def hello(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
    mark(f"{ctx.execution_id}:hello")
    return {"greeting": f"hello {input['name']}", "nothing": None}


plain_flow = Workflow("plain-flow").step("hello", hello)
