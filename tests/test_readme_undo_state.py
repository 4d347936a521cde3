"""The README's "Undo handlers" and "Live state" examples, run as written (a script each,
in a fresh interpreter: the code-first undo is found by its qualified name there)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
SRC = str(Path(__file__).parents[1] / "src")
RUNNABLE = re.compile(r"<!-- runnable: (?P<name>[\w.]+) -->\n```python\n(?P<code>.*?)```", re.S)


def runnable() -> dict[str, str]:
    return {m["name"]: m["code"] for m in RUNNABLE.finditer(README.read_text())}


def test_the_readme_has_both_examples() -> None:
    assert {"undo_example.py", "state_example.py"} <= set(runnable())


@pytest.mark.parametrize("name", ["undo_example.py", "state_example.py"])
def test_the_readme_example_runs(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text(runnable()[name])
    run = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", name],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    expected = "'status': 'completed'" if name == "undo_example.py" else "{'progress': {'done': 2, 'of': 2}}"
    assert expected in run.stdout
