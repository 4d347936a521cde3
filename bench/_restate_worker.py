"""The peer: Restate (its server, the Python SDK) running the same N-step workflow, each
step a journaled ``ctx.run``. See ``bench._peers`` for the protocol::

    python -m bench._restate_worker --synchronous FULL --dir /tmp/x

The server (``bench._peers.restate_server``: ``$RESTATE_SERVER``, PATH, or what
``npm ci --prefix bench/peers`` installs) and the service's ASGI endpoint (hypercorn) are started
here on 127.0.0.1 and stopped at exit. Restate keeps its journal in RocksDB: it has no
``synchronous`` setting, so the same figure serves both columns.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import time
from typing import Any

import httpx
import restate
from hypercorn.asyncio import serve
from hypercorn.config import Config

from ._peer_loop import answer_runs, worker_args
from ._peers import restate_server

bench = restate.Service("bench")


def work(i: int) -> dict[str, Any]:
    return {"i": f"{i:05d}", "ok": True}


@bench.handler()
async def linear(ctx: restate.Context, n: int) -> int:
    for i in range(n):
        await ctx.run_typed(f"step-{i:05d}", work, restate.RunOptions(), i)
    return n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until_up(client: httpx.AsyncClient, url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"restate-server did not come up (exit {server.poll()})")
        await asyncio.sleep(0.2)


async def main_async(args: argparse.Namespace) -> None:
    binary = restate_server()
    if binary is None:
        raise SystemExit("no restate-server: npm ci --prefix bench/peers")
    ingress, admin, node, service = (_free_port() for _ in range(4))
    env = {
        **os.environ,
        "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
        "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}",
        "RESTATE_BIND_ADDRESS": f"127.0.0.1:{node}",
        "RESTATE_LOG_FILTER": "error",
    }
    base = os.path.join(args.dir, f"restate-{args.synchronous}")
    cmd = [binary, "--base-dir", base, "--node-name", "bench"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    stop = asyncio.Event()
    config = Config()
    config.bind = [f"127.0.0.1:{service}"]
    config.loglevel = "ERROR"
    app = asyncio.ensure_future(serve(restate.app([bench]), config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            await _until_up(client, f"http://127.0.0.1:{admin}/health", server)
            reply = await client.post(
                f"http://127.0.0.1:{admin}/deployments",
                json={"uri": f"http://127.0.0.1:{service}", "use_http_11": True},
            )
            if reply.status_code >= 300:
                raise RuntimeError(f"registering the service failed: {reply.status_code} {reply.text}")
            await _loop(client, f"http://127.0.0.1:{ingress}/bench/linear", args)
    finally:
        stop.set()
        await asyncio.wait({app}, timeout=10)
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


async def _loop(client: httpx.AsyncClient, url: str, args: argparse.Namespace) -> None:
    async def run(n: int) -> float:
        start = time.perf_counter()
        reply = await client.post(url, json=n)
        elapsed = time.perf_counter() - start
        if reply.status_code != 200 or reply.json() != n:
            raise RuntimeError(f"restate answered {reply.status_code}: {reply.text[:300]}")
        return elapsed

    await answer_runs(run, {"server": "restate-server", "journal": "RocksDB (no synchronous setting)"})


def main(argv: list[str] | None = None) -> int:
    asyncio.run(main_async(worker_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
