"""The Cloudflare Workflows scenarios under real Pyodide, against the JS fake engine.

One Node process per configuration runs every scenario of
``miniflare/cfworkflows/scenarios/test_cfw_scenarios.py`` (the interpreter takes
seconds to load) and prints ``N passed, N failed``; the test asserts that every
scenario ran and passed. Configurations:

* the stand-in ``workers`` SDK (``miniflare/cfworkflows/standin``) on Pyodide
  0.26.4 and 0.27.7;
* the real ``workers-runtime-sdk`` 1.9.5 wheel (fetched once with pip into a
  cache, or given as ``WORKKIT_WORKERS_SDK_WHEEL``) on Pyodide 0.27.7, with both
  ``step.do`` signatures (implicit dependencies on and off).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "miniflare"
CFW = HARNESS / "cfworkflows"
SCENARIOS = CFW / "scenarios" / "test_cfw_scenarios.py"
PYODIDES = {"0.26": HARNESS / "node_modules" / "pyodide", "0.27": HARNESS / "node_modules" / "pyodide-0.27"}
SDK_VERSION = "1.9.5"
SDK_WHEEL = f"workers_runtime_sdk-{SDK_VERSION}-py3-none-any.whl"

pytestmark = pytest.mark.pyodide


def _missing(what: str) -> None:
    if os.environ.get("WORKKIT_REQUIRE_RUNTIME") == "1":
        pytest.fail(f"WORKKIT_REQUIRE_RUNTIME=1 but {what}")
    pytest.skip(what)


def _node(pyodide: Path) -> str:
    node = shutil.which("node")
    if node is None:
        _missing("node is not installed")
    if not (pyodide / "pyodide.mjs").exists():
        _missing(f"no Pyodide at {pyodide} (run `npm install` in miniflare/)")
    assert node is not None
    return node


def _sdk_wheel() -> Path:
    given = os.environ.get("WORKKIT_WORKERS_SDK_WHEEL")
    if given:
        return Path(given)
    cache = Path(tempfile.gettempdir()) / "workkit-workflow-sdk-cache"
    wheel = cache / SDK_WHEEL
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:"]
        cmd += ["-d", str(cache), f"workers-runtime-sdk=={SDK_VERSION}"]
        subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    if not wheel.exists():
        _missing(f"workers-runtime-sdk {SDK_VERSION} could not be downloaded (set WORKKIT_WORKERS_SDK_WHEEL)")
    return wheel


def _run(node: str, pyodide: Path, mounts: list[str], js: list[str], env: dict[str, str]) -> None:
    expected = len(re.findall(r"^async def test_|^def test_", SCENARIOS.read_text(), re.M))
    cmd = [node, "run_pyodide.mjs", "--quiet", "--pyodide", str(pyodide), "--mount", str(ROOT / "src")]
    for mount in mounts:
        cmd += ["--mount", mount]
    cmd += ["--mount", f"{SCENARIOS.parent}:/cfw", "--js", f"{CFW / 'engine.mjs'}:cf_engine"]
    for module in js:
        cmd += ["--js", module]
    cmd += ["--main", "--run", "pyo_test.py", "--", "/cfw"]
    proc = subprocess.run(
        cmd,
        cwd=HARNESS,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **env},
    )
    output = proc.stdout + proc.stderr
    summary = re.findall(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    assert summary, f"the scenario run printed no summary (exit {proc.returncode}):\n{output[-4000:]}"
    passed, failed = (int(n) for n in summary[-1])
    assert failed == 0 and proc.returncode == 0, output[-6000:]
    assert passed == expected, f"{passed} scenarios passed, {expected} defined:\n{output[-4000:]}"


@pytest.mark.parametrize("version", sorted(PYODIDES))
def test_scenarios_with_the_standin_sdk(version: str) -> None:
    node = _node(PYODIDES[version])
    _run(node, PYODIDES[version], [str(CFW / "standin")], [], {"CFW_SDK": "standin"})


@pytest.mark.parametrize("implicit", ["1", "0"], ids=["implicit-deps", "legacy-step-do"])
def test_scenarios_with_the_real_workers_sdk(implicit: str, tmp_path: Path) -> None:
    pyodide = PYODIDES["0.27"]
    node = _node(pyodide)
    sdk = tmp_path / "sdk"
    with zipfile.ZipFile(_sdk_wheel()) as wheel:
        wheel.extractall(sdk)
    for extra in sdk.glob("*.dist-info"):
        shutil.rmtree(extra)
    for extra in sdk.glob("*.pth"):
        extra.unlink()
    # The SDK's NonRetryableError shim, loaded by the stub of workerd's helper.
    shim = tmp_path / "sdk_workflows.mjs"
    shutil.copy(sdk / "workers" / "workflows.js", shim)
    env = {"CFW_SDK": "real", "CFW_IMPLICIT_DEPS": implicit}
    _run(node, pyodide, [str(sdk), str(CFW / "sdk-stubs")], [f"{shim}:cf_sdk_js"], env)
