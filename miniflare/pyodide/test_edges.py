# ruff: noqa: PT017  (runs under pyo_test.py in Pyodide, where pytest is not available)
"""Conversions at the JS edge: requests and responses of the Durable Object, the
namespace client, and outbound fetch from steps (workkit_workflow.http)."""

import asyncio
import json
from collections import Counter

import cf_runtime
import fake_workers
from js import Object
from js import Request as JsRequest
from js import Response as JsResponse
from pyodide.ffi import JsException, to_js

from workkit_workflow import Workflow, create_durable_workflow, http
from workkit_workflow.cloudflare._host import CloudflareHost
from workkit_workflow.cloudflare._workers import make_response, read_request
from workkit_workflow.definitions._steps import _CURRENT_STEP, StepContext
from workkit_workflow.engine._execution import ExecutionCore
from workkit_workflow.engine._ports import WireResponse
from workkit_workflow.errors import ExecutionNotFoundError, TransportError

import scenarios


def obj(d):
    return to_js(d, dict_converter=Object.fromEntries)


def js_request(method, url, body=None, headers=None):
    init = {"method": method, "headers": headers or {"content-type": "application/json"}}
    if body is not None:
        init["body"] = body
    return JsRequest.new(url, obj(init))


async def test_read_request_from_a_js_request():
    wire = await read_request(
        js_request("POST", "https://x.internal/event?wait=2&a=%C3%A9", '{"type":"approved"}')
    )
    assert (wire.method, wire.path, dict(wire.query)) == ("POST", "/event", {"wait": "2", "a": "\u00e9"})
    assert wire.body == b'{"type":"approved"}' and wire.headers["content-type"] == "application/json"
    get = await read_request(js_request("GET", "https://x.internal/status"))
    assert get.method == "GET" and get.body == b"" and get.path == "/status"


async def test_read_request_from_a_workers_request():
    request = fake_workers.Request(js_request("POST", "https://x.internal/cancel", '{"reason":"r"}'))
    wire = await read_request(request)
    assert wire.method == "POST" and wire.path == "/cancel" and wire.body == b'{"reason":"r"}'
    assert wire.headers["content-type"] == "application/json"


async def test_make_response_without_the_sdk_sets_status_and_headers():
    response = make_response(WireResponse(404, {"error": {"code": "not_found"}}), {"x-extra": "1"})
    assert response.status == 404
    assert response.headers.get("content-type") == "application/json"
    assert response.headers.get("x-extra") == "1"
    assert json.loads(await response.text()) == {"error": {"code": "not_found"}}


async def test_a_plain_dict_init_is_silently_ignored_by_js_response():
    # Why make_response converts explicitly (miniflare/NOTES.md, workerd; same in Node).
    assert JsResponse.new("x", {"status": 203}).status == 200
    assert JsResponse.new("x", obj({"status": 203})).status == 203


async def test_make_response_with_the_sdk_uses_workers_response():
    fake_workers.install()
    try:
        response = make_response(WireResponse(201, {"created": True}))
        assert isinstance(response, fake_workers.Response)
        assert response.status == 201 and json.loads(await response.text()) == {"created": True}
    finally:
        fake_workers.uninstall()


def namespaces():
    yield "raw", cf_runtime.workflowDoubleNamespace()
    yield "sdk", fake_workers.DurableObjectNamespaceWrapper(cf_runtime.workflowDoubleNamespace())


async def test_client_over_a_js_namespace():
    for mode, binding in namespaces():
        workflows = create_durable_workflow(binding)
        handle = await workflows.run("order", {"order_id": "o-1", "n": 2.5}, execution_id="ex-1", wait=False)
        assert handle.created is True, mode
        again = await workflows.run("order", {"order_id": "o-1"}, execution_id="ex-1")
        assert again.created is False, mode
        assert await handle.status() == "completed", mode
        assert (await handle.journal())[0]["name"] == "only", mode
        result = await handle.result(timeout=5)
        assert result.ok and result.value["echoed"] == {"order_id": "o-1", "n": 2.5}, (mode, result)
        assert result.value["wait"] == "5", mode
        try:
            await workflows.execution("nobody").status()
        except ExecutionNotFoundError:
            pass
        else:
            raise AssertionError(f"[{mode}] a missing execution must raise ExecutionNotFoundError")


async def test_stub_call_shapes_that_fail_silently_or_loudly():
    ns = cf_runtime.workflowDoubleNamespace()
    stub = ns.get(ns.idFromName("shapes"))
    try:
        await stub.fetch("https://x.internal/execute", method="POST", headers={"content-type": "x"})
    except JsException as exc:
        assert "Sequence" in str(exc)
    else:
        raise AssertionError("headers as a plain dict must fail")
    # A plain dict init is ignored: the object sees a GET without a body.
    await stub.fetch("https://x.internal/status", {"method": "POST", "body": "{}"})
    assert ns.requests.to_py()[-1]["method"] == "GET"


async def test_client_turns_a_throwing_object_into_transport_error():
    async def boom(name, request):
        raise Exception("no")

    failing = cf_runtime.FakeNamespace.new(lambda name, request: (_ for _ in ()).throw(ValueError("boom")))
    try:
        await create_durable_workflow(failing).execution("x").status()
    except TransportError as exc:
        assert "did not answer" in str(exc)
    else:
        raise AssertionError("expected TransportError")


async def test_http_fetch_sends_the_step_idempotency_key_through_js_fetch():
    cf_runtime.installFetch()
    token = _CURRENT_STEP.set(StepContext("ex", "wf", "charge", 2, "ex:charge:key"))
    try:
        response = await http.fetch("https://api.example/charges", method="POST", json={"amount": 5})
    finally:
        _CURRENT_STEP.reset(token)
    assert response.status == 201 and response.headers["x-echo"] == "1"
    assert response.json() == {"got": '{"amount":5}'}
    sent = json.loads(cf_runtime.fetchLogJson())[-1]
    assert sent["method"] == "POST" and sent["headers"]["idempotency-key"] == "ex:charge:key"
    assert sent["headers"]["content-type"] == "application/json"
    # Outside a step, no key unless given.
    await http.fetch("https://api.example/ping")
    assert "idempotency-key" not in json.loads(cf_runtime.fetchLogJson())[-1]["headers"]


async def test_http_fetch_inside_a_real_step_uses_its_stable_key():
    cf_runtime.installFetch()
    calls = Counter()
    seen = []

    async def charge(input, prev, ctx):
        calls["charge"] += 1
        seen.append(ctx.idempotency_key)
        response = await http.fetch("https://api.example/charge", method="POST", json=input)
        if calls["charge"] == 1:
            raise ConnectionError("lost the answer")
        return response.json()

    flow = Workflow("http-flow", register=False).step(
        "charge", charge, retry=__import__("workkit_workflow").RetryPolicy(max_attempts=2, initial_delay=1.0)
    )
    registry = scenarios.registry_of(flow)
    clock = scenarios.ManualClock()

    class Harness:
        def __init__(self):
            self.clock = clock

        def host(self, name):
            return CloudflareHost(cf_runtime.makeState("http-" + name, False), clock=clock)

    harness = Harness()
    core = ExecutionCore(harness.host("x"), registry=registry)
    await core.execute(workflow="http-flow", input={"a": 1}, execution_id="x", wait=True)
    await scenarios.fire_alarms(harness, "x", registry)
    sent = [r["headers"]["idempotency-key"] for r in json.loads(cf_runtime.fetchLogJson())[-2:]]
    assert len(seen) == 2 and len(set(seen)) == 1 and sent == seen, (seen, sent)
    await asyncio.sleep(0)
