# Python Worker for workerd 1.20241112.0 (module-level on_fetch; no `workers` module there).
# Routes (all return JSON unless noted):
#   /hello            text/plain "hello" + runtime facts
#   /pkg              multi-file package import check
#   /do               WORKFLOW_DO namespace: idFromName/get/stub.fetch in several call shapes
#   /fetch?url=U      JS fetch() from Python to U
#   /xhr?url=U        pyodide_http (sync XMLHttpRequest) via urllib to U
import json
import sys
import traceback

from js import Object, Response, Headers, fetch
from pyodide.ffi import to_js, JsException


def _obj(d):
    return to_js(d, dict_converter=Object.fromEntries)


def json_response(data, status=200):
    return Response.new(
        json.dumps(data, default=repr),
        _obj({"status": status, "headers": {"content-type": "application/json"}}),
    )


def _err(e):
    return f"{type(e).__module__}.{type(e).__name__}: {e}"


async def _try(label, coro_fn, out):
    try:
        resp = await coro_fn()
        text = await resp.text()
        out[label] = {"ok": True, "status": resp.status, "body": text}
    except BaseException as e:  # record exact error
        out[label] = {"ok": False, "error": _err(e)}


async def do_demo(env):
    out = {}
    ns = env.WORKFLOW_DO
    out["ns_type"] = repr(type(ns))
    id_ = ns.idFromName("x")
    out["id"] = {"toString": id_.toString(), "name": id_.name, "equals_same": id_.equals(ns.idFromName("x"))}
    stub = ns.get(id_)
    out["stub_type"] = repr(stub)
    body = json.dumps({"hello": "world"})

    # shape 1: fetch(url) only -> GET
    await _try("fetch(url)", lambda: stub.fetch("https://do/status"), out)
    # shape 2: fetch(url, to_js(init, dict_converter=Object.fromEntries))
    await _try("fetch(url, Object.fromEntries init)", lambda: stub.fetch(
        "https://do/status",
        _obj({"method": "POST", "body": body, "headers": {"content-type": "application/json", "x-test": "1"}}),
    ), out)
    # shape 3: keyword arguments (pyodide converts kwargs to a trailing JS object)
    await _try("fetch(url, method=, body=, headers=)", lambda: stub.fetch(
        "https://do/status", method="POST", body=body,
        headers=_obj({"content-type": "application/json", "x-test": "kw"}),
    ), out)
    # shape 3b: kwargs with a plain dict for headers
    await _try("fetch(url, method=, body=, headers=dict)", lambda: stub.fetch(
        "https://do/status", method="POST", body=body, headers={"x-test": "plain-dict"},
    ), out)
    # shape 4: plain (unconverted) dict as init
    await _try("fetch(url, plain dict init)", lambda: stub.fetch(
        "https://do/status", {"method": "POST", "body": body}
    ), out)
    # shape 5: to_js(dict) without dict_converter (a JS Map)
    await _try("fetch(url, to_js(dict) -> Map)", lambda: stub.fetch(
        "https://do/status", to_js({"method": "POST", "body": body})
    ), out)
    # state survives: put/get
    await _try("put", lambda: stub.fetch("https://do/put?key=k1", method="POST", body="v1"), out)
    await _try("get", lambda: stub.fetch("https://do/get?key=k1"), out)
    await _try("list", lambda: stub.fetch("https://do/list"), out)
    # error paths
    await _try("DO throws", lambda: stub.fetch("https://do/fail", method="POST", body=""), out)
    await _try("DO returns 500", lambda: stub.fetch("https://do/status500"), out)
    # a different name is a different object
    other = ns.get(ns.idFromName("y"))
    await _try("other object", lambda: other.fetch("https://do/status", method="POST", body="y"), out)
    # newUniqueId / idFromString
    uid = ns.newUniqueId()
    out["newUniqueId"] = uid.toString()
    out["idFromString roundtrip"] = ns.idFromString(id_.toString()).toString() == id_.toString()
    return out


async def fetch_demo(url):
    try:
        resp = await fetch(url)
        return {"ok": True, "status": resp.status, "body": await resp.text()}
    except BaseException as e:
        return {"ok": False, "error": _err(e)}


def xhr_demo(url):
    out = {}
    import js
    out["has XMLHttpRequest"] = hasattr(js, "XMLHttpRequest")
    try:
        import pyodide_http
        out["pyodide_http.should_patch()"] = pyodide_http.should_patch()
        pyodide_http.patch_all()
        out["patch_all"] = "ok"
    except BaseException as e:
        out["patch_all"] = _err(e)
    try:
        import urllib.request
        out["urllib.urlopen"] = urllib.request.urlopen(url, timeout=5).read().decode()
    except BaseException as e:
        out["urllib.urlopen"] = _err(e)
    try:
        import requests  # noqa: F401
        out["import requests"] = "ok"
    except BaseException as e:
        out["import requests"] = _err(e)
    try:
        from pyodide_http._core import Request, send
        r = send(Request("GET", url))
        out["pyodide_http._core.send"] = {"status": r.status_code, "body": r.body.decode()}
    except BaseException as e:
        out["pyodide_http._core.send"] = _err(e)
    return out


async def on_fetch(request, env):
    from urllib.parse import urlparse, parse_qs
    u = urlparse(request.url)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    try:
        if u.path == "/hello":
            import pyodide
            return Response.new(
                f"hello python {sys.version.split()[0]} pyodide {pyodide.__version__} "
                f"GREETING={env.GREETING!r} method={request.method}\n"
            )
        if u.path == "/pkg":
            import pkg
            from pkg.sub import double
            return json_response({"pkg.NAME": pkg.NAME, "double(21)": double(21), "pkg.__file__": pkg.__file__})
        if u.path == "/do":
            return json_response(await do_demo(env))
        if u.path == "/fetch":
            return json_response(await fetch_demo(q["url"]))
        if u.path == "/xhr":
            return json_response(xhr_demo(q["url"]))
        if u.path == "/probe":
            out = {}
            for mod in ("workers", "pyodide_http", "sqlite3", "ssl", "pydantic", "micropip"):
                try:
                    __import__(mod)
                    out[f"import {mod}"] = "ok"
                except BaseException as e:
                    out[f"import {mod}"] = _err(e)
            r = Response.new("x", status=201, headers=_obj({"x-a": "1"}))
            out["Response.new(body, status=, headers=) kwargs"] = [r.status, r.headers.get("x-a")]
            r = Response.new("x", _obj({"status": 202}))
            out["Response.new(body, Object.fromEntries init)"] = r.status
            r = Response.new("x", {"status": 203})
            out["Response.new(body, plain dict) status"] = r.status
            r = Response.json(_obj({"a": 1})) if hasattr(Response, "json") else None
            out["Response.json"] = (await r.text()) if r is not None else "missing"
            import time, asyncio
            t0 = time.perf_counter(); l0 = asyncio.get_event_loop().time(); w0 = time.time()
            await asyncio.sleep(0.05)
            out["after asyncio.sleep(0.05)"] = {"perf_counter": time.perf_counter() - t0,
                                                "loop.time": asyncio.get_event_loop().time() - l0,
                                                "time.time": time.time() - w0}
            return json_response(out)
        if u.path == "/echo":
            body = await request.text()
            return json_response({"method": request.method, "body": body,
                                  "headers": dict(request.headers.entries()) if hasattr(request.headers, "entries") else None})
        return Response.new("not found\n", status=404)
    except BaseException:
        return Response.new(traceback.format_exc(), _obj({"status": 500}))
