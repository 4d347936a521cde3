"""Engine behaviours pinned by mutation testing (docs/mutation.md), part 7: survivors of the
samples of the request path, the step operation and the execution state taken on main
`b0a19ca` (the sixth round of issue #16). Through the public API on the local runtime's
virtual clock."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from test_engine_pins_3 import quick_journaled_while_long_runs
from workkit_workflow import RetryPolicy, Workflow, workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine import _state
from workkit_workflow.testing import WorkflowTestEnv

from conftest import gated, unique


async def test_an_execution_its_request_drives_is_created_with_the_lease_as_its_alarm(
    workflow_env: WorkflowTestEnv,
) -> None:
    @workflow(unique("lease-at-create"))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("a", lambda: 1)

    backend = workflow_env.ns.backend
    stored: list[tuple[bool, float | None]] = []

    def hook(obj: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        # Called before each write lands: the alarm the previous write stored.
        if obj == "lease-at-create":
            stored.append((jn.META in puts, backend.get_alarm(obj)))

    workflow_env.ns.write_hook = hook
    created = workflow_env.clock.now()
    handle = await workflow_env.run(flow, {}, execution_id="lease-at-create")
    assert (await workflow_env.result(handle)).value == 1
    (creates, _), (_, after_create) = stored[0], stored[1]
    assert creates
    # The request drives it at once: the creation's alarm only resumes the execution if
    # the object dies first (a lease ahead), not due now beside the request's own drive.
    assert after_create is not None and after_create > created


async def test_a_retry_wait_is_jittered_by_the_execution_generator(
    workflow_env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every object instance given no generator of its own draws from the shared one:
    # a seeded one here, so the jitter of the first retry is known.
    monkeypatch.setattr(_state, "_shared_rng", lambda: random.Random(16))
    policy = RetryPolicy(max_attempts=2, initial_delay=10.0, jitter=0.5)

    def flaky(input: Any, prev: Any, ctx: Any) -> str:
        raise ConnectionError("try again")

    flow = Workflow(unique("jitter"), retry=policy).step("flaky", flaky)
    handle = await workflow_env.run(flow, {})
    [entry] = await handle.journal()
    assert entry["status"] == "retrying"
    waited = entry["retry_at"] - entry["error"]["finished_at"]
    assert waited == pytest.approx(policy.next_delay(1, random.Random(16)), abs=1e-6)


async def test_a_step_beside_a_running_one_is_journaled_at_once_after_the_body_caught_an_error(
    workflow_env: WorkflowTestEnv,
) -> None:
    gate, long_call = gated("long")

    async def broken() -> None:
        raise LookupError("not there")

    @workflow(unique("flushed-after-throw"))
    async def flow(ctx: Any, input: Any) -> Any:
        with contextlib.suppress(LookupError):
            # The failure of a task it awaits is thrown into the body (not sent).
            await asyncio.ensure_future(broken())
        return await asyncio.gather(ctx.step("quick", lambda: "quick"), ctx.step("long", long_call))

    # The body resumed by a throw and suspended again: the quick step's completion is
    # still written at the end of its loop turn, not held back by the long step.
    await quick_journaled_while_long_runs(workflow_env, flow, gate)
