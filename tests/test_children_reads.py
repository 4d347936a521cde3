"""What a parent reads of its children's records as it starts new ones: a start looks its
child's id up (one record, ``child-id:<id>``), so a parent starting children one after the
other no longer reads every earlier child's row at each drive; a parent written before
those records existed (or partly by a release that does not write them) still reads the
rows, and still refuses a child id another operation holds. Every test runs over both
local storages (memory and SQLite)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest

from workkit_workflow import WorkflowContext, workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.errors import StepFailedError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


def _quick_kid() -> Any:
    @workflow(unique("quick-kid"))
    async def kid(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.step("double", lambda: input * 2)

    return kid


async def _run_out(env: WorkflowTestEnv, obj: str) -> dict[str, Any]:
    """Run the namespace until ``obj`` has settled, and return its state: read from storage,
    not asked of the object (a status view lists the children's rows)."""
    backend = env.ns.backend
    while True:
        await env.settle()
        state: dict[str, Any] = json.loads(backend.get_many(obj, ["state"])["state"])
        if state["phase"] == "done":
            return state
        ahead = [at for at in backend.alarms().values() if at > env.clock.now()]
        if ahead:
            await env.clock.sleep(min(ahead) - env.clock.now())


def _count_children_reads(env: WorkflowTestEnv, obj: str, read: Counter[str]) -> None:
    """Count the records ``obj`` reads of its children's: rows listed, ids looked up (not
    counting ``_run_out``'s read of the state)."""
    backend = env.ns.backend
    real_list, real_get = backend.list, backend.get_many

    def listed(name: str, prefix: str | None, *rest: Any) -> dict[str, str]:
        found = real_list(name, prefix, *rest)
        if name == obj and prefix == jn.CHILDREN:
            read["rows"] += len(found)
        return found

    def got(name: str, keys: Any) -> dict[str, str]:
        if name == obj:
            read["ids"] += sum(1 for key in keys if key.startswith(jn.CHILD_IDS))
        return real_get(name, keys)

    backend.list, backend.get_many = listed, got  # type: ignore[method-assign]


@pytest.mark.parametrize("children", [40, 120])
async def test_a_parent_starting_children_one_after_the_other_reads_one_record_per_start(
    env: WorkflowTestEnv, children: int
) -> None:
    # Each child's outcome wakes the parent for a drive whose next start read the rows of
    # every child started before: n(n-1)/2 rows over n children (7,140 for 120).
    kid = _quick_kid()

    @workflow(unique("serial-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return [await ctx.child(kid, i, name=f"part-{i}") for i in range(input)]

    read: Counter[str] = Counter()
    _count_children_reads(env, "serial", read)
    handle = await env.start(parent, children, execution_id="serial")
    state = await _run_out(env, "serial")
    # The first start's run had no child before it: nothing to look up.
    assert read == Counter(ids=children - 1), read
    assert state["child_count"] == state["child_id_records"] == children
    result = await env.result(handle)
    assert result.ok and result.value == [2 * i for i in range(children)]


async def test_a_parent_starting_its_children_together_reads_none_of_their_records(
    env: WorkflowTestEnv,
) -> None:
    kid = _quick_kid()

    @workflow(unique("fan-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        return list(await asyncio.gather(*(ctx.child(kid, i, name=f"part-{i}") for i in range(input))))

    read: Counter[str] = Counter()
    _count_children_reads(env, "fan", read)
    handle = await env.start(parent, 40, execution_id="fan")
    state = await _run_out(env, "fan")
    assert read == Counter(), read  # started in one run, which had none before
    assert state["child_count"] == state["child_id_records"] == 40
    result = await env.result(handle)
    assert result.ok and result.value == [2 * i for i in range(40)]


def _twin_parent(kid: Any) -> Any:
    """Op 0 starts ``shared``; op 2, after a sleep (op 1), names ``shared`` too."""

    @workflow(unique("twin-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        async def later() -> Any:
            await ctx.sleep("pause", 1.0)
            try:
                return await ctx.child(kid, 2, execution_id="shared", name="second")
            except StepFailedError as exc:
                return exc.error["code"]

        return await asyncio.gather(ctx.child(kid, 1, execution_id="shared", name="first"), later())

    return parent


async def test_a_child_id_an_earlier_drive_started_is_found_by_its_record(env: WorkflowTestEnv) -> None:
    @workflow(unique("slow-kid"))
    async def kid(ctx: WorkflowContext, input: Any) -> Any:
        await ctx.sleep("nap", 60.0)
        return input * 2

    read: Counter[str] = Counter()
    _count_children_reads(env, "p-ids", read)
    handle = await env.start(_twin_parent(kid), None, execution_id="p-ids")
    await env.settle()
    env.evict("p-ids")  # the second start is in another drive, by another incarnation
    await _run_out(env, "p-ids")
    assert read == Counter(ids=1), read  # the second start's look-up, no row listed
    result = await env.result(handle)
    assert result.ok and result.value == [2, "execution_conflict"]
    stored = env.ns.backend.list("p-ids", None, None, None, None, False)
    assert json.loads(stored[jn.CHILD_IDS + "shared"]) == {"v": 1, "op": 0}
    assert [k for k in stored if k.startswith(jn.CHILD_IDS)] == [jn.CHILD_IDS + "shared"]


@pytest.mark.parametrize("written_by", ["before-the-records", "a-release-without-them"])
async def test_a_parent_whose_children_have_no_id_records_reads_their_rows(
    env: WorkflowTestEnv, written_by: str
) -> None:
    # ``before-the-records``: every child started by a release that wrote rows only (no
    # count of the records); ``a-release-without-them``: the first child started by this
    # one (counted), the second, ``shared``, by an older release (its row and the count of
    # children, not its id's record). Either way the start of ``shared`` at op 3 reads the
    # rows, and is refused: op 2 holds it.
    @workflow(unique("slow-kid"))
    async def kid(ctx: WorkflowContext, input: Any) -> Any:
        await ctx.sleep("nap", 60.0)
        return input * 2

    @workflow(unique("mixed-parent"))
    async def parent(ctx: WorkflowContext, input: Any) -> Any:
        async def later() -> Any:
            await ctx.sleep("pause", 1.0)
            try:
                return await ctx.child(kid, 3, execution_id="shared", name="third")
            except StepFailedError as exc:
                return exc.error["code"]

        return await asyncio.gather(
            ctx.child(kid, 1, name="first"), ctx.child(kid, 2, execution_id="shared", name="second"), later()
        )

    handle = await env.run(parent, None, execution_id="p-old")
    assert await handle.status() == "waiting"
    backend, name = env.ns.backend, "p-old"
    records = backend.list(name, None, None, None, None, False)
    state = json.loads(records["state"])
    assert state["child_count"] == state["child_id_records"] == 2
    if written_by == "before-the-records":
        del state["child_id_records"]
        gone = [k for k in records if k.startswith(jn.CHILD_IDS)]
    else:
        state["child_id_records"] = 1
        gone = [jn.CHILD_IDS + "shared"]
    backend.commit(name, {"state": json.dumps(state)}, gone, backend.get_alarm(name))
    env.evict(name)
    read: Counter[str] = Counter()
    _count_children_reads(env, name, read)
    stored = await _run_out(env, name)
    assert read["rows"] == 2 and read["ids"] == 0, read  # the rows, read once by the start
    # Three children, two recorded at most: the counts stay apart.
    assert stored["child_count"] == 3 and stored.get("child_id_records") == state.get("child_id_records")
    result = await env.result(handle)
    assert result.ok and result.value == [2, 4, "execution_conflict"]
