"""Schedules under REAL Pyodide (0.26.4 and 0.27.7, in Node): the cron library (cronsim)
loads there and a schedule's ticks come out as on CPython."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cronsim
import pytest

from _cf_harness import MINIFLARE, NODE_MODULES, ROOT, require

pytestmark = pytest.mark.pyodide

VERSIONS = {"0.26.4": NODE_MODULES / "pyodide", "0.27.7": NODE_MODULES / "pyodide-0.27"}


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_schedules_work_under_real_pyodide(version: str, tmp_path: Path) -> None:
    index = VERSIONS[version]
    node = require(MINIFLARE / "run_pyodide.mjs", index / "pyodide.mjs")
    # Only cronsim itself, as pywrangler would vendor it (not the whole site-packages).
    shutil.copytree(Path(cronsim.__file__).parent, tmp_path / "vendor" / "cronsim")
    run = subprocess.run(
        [
            node,
            str(MINIFLARE / "run_pyodide.mjs"),
            "--pyodide",
            str(index),
            "--mount",
            str(ROOT / "src"),
            "--mount",
            str(tmp_path / "vendor"),
            "--mount",
            f"{ROOT / 'miniflare' / 'realruntime' / 'standin'}:/standin",
            "--main",
            "--run",
            str(MINIFLARE / "pyodide-schedules" / "check_schedules.py"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = run.stdout + run.stderr
    assert "SCHEDULES-OK python 3.12 emscripten" in run.stdout, output[-3000:]
    assert run.returncode == 0, output[-3000:]
