"""The README's "Operating executions" example runs as written (a subprocess, fresh interpreter)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"
SRC = str(Path(__file__).parents[1] / "src")


def test_the_operating_example_runs_as_written(tmp_path: Path) -> None:
    found = re.search(r"<!-- control-example -->\n```python\n(?P<code>.*?)```", README.read_text(), re.S)
    assert found is not None, "the README lost its operating example"
    script = tmp_path / "operate.py"
    script.write_text(found["code"] + "\nprint('example:reached')\n")
    run = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("example:reached"), run.stdout
