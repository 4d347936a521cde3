# A second Python Worker next to the example worker (worker_checks.py serves both), for what
# the example's API does not show: which modules load in this runtime, outbound HTTP from a
# step through workkit_workflow.http (JS fetch), and pyodide-http (synchronous XHR).
import json
import sys
import traceback
from urllib.parse import parse_qs, urlparse

from js import Object, Response
from pyodide.ffi import to_js


def reply(data, status=200):
    init = to_js(
        {"status": status, "headers": {"content-type": "application/json"}}, dict_converter=Object.fromEntries
    )
    return Response.new(json.dumps(data), init)


def _err(exc):
    return f"{type(exc).__name__}: {exc}"


async def facts():
    out = {"python": sys.version.split()[0]}
    import workkit_workflow

    out["workkit_workflow"] = workkit_workflow.__version__
    for name in ("pydantic", "workers", "requests"):
        try:
            __import__(name)
            out[name] = "importable"
        except ImportError as exc:
            out[name] = _err(exc)
    out["_wire loaded"] = "workkit_workflow.cloudflare._wire" in sys.modules
    out["pydantic loaded"] = "pydantic" in sys.modules
    return out


async def http_step(url):
    from workkit_workflow import StepContext, http
    from workkit_workflow.definitions._steps import _CURRENT_STEP

    token = _CURRENT_STEP.set(StepContext("ex-9", "order", "charge-card", 2, "ex-9:charge:stable"))
    try:
        response = await http.fetch(url, method="POST", json={"amount": 12.5})
    finally:
        _CURRENT_STEP.reset(token)
    return {
        "status": response.status,
        "body": response.json(),
        "content-type": response.headers.get("content-type"),
    }


def pyodide_http_attempt(url):
    import js

    out = {"has XMLHttpRequest": hasattr(js, "XMLHttpRequest")}
    import pyodide_http

    out["should_patch"] = pyodide_http.should_patch()
    pyodide_http.patch_all()
    try:
        import urllib.request

        out["urlopen"] = urllib.request.urlopen(url, timeout=5).read().decode()
    except Exception as exc:
        out["urlopen"] = _err(exc)
    return out


async def on_fetch(request, env):
    u = urlparse(request.url)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    try:
        if u.path == "/facts":
            return reply(await facts())
        if u.path == "/http":
            return reply(await http_step(q["url"]))
        if u.path == "/pyodide_http":
            return reply(pyodide_http_attempt(q["url"]))
        return reply({"error": "no such probe"}, 404)
    except BaseException:
        return reply({"traceback": traceback.format_exc()}, 500)
