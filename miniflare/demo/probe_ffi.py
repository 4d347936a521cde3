# Probe Pyodide FFI + asyncio behaviour; prints facts recorded in NOTES.md.
import asyncio, sys, time
import js
import pyodide
from pyodide.ffi import JsException, JsProxy, to_js
import cf_fakes as F



async def main():
    def show(label, v):
        print(f"{label}: {type(v).__module__}.{type(v).__name__} {v!r}")

    print("pyodide", pyodide.__version__, "python", sys.version.split()[0])

    # undefined / null
    show("await async undefined", await F.getUndefined())
    show("await async null", await F.getNull())
    show("sync undefined", F.getUndefinedSync())
    show("sync null", F.getNullSync())
    try:
        from pyodide.ffi import jsnull
        show("pyodide.ffi.jsnull exists", jsnull)
    except ImportError as e:
        print("pyodide.ffi.jsnull: ImportError", e)
    show("js.undefined", getattr(js, "undefined", "<missing>"))

    # Map
    m = await F.getMap()
    show("Map proxy", m)
    print("Map typeof:", m.typeof, "constructor:", m.constructor.name, "size:", m.size)
    show("Map.to_py()", m.to_py())
    show("Map.get('a')", m.get("a"))
    show("Map.get('b') (obj)", m.get("b"))
    show("Map.get('missing')", m.get("missing"))
    print("Map iteration keys:", list(m.keys()), "items via entries:", [tuple(e) for e in m.entries()][:1])
    print("dict(m.to_py()) == ", dict(m.to_py()))

    # to_js variants
    d = {"a": 1, "b": [1, 2], "c": None, "d": {"x": True}}
    print("to_js(dict):", F.describe(to_js(d)))
    print("to_js(dict, dict_converter=Object.fromEntries):", F.describe(to_js(d, dict_converter=js.Object.fromEntries)))
    print("raw dict (PyProxy):", F.describe(d))
    print("to_js(list):", F.describe(to_js([1, "a", None])))
    print("to_js(None):", F.describe(to_js(None)))
    print("python None passed directly:", F.describe(None))
    print("to_js(2**53+1):", F.describe(to_js(2**53 + 1)))
    print("int 2**53+1 directly:", F.describe(2**53 + 1))
    print("float 2.0:", F.describe(2.0))
    print("bytes:", F.describe(b"ab"))
    print("to_js(bytes):", F.describe(to_js(b"ab")))
    obj = to_js(d, dict_converter=js.Object.fromEntries)
    back = obj.to_py()
    show("roundtrip Object.fromEntries -> to_py", back)

    # JS exceptions from async functions
    for name in ["failTypeError", "failError", "failDOMException"]:
        try:
            await getattr(F, name)()
        except JsException as e:
            print(f"{name}: caught {type(e).__module__}.{type(e).__name__} isinstance JsException={isinstance(e, JsException)} "
                  f"str={str(e)!r} name={getattr(e, 'name', None)!r} message={getattr(e, 'message', None)!r}")
        except Exception as e:
            print(f"{name}: caught NON-JsException {type(e).__name__}: {e!r}")

    # asyncio under the webloop
    loop = asyncio.get_event_loop()
    show("loop", loop)
    order = []
    async def worker(tag, n):
        for i in range(n):
            order.append(f"{tag}{i}")
            await asyncio.sleep(0)
        return tag
    t = asyncio.create_task(worker("a", 3))
    res = await asyncio.gather(t, worker("b", 3))
    print("gather:", res, "interleaving:", order)

    t0 = loop.time(); w0 = time.time(); p0 = time.perf_counter(); m0 = time.monotonic()
    await asyncio.sleep(0.05)
    print(f"after asyncio.sleep(0.05): loop.time +{loop.time()-t0:.4f}s time.time +{time.time()-w0:.4f}s "
          f"perf_counter +{time.perf_counter()-p0:.4f}s monotonic +{time.monotonic()-m0:.4f}s")
    t0 = loop.time()
    await F.sleep(30)
    print(f"after JS setTimeout 30ms: loop.time +{loop.time()-t0:.4f}s")
    t0 = loop.time(); s = 0
    for i in range(2_000_000): s += i
    print(f"busy loop (no await): loop.time +{loop.time()-t0:.4f}s")

    try:
        await asyncio.wait_for(asyncio.sleep(1), timeout=0.05)
        print("wait_for: no timeout?!")
    except asyncio.TimeoutError as e:
        print("wait_for timeout -> asyncio.TimeoutError (is builtins.TimeoutError:", asyncio.TimeoutError is TimeoutError, ")")
    print("wait_for ok:", await asyncio.wait_for(F.sleep(5), timeout=1))

    # cancellation
    async def long():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            order.append("cancelled")
            raise
    t = asyncio.create_task(long())
    await asyncio.sleep(0)
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        print("cancel: CancelledError propagated, task.cancelled() =", t.cancelled())

    # awaiting a JS promise inside a task + Future
    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, "fut-ok")
    print("call_later future:", await fut)
    lock = asyncio.Lock()
    async def locked(i):
        async with lock:
            order.append(f"L{i}")
            await asyncio.sleep(0)
            order.append(f"U{i}")
    await asyncio.gather(*(locked(i) for i in range(2)))
    print("lock order:", order[-4:])

    try:
        asyncio.run(asyncio.sleep(0))
        print("asyncio.run: worked")
    except Exception as e:
        print("asyncio.run:", type(e).__name__, e)
    try:
        r = loop.run_until_complete(worker("c", 1))
        print("run_until_complete returned:", type(r).__name__, r)
    except Exception as e:
        print("run_until_complete:", type(e).__name__, e)
    print("PYODIDE_OK")


# run: node miniflare/run_pyodide.mjs --js miniflare/fakes.mjs --main --run <this file>
