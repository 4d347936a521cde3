"""Running the offline Cloudflare harness (miniflare/) from pytest.

Runtime tests skip with a reason when Node or the npm packages are missing, and
fail instead when ``WORKKIT_REQUIRE_RUNTIME=1`` (CI). Every in-runtime run prints
its own ``N passed, N failed`` line, which :func:`summary` reads: a run that
printed none, or passed nothing, fails.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MINIFLARE = ROOT / "miniflare"
NODE_MODULES = MINIFLARE / "node_modules"


def require(*paths: Path) -> str:
    """The node binary, once everything in ``paths`` exists; else skip (or fail in CI)."""
    node = shutil.which("node")
    missing = [str(p) for p in paths if not p.exists()]
    if node is None:
        missing.insert(0, "node on PATH")
    if missing:
        reason = f"runtime missing: {', '.join(missing)} (run `npm install` in miniflare/)"
        if os.environ.get("WORKKIT_REQUIRE_RUNTIME") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    assert node is not None
    return node


_SUMMARY = re.compile(r"^(?:\w+: )?(\d+) passed, (\d+) failed", re.MULTILINE)


def summary(output: str) -> tuple[int, int]:
    """The last ``N passed, N failed`` line of a run (the sentinel)."""
    found = _SUMMARY.findall(output)
    assert found, f"the run printed no 'N passed, N failed' line:\n{output[-3000:]}"
    passed, failed = (int(n) for n in found[-1])
    return passed, failed


def assert_all_passed(output: str, minimum: int) -> int:
    passed, failed = summary(output)
    failures = [line for line in output.splitlines() if line.startswith(("FAIL", "ERROR"))]
    assert failed == 0, f"{failed} failed: {failures}\n{output[-4000:]}"
    assert passed >= minimum, f"only {passed} passed (expected at least {minimum})\n{output[-2000:]}"
    return passed
