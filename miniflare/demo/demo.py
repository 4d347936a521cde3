# Tiny demo for run_pyodide.mjs: await a JS fake, convert a JS Map, print a sentinel.
from cf_fakes import getMap, getUndefined



async def main():
    m = await getMap()
    d = m.to_py()
    assert d["a"] == 1 and d["c"] == "three", d
    u = await getUndefined()
    assert u is None, repr(u)
    print("map ->", d)
    print("PYODIDE_OK")


# run: node miniflare/run_pyodide.mjs --js miniflare/fakes.mjs --main --run <this file>
