import functools
import inspect
from asyncio import create_task
from datetime import datetime

import cf_engine
from js import Date, Object
from pyodide.ffi import JsException, JsProxy, create_proxy, to_js

from .workflows import NonRetryableError


class _Sdk:
    native_non_retryable = True
    implicit_dependencies = True


SDK = _Sdk()


def _to_rpc(value):
    if isinstance(value, (tuple, bytearray)):
        raise TypeError(f"{type(value)} cannot be sent over RPC.")
    if isinstance(value, dict):
        for v in value.values():
            _to_rpc(v)
    if isinstance(value, list):
        for v in value:
            _to_rpc(v)
    if isinstance(value, datetime):
        return Date.new(value.timestamp() * 1000)
    return to_js(value, dict_converter=Object.fromEntries)


def _from_rpc(value):
    if isinstance(value, JsProxy):
        if getattr(value, "constructor", None) is not None and value.constructor.name == "Date":
            return value
        return value.to_py()
    return value


def _from_js_error(exc):
    name = getattr(exc, "name", None)
    message = getattr(exc, "message", "") or ""
    if name == "NonRetryableError" or message.startswith("NonRetryableError"):
        return NonRetryableError(message)
    return Exception(f"{name}: {message}")


class _StepWrapper:
    def __init__(self, js_step):
        self._js_step = js_step
        self._in_flight = {}
        self._memoized = {}

    def do(self, name=None, *, concurrent=False, config=None):
        def decorator(func):
            step_name = func.__name__ if name is None else name
            params = list(inspect.signature(func).parameters)
            for p in params:
                if p != "ctx":
                    raise TypeError(f"Received unexpected parameter {p}")

            async def closure():
                if closure in self._memoized:
                    return self._memoized[closure]
                if closure in self._in_flight:
                    return await self._in_flight[closure]

                async def callback(ctx=None):
                    args = [_from_rpc(ctx)] if params else []
                    result = func(*args)
                    if inspect.iscoroutine(result):
                        result = await result
                    return _to_rpc(result)

                async def call():
                    proxy = create_proxy(callback)
                    try:
                        if config is None:
                            value = await self._js_step.do(step_name, proxy)
                        else:
                            js_config = to_js(config, dict_converter=Object.fromEntries)
                            value = await self._js_step.do(step_name, js_config, proxy)
                    except JsException as exc:
                        raise _from_js_error(exc) from exc
                    finally:
                        proxy.destroy()
                    return _from_rpc(value)

                task = create_task(call())
                self._in_flight[closure] = task
                try:
                    result = await task
                    self._memoized[closure] = result
                finally:
                    self._in_flight.pop(closure, None)
                return result

            return closure

        return decorator

    def sleep(self, name, duration):
        return self._js_step.sleep(name, duration)

    def sleep_until(self, name, timestamp):
        if not isinstance(timestamp, str):
            timestamp = _to_rpc(timestamp)
        return self._js_step.sleepUntil(name, timestamp)

    async def wait_for_event(self, name, event_type, /, timeout="24 hours"):
        options = to_js({"type": event_type, "timeout": timeout}, dict_converter=Object.fromEntries)
        try:
            return _from_rpc(await self._js_step.waitForEvent(name, options))
        except JsException as exc:
            raise _from_js_error(exc) from exc


def _wrap_run(cls):
    run = cls.__dict__.get("run")
    if run is None:
        return

    @functools.wraps(run)
    async def wrapped(self, event=None, step=None, /):
        if event is not None:
            event = _from_rpc(event)
        if step is not None:
            if SDK.native_non_retryable:
                step = cf_engine.wrapWorkflowStep(step)
            step = _StepWrapper(step)
        result = run(self, event, step)
        if inspect.iscoroutine(result):
            result = await result
        return None if result is None else _to_rpc(result)

    cls.run = wrapped


def __getattr__(name):
    # The SDK >= 1.9.0 marker the adapter probes for.
    if name == "_wrap_js_workflow_step" and SDK.native_non_retryable:
        return cf_engine.wrapWorkflowStep
    raise AttributeError(name)


class WorkflowEntrypoint:
    def __init__(self, ctx, env):
        self.ctx = ctx
        self.env = env

    def __init_subclass__(cls, **kwargs):
        _wrap_run(cls)
