"""What every peer worker shares: its command line and its side of the protocol of
``bench._peers`` (after a warm-up run, one JSON line about the peer; then, for each line
``N`` read from stdin, the seconds one ``N``-step run took, until stdin closes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any


def worker_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--checkpoint-pages", type=int, default=1000)
    return parser.parse_args(argv)


async def answer_runs(run: Callable[[int], Awaitable[float]], about: dict[str, Any]) -> None:
    """The protocol for a peer whose runs are awaited (stdin is read in a thread meanwhile)."""
    await run(3)  # warm up
    print(json.dumps(about), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        print(await run(int(line)), flush=True)
