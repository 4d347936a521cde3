"""The engine's CPU per step under Pyodide: ``bench._memory`` run through the repo's Node
harness (``miniflare/run_pyodide.mjs``, the one tests/test_pyodide_runtime.py uses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MINIFLARE = ROOT / "miniflare"
VERSION_DIRS = {"0.27.7": "pyodide-0.27", "0.26.4": "pyodide"}


@dataclass(frozen=True)
class Unavailable:
    reason: str


def _index(version: str) -> Path:
    return MINIFLARE / "node_modules" / VERSION_DIRS[version]


def measure(steps: int, rounds: int, version: str = "0.27.7") -> dict[str, Any] | Unavailable:
    """Seconds per step under Pyodide ``version`` (one figure per round), or why not."""
    node = shutil.which("node")
    if node is None:
        return Unavailable("node is not on PATH (Node 20 runs Pyodide here)")
    index = _index(version)
    if not (index / "pyodide.mjs").exists():
        return Unavailable(f"no Pyodide {version} at {index} (npm ci in miniflare/)")
    with tempfile.TemporaryDirectory(prefix="workkit-bench-pyodide-") as tmp:
        # The harness puts a mount's folder on sys.path: mount one holding the bench package.
        os.symlink(ROOT / "bench", os.path.join(tmp, "bench"))
        cmd = [
            node,
            str(MINIFLARE / "run_pyodide.mjs"),
            "--quiet",
            "--pyodide",
            str(index),
            "--mount",
            str(ROOT / "src"),
            "--mount",
            f"{tmp}:/home/pyodide/benchpkg",
            "--main",
            "--module",
            "bench._memory",
            "--",
            str(steps),
            str(rounds),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            return Unavailable("the Pyodide run took over 600 s")
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
            result["pyodide"] = version
            return result
    raise RuntimeError(f"the Pyodide bench failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
