"""The execution object's wire: concurrency and bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from workkit_workflow import Workflow
from workkit_workflow.engine._ports import WireRequest
from workkit_workflow.errors import ExecutionConflictError, ExecutionNotFoundError, UnknownWorkflowError
from workkit_workflow.local import LocalNamespace
from workkit_workflow.testing import WorkflowTestEnv

from conftest import Effects, make_order_flow, unique


async def test_concurrent_duplicate_execute_starts_one_run(env: WorkflowTestEnv, effects: Effects) -> None:
    flow = make_order_flow(effects)
    handles = await asyncio.gather(
        *(env.run(flow, {"order_id": "dup"}, execution_id="same-id") for _ in range(20))
    )
    assert sum(1 for h in handles if h.created) == 1
    result = await env.result(handles[0])
    assert result.ok
    assert effects.calls == {"reserve": 1, "charge": 1, "ship": 1}
    # Later, too: the existing execution answers, nothing runs again.
    again = await env.run(flow, {"order_id": "dup"}, execution_id="same-id")
    assert again.created is False
    assert effects.calls == {"reserve": 1, "charge": 1, "ship": 1}


async def test_execute_with_an_id_taken_by_another_workflow(env: WorkflowTestEnv, effects: Effects) -> None:
    await env.run(make_order_flow(effects), {"order_id": "x"}, execution_id="taken")
    other = Workflow(unique("other")).step("s", lambda i, p, c: 1)
    with pytest.raises(ExecutionConflictError):
        await env.run(other, {}, execution_id="taken")


async def test_unknown_workflow_is_a_clear_error(env: WorkflowTestEnv) -> None:
    with pytest.raises(UnknownWorkflowError, match="no workflow named 'nope'"):
        await env.client.run("nope", {})
    with pytest.raises(ExecutionNotFoundError):
        await env.client.execution("never-created").status()


async def test_execution_ids_are_random_and_unguessable(env: WorkflowTestEnv) -> None:
    flow = Workflow(unique("ids")).step("s", lambda i, p, c: 1)
    ids = {(await env.run(flow, {})).execution_id for _ in range(5)}
    assert len(ids) == 5 and all(len(i) >= 32 for i in ids)


def _raw(method: str, path: str, body: Any = b"", query: dict[str, str] | None = None) -> WireRequest:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WireRequest(method=method, path=path, body=data, query=query or {})


HOSTILE = [
    ("POST", "/execute", b"{not json", 400, "invalid_request"),
    ("POST", "/execute", b"[1,2,3]", 400, "invalid_request"),
    ("POST", "/execute", {"workflow": 5, "execution_id": "obj"}, 400, "invalid_request"),
    ("POST", "/execute", {"workflow": "w", "execution_id": "obj", "surprise": 1}, 400, "invalid_request"),
    ("POST", "/execute", {"workflow": "w", "execution_id": "../../etc"}, 400, "invalid_request"),
    ("POST", "/execute", {"workflow": "nope", "execution_id": "obj"}, 404, "unknown_workflow"),
    ("POST", "/execute", {"workflow": "w", "execution_id": "other-object"}, 400, "invalid_request"),
    ("POST", "/execute", b"x" * 3_000_000, 413, "invalid_request"),
    ("GET", "/execute", b"", 405, "method_not_allowed"),
    ("DELETE", "/status", b"", 405, "method_not_allowed"),
    ("GET", "/nowhere", b"", 404, "not_found"),
    ("GET", "/status", b"", 404, "execution_not_found"),
    ("POST", "/cancel", {"reason": 7}, 400, "invalid_request"),
    ("POST", "/event", {"type": ""}, 400, "invalid_request"),
    ("GET", "/result", b"", 404, "execution_not_found"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), HOSTILE)
async def test_bad_requests_get_structured_4xx(
    method: str, path: str, body: Any, status: int, code: str
) -> None:
    Workflow("w").step("s", lambda i, p, c: 1)
    async with LocalNamespace() as ns:
        response = await ns.fetch("obj", _raw(method, path, body))
        assert response.status == status, response.body
        assert response.body["error"]["code"] == code
        assert response.body["error"]["message"]
        # Nothing was written for a rejected request.
        assert ns.backend.list("obj", None, None, None, None, False) == {}


async def test_bad_requests_never_change_an_existing_journal(env: WorkflowTestEnv, effects: Effects) -> None:
    flow = make_order_flow(effects)
    handle = await env.run(flow, {"order_id": "j"}, execution_id="obj")
    assert (await env.result(handle)).ok
    before = env.ns.backend.list("obj", None, None, None, None, False)
    for method, path, body, _, _ in HOSTILE:
        response = await env.ns.fetch("obj", _raw(method, path, body))
        assert response.status < 500
    response = await env.ns.fetch("obj", _raw("GET", "/result", query={"wait": "-1"}))
    assert response.status == 400
    assert env.ns.backend.list("obj", None, None, None, None, False) == before


async def test_output_that_cannot_be_serialized_fails_the_step_cleanly(env: WorkflowTestEnv) -> None:
    flow = Workflow(unique("unserializable")).step("s", lambda i, p, c: {"when": object()})
    result = await env.result(await env.run(flow, {}))
    assert not result.ok and result.error is not None
    assert result.error.code == "serialization_error"
    assert result.error.failed_step == "s"


async def test_output_over_the_value_limit_fails_the_step_cleanly(env: WorkflowTestEnv) -> None:
    flow = Workflow(unique("huge")).step("s", lambda i, p, c: "x" * 2_100_000)
    handle = await env.run(flow, {})
    result = await env.result(handle)
    assert not result.ok and result.error is not None
    assert result.error.code == "serialization_error"
    assert "limit" in result.error.message
    assert all(
        len(v) < 2_000_000
        for v in env.ns.backend.list(handle.execution_id, None, None, None, None, False).values()
    )


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
async def test_a_number_json_cannot_carry_is_a_400_not_a_413(number: bytes) -> None:
    # Nothing is too large: the body is malformed. 413 stays for values over the size limit.
    Workflow("w").step("s", lambda i, p, c: 1)
    Workflow("w-waits").wait_for_event("w", "go")
    async with LocalNamespace() as ns:
        body = b'{"workflow": "w", "execution_id": "obj", "input": ' + number + b"}"
        response = await ns.fetch("obj", _raw("POST", "/execute", body))
        assert response.status == 400, response.body
        assert response.body["error"]["code"] == "serialization_error"
        assert (
            await ns.fetch(
                "waits", _raw("POST", "/execute", {"workflow": "w-waits", "execution_id": "waits"})
            )
        ).ok
        event = b'{"type": "go", "payload": ' + number + b"}"
        response = await ns.fetch("waits", _raw("POST", "/event", event))
        assert (response.status, response.body["error"]["code"]) == (400, "serialization_error")
        big = {"workflow": "w", "execution_id": "big", "input": "y" * 2_100_000}
        assert (await ns.fetch("big", _raw("POST", "/execute", big))).status == 413


async def test_execution_not_found_names_the_execution() -> None:
    async with LocalNamespace() as ns:
        for method, path, body in (("GET", "/status", b""), ("POST", "/cancel", b"{}")):
            response = await ns.fetch("no-such-1", _raw(method, path, body))
            assert response.status == 404
            assert response.body["error"]["execution_id"] == "no-such-1"


async def test_input_that_cannot_be_stored(env: WorkflowTestEnv) -> None:
    from workkit_workflow.errors import InvalidRequestError, SerializationError

    flow = Workflow(unique("big-input")).step("s", lambda i, p, c: 1)
    with pytest.raises((SerializationError, InvalidRequestError)):
        await env.run(flow, {"blob": "y" * 2_100_000})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "x", True])
async def test_a_result_timeout_that_is_not_seconds_is_refused(env: WorkflowTestEnv, bad: Any) -> None:
    # NaN never counted down (the wait never ended), "x" was a raw TypeError; -1 was
    # refused by the object: each is the client's InvalidRequestError now, before any wait.
    from workkit_workflow.errors import InvalidRequestError

    handle = await env.run(Workflow(unique("timeouts")).wait_for_event("w", "go"), None)
    with pytest.raises(InvalidRequestError) as caught:
        await asyncio.wait_for(handle.result(timeout=bad), 5)
    assert caught.value.details.get("field") == "timeout"
