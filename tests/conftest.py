from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from workkit_workflow import NonRetryableError, RetryPolicy, Workflow
from workkit_workflow.testing import WorkflowTestEnv

_names = itertools.count()


def unique(name: str) -> str:
    """Workflow names are process-global; tests make their own."""
    return f"{name}-{next(_names)}"


def gated(value: str) -> tuple[asyncio.Event, Callable[[], Awaitable[str]]]:
    """A step's call held open: it returns ``value`` once the event is set."""
    gate = asyncio.Event()

    async def call() -> str:
        await gate.wait()
        return value

    return gate, call


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def env(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[WorkflowTestEnv]:
    """The contract suite runs over both storage backends."""
    path = None if request.param == "memory" else str(tmp_path / "workflows.db")
    test_env = WorkflowTestEnv(path=path)
    try:
        yield test_env
    finally:
        await test_env.close()


class Effects:
    """Side-effect counters: what reached 'the outside world', by key."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.external: Counter[str] = Counter()

    def call(self, name: str) -> int:
        self.calls[name] += 1
        return self.calls[name]

    def deliver(self, idempotency_key: str) -> None:
        # An external system that dedupes by idempotency key: it sees each key
        # `external[key]` times but acts once per key.
        self.external[idempotency_key] += 1

    @property
    def effects_applied(self) -> int:
        return len(self.external)


@pytest.fixture
def effects() -> Effects:
    return Effects()


def make_order_flow(
    effects: Effects,
    *,
    charge_failures: int = 0,
    ship_error: BaseException | None = None,
    compensate: bool = True,
    retry: RetryPolicy | None = None,
) -> Workflow:
    async def reserve(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        effects.call("reserve")
        effects.deliver(ctx.idempotency_key)
        return {"reservation_id": f"res-{input['order_id']}"}

    async def charge(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        n = effects.call("charge")
        if n <= charge_failures:
            raise ConnectionError(f"card network timeout #{n}")
        effects.deliver(ctx.idempotency_key)
        return {"transaction_id": f"tx-{input['order_id']}", "reservation": prev["reservation_id"]}

    def ship(input: Any, prev: Any, ctx: Any) -> dict[str, Any]:
        effects.call("ship")
        if ship_error is not None:
            raise ship_error
        effects.deliver(ctx.idempotency_key)
        return {"tracking": f"trk-{input['order_id']}", "transaction": prev["transaction_id"]}

    async def undo(ctx: Any) -> None:
        effects.call("compensate")
        if "charge-card" in ctx.step_outputs:
            await ctx.step("refund", lambda: effects.call("refund") and {"refunded": True})
        if "reserve-inventory" in ctx.step_outputs:
            await ctx.step("release", lambda: effects.call("release") and {"released": True})

    flow = (
        Workflow(
            unique("order-flow"), retry=retry or RetryPolicy(max_attempts=3, initial_delay=1.0), timeout="10m"
        )
        .step("reserve-inventory", reserve)
        .step("charge-card", charge, idempotency_key=lambda input, ctx: f"charge:{input['order_id']}")
        .step("ship", ship, retry=RetryPolicy(max_attempts=5, initial_delay=2.0))
    )
    if compensate:
        flow.on_failure(undo)
    return flow


PERMANENT = NonRetryableError("address rejected by carrier")
