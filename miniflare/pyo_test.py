# Minimal async-aware test runner for use INSIDE Pyodide (run_pyodide.mjs), where pytest and
# asyncio.run()/IsolatedAsyncioTestCase do not work (WebLoop cannot block).
#
#   node miniflare/run_pyodide.mjs --mount src --mount tests/pyodide:/tests --js fakes.mjs \
#        --main --run miniflare/pyo_test.py -- /tests [-k substring] [-x]
#
# (Valid CPython: run_pyodide.mjs --main awaits main() and uses its return as the exit status.)
# Collects test_*.py files under the given paths (paths inside the Pyodide FS), runs every
# module-level `test_*` function (sync or `async def`), prints one line per test and the closing
# line "N passed, N failed" and exits 1 if anything failed (or nothing was collected).
import importlib.util
import inspect
import os
import sys
import time
import traceback


def _collect(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            for d, _, names in sorted(os.walk(p)):
                files += [os.path.join(d, n) for n in sorted(names) if n.startswith("test_") and n.endswith(".py")]
        else:
            files.append(p)
    return files


async def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    paths, kw, stop_first = [], None, False
    it = iter(argv)
    for a in it:
        if a == "-k":
            kw = next(it)
        elif a == "-x":
            stop_first = True
        else:
            paths.append(a)
    passed = failed = 0
    for f in _collect(paths or ["."]):
        d = os.path.dirname(os.path.abspath(f))
        if d not in sys.path:
            sys.path.insert(0, d)
        name = os.path.splitext(os.path.basename(f))[0]
        try:
            spec = importlib.util.spec_from_file_location(name, f)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        except BaseException:
            failed += 1
            print(f"ERROR {f} (import)\n{traceback.format_exc()}")
            continue
        for tname, fn in list(vars(mod).items()):
            if not (tname.startswith("test_") and callable(fn)):
                continue
            tid = f"{f}::{tname}"
            if kw and kw not in tid:
                continue
            t0 = time.perf_counter()
            try:
                res = fn()
                if inspect.isawaitable(res):
                    await res
                passed += 1
                print(f"PASS {tid} ({(time.perf_counter() - t0) * 1000:.1f} ms)")
            except BaseException:
                failed += 1
                print(f"FAIL {tid}\n{traceback.format_exc()}")
                if stop_first:
                    break
        if stop_first and failed:
            break
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0

