"""The bench's instruction counts (``bench._instructions``): counted by valgrind in child
processes, the same from run to run, and "not available" with the reason when valgrind is
missing. Counts only: nothing here asserts a time."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from bench import _instructions

VALGRIND = shutil.which("valgrind")
needs_valgrind = pytest.mark.skipif(
    VALGRIND is None and not os.environ.get("WORKKIT_REQUIRE_VALGRIND"),
    reason="valgrind is not installed (scripts/test.sh installs it where it can; required in CI)",
)


def test_without_valgrind_it_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_instructions.shutil, "which", lambda name: None)
    result = _instructions.measure(290)
    assert isinstance(result, _instructions.Unavailable)
    assert "valgrind not found" in result.reason
    _instructions.report(result)
    assert "not available: valgrind not found" in capsys.readouterr().out


def test_a_failed_child_is_reported_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_instructions.shutil, "which", lambda name: "/bin/false")
    result = _instructions.measure(290, small=1, large=2)
    assert isinstance(result, _instructions.Unavailable)
    assert "memory (1 steps): exit 1" in result.reason


def test_the_report_prints_every_cell_and_the_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    per_step = {"memory": 100_000.0, "engine": 150_000.0, "history": 240_000.0, "floor": 50_000.0}
    _instructions.report({"per_step": per_step, "small": 300, "large": 1300, "row_bytes": 290})
    out = capsys.readouterr().out
    for _, label in _instructions.CELLS:
        assert label in out
    assert "150.0k" in out and "240.0k" in out
    assert "engine + history / engine 1.60x" in out
    assert "engine / floor 3.00x" in out
    assert "50,000 instructions per step" in out


def test_an_unknown_cell_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown cell"):
        _instructions.child("nonsense", 1, 1)


@pytest.mark.slow
@needs_valgrind
def test_every_cell_counts_and_the_same_run_counts_the_same() -> None:
    """Under valgrind, small runs: each cell's steps cost something, in the expected order, and
    a cell run twice counts the same instructions (the method's claim: to within 1%)."""
    result = _instructions.measure(290, small=5, large=25)
    assert isinstance(result, dict), result
    per_step = result["per_step"]
    assert all(per_step[cell] > 1_000 for cell, _ in _instructions.CELLS), per_step
    assert per_step["history"] > per_step["engine"] > per_step["floor"], per_step
    assert VALGRIND is not None
    with ThreadPoolExecutor(2) as pool:
        once, again = pool.map(lambda _: _instructions._count(VALGRIND, "engine", 25, 290), range(2))
    assert isinstance(once, int) and isinstance(again, int)
    assert abs(once - again) <= once * 0.01
