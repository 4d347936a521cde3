"""Probe Worker: what synchronous HTTP a Python Worker has in this runtime.

    GET /                               ready
    GET /probe?url=URL&tls=TLS_URL      run the probes in the Worker's fetch handler
    GET /probe-do?url=URL&tls=TLS_URL   the same probes inside a Durable Object's fetch handler
    GET /engine?url=URL&tls=TLS_URL&id=ID
                               run workflow ``http-probe`` in the package's execution object:
                               one async step per blocking client (urllib, requests,
                               ``workkit_workflow.http.fetch_sync``, and requests and fetch_sync
                               over HTTPS), each sending the step's Idempotency-Key; answers the
                               workflow's result
    GET /slow?url=URL                   in the Durable Object: fetch_sync of URL (the test makes it
                                        slow); answers the milliseconds it took
    GET /ping                           in the same Durable Object: answers at once
    GET /timeout?url=URL&id=ID          workflow ``http-timeout``: one step with a 0.5 s timeout
                                        and no retry, blocked in fetch_sync on URL

URL is the test's loopback HTTP server, TLS_URL its HTTPS server (a self-signed certificate
that the Worker's outbound network service trusts); each probe appends ``?probe=<name>`` so the
server can tell which calls reached it.

Every probe is recorded as ``{"ok": true, "value": ...}`` or ``{"ok": false, "error": "Type: message"}``
and never raises, so one reply shows the whole picture.
"""

import asyncio
import json
import sys
import urllib.request

import js
from workers import DurableObject, Response, WorkerEntrypoint

from workkit_workflow import RetryPolicy, WorkflowExecutionDO, create_durable_workflow, http, workflow

__all__ = ["Default", "ProbeDO", "WorkflowExecutionDO"]


def reply(value, status=200):
    return Response(json.dumps(value), status=status, headers={"content-type": "application/json"})


def record(fn):
    try:
        return {"ok": True, "value": fn()}
    except BaseException as exc:  # the probe reports, whatever it is
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:400]}"}


def _can_run_sync():
    from pyodide.ffi import can_run_sync

    return bool(can_run_sync())


def _run_sync_fetch(url):
    from pyodide.ffi import run_sync

    response = run_sync(js.fetch(url))
    return {"status": int(response.status), "body": str(run_sync(response.text()))}


def _urlopen(url):
    with urllib.request.urlopen(url, timeout=3) as response:
        return {"status": response.status, "body": response.read().decode()}


def _requests_get(url):
    import requests

    response = requests.get(url, timeout=3)
    return {"status": response.status_code, "body": response.text}


def _fetch_sync(url):
    response = http.fetch_sync(url)
    return {"status": response.status, "body": response.text}


def _ssl():
    import ssl

    return ssl.OPENSSL_VERSION


def environment():
    import http.client
    import socket

    import pyodide

    def js_has(name):
        return getattr(js, name, None) is not None

    return {
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "pyodide": getattr(pyodide, "__version__", None),
        "XMLHttpRequest": js_has("XMLHttpRequest"),
        "fetch": js_has("fetch"),
        "WebAssembly.Suspending": getattr(js.WebAssembly, "Suspending", None) is not None,
        "WebAssembly.promising": getattr(js.WebAssembly, "promising", None) is not None,
        # Who serves a blocking urllib call: the module of the classes it ends up in.
        "urlopen": f"{urllib.request.urlopen.__module__}.{urllib.request.urlopen.__qualname__}",
        "HTTPConnection.connect": getattr(http.client.HTTPConnection.connect, "__module__", None),
        "socket.create_connection": getattr(socket.create_connection, "__module__", None),
        "socket.socket": f"{socket.socket.__module__}.{socket.socket.__qualname__}",
        "import_ssl": record(_ssl),
        "https_handler": hasattr(urllib.request, "HTTPSHandler"),
    }


def _refused(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=3) as response:
        return {"status": response.status}


def sync_probes(url):
    """Everything that must run synchronously, in the caller's context."""

    def at(name):
        return f"{url}?probe={name}"

    out = {"can_run_sync": record(_can_run_sync)}
    out["run_sync_fetch"] = record(lambda: _run_sync_fetch(at("run_sync_fetch")))
    out["urlopen_unpatched"] = record(lambda: _urlopen(at("urlopen_unpatched")))
    out["requests_unpatched"] = record(lambda: _requests_get(at("requests_unpatched")))
    out["fetch_sync"] = record(lambda: _fetch_sync(at("fetch_sync")))
    out["urlopen_refused"] = record(lambda: _refused(1))
    return out


def https_probes(url):
    """URL: the test's HTTPS server (self-signed; the runtime's fetch is told to trust it)."""

    def at(name):
        return f"{url}?probe={name}"

    def urlopen_unverified():
        import ssl

        context = ssl._create_unverified_context()
        with urllib.request.urlopen(at("https_urlopen"), timeout=3, context=context) as response:
            return {"status": response.status, "body": response.read().decode()}

    def urlopen_default():
        with urllib.request.urlopen(at("https_urlopen_default"), timeout=3) as response:
            return {"status": response.status, "body": response.read().decode()}

    out = {"https_urlopen": record(urlopen_unverified)}
    out["https_urlopen_default"] = record(urlopen_default)
    out["https_requests"] = record(lambda: _requests_get(at("https_requests")))
    out["https_fetch_sync"] = record(lambda: _fetch_sync(at("https_fetch_sync")))
    return out


def pyodide_http_probes(url):
    def at(name):
        return f"{url}?probe={name}"

    def patch():
        import pyodide_http

        before = pyodide_http.should_patch()
        pyodide_http.patch_all()
        return {"should_patch": before}

    out = {"pyodide_http_patch_all": record(patch)}
    out["urlopen_after_patch_all"] = record(lambda: _urlopen(at("urlopen_after_patch_all")))
    out["requests_after_patch_all"] = record(lambda: _requests_get(at("requests_after_patch_all")))

    def core_send():
        from pyodide_http import _core

        response = _core.send(_core.Request("GET", at("pyodide_http_core_send")))
        return {"status": response.status_code}

    out["pyodide_http_core_send"] = record(core_send)
    return out


async def js_fetch_probe(url):
    try:
        response = await js.fetch(f"{url}?probe=js_fetch_await")
        return {"ok": True, "value": {"status": int(response.status), "body": str(await response.text())}}
    except BaseException as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:400]}"}


async def all_probes(url, tls_url):
    out = {"environment": record(environment)}
    out["https"] = https_probes(tls_url)
    out["js_fetch_await"] = await js_fetch_probe(url)
    out["handler"] = sync_probes(url)

    async def in_task():
        return sync_probes(url)

    out["asyncio_task"] = await asyncio.create_task(in_task())
    # pyodide_http patches urllib globally: last, so it cannot change the probes above.
    out["pyodide_http"] = pyodide_http_probes(url)
    return out


@workflow("http-probe")
async def http_probe(ctx, data):
    """Blocking HTTP clients inside async steps of the engine; each step answers the body."""
    url, tls_url = data["url"], data["tls"]

    # Blocking calls in async steps are the point here (ruff's ASYNC210): the runtime
    # suspends the step's stack in run_sync and keeps serving the event loop meanwhile.
    async def with_urllib():
        sent = urllib.request.Request(f"{url}?probe=step_urllib", headers=http.idempotency_headers())
        with urllib.request.urlopen(sent, timeout=3) as response:  # noqa: ASYNC210
            return response.read().decode()

    async def with_requests():
        import requests

        sent = http.idempotency_headers()
        return requests.get(f"{url}?probe=step_requests", headers=sent, timeout=3).text  # noqa: ASYNC210

    async def with_fetch_sync():
        return http.fetch_sync(f"{url}?probe=step_fetch_sync").text

    async def with_requests_https():
        import requests

        sent = http.idempotency_headers()
        return requests.get(f"{tls_url}?probe=step_requests_https", headers=sent).text  # noqa: ASYNC210

    async def with_fetch_sync_https():
        return http.fetch_sync(f"{tls_url}?probe=step_fetch_sync_https").text

    return {
        "urllib": await ctx.step("urllib", with_urllib),
        "requests": await ctx.step("requests", with_requests),
        "fetch_sync": await ctx.step("fetch_sync", with_fetch_sync),
        "requests_https": await ctx.step("requests_https", with_requests_https),
        "fetch_sync_https": await ctx.step("fetch_sync_https", with_fetch_sync_https),
    }


@workflow("http-timeout")
async def http_timeout(ctx, data):
    async def blocked():
        started = js.Date.now()
        http.fetch_sync(data["url"])
        return {"blocked_ms": js.Date.now() - started}

    return await ctx.step("blocked", blocked, timeout=0.5, retry=RetryPolicy(max_attempts=1))


async def run_timeout(env, url, execution_id):
    client = create_durable_workflow(env.WORKFLOW_DO)
    started = js.Date.now()
    handle = await client.run("http-timeout", {"url": url}, execution_id=execution_id)
    result = await handle.result(timeout=60)
    error = result.error.to_dict() if result.error is not None else None
    return {"status": result.status, "value": result.value, "error": error, "ms": js.Date.now() - started}


async def run_engine(env, url, tls_url, execution_id):
    client = create_durable_workflow(env.WORKFLOW_DO)
    handle = await client.run("http-probe", {"url": url, "tls": tls_url}, execution_id=execution_id)
    result = await handle.result(timeout=60)
    error = result.error.to_dict() if result.error is not None else None
    return {"status": result.status, "value": result.value, "error": error}


def _query(request):
    from urllib.parse import parse_qs, urlsplit

    return {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}


class ProbeDO(DurableObject):
    async def fetch(self, request):
        from urllib.parse import urlsplit

        query = _query(request)
        path = urlsplit(str(request.url)).path
        if path == "/ping":
            return reply({"pong": js.Date.now()})
        if path == "/slow":
            started = js.Date.now()
            http.fetch_sync(query["url"])
            return reply({"ms": js.Date.now() - started, "done": js.Date.now()})
        return reply(await all_probes(query["url"], query["tls"]))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        from urllib.parse import urlsplit

        path = urlsplit(str(request.url)).path
        if path == "/":
            return reply({"ready": True})
        query = _query(request)
        if path in ("/ping", "/slow"):
            stub = self.env.PROBE_DO.get(self.env.PROBE_DO.idFromName("probe"))
            response = await stub.fetch(f"https://do{path}?{urlsplit(str(request.url)).query}")
            return Response(await response.text(), headers={"content-type": "application/json"})
        url = query["url"]
        if path == "/timeout":
            return reply(await run_timeout(self.env, url, query["id"]))
        if path == "/probe":
            return reply(await all_probes(url, query["tls"]))
        if path == "/probe-do":
            stub = self.env.PROBE_DO.get(self.env.PROBE_DO.idFromName("probe"))
            response = await stub.fetch(f"https://do/probe?{urlsplit(str(request.url)).query}")
            return Response(await response.text(), headers={"content-type": "application/json"})
        if path == "/engine":
            return reply(await run_engine(self.env, url, query["tls"], query["id"]))
        return reply({"error": f"no route {path}"}, status=404)
