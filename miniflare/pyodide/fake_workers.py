"""A stand-in for the ``workers`` module of Cloudflare's Python SDK (workers-runtime-sdk),
shaped after its 1.9.5 source: ``DurableObject(ctx, env)`` whose subclasses get their
``__init__`` wrapped (ctx → DurableObjectContext whose ``storage`` converts arguments
with ``to_js(dict_converter=Object.fromEntries)`` and results with ``to_py``, calling JS
synchronously and returning an awaitable), ``Request`` (``method`` an HTTPMethod,
``headers`` an HTTPMessage) and ``Response`` (with ``js_object``).

``install()`` registers it as ``sys.modules["workers"]``; ``uninstall()`` removes it.
"""

import sys
import types
from email.message import Message
from http import HTTPMethod

from js import Object
from js import Response as JsResponse
from pyodide.ffi import JsProxy, to_js


def python_to_rpc(value):
    if isinstance(value, (dict, list, tuple)):
        return to_js(value, dict_converter=Object.fromEntries)
    return value


def python_from_rpc(value):
    return value.to_py() if isinstance(value, JsProxy) else value


class BindingWrapper:
    """Like the SDK's ``_BindingWrapper``: the JS call happens at call time."""

    def __init__(self, binding):
        self._binding = binding

    def __getattr__(self, name):
        attr = getattr(self._binding, name)
        if not callable(attr):
            # A property holding an object (``storage.sql``): wrapped in turn.
            return BindingWrapper(attr)

        def call(*args, **kwargs):
            result = attr(
                *[python_to_rpc(a) for a in args], **{k: python_to_rpc(v) for k, v in kwargs.items()}
            )
            if hasattr(result, "then"):

                async def settle():
                    return python_from_rpc(await result)

                return settle()
            return python_from_rpc(result)

        return call


class DurableObjectContext:
    def __init__(self, ctx):
        self._ctx = ctx

    def __getattr__(self, name):
        value = getattr(self._ctx, name)
        return BindingWrapper(value) if name == "storage" else value


class EnvWrapper:
    def __init__(self, env):
        self._env = env

    def __getattr__(self, name):
        return getattr(self._env, name)


def _wrap_class(cls):
    original = cls.__dict__.get("__init__")
    if original is None:
        return cls

    def wrapped_init(self, *args, **kwargs):
        args = list(args)
        if args and issubclass(cls, DurableObject) and not isinstance(args[0], DurableObjectContext):
            args[0] = DurableObjectContext(args[0])
        if len(args) > 1 and not isinstance(args[1], EnvWrapper):
            args[1] = EnvWrapper(args[1])
        original(self, *args, **kwargs)

    cls.__init__ = wrapped_init
    return cls


class DurableObject:
    def __init__(self, ctx, env):
        self.ctx = ctx
        self.env = env

    def __init_subclass__(cls, **kwargs):
        _wrap_class(cls)


_wrap_class(DurableObject)


class WorkerEntrypoint:
    def __init__(self, ctx, env):
        self.ctx = ctx
        self.env = env


class Request:
    def __init__(self, js_request):
        self.js_object = js_request

    @property
    def method(self):
        return HTTPMethod(self.js_object.method)

    @property
    def url(self):
        return str(self.js_object.url)

    @property
    def headers(self):
        message = Message()
        for pair in self.js_object.headers.entries():
            message[pair[0]] = pair[1]
        return message

    async def text(self):
        return await self.js_object.text()


class Response:
    def __init__(self, body=None, status=None, status_text="", headers=None):
        init = {"status": int(status or 200), "headers": dict(headers or {})}
        self.js_object = JsResponse.new(body, to_js(init, dict_converter=Object.fromEntries))

    @property
    def status(self):
        return self.js_object.status

    async def text(self):
        return await self.js_object.text()


def install():
    module = types.ModuleType("workers")
    for name in ("DurableObject", "WorkerEntrypoint", "Request", "Response", "DurableObjectContext"):
        setattr(module, name, globals()[name])
    sys.modules["workers"] = module
    return module


def uninstall():
    sys.modules.pop("workers", None)


class FetcherWrapper:
    """Like the SDK's ``_FetcherWrapper``: ``stub.fetch(url, **kwargs)`` becomes
    ``pyfetch``, which calls the JS fetch with ``to_js(kwargs, Object.fromEntries)``;
    only keyword options are accepted."""

    def __init__(self, stub):
        self._binding = stub

    async def fetch(self, resource, **kwargs):
        return await self._binding.fetch(resource, to_js(kwargs, dict_converter=Object.fromEntries))


class DurableObjectNamespaceWrapper:
    def __init__(self, binding):
        self._binding = binding

    def __getattr__(self, name):
        return getattr(self._binding, name)

    def get(self, *args):
        return FetcherWrapper(self._binding.get(*args))
