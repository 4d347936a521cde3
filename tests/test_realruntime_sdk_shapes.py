"""WorkflowExecutionDO on both shapes of the runtime's ``workers`` SDK, on CPython.

The real-runtime tier runs the newest workerd only. Its SDK's ``DurableObject.__init__(ctx,
env)`` keeps both, and it calls a handler with as many arguments as the handler declares
(``fetch(request)``; observed there: a ``*args`` handler gets ``(request, env, ctx)``). The
April-2025 SDK (workerd 1.20250403.0, ../shared/RUNTIME.md) has a ``DurableObject`` without a
constructor, so ``super().__init__(ctx, env)`` raised ``TypeError``, and calls
``on_fetch(request, undefined, undefined)`` whatever the handler declares.

Each test builds the package's own ``_object.py`` on a stand-in ``DurableObject`` of one shape
(the module is loaded afresh with ``_cloudflare.DurableObjectBase`` set to it, as the runtime's
import would), then dispatches to it the way that SDK does.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import workkit_workflow
from workkit_workflow import _cloudflare, workflow
from workkit_workflow._ports import WireRequest
from workkit_workflow.local import LocalNamespace

UNDEFINED = None  # JS undefined arrives as None in Python


class SdkDurableObject2025:
    """The newer SDK's base: keeps ctx and env."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env
        self.sdk_constructed = True


class SdkDurableObjectApril2025:
    """The April-2025 SDK's base: no constructor of its own."""


def _load_object_module(base: type, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setattr(_cloudflare, "DurableObjectBase", base)
    path = inspect.getfile(workkit_workflow._object)
    spec = importlib.util.spec_from_file_location(f"workkit_workflow._object_on_{base.__name__}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=[SdkDurableObject2025, SdkDurableObjectApril2025])
def do_class(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    module = _load_object_module(request.param, monkeypatch)
    cls = module.WorkflowExecutionDO
    assert cls.__bases__ == (request.param,)
    return cls


def _call_like_newest_sdk(handler: Callable[..., Any], request: Any, env: Any, ctx: Any) -> Any:
    """As many arguments as the handler declares (all three for ``*args``)."""
    params = list(inspect.signature(handler).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return handler(request, env, ctx)
    return handler(*[request, env, ctx][: len(params)])


def _call_like_april_2025_sdk(handler: Callable[..., Any], request: Any, env: Any, ctx: Any) -> Any:
    return handler(request, UNDEFINED, UNDEFINED)


@workflow("sdk-shapes-flow")
async def _flow(ctx: Any, data: Any) -> Any:
    return await ctx.step("double", lambda: data * 2)


def test_constructor_on_both_shapes(do_class: type) -> None:
    ctx = _local_ctx(LocalNamespace(object_class=do_class))
    env = {"HISTORY_DB": None}
    obj = do_class(ctx, env)
    assert obj.ctx is ctx and obj.env is env
    kept_by_sdk = getattr(obj, "sdk_constructed", False)
    assert kept_by_sdk == (do_class.__bases__[0] is SdkDurableObject2025)


def _local_ctx(namespace: LocalNamespace) -> Any:
    from workkit_workflow.local._namespace import LocalHost

    return LocalHost(namespace, "x")


@pytest.mark.parametrize("dispatch", [_call_like_newest_sdk, _call_like_april_2025_sdk])
async def test_on_fetch_and_on_alarm_with_each_sdks_arity(
    do_class: type, dispatch: Callable[..., Any]
) -> None:
    namespace = LocalNamespace(object_class=do_class)
    obj = do_class(_local_ctx(namespace), None)
    body = json.dumps({"workflow": "sdk-shapes-flow", "input": 21, "execution_id": "x"}).encode()
    response = await dispatch(obj.on_fetch, WireRequest("POST", "/execute", body=body), None, None)
    assert response.status == 201, response.body
    assert response.body["execution"]["status"] == "completed"
    await dispatch(obj.on_alarm, {"retryCount": 0, "isRetry": False}, None, None)
    status = await dispatch(obj.on_fetch, WireRequest("GET", "/result"), None, None)
    assert status.body["result"]["value"] == 42, status.body


async def test_newest_sdk_calls_fetch_and_alarm_with_what_they_declare(do_class: type) -> None:
    namespace = LocalNamespace(object_class=do_class)
    obj = do_class(_local_ctx(namespace), None)
    assert len(inspect.signature(obj.fetch).parameters) == 1
    response = await _call_like_newest_sdk(obj.fetch, WireRequest("GET", "/status"), None, None)
    assert response.status == 404 and response.body["error"]["code"] == "execution_not_found"
    await _call_like_newest_sdk(obj.alarm, {"retryCount": 0}, None, None)
