"""Bad input gets a clear, structured answer: never a 500, a traceback or a
journal entry stuck ``running`` (issue #10, items 7, 9 and 10).

- Lone surrogates (``"\\ud800"``): a Python string that is not valid Unicode,
  which a JSON escape can carry, and which cannot be stored as UTF-8.
- Instants no date can show, in stored history.
- The example Worker under hostile bodies and cursors.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from workkit_workflow import Limit, NonRetryableError, RetryPolicy, Workflow, cli, workflow
from workkit_workflow.definitions._durations import iso
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine._ports import WireRequest
from workkit_workflow.errors import DefinitionError, InvalidRequestError, SerializationError
from workkit_workflow.history import HistoryQuery, LocalD1
from workkit_workflow.history._timeline import build, span, when
from workkit_workflow.history.page import history_page, render_execution_page, render_index
from workkit_workflow.local import LocalNamespace, VirtualClock
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "worker"))

import app
import order_flow  # noqa: F401

LONE = "\ud800"


def _wire(method: str, path: str, body: Any) -> WireRequest:
    # json.dumps escapes the surrogate (ensure_ascii), as any client would send it.
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WireRequest(method=method, path=path, body=raw, query={})


# -- item 7: lone surrogates at the wire --------------------------------------------

BAD_BODIES = [
    ("/execute", {"workflow": "w", "execution_id": "obj", "input": LONE}, "input"),
    ("/execute", {"workflow": "w", "execution_id": "obj", "input": {"a": [1, {"b": LONE}]}}, "input.a.1.b"),
    ("/execute", {"workflow": "w", "execution_id": "obj", "input": {LONE: 1}}, "input.(key)"),
    ("/execute", {"workflow": "w" + LONE, "execution_id": "obj"}, "workflow"),
    ("/event", {"type": "go", "payload": {"note": "x" + LONE}}, "payload.note"),
    ("/event", {"type": "go" + LONE}, "type"),
    ("/event", {"type": "go", "id": LONE}, "id"),
    ("/cancel", {"reason": LONE}, "reason"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_BODIES)
async def test_lone_surrogates_get_400_naming_the_field(path: str, body: Any, field: str) -> None:
    Workflow("w").wait_for_event("wait", "go")
    async with LocalNamespace() as ns:
        if path != "/execute":
            start = await ns.fetch("obj", _wire("POST", "/execute", {"workflow": "w", "execution_id": "obj"}))
            assert start.status == 201, start.body
        before = ns.backend.list("obj", None, None, None, None, False)
        response = await ns.fetch("obj", _wire("POST", path, body))
        assert response.status == 400, response.body
        error = response.body["error"]
        assert error["code"] == "invalid_request" and "surrogate" in error["message"]
        assert error["problems"][0]["field"] == field
        assert ns.backend.list("obj", None, None, None, None, False) == before


async def test_raw_surrogate_bytes_in_a_body_get_400() -> None:
    Workflow("w").step("s", lambda i, p, c: 1)
    # The UTF-8 form of U+D800, which the JSON decoder lets through.
    raw = b'{"workflow": "w", "execution_id": "obj", "input": "\xed\xa0\x80"}'
    async with LocalNamespace() as ns:
        response = await ns.fetch("obj", _wire("POST", "/execute", raw))
        assert response.status == 400 and response.body["error"]["problems"][0]["field"] == "input"


async def test_valid_non_ascii_text_is_stored_unchanged(env: WorkflowTestEnv) -> None:
    text = "é 😀 \U0001f680 中文"
    flow = Workflow(unique("unicode")).step("s", lambda i, p, c: {"echo": i["t"], text: 1})
    result = await env.result(await env.run(flow, {"t": text}))
    assert result.ok and result.value == {"echo": text, text: 1}


async def test_the_client_gets_a_clear_error_for_a_bad_input(env: WorkflowTestEnv) -> None:
    flow = Workflow(unique("client")).step("s", lambda i, p, c: 1)
    with pytest.raises(InvalidRequestError, match="surrogate"):
        await env.run(flow, {"name": "x" + LONE})


@pytest.mark.parametrize("bad", [b"bytes", {1, 2}, {(1, 2): 3}, {"deep": [object()]}, float("nan")])
async def test_a_value_json_cannot_encode_is_a_serialization_error_naming_it(
    env: WorkflowTestEnv, bad: Any
) -> None:
    # Not a raw TypeError from json.dumps: the library's error, as NaN always gave.
    waits = Workflow(unique("non-json")).wait_for_event("w", "go")
    with pytest.raises(SerializationError) as caught:
        await env.run(waits, bad)
    assert caught.value.details["what"] == "workflow input"
    handle = await env.run(waits, None)
    with pytest.raises(SerializationError) as caught:
        await handle.resume("go", bad)
    assert caught.value.details["what"] == "payload of event 'go'"
    with pytest.raises(SerializationError) as caught:
        await env.client.restart(handle.execution_id, from_step="w", kind="wait", input=bad)
    assert caught.value.details["what"] == "workflow input"
    assert await handle.status() == "waiting"


# -- item 7: lone surrogates from steps ----------------------------------------------


async def test_a_workflow_result_that_cannot_be_stored_fails_the_execution_by_name(
    env: WorkflowTestEnv,
) -> None:
    """The body ends with a value no journal can hold: the execution fails with a
    serialization error (not as if it were cancelled), and its steps stay completed."""

    @workflow(unique("bad-result"))
    async def flow(ctx: Any, input: Any) -> Any:
        await ctx.step("fine", lambda: 1)
        return {"text": LONE}

    handle = await env.run(flow, {})
    result = await env.result(handle)
    assert result.status == "failed" and result.error is not None
    assert (result.error.code, result.error.failed_step) == ("serialization_error", None)
    assert "surrogate" in result.error.message
    assert [(e["name"], e["status"]) for e in await handle.journal()] == [("fine", "completed")]


@pytest.mark.parametrize("output", [LONE, {"k": ["ok", LONE]}, {LONE: 1}])
async def test_a_step_returning_a_lone_surrogate_fails_cleanly(env: WorkflowTestEnv, output: Any) -> None:
    calls: list[int] = []

    def bad(input: Any, prev: Any, ctx: Any) -> Any:
        calls.append(ctx.attempt)
        return output

    retry = RetryPolicy(max_attempts=4, initial_delay=0.1)
    flow = Workflow(unique("surrogate-out"), retry=retry).step("s", bad)
    handle = await env.run(flow, {})
    result = await env.result(handle)
    assert calls == [1]  # final at once: no value will ever serialize
    assert result.error is not None and result.error.code == "serialization_error"
    assert result.error.failed_step == "s" and "surrogate" in result.error.message
    entries = await handle.journal()
    assert [(e["name"], e["status"]) for e in entries] == [("s", "failed")]
    assert entries[0]["error"]["type"] == "SerializationError"


async def test_a_compensation_step_returning_a_lone_surrogate_fails_cleanly(env: WorkflowTestEnv) -> None:
    async def undo(ctx: Any) -> None:
        await ctx.step("refund", lambda: LONE)

    def decline(input: Any, prev: Any, ctx: Any) -> None:
        raise NonRetryableError("declined")

    flow = Workflow(unique("surrogate-comp")).step("s", decline).on_failure(undo)
    handle = await env.run(flow, {})
    result = await env.result(handle)
    assert result.error is not None and result.error.compensation is not None
    assert result.error.compensation["status"] == "failed"
    assert all(e["status"] != "running" for e in await handle.journal())


async def test_a_step_error_message_with_a_lone_surrogate_is_journaled(env: WorkflowTestEnv) -> None:
    def bad(input: Any, prev: Any, ctx: Any) -> None:
        raise NonRetryableError(f"upstream said {LONE}")

    handle = await env.run(Workflow(unique("surrogate-err")).step("s", bad), {})
    result = await env.result(handle)
    assert result.error is not None and result.error.code == "non_retryable"
    assert "\\ud800" in result.error.message
    assert [e["status"] for e in await handle.journal()] == ["failed"]


async def test_a_model_that_cannot_be_dumped_is_a_serialization_error(env: WorkflowTestEnv) -> None:
    from pydantic import BaseModel, ConfigDict

    class Odd(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        thing: Any

    calls: list[int] = []

    def bad(input: Any, prev: Any, ctx: Any) -> Odd:
        calls.append(ctx.attempt)
        return Odd(thing=object())

    flow = Workflow(unique("odd-model"), retry=RetryPolicy(max_attempts=3, initial_delay=0.1)).step("s", bad)
    result = await env.result(await env.run(flow, {}))
    assert calls == [1]
    assert result.error is not None and result.error.code == "serialization_error"


def test_every_encoder_raises_serialization_error_for_a_lone_surrogate() -> None:
    with pytest.raises(SerializationError, match="surrogate") as caught:
        jn.encode_value({"a": [LONE]}, what="output of step 's'")
    assert caught.value.details["reason"] == "lone_surrogate"
    with pytest.raises(SerializationError, match="surrogate"):
        jn.encode_record("j:00000001", {"output": LONE}, what="entry")
    with pytest.raises(SerializationError, match="surrogate"):
        jn.check_size("j:00000001", '{"v":1,"output":"' + LONE + '"}', what="entry")
    with pytest.raises(SerializationError, match="surrogate"):
        jn.check_size("eid:" + LONE, "{}", what="event marker")
    assert jn.storable_text("a" + LONE + "é") == "a\\ud800é"


def test_valid_values_encode_to_the_same_bytes_as_before() -> None:
    value = {"v": 1, "text": "é 😀", "n": [1, 2.5, None, True], "nested": {"k": "\u2028"}}
    expected = '{"v":1,"text":"é 😀","n":[1,2.5,null,true],"nested":{"k":"\u2028"}}'
    assert jn.encode_value(value, what="x") == expected
    assert jn.encode_record("k", {"text": "é"}, what="x") == '{"v":1,"text":"é"}'
    jn.check_size("k", expected, what="x", limit=len("k") + len(expected.encode()))
    with pytest.raises(SerializationError, match="limit"):
        jn.check_size("k", expected, what="x", limit=len("k") + len(expected.encode()) - 1)


def test_definitions_refuse_what_could_never_be_journaled() -> None:
    with pytest.raises(DefinitionError, match="surrogate"):
        Workflow(unique("n")).step("s" + LONE, lambda i, p, c: 1)
    with pytest.raises(DefinitionError, match="surrogate"):
        Workflow("w" + LONE)
    with pytest.raises(DefinitionError, match="idempotency_key"):
        Workflow(unique("k")).step("s", lambda i, p, c: 1, idempotency_key="key" + LONE)
    with pytest.raises(DefinitionError, match="surrogate"):
        Workflow(unique("d")).wait_for_event("w", "go", timeout="1h", default={"x": LONE})
    with pytest.raises(DefinitionError, match="default"):
        Workflow(unique("d")).wait_for_event("w", "go", timeout="1h", default=object())


async def test_code_first_names_are_checked_at_call_time(env: WorkflowTestEnv) -> None:
    @workflow(unique("cf-names"))
    async def flow(ctx: Any, input: Any) -> None:
        await ctx.step("s" + LONE, lambda: 1)

    handle = await env.run(flow, {})
    result = await env.result(handle)
    assert result.error is not None and result.error.code == "invalid_definition"
    assert await handle.journal() == []


# -- item 9: instants no date can show -----------------------------------------------

ABSURD = [1e12, 1e300, -1e300, -62135596801.0, float("inf"), float("nan")]


@pytest.mark.parametrize("instant", ABSURD)
def test_any_instant_renders_as_a_string(instant: float) -> None:
    assert "out of range" in when(instant)
    assert "out of range" in (iso(instant) or "")


def test_spans_render_whatever_their_size() -> None:
    assert span(float("inf")) == "∞" and span(float("nan")) == "-"
    assert span(1e300).endswith("h") and span(0.4) == "0ms"


def _absurd_history(path: str) -> None:
    db = LocalD1(path)
    sql = db.connection
    sql.execute(
        "INSERT INTO wf_executions (execution_id, workflow, status, phase, created_at, started_at, "
        "finished_at, updated_at, wake_at, waiting_for, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        ("far", "sleepy", "sleeping", "main", 1e12, 1e12, None, 1e12, 1e300, "[]", 1),
    )
    steps = [
        (0, "nap", "sleep", "sleeping", 0, 1e12, None, None, 1e300, None),
        (1, "call", "step", "retrying", 2, -1e300, 1e12, None, None, 1e300),
        (2, "wait", "wait", "waiting", 0, 1e12, None, None, 1e308, None),
    ]
    for op, name, kind, status, attempt, started, attempt_started, finished, wake, retry in steps:
        errors = json.dumps(
            [{"code": "E", "message": "m", "attempt": 1, "started_at": -1e300, "finished_at": 1e300}]
        )
        sql.execute(
            "INSERT INTO wf_step_rows (execution_id, phase, op, name, kind, status, attempt, started_at, "
            "attempt_started_at, finished_at, retry_at, wake_at, event_type, errors, seq) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                "far",
                "main",
                op,
                name,
                kind,
                status,
                attempt,
                started,
                attempt_started,
                finished,
                retry,
                wake,
                "go" if kind == "wait" else None,
                errors if kind == "step" else "[]",
                1,
            ),
        )
    db.close()


async def test_the_page_and_the_cli_render_absurd_stored_instants(tmp_path: Path) -> None:
    path = str(tmp_path / "history.db")
    _absurd_history(path)
    db = LocalD1(path)
    try:
        query = HistoryQuery(db)
        history = await query.get_execution("far")
        html = render_execution_page(history)
        assert "out of range" in html and "nan%" not in html
        status, page = await history_page(query, "/executions/far")
        assert status == 200 and "out of range" in page
        index = render_index(await query.list_executions())
        assert "far" in index and "out of range" in index
        text = cli.format_timeline(build(history))
        assert "out of range" in text
    finally:
        db.close()


def test_the_cli_shows_and_lists_absurd_stored_instants(tmp_path: Path) -> None:
    path = str(tmp_path / "history.db")
    _absurd_history(path)
    for argv in (["show", "far"], ["list"]):
        out = io.StringIO()
        assert cli.main([*argv, "--db", path], out=out) == 0
        assert "out of range" in out.getvalue()


# -- item 10: the example Worker -------------------------------------------------------


def _worker_request(
    method: str, path: str, body: bytes = b"", query: dict[str, str] | None = None
) -> WireRequest:
    headers = {"content-type": "application/json"} if body else {}
    return WireRequest(method=method, path=path, body=body, headers=headers, query=query or {})


@pytest.fixture
async def worker_env() -> Any:
    d1 = LocalD1()
    async with LocalNamespace(clock=VirtualClock(), env={"HISTORY_DB": d1}) as ns:
        yield SimpleNamespace(WORKFLOW_DO=ns, HISTORY_DB=d1)
    d1.close()


DEEP = b"[" * 60_000


@pytest.mark.parametrize("path", ["/orders", "/executions/order-x/cancel", "/executions/order-x/approval"])
@pytest.mark.parametrize(
    "body", [DEEP, b'{"a":' * 12_000, b'{"reason": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"]
)
async def test_deeply_nested_bodies_get_400_json(worker_env: Any, path: str, body: bytes) -> None:
    status, payload = await app.handle(_worker_request("POST", path, body), worker_env)
    assert status == 400, payload
    assert payload["error"]["code"] == "invalid_json" and payload["error"]["message"]
    json.dumps(payload)


@pytest.mark.parametrize(
    "cursor",
    [
        "[" * 3000,
        base64.urlsafe_b64encode(b"[" * 3000).decode(),
        "x" * 513,
        "bad cursor!",
    ],
)
async def test_bad_cursors_get_400_json(worker_env: Any, cursor: str) -> None:
    status, payload = await app.page(_worker_request("GET", "/ui", query={"cursor": cursor}), worker_env)
    assert status == 400 and isinstance(payload, dict), payload
    assert payload["error"]["code"] == "invalid_request"
    assert payload["error"]["problems"][0]["field"] == "cursor"


async def test_a_cursor_the_page_gave_still_works(worker_env: Any) -> None:
    status, html = await app.page(_worker_request("GET", "/ui", query={"cursor": "WzEuMCwieCJd"}), worker_env)
    assert status == 200 and isinstance(html, str)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/orders", {"order_id": "o-1", "amount": 5, "items": [{"sku": "a" + LONE}]}, "items.0.sku"),
        ("/executions/order-x/approval", {"approved": True, "by": LONE}, "by"),
        ("/executions/order-x/cancel", {"reason": LONE}, "reason"),
    ],
)
async def test_lone_surrogates_get_400_from_the_worker(
    worker_env: Any, path: str, body: Any, field: str
) -> None:
    status, payload = await app.handle(_worker_request("POST", path, json.dumps(body).encode()), worker_env)
    assert status == 400, payload
    assert payload["error"]["problems"][0]["field"] == field


async def test_an_idempotency_key_with_a_lone_surrogate_fails_the_workflow_cleanly(
    env: WorkflowTestEnv,
) -> None:
    flow = Workflow(unique("surrogate-key")).step(
        "charge", lambda i, p, c: 1, idempotency_key=lambda input, ctx: "key-\ud800"
    )
    result = await env.result(await env.run(flow, {}))
    assert not result.ok and result.error is not None
    assert result.error.code == "serialization_error"
    assert "valid Unicode" in result.error.message


@pytest.mark.parametrize(
    "bad", ["", "\ud800", " spaced", "a/b", "x" * 201, 42, "limit:w:k", "schedule:nightly", "trailing\n"]
)
async def test_an_execution_id_no_execution_can_have_is_refused_by_the_client(
    env: WorkflowTestEnv, bad: Any
) -> None:
    # Only None asks for a new id: "" is refused, not replaced by a random one.
    flow = Workflow(unique("ids")).step("a", lambda i, p, c: 1)
    with pytest.raises(InvalidRequestError) as caught:
        await env.run(flow, {}, execution_id=bad)
    assert caught.value.details.get("field") == "execution_id"
    with pytest.raises(InvalidRequestError) as caught:
        await env.client.start(flow, {}, execution_id=bad)
    assert caught.value.details.get("field") == "execution_id"
    with pytest.raises(InvalidRequestError):
        env.client.execution(bad)
    with pytest.raises(InvalidRequestError):
        env.client.execution("")
    assert env.ns.live_objects() == []


async def test_a_restart_under_a_reserved_id_is_refused_by_the_client(env: WorkflowTestEnv) -> None:
    flow = Workflow(unique("ids")).step("a", lambda i, p, c: 1)
    source = await env.run(flow, {}, execution_id="source")
    with pytest.raises(InvalidRequestError, match="starts with 'limit:', which is reserved") as caught:
        await env.client.restart(source.execution_id, from_step="a", new_execution_id="limit:w:k")
    assert caught.value.details.get("field") == "execution_id"
    assert env.ns.live_objects() == ["source"]


# -- ids that name the library's own objects, at the wire -----------------------------

RESERVED_BODIES = [
    ("limit:w:k", {"workflow": "w", "execution_id": "limit:w:k"}, "execution_id"),
    ("schedule:s", {"workflow": "w", "execution_id": "schedule:s"}, "execution_id"),
    (
        "obj",
        {
            "workflow": "w",
            "execution_id": "obj",
            "parent": {"execution_id": "limit:p:k", "workflow": "p", "op": 0},
        },
        "parent.execution_id",
    ),
    (
        "obj",
        {"workflow": "w", "execution_id": "obj", "restart": {"execution_id": "schedule:s", "from_step": "s"}},
        "restart.execution_id",
    ),
]


@pytest.mark.parametrize(("name", "body", "field"), RESERVED_BODIES)
async def test_a_reserved_execution_id_gets_400_naming_the_field(name: str, body: Any, field: str) -> None:
    Workflow("w").step("s", lambda i, p, c: 1)
    async with LocalNamespace() as ns:
        response = await ns.fetch(name, _wire("POST", "/execute", body))
        assert response.status == 400, response.body
        error = response.body["error"]
        assert error["code"] == "invalid_request" and "reserved" in error["message"]
        assert [p["field"] for p in error["problems"]] == [field]
        assert ns.backend.list(name, None, None, None, None, False) == {}


async def test_an_execute_sent_to_a_coordinator_leaves_it_as_it_was(env: WorkflowTestEnv) -> None:
    flow = Workflow(unique("limited"), concurrency=Limit(key="k", max=1)).sleep("nap", "1h")
    holder = await env.run(flow, {"k": "acme"})
    coordinator = f"limit:{flow.name}:acme"
    stored = env.ns.backend.list(coordinator, None, None, None, None, False)
    body = {"workflow": flow.name, "execution_id": coordinator}
    response = await env.ns.fetch(coordinator, _wire("POST", "/execute", body))
    assert response.status == 400 and response.body["error"]["problems"][0]["field"] == "execution_id"
    assert env.ns.backend.list(coordinator, None, None, None, None, False) == stored
    assert (await env.ns.request(coordinator, "GET", "/limit")).body["limit"]["holders"].keys() == {
        holder.execution_id
    }


def test_the_example_entry_accepts_the_april_2025_handler_arity() -> None:
    """That SDK calls ``on_fetch(request, undefined, undefined)``: read the shipped class."""
    import ast

    tree = ast.parse((Path(__file__).parent.parent / "worker" / "entry.py").read_text())
    default = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Default")
    on_fetch = next(n for n in default.body if isinstance(n, ast.AsyncFunctionDef) and n.name == "on_fetch")
    assert on_fetch.args.vararg is not None
