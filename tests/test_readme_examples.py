"""The README's testing examples, run as written in a fresh project (a subprocess of pytest
in an empty folder): without pytest-asyncio, with it in its default strict mode, and in
its auto mode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
SRC = str(Path(__file__).parents[1] / "src")
STRICT = [
    "-W",
    "error::RuntimeWarning",  # a coroutine never awaited
    "-W",
    "error::ResourceWarning",  # a database left open
    "-W",
    "error::pytest.PytestUnraisableExceptionWarning",
]
"""Our own warnings are errors; pytest-asyncio's configuration notices in an
unconfigured project are not ours to fix."""
EXAMPLE = re.compile(r"<!-- readme-example: (?P<name>[\w.]+) -->\n```python\n(?P<code>.*?)```", re.S)


def examples() -> dict[str, str]:
    return {m["name"]: m["code"] for m in EXAMPLE.finditer(README.read_text())}


def test_the_readme_holds_the_two_files_of_its_testing_example() -> None:
    found = examples()
    assert set(found) == {"flows.py", "test_flows.py"}
    tests = re.findall(r"^(?:async )?def (test_\w+)", found["test_flows.py"], re.M)
    assert "test_approval_times_out" in tests and len(tests) == 5


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["-p", "no:asyncio"], id="without-pytest-asyncio"),
        pytest.param([], id="pytest-asyncio-strict"),
        pytest.param(["-o", "asyncio_mode=auto"], id="pytest-asyncio-auto"),
    ],
)
def test_the_readme_testing_examples_pass_as_written(tmp_path: Path, options: list[str]) -> None:
    for name, code in examples().items():
        (tmp_path / name).write_text(code)
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("PYTEST_ADDOPTS", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *STRICT, *options],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "5 passed" in run.stdout, run.stdout
