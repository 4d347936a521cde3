"""The top-level wrangler.toml + worker/ as a new user would deploy them, checked with
wrangler 3.92.0's ``deploy --dry-run`` (bundles, resolves bindings, uploads nothing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _cf_harness import NODE_MODULES, ROOT, require

pytestmark = pytest.mark.workerd


def test_wrangler_bundles_the_worker_with_the_package_and_the_do_binding(tmp_path: Path) -> None:
    wrangler = NODE_MODULES / ".bin" / "wrangler"
    require(wrangler)
    shutil.copyfile(ROOT / "wrangler.toml", tmp_path / "wrangler.toml")
    shutil.copytree(ROOT / "worker", tmp_path / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "src").symlink_to(ROOT / "src")
    subprocess.run([sys.executable, str(tmp_path / "worker" / "vendor.py")], check=True, timeout=60)
    env = {
        **os.environ,
        "WRANGLER_SEND_METRICS": "false",
        "NO_COLOR": "1",
        "CI": "true",
        "WRANGLER_LOG_PATH": str(tmp_path / "logs"),
    }
    run = subprocess.run(
        [str(wrangler), "deploy", "--dry-run", "--outdir", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "WORKFLOW_DO: WorkflowExecutionDO" in output, output[-3000:]
    bundled = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.py")}
    assert {
        "entry.py",
        "app.py",
        "order_flow.py",
        "workkit_workflow/__init__.py",
        "workkit_workflow/cloudflare/_workers.py",
        "workkit_workflow/cloudflare/_object.py",
        "workkit_workflow/http.py",
    } <= bundled
    assert "workkit_workflow/testing.py" not in bundled  # the pytest plugin stays out
