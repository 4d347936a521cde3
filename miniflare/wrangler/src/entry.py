# Python Worker entry for wrangler dev (module-level on_fetch, as workerd of this era wants).
import json
import traceback

from js import Object, Response
from pyodide.ffi import to_js


def _obj(d):
    return to_js(d, dict_converter=Object.fromEntries)


def jr(data, status=200):
    return Response.new(json.dumps(data, default=repr), status=status,
                        headers=_obj({"content-type": "application/json"}))


def _err(e):
    return f"{type(e).__module__}.{type(e).__name__}: {e}"


def describe(v):
    return {"type": f"{type(v).__module__}.{type(v).__name__}", "repr": repr(v)[:300]}


async def d1_demo(db):
    out = {}
    r = await db.prepare("select 1 as x, 'a' as s, null as n, 2.5 as f").all()
    out["all() result"] = describe(r)
    out["all().results"] = describe(r.results)
    out["all().results.to_py()"] = r.results.to_py()
    out["all().success"] = r.success
    out["all().meta.to_py()"] = r.meta.to_py()
    out["all().to_py()"] = describe(r.to_py())
    first = await db.prepare("select 1 as x").first()
    out["first()"] = describe(first)
    out["first().to_py()"] = first.to_py()
    out["first('x')"] = describe(await db.prepare("select 1 as x").first("x"))
    out["first() no rows"] = describe(await db.prepare("select 1 as x where 0").first())
    ins = await db.prepare("insert into history (instance_id, event, payload) values (?, ?, ?)").bind(
        "wf-1", "step", json.dumps({"k": [1, 2]})).run()
    out["run() insert"] = describe(ins)
    out["run().meta"] = ins.meta.to_py()
    # bind None -> ? (Python None becomes JS undefined; D1 may reject it)
    try:
        await db.prepare("insert into history (instance_id, event, payload) values (?, ?, ?)").bind(
            "wf-1", "none-payload", None).run()
        out["bind(None)"] = "ok"
    except BaseException as e:
        out["bind(None)"] = _err(e)
    # workaround: build the argument array in JS (JSON.parse keeps null as null)
    try:
        from js import JSON, Reflect
        stmt = db.prepare("insert into history (instance_id, event, payload) values (?, ?, ?)")
        bound = Reflect.apply(stmt.bind, stmt, JSON.parse(json.dumps(["wf-1", "null-payload", None])))
        await bound.run()
        out["bind via Reflect.apply + JSON.parse(null)"] = "ok"
    except BaseException as e:
        out["bind via Reflect.apply + JSON.parse(null)"] = _err(e)
    rows = await db.prepare("select id, instance_id, event, payload from history order by id").all()
    out["rows"] = rows.results.to_py()
    # batch
    try:
        res = await db.batch(to_js([db.prepare("select 1 as a"), db.prepare("select 2 as b")]))
        out["batch"] = [x.results.to_py() for x in res]
    except BaseException as e:
        out["batch"] = _err(e)
    # errors
    try:
        await db.prepare("select * from no_such_table").all()
    except BaseException as e:
        out["bad sql"] = _err(e)
    # big ints
    for label, v in (("bind(2**53+1)", 2**53 + 1), ("bind(True)", True), ("bind(b'ab')", b"ab"),
                     ("bind(2.0)", 2.0), ("bind(1)", 1),
                     ("bind(to_js(b'ab'))", to_js(b"ab")), ("bind(2**40)", 2**40)):
        try:
            r = await db.prepare("select ? as v, typeof(?) as t").bind(v, v).first()
            out[label] = r.to_py()
        except BaseException as e:
            out[label] = _err(e)
    return out


async def do_demo(env):
    out = {}
    try:
        ns = env.WORKFLOW_DO
        stub = ns.get(ns.idFromName("x"))
        resp = await stub.fetch("https://do/status", method="POST", body="from-wrangler")
        out["stub.fetch"] = {"status": resp.status, "body": await resp.text()}
    except BaseException as e:
        out["stub.fetch"] = _err(e)
    return out


async def on_fetch(request, env):
    from urllib.parse import urlparse
    path = urlparse(request.url).path
    try:
        if path == "/hello":
            import sys, pyodide, mypkg
            return Response.new(f"hello python {sys.version.split()[0]} pyodide {pyodide.__version__} "
                                f"mypkg.triple(2)={mypkg.triple(2)}\n")
        if path == "/d1":
            return jr(await d1_demo(env.HISTORY_DB))
        if path == "/do":
            return jr(await do_demo(env))
        return Response.new("not found\n", status=404)
    except BaseException:
        return Response.new(traceback.format_exc(), status=500)
