# Pyodide 0.26.4: a JS async function rejecting with a non-Error (a string) crashes the runtime.
import cf_fakes as F


async def main():
    try:
        await F.failString()
    except Exception as e:
        print("caught", type(e).__name__, e)


# run: node miniflare/run_pyodide.mjs --js miniflare/fakes.mjs --main --run <this file>
