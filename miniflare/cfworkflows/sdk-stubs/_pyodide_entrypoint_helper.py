"""Stub of workerd's entry-point helper for running the real workers SDK in Node: the
SDK's own ``workflows.js`` is registered as ``cf_sdk_js`` (run_pyodide --js)."""

import cf_sdk_js


async def doAnImport(name):
    return cf_sdk_js


def patchWaitUntil(ctx):
    return None
