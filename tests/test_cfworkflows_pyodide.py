"""The Cloudflare Workflows scenarios under real Pyodide, against the JS fake engine.

One Node process per Pyodide version runs every scenario of
``miniflare/cfworkflows/py/test_cfw_scenarios.py`` (the interpreter takes
seconds to load) and prints ``N passed, N failed``; the test asserts that
every scenario ran and passed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "miniflare"
SCENARIOS = HARNESS / "cfworkflows" / "py" / "test_cfw_scenarios.py"
PYODIDES = {"0.26": HARNESS / "node_modules" / "pyodide", "0.27": HARNESS / "node_modules" / "pyodide-0.27"}

pytestmark = pytest.mark.pyodide


def _runtime_or_skip(pyodide: Path) -> str:
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed"
    elif not (pyodide / "pyodide.mjs").exists():
        missing = f"no Pyodide at {pyodide} (run `npm install` in miniflare/)"
    if missing is not None:
        if os.environ.get("WORKKIT_REQUIRE_RUNTIME") == "1":
            pytest.fail(f"WORKKIT_REQUIRE_RUNTIME=1 but {missing}")
        pytest.skip(missing)
    assert node is not None
    return node


@pytest.mark.parametrize("version", sorted(PYODIDES))
def test_cloudflare_workflows_scenarios_under_pyodide(version: str) -> None:
    node = _runtime_or_skip(PYODIDES[version])
    expected = len(re.findall(r"^async def test_|^def test_", SCENARIOS.read_text(), re.M))
    cmd = [
        node,
        "run_pyodide.mjs",
        "--quiet",
        "--pyodide",
        str(PYODIDES[version]),
        "--mount",
        str(ROOT / "src"),
        "--mount",
        f"{SCENARIOS.parent}:/cfw",
        "--js",
        "cfworkflows/engine.mjs:cf_engine",
        "--main",
        "--run",
        "pyo_test.py",
        "--",
        "/cfw",
    ]
    proc = subprocess.run(cmd, cwd=HARNESS, capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    summary = re.findall(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    assert summary, f"the scenario run printed no summary (exit {proc.returncode}):\n{output[-4000:]}"
    passed, failed = (int(n) for n in summary[-1])
    assert failed == 0 and proc.returncode == 0, output[-6000:]
    assert passed == expected, f"{passed} scenarios passed, {expected} defined:\n{output[-4000:]}"
