"""Storage operations at the port: what a step costs, whatever the journal's length.

Counted with ``LocalNamespace.stats`` and a write hook that sees every commit:

* one write per step transition (a step's start carries the previous step's
  completion), plus a constant per execution;
* no reads on the hot path: the reads and lists of a whole execution are a
  constant, not a function of its number of steps;
* the bytes of a step's write do not depend on how long the journal already is.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from workkit_workflow import RetryPolicy, WorkflowContext, create_durable_workflow, workflow
from workkit_workflow.local import LocalNamespace, VirtualClock

# Three digits from the start: a workflow name that gains a digit between two
# measurements would change the byte counts the tests compare.
_names = itertools.count(100)


def work(i: int) -> dict[str, str]:
    return {"i": f"{i:06d}"}  # fixed width, so sizes compare across positions


def linear() -> Any:
    @workflow(f"ops-{next(_names)}")
    async def flow(ctx: WorkflowContext, input: Any) -> int:
        n = int(input["n"])
        for i in range(n):
            await ctx.step(f"step-{i:06d}", work, i)
        return n

    return flow


class Commits:
    """Every commit's size in bytes (keys + values), in order."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        self.sizes.append(sum(len(k.encode()) + len(v.encode()) for k, v in puts.items()))


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    return None if request.param == "memory" else str(tmp_path / "ops.db")


async def _measure(
    path: str | None, steps: int, start: float = 1_767_225_600.0
) -> tuple[dict[str, int], list[int]]:
    # A frozen virtual clock: timestamps keep one width, so byte counts are exact.
    clock = VirtualClock(start, auto_advance=False)
    ns = LocalNamespace(path, clock, interleave="none", synchronous="OFF")
    commits = Commits()
    ns.write_hook = commits
    try:
        client = create_durable_workflow(ns)
        flow = linear()
        await client.run(flow, {"n": 1}, execution_id=f"warm-up-{flow.name}")
        ns.stats.reset()
        commits.sizes.clear()
        handle = await client.run(flow, {"n": steps}, execution_id=f"run-{flow.name}")
        assert ns.stats.writes == len(commits.sizes)
        stats = dict(vars(ns.stats))
        assert (await handle.result(timeout=0)).value == steps
    finally:
        await ns.close()
    return stats, commits.sizes


async def test_one_write_per_step_and_no_reads_on_the_hot_path(storage: str | None) -> None:
    small, _ = await _measure(storage, 10)
    large, _ = await _measure(storage, 300)
    # Exactly one more write per additional step.
    assert large["writes"] - small["writes"] == 300 - 10
    # Besides its steps: the creation (which begins the run ``run`` drives) and the end.
    constant = small["writes"] - 10
    assert constant == 2, small
    # Reads and lists of a whole execution do not grow with its steps.
    assert (large["reads"], large["lists"]) == (small["reads"], small["lists"])
    assert small["reads"] + small["lists"] <= 3, small
    # Alarms are set per execution (create, lease, done), not per step.
    assert large["alarm_sets"] == small["alarm_sets"]


async def test_bytes_per_step_do_not_grow_with_the_journal(storage: str | None) -> None:
    _, sizes = await _measure(storage, 300)
    # Commit 0 creates the execution and begins its run (``run`` drives it at once), 1
    # starts step 0; then one per step (its start + the previous step's completion); the
    # last closes the run, with the last step's completion.
    transitions = sizes[2:-1]
    assert len(transitions) == 299
    # A record names its position (op number, default idempotency key): a few
    # bytes (three per extra digit of the position), nothing proportional to the journal.
    assert max(transitions) - min(transitions) <= 3 * (len(str(300)) - 1), sorted(set(transitions))
    _, short = await _measure(storage, 20)
    assert short[2] == transitions[0]
    # And the total grows linearly: bytes per step are a constant.
    stats_small, _ = await _measure(storage, 100)
    stats_large, _ = await _measure(storage, 300)
    per_step = (stats_large["bytes_written"] - stats_small["bytes_written"]) / 200
    assert min(transitions) <= per_step <= max(transitions) + 3


async def test_a_retry_and_a_sleep_cost_one_write_per_transition(storage: str | None) -> None:
    ns = LocalNamespace(storage, VirtualClock(), interleave="none", synchronous="OFF")
    failures = iter([True, True, False])

    def flaky() -> str:
        if next(failures):
            raise ConnectionError("try again")
        return "ok"

    @workflow(f"retry-sleep-{next(_names)}", retry=RetryPolicy(max_attempts=5, initial_delay=1.0))
    async def flow(ctx: WorkflowContext, input: Any) -> str:
        await ctx.step("a", work, 1)
        await ctx.sleep("nap", "1h")
        return await ctx.step("flaky", flaky)  # type: ignore[no-any-return]

    try:
        client = create_durable_workflow(ns)
        plain_ns_stats = []
        handle = await client.run(flow, {}, execution_id="rs")
        result = await handle.result(timeout=7200)
        plain_ns_stats.append(dict(vars(ns.stats)))
    finally:
        await ns.close()
    assert result.ok
    writes = plain_ns_stats[0]["writes"]
    # create, start, a running, nap sleeping (+ a done), park; then per wake-up
    # (the nap, two retry backoffs): start, flaky running, retrying or done, park
    # or finish. One write per transition, none spent polling.
    assert writes <= 17, plain_ns_stats


async def test_a_step_transition_is_at_most_350_bytes() -> None:
    # Timestamps as wide as the system clock's (microseconds): three per transition
    # (the step's start, the previous step's start and finish).
    _, sizes = await _measure(None, 120, start=1_767_225_600.123456)
    transitions = sizes[3:-2]
    assert max(transitions) <= 350, sorted(set(transitions))
    # What keeps it small: fields at their defaults are not written (journal format v2).
    ns = LocalNamespace(None, VirtualClock(auto_advance=False), interleave="none")
    try:
        client = create_durable_workflow(ns)
        flow = linear()
        await client.run(flow, {"n": 1}, execution_id="one")
        stored = ns.backend.get_many("one", ["j:00000000"])["j:00000000"]
        for absent in (
            '"op"',
            '"errors"',
            '"failures"',
            '"lost"',
            '"error"',
            "idempotency",
            "attempt_started",
        ):
            assert absent not in stored, stored
        entry = (await client.execution("one").journal())[0]
        assert (entry["op"], entry["errors"], entry["failures"], entry["error"]) == (0, [], 0, None)
    finally:
        await ns.close()
