"""Per-key concurrency limits: at most ``max`` executions per key run at once, the others
wait ``queued`` in FIFO order and start by themselves when a slot frees; no slot leaks
when a holder crashes, is cancelled, fails, or disappears (both local storages)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workkit_workflow import REGISTRY, Limit, NonRetryableError, RetryPolicy, Workflow, workflow
from workkit_workflow.engine._limit_coordinator import CHECK_EVERY
from workkit_workflow.engine._limits import coordinator_name
from workkit_workflow.errors import DefinitionError, InvalidOptionError, InvalidRequestError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


class Occupancy:
    """Which executions are between their first step and their last, checked at each entry."""

    def __init__(self, env: WorkflowTestEnv, limit: int) -> None:
        self.env = env
        self.limit = limit
        self.inside: set[str] = set()
        self.peak = 0
        self.entered: list[str] = []
        self.over: list[set[str]] = []

    def enter(self, key: str) -> None:
        if key not in self.inside:
            self.inside.add(key)
            if key not in self.entered:
                self.entered.append(key)
        self.peak = max(self.peak, len(self.inside))
        if len(self.inside) > self.limit:
            self.over.append(set(self.inside))

    def leave(self, key: str) -> None:
        self.inside.discard(key)


def limited_flow(
    occupancy: Occupancy, name: str, limit: int, *, fail: frozenset[int] = frozenset(), pause: float = 2
) -> Workflow:
    async def enter(input: Any, prev: Any, ctx: Any) -> None:
        occupancy.enter(str(input["i"]))

    async def work(input: Any, prev: Any, ctx: Any) -> int:
        await occupancy.env.clock.sleep(input["i"] % 3)  # inside the step
        if input["i"] in fail:
            occupancy.leave(str(input["i"]))
            raise NonRetryableError("this one fails")
        return int(input["i"])

    async def leave(input: Any, prev: Any, ctx: Any) -> int:
        occupancy.leave(str(input["i"]))
        return int(prev)

    return (
        Workflow(
            name,
            concurrency=Limit(key="account", max=limit),
            retry=RetryPolicy(max_attempts=3, initial_delay=1),
        )
        .step("enter", enter)
        .sleep("pause", pause)  # parks: the next execution's start returns and others run meanwhile
        .step("work", work)
        .step("leave", leave)
    )


async def test_fifty_executions_on_one_key_never_run_more_than_two_at_once(env: WorkflowTestEnv) -> None:
    occupancy = Occupancy(env, 2)
    flow = limited_flow(occupancy, unique("limited"), 2)
    ids = [f"lim-{i:02d}" for i in range(50)]
    # One holder is killed in the middle of its step (after the step's effect, before
    # its journal entry), another while mailing its release.
    env.faults.crash_at("after_side_effect", step="work", execution_id=ids[1])
    env.faults.crash_at("in_mail", execution_id=ids[5])
    handles = [await env.run(flow, {"account": "acme", "i": i}, execution_id=ids[i]) for i in range(50)]
    views = [await h.describe() for h in handles]
    assert [v["status"] for v in views[2:]] == ["queued"] * 48
    assert views[10]["queue"] == {"key": "acme", "position": 9, "coordinator": f"limit:{flow.name}:acme"}
    results = [await env.result(h) for h in handles]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [r.value for r in results] == list(range(50))
    assert occupancy.over == [] and occupancy.peak == 2
    assert occupancy.entered == [str(i) for i in range(50)]  # FIFO: in the order they asked
    assert len(env.faults.crashes) == 2
    coordinator = await env.ns.request(f"limit:{flow.name}:acme", "GET", "/limit")
    assert coordinator.body["limit"]["holders"] == {} and coordinator.body["limit"]["queue"] == []


async def test_other_keys_do_not_wait(env: WorkflowTestEnv) -> None:
    occupancy = Occupancy(env, 3)
    flow = limited_flow(occupancy, unique("limited"), 1)
    handles = [await env.run(flow, {"account": f"a{i}", "i": i}) for i in range(3)]
    assert [await h.status() for h in handles] == ["sleeping"] * 3  # all three in their pause
    assert all([(await env.result(h)).ok for h in handles])
    assert occupancy.peak == 3


def test_an_ordinary_workflow_name_keeps_its_coordinator_name() -> None:
    # Coordinators deployed before the workflow's name was escaped keep their objects.
    assert coordinator_name("sync-account", "acme") == "limit:sync-account:acme"
    assert coordinator_name("Sync.v2_x", "a:b/c d%") == "limit:Sync.v2_x:a:b/c d%"


def test_a_workflow_name_with_a_colon_or_percent_is_escaped() -> None:
    assert coordinator_name("p10", "x:y") == "limit:p10:x:y"
    assert coordinator_name("p10:x", "y") == "limit:p10%3Ax:y"
    assert coordinator_name("p10%3Ax", "y") == "limit:p10%253Ax:y"


_PARTS = st.text(alphabet="ab:%3A", max_size=6)


@settings(max_examples=500, deadline=None)
@given(first=st.tuples(_PARTS, _PARTS), second=st.tuples(_PARTS, _PARTS))
def test_two_workflow_and_key_pairs_never_share_a_coordinator(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    if first != second:
        assert coordinator_name(*first) != coordinator_name(*second)


async def test_workflows_whose_name_and_key_join_alike_do_not_share_a_slot(env: WorkflowTestEnv) -> None:
    base = unique("colon")
    one, other = Occupancy(env, 1), Occupancy(env, 1)
    # "<base>" with key "x:y" and "<base>:x" with key "y" both read "<base>:x:y" unescaped.
    first = await env.run(limited_flow(one, base, 1), {"account": "x:y", "i": 0})
    second = await env.run(limited_flow(other, f"{base}:x", 1), {"account": "y", "i": 1})
    assert [await first.status(), await second.status()] == ["sleeping", "sleeping"]
    assert (await env.result(first)).ok and (await env.result(second)).ok


async def test_failure_and_cancel_free_their_slots(env: WorkflowTestEnv) -> None:
    occupancy = Occupancy(env, 1)
    flow = limited_flow(occupancy, unique("limited"), 1, fail=frozenset({0}))
    first = await env.run(flow, {"account": "k", "i": 0})
    queued = await env.run(flow, {"account": "k", "i": 1})
    last = await env.run(flow, {"account": "k", "i": 2})
    assert await queued.status() == "queued"
    # A queued execution that is cancelled leaves the queue without ever running.
    assert await queued.cancel("not needed")
    assert not (await env.result(first)).ok
    assert (await env.result(queued)).status == "cancelled"
    assert (await env.result(last)).value == 2
    assert occupancy.entered == ["0", "2"] and occupancy.over == []


async def test_a_holder_that_no_longer_exists_gives_its_slot_back(env: WorkflowTestEnv) -> None:
    occupancy = Occupancy(env, 1)
    flow = limited_flow(occupancy, unique("limited"), 1)
    coordinator = f"limit:{flow.name}:k"
    # A holder whose object lost its storage (or whose release was dead-lettered).
    ghost = await env.ns.request(
        coordinator, "POST", "/limit", {"op": "acquire", "execution_id": "ghost", "max": 1}
    )
    assert ghost.body["limit"]["granted"]
    handle = await env.run(flow, {"account": "k", "i": 7})
    assert await handle.status() == "queued"
    started = env.clock.now()
    result = await env.result(handle)
    assert result.value == 7
    # It waited for the coordinator's check of its holders, not for ever.
    assert CHECK_EVERY <= env.clock.now() - started < CHECK_EVERY + 60
    assert (await env.ns.request(coordinator, "GET", "/limit")).body["limit"]["holders"] == {}


async def test_a_lost_wake_up_is_made_good_by_the_queued_executions_recheck(env: WorkflowTestEnv) -> None:
    occupancy = Occupancy(env, 1)
    flow = limited_flow(occupancy, unique("limited"), 1)
    first = await env.run(flow, {"account": "k", "i": 0})
    second = await env.run(flow, {"account": "k", "i": 1})
    original = env.ns.request

    async def no_wakes(name: str, method: str, path: str, body: Any = None, query: Any = None) -> Any:
        if path == "/wake":
            raise ConnectionError("lost")
        return await original(name, method, path, body, query)

    env.ns.request = no_wakes  # type: ignore[method-assign]
    assert (await env.result(first)).ok
    assert (await env.result(second)).value == 1


async def test_duplicate_acquire_and_release_are_harmless(env: WorkflowTestEnv) -> None:
    name = unique("limit:x")
    for _ in range(2):
        answer = await env.ns.request(
            name, "POST", "/limit", {"op": "acquire", "execution_id": "a", "max": 1}
        )
        assert answer.body["limit"]["granted"]
    queued = await env.ns.request(name, "POST", "/limit", {"op": "acquire", "execution_id": "b", "max": 1})
    assert queued.body["limit"]["position"] == 1
    for _ in range(2):
        await env.ns.request(name, "POST", "/limit", {"op": "release", "execution_id": "a"})
    record = (await env.ns.request(name, "GET", "/limit")).body["limit"]
    assert list(record["holders"]) == ["b"] and record["queue"] == []


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"op": "take", "execution_id": "a"},
        {"op": "acquire"},
        {"op": "acquire", "execution_id": "a", "max": 0},
    ],
)
async def test_a_malformed_limit_request_is_refused(env: WorkflowTestEnv, body: Any) -> None:
    answer = await env.ns.request("limit:y", "POST", "/limit", body)
    assert answer.status == 400 and answer.body["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("path", ["/limit", "/schedule"])
@pytest.mark.parametrize("named", [True, False], ids=["named", "nameless"])
async def test_an_execution_object_refuses_the_side_routes_and_keeps_its_alarm(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch, path: str, named: bool
) -> None:
    from workkit_workflow.local._host import LocalHost

    if not named:
        # A runtime that gives objects no name (workerd of 2024): what the object holds decides.
        monkeypatch.setattr(LocalHost, "object_name", None, raising=False)
        original = LocalHost.__init__

        def nameless(self: Any, *args: Any) -> None:
            original(self, *args)
            self.object_name = None

        monkeypatch.setattr(LocalHost, "__init__", nameless)

    @workflow(unique("napper"))
    async def napper(ctx: Any, input: Any) -> str:
        await ctx.sleep("nap", 5)
        return "rested"

    handle = await env.run(napper, None, execution_id="nap-1")
    await env.settle()
    alarm = env.ns.backend.alarms().get("nap-1")
    assert alarm is not None
    body = {"op": "acquire", "execution_id": "x", "max": 1} if path == "/limit" else {"advance_to": 1}
    for method in ("GET", "POST"):
        answer = await env.ns.request("nap-1", method, path, body if method == "POST" else None)
        assert answer.status == 409 and answer.body["error"]["code"] == "execution_conflict", answer.body
    assert env.ns.backend.alarms().get("nap-1") == alarm  # its wake-up is still set
    assert (await env.result(handle)).value == "rested"


async def test_an_input_without_a_key_is_refused_at_start(env: WorkflowTestEnv) -> None:
    flow = limited_flow(Occupancy(env, 1), unique("limited"), 1)
    with pytest.raises(InvalidRequestError, match="concurrency key"):
        await env.run(flow, {"i": 1})
    with pytest.raises(InvalidRequestError, match="string or an integer"):
        await env.run(flow, {"account": ["x"], "i": 1})


def test_bad_limits_are_refused_at_definition() -> None:
    with pytest.raises(InvalidOptionError):
        Limit(key="a", max=0)
    with pytest.raises(InvalidOptionError):
        Limit(key="", max=1)
    with pytest.raises(Exception, match="concurrency must be a Limit"):
        Workflow("w", concurrency=2, register=False)  # type: ignore[arg-type]


async def test_code_first_workflows_take_a_limit_too(env: WorkflowTestEnv) -> None:
    @workflow(unique("limited-code"), concurrency=Limit(key=lambda input: input["user"], max=1))
    async def flow(ctx: Any, input: Any) -> str:
        await ctx.sleep("nap", 5)
        return str(input["user"])

    try:
        a = await env.run(flow, {"user": 1})
        b = await env.run(flow, {"user": 1})
        assert [await a.status(), await b.status()] == ["sleeping", "queued"]
        assert [(await env.result(h)).value for h in (a, b)] == ["1", "1"]
    finally:
        REGISTRY.unregister(flow.name)


def test_the_cloudflare_workflows_backend_refuses_a_limit() -> None:
    flow = Workflow("limited-cf", concurrency=Limit(key="a"), register=False).step("s", lambda i, p, c: 1)
    with pytest.raises(DefinitionError, match="cannot express"):
        flow.as_cloudflare_workflow()


def test_the_readme_limits_example_runs_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    match = re.search(r"<!-- limits-example -->\n```python\n(.*?)```", readme, re.S)
    assert match is not None
    (tmp_path / "example.py").write_text(match.group(1))
    run = subprocess.run(
        [sys.executable, str(tmp_path / "example.py")],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == [
        "sleeping queued sleeping",
        "{'key': 'acme', 'position': 1, 'coordinator': 'limit:sync-account:acme'}",
        "synced acme",
    ]


async def test_a_limit_without_a_way_to_the_coordinator_is_refused_at_start(env: WorkflowTestEnv) -> None:
    flow = limited_flow(Occupancy(env, 1), unique("limited"), 1)
    env.ns._instance("isolated").peers = None  # a Worker without the namespace binding
    with pytest.raises(InvalidRequestError, match="namespace binding"):
        await env.run(flow, {"account": "k", "i": 1}, execution_id="isolated")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_concurrent_starts_under_chaotic_interleaving_never_exceed_the_limit(seed: int) -> None:
    env = WorkflowTestEnv(interleave="chaos", seed=seed)
    try:
        occupancy = Occupancy(env, 2)
        flow = limited_flow(occupancy, unique("limited"), 2, fail=frozenset({3}))
        handles = await asyncio.gather(*(env.start(flow, {"account": "k", "i": i}) for i in range(20)))
        results = [await env.result(h) for h in handles]
        assert [r.ok for r in results] == [i != 3 for i in range(20)]
        assert occupancy.over == [] and occupancy.peak == 2
        assert sorted(occupancy.entered, key=int) == [str(i) for i in range(20)]
    finally:
        await env.close()


async def test_a_queued_execution_blocked_by_a_missing_deploy_still_waits_for_its_slot(
    env: WorkflowTestEnv,
) -> None:
    occupancy = Occupancy(env, 1)
    flow = limited_flow(occupancy, unique("limited"), 1, pause=600)  # the holder holds on
    holder = await env.run(flow, {"account": "k", "i": 0})
    queued = await env.run(flow, {"account": "k", "i": 1})
    REGISTRY.unregister(flow.name)  # a deploy without this workflow
    await env.ns.request(queued.execution_id, "POST", "/wake")
    await env.settle()
    assert await queued.status() == "blocked"
    REGISTRY.register(flow)  # deployed again while the holder still holds the slot
    await env.ns.request(queued.execution_id, "POST", "/wake")  # (only a queued one is woken)
    await env.clock.sleep(61)  # its blocked retry drives it again: queued, not running
    await env.settle()
    assert await queued.status() == "queued" and await holder.status() == "sleeping"
    assert [r.value for r in [await env.result(h) for h in (holder, queued)]] == [0, 1]
    assert occupancy.over == [] and occupancy.entered == ["0", "1"]
