"""Undo outcomes and live state where people look: ``describe()``, ``workkit-workflow
show``, the timeline page; and undo handlers on the Cloudflare Workflows backend."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from test_cfworkflows_mapping import FakeStep
from workkit_workflow import NonRetryableError, RetryPolicy, StepUndo, Workflow, workflow
from workkit_workflow.cfworkflows import _entrypoint as cfw
from workkit_workflow.cfworkflows._client import WorkflowsHandle
from workkit_workflow.cli import main
from workkit_workflow.client._client import create_durable_workflow
from workkit_workflow.errors import DefinitionError, InvalidRequestError
from workkit_workflow.history._journals import JournalFile
from workkit_workflow.history._outcomes import file_outcomes
from workkit_workflow.history.page import client_outcomes, render_execution_page
from workkit_workflow.local import LocalNamespace

from conftest import unique


def refuse(info: StepUndo) -> None:
    raise NonRetryableError("the bank refused the refund")


def no_carrier(input: Any, prev: Any, ctx: Any) -> None:
    raise NonRetryableError("no carrier")


def shop() -> Workflow:
    return (
        Workflow(unique("undo-views"), retry=RetryPolicy(max_attempts=1))
        .step("reserve", lambda i, p, c: {"r": 1}, undo=lambda info: {"released": info.output})
        .step("charge", lambda i, p, c: {"tx": 9}, undo=refuse)
        .step("ship", no_carrier)
    )


@workflow(unique("live-views"))
async def publishing(ctx: Any, input: Any) -> None:
    await ctx.set_state("progress", {"done": 1, "of": 3})
    await ctx.sleep("nap", 3600)


async def _populate(path: str) -> tuple[str, str]:
    async with LocalNamespace(path) as ns:
        client = create_durable_workflow(ns)
        failed = await client.run(shop(), {"order": 1}, execution_id="shop-1")
        await failed.result(timeout=10)
        described = await failed.describe()
        undos = described["compensation"]["undos"]
        assert [(u["step"], u["status"], u["attempts"]) for u in undos] == [
            ("charge", "failed", 1),
            ("reserve", "completed", 1),
        ]
        assert undos[0]["error"]["message"] == "the bank refused the refund"
        assert described["compensation"]["status"] == "failed"
        await client.run(publishing, None, execution_id="live-1")
        html = render_execution_page(
            await _history(path, "shop-1"), outcomes=await client_outcomes(client, "shop-1")
        )
        live_html = render_execution_page(
            await _history(path, "live-1"), outcomes=await client_outcomes(client, "live-1")
        )
        await ns.idle()
    return html, live_html


async def _history(path: str, execution_id: str) -> Any:
    journals = JournalFile.open(path)
    try:
        return journals.history(execution_id)
    finally:
        journals.close()


def _show(path: str, execution_id: str, *flags: str) -> str:
    out = io.StringIO()
    assert main(["show", execution_id, "--db", path, *flags], out) == 0
    return out.getvalue()


def test_show_and_page_tell_each_undo_and_the_live_state(tmp_path: Any) -> None:
    path = str(tmp_path / "views.db")
    html, live_html = asyncio.run(_populate(path))
    text = _show(path, "shop-1")
    assert "undo handlers (last started first):" in text
    assert "✗ charge   completed step  failed, 1 attempt: non_retryable: the bank refused the refund" in text
    assert "✓ reserve  completed step  completed, 1 attempt" in text
    assert "data-undo='charge'" in html and "the bank refused the refund" in html
    live = _show(path, "live-1")
    assert 'state:\n  progress: {"done": 1, "of": 3}' in live
    assert json.loads(_show(path, "live-1", "--json"))["state"] == {"progress": {"done": 1, "of": 3}}
    assert "id='state-values'" in live_html and "progress" in live_html
    found = file_outcomes(path, "live-1")
    assert found is not None and found.state == {"progress": {"done": 1, "of": 3}}
    # The undo's idempotency key stays out of journal views, as the step's own does.
    journals = JournalFile.open(path)
    try:
        entries = journals.journal("shop-1")
    finally:
        journals.close()
    charge = next(e for e in entries if e["name"] == "charge")
    assert charge["undo"] == {"ref": None} and "idempotency_key" not in charge


# -- the Cloudflare Workflows backend ------------------------------------------------------

UNDONE: list[tuple[str, Any, str | None]] = []


def cf_undo(info: StepUndo) -> None:
    UNDONE.append((info.step, info.output, info.idempotency_key))


async def test_cloudflare_workflows_runs_undos_last_first_then_on_failure() -> None:
    UNDONE.clear()
    told: list[Any] = []
    flow = (
        Workflow("cf-undo", register=False, retry=RetryPolicy(max_attempts=1))
        .step("reserve", lambda i, p, c: {"r": 1}, undo=cf_undo)
        .step("charge", lambda i, p, c: {"tx": 2}, undo=cf_undo)
        .step("ship", no_carrier)
        .on_failure(lambda ctx: told.append([(u["step"], u["status"]) for u in ctx.undos]))
    )
    step = FakeStep()
    with pytest.raises(Exception, match="no carrier"):
        await cfw.run_definition(flow, {"instanceId": "cf-1", "payload": {}}, step, native_retries=True)
    assert UNDONE == [("charge", {"tx": 2}, "cf-1:charge"), ("reserve", {"r": 1}, "cf-1:reserve")]
    assert told == [[("charge", "completed"), ("reserve", "completed")]]
    # A replay of run() finds the undos in the engine's cache: none runs again.
    with pytest.raises(Exception, match="no carrier"):
        await cfw.run_definition(
            flow, {"instanceId": "cf-1", "payload": {}}, FakeStep(step.cache), native_retries=True
        )
    assert len(UNDONE) == 2


async def test_cloudflare_workflows_has_no_live_state() -> None:
    @workflow("cf-state", register=False)
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.set_state("k", 1)

    with pytest.raises(DefinitionError, match="not available on the Cloudflare Workflows backend"):
        await cfw.run_definition(flow, {"instanceId": "cf-2"}, FakeStep(), native_retries=True)
    with pytest.raises(InvalidRequestError, match="no live state"):
        await WorkflowsHandle(object(), "cf-2").state()
