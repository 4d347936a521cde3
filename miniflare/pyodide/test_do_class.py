"""WorkflowExecutionDO as a Cloudflare Durable Object class, with a stand-in ``workers``
module (fake_workers.py) registered before the package is imported, as the runtime does.

pydantic cannot load in this offline Pyodide, so the request-body module ``_wire`` is
replaced by a small stand-in here: this file checks the class wiring and the conversions
(``workers.Request`` in, ``workers.Response`` out, ``alarm``), not body validation (which
the CPython suite covers)."""

import json
import sys
import types

import cf_runtime
import fake_workers
from js import Object
from js import Request as JsRequest
from pyodide.ffi import to_js


def _purge():
    for name in [m for m in sys.modules if m == "workkit_workflow" or m.startswith("workkit_workflow.")]:
        del sys.modules[name]


def _stub_wire():
    wire = types.ModuleType("workkit_workflow.cloudflare._wire")

    class Body(types.SimpleNamespace):
        pass

    def parse(model, body):
        data = json.loads(body or b"{}")
        defaults = {
            "ExecuteBody": {"wait": True, "restart": None, "input": None, "version": None, "parent": None},
            "CancelBody": {"reason": None},
        }
        return Body(**{**defaults.get(model, {}), **data})

    wire.ExecuteBody, wire.CancelBody, wire.EventBody = "ExecuteBody", "CancelBody", "EventBody"
    wire.parse = parse
    return wire


def _fresh_package_with_sdk():
    _purge()
    workers = fake_workers.install()
    import workkit_workflow

    sys.modules["workkit_workflow.cloudflare._wire"] = _stub_wire()
    return workers, workkit_workflow


def _request(method, path, body=None):
    init = {"method": method, "headers": {"content-type": "application/json"}}
    if body is not None:
        init["body"] = json.dumps(body)
    js = JsRequest.new("https://object.internal" + path, to_js(init, dict_converter=Object.fromEntries))
    return fake_workers.Request(js)


async def test_the_class_subclasses_workers_durable_object_and_serves():
    workers, wk = _fresh_package_with_sdk()
    try:
        cls = wk.WorkflowExecutionDO
        assert issubclass(cls, workers.DurableObject)
        for name in ("fetch", "alarm", "on_fetch", "on_alarm"):
            assert callable(getattr(cls, name)), name

        flow = wk.Workflow("do-class-flow").step("one", lambda input, prev, ctx: {"n": input["n"] + 1})
        state = cf_runtime.makeState("do-class", True)
        env = types.SimpleNamespace(NAME="env")
        instance = cls(state, env)
        # The SDK wraps ctx and env on the way in; storage goes through the wrapper.
        assert isinstance(instance.ctx, fake_workers.DurableObjectContext)

        missing = await instance.fetch(_request("GET", "/status"))
        assert isinstance(missing, workers.Response) and missing.status == 404
        assert json.loads(await missing.text())["error"]["code"] == "execution_not_found"

        body = {"workflow": flow.name, "input": {"n": 1}, "execution_id": "do-class"}
        created = await instance.on_fetch(_request("POST", "/execute", body))
        view = json.loads(await created.text())
        assert created.status == 201 and view["execution"]["status"] == "completed", view

        # The object name from ctx.id.name must match the execution id.
        wrong = await instance.fetch(_request("POST", "/execute", {**body, "execution_id": "other"}))
        assert wrong.status == 400

        journal = json.loads(await (await instance.fetch(_request("GET", "/journal"))).text())
        assert [e["output"] for e in journal["entries"]] == [{"n": 2}]
        stored = json.loads(cf_runtime.storageOf("do-class").snapshot().to_py()["result"])
        assert stored["value"] == {"n": 2}

        # A restarted instance answers from storage; alarm handlers take the alarm info.
        again = cls(cf_runtime.makeState("do-class", True), env)
        await again.alarm(to_js({"retryCount": 0, "isRetry": False}, dict_converter=Object.fromEntries))
        await again.on_alarm()
        status = json.loads(await (await again.fetch(_request("GET", "/status"))).text())
        assert status["execution"]["status"] == "completed"
    finally:
        fake_workers.uninstall()
        _purge()
        import workkit_workflow  # noqa: F401  (back to the plain-class package for later tests)


async def test_live_state_is_served_on_get_state():
    _, wk = _fresh_package_with_sdk()
    try:

        async def body(ctx, input):
            await ctx.set_state("progress", {"done": 1, "of": 2})
            return "ok"

        flow = wk.Workflow("do-class-state", body)
        instance = wk.WorkflowExecutionDO(cf_runtime.makeState("do-state", True), types.SimpleNamespace())
        execute = {"workflow": flow.name, "input": None, "execution_id": "do-state"}
        assert (await instance.fetch(_request("POST", "/execute", execute))).status == 201
        again = wk.WorkflowExecutionDO(cf_runtime.makeState("do-state", True), types.SimpleNamespace())
        every = await again.fetch(_request("GET", "/state"))
        assert json.loads(await every.text()) == {"state": {"progress": {"done": 1, "of": 2}}}
        one = json.loads(await (await again.fetch(_request("GET", "/state?key=progress"))).text())
        assert one == {"key": "progress", "found": True, "value": {"done": 1, "of": 2}}
        bad = await again.fetch(_request("GET", "/state?key=" + "k" * 300))
        assert bad.status == 400
    finally:
        fake_workers.uninstall()
        _purge()
        import workkit_workflow  # noqa: F401  (back to the plain-class package for later tests)


async def test_without_the_sdk_the_class_is_plain_and_speaks_js():
    _purge()
    import workkit_workflow as wk

    sys.modules["workkit_workflow.cloudflare._wire"] = _stub_wire()
    try:
        assert wk.WorkflowExecutionDO.__mro__[1] is object
        instance = wk.WorkflowExecutionDO(cf_runtime.makeState("plain", False), None)
        js = JsRequest.new("https://object.internal/status")
        response = await instance.fetch(js)
        # A JS Response (workerd without the SDK), built with a JS init object.
        assert response.status == 404 and response.headers.get("content-type") == "application/json"
    finally:
        _purge()
        import workkit_workflow  # noqa: F401


async def test_the_example_entry_with_the_sdk_serves_through_default():
    """worker/entry.py (mounted at /worker) under the SDK: ``Default(WorkerEntrypoint)`` serves
    the API, and the client reaches the namespace through the SDK's stub wrapper, which only
    takes keyword options."""
    _purge()
    for name in ("entry", "app", "order_flow"):
        sys.modules.pop(name, None)
    workers = fake_workers.install()
    sys.path.insert(0, "/worker")
    # The example's request models are pydantic: this Pyodide has none, so the tests' stand-in
    # (miniflare/realruntime/standin, mounted at /standin) takes its place for this test only.
    sys.path.insert(0, "/standin")
    try:
        import entry

        assert "Default" in entry.__all__ and "WorkflowExecutionDO" in entry.__all__
        assert issubclass(entry.Default, workers.WorkerEntrypoint)
        assert issubclass(entry.WorkflowExecutionDO, workers.DurableObject)
        assert not hasattr(entry, "on_fetch")
        env = types.SimpleNamespace(
            WORKFLOW_DO=fake_workers.DurableObjectNamespaceWrapper(cf_runtime.workflowDoubleNamespace()),
            API_TOKEN="t0ken",
        )
        default = entry.Default(types.SimpleNamespace(), env)
        index = await default.fetch(_request("GET", "/"))
        assert isinstance(index, workers.Response) and index.status == 200
        order = {"order_id": "e1", "amount": 10, "items": [{"sku": "a", "quantity": 1}]}
        denied = await default.on_fetch(_request("POST", "/orders", order))
        assert denied.status == 401
        request = JsRequest.new(
            "https://api.example/orders",
            to_js(
                {
                    "method": "POST",
                    "body": json.dumps(order),
                    "headers": {"content-type": "application/json", "authorization": "Bearer t0ken"},
                },
                dict_converter=Object.fromEntries,
            ),
        )
        created = await default.fetch(fake_workers.Request(request))
        body = json.loads(await created.text())
        assert created.status == 201 and body["execution"]["execution_id"] == "order-e1", body
    finally:
        sys.path.remove("/worker")
        sys.path.remove("/standin")
        for name in ("entry", "app", "order_flow", "pydantic"):
            sys.modules.pop(name, None)
        fake_workers.uninstall()
        _purge()
        import workkit_workflow  # noqa: F401
