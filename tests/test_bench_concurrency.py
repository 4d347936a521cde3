"""The bench's concurrency section times every cell over about the same number of executions:
rounds of a cell's executions started at once, each round on a new namespace, their figures
summed (``bench._engine.concurrency``), and per execution over them all (``bench._report``).
Counts only: no test here asserts a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bench import _report
from bench._engine import ConcurrencyResult, concurrency


def test_rounds_until_at_least_that_many_executions_were_timed(tmp_path: Path) -> None:
    result = asyncio.run(concurrency(str(tmp_path), 3, 1, "OFF", at_least=7))
    assert (result.executions, result.rounds, result.total) == (3, 3, 9)
    assert len(result.latencies) == 9  # every execution of every round
    assert result.cpu > 0 and result.wall > 0
    assert result.objects_in_flight is None  # not asked for
    assert list(tmp_path.glob("*.db")) == []  # each round's file removed


def test_one_round_when_the_cell_alone_is_that_many(tmp_path: Path) -> None:
    result = asyncio.run(concurrency(str(tmp_path), 4, 1, "OFF", at_least=4))
    assert (result.rounds, result.total, len(result.latencies)) == (1, 4, 4)
    assert asyncio.run(concurrency(str(tmp_path), 2, 1, "OFF")).rounds == 1  # no floor given


def _run(executions: int, rounds: int, cpu: float, wall: float, collections: int) -> ConcurrencyResult:
    return ConcurrencyResult(
        executions, 5, "NORMAL", wall, cpu, [0.01] * (executions * rounds), collections, rounds=rounds
    )


def test_report_divides_by_every_execution_timed(capsys: pytest.CaptureFixture[str]) -> None:
    # 10 at once, 4 rounds: 40 executions in 0.04 s of CPU is 1 ms each, 1,000 a second.
    small = [_run(10, 4, 0.04, 0.04, 8)]
    large = [_run(40, 1, 0.06, 0.05, 3)]
    rate, flat = _report.concurrency({10: small, 40: large})
    out = capsys.readouterr().out
    assert "rounds per run: 10: 4, 40: 1" in out
    assert "until 40 executions were timed" in out
    assert "executions/s: 800 " in rate.line and rate.met is False  # the largest cell: 40 in 0.05 s
    assert ": 1.50x " in flat.line and flat.met is False  # 1.5 ms over 1 ms
    row = next(line for line in out.splitlines() if line.startswith("10 "))
    assert " 2.0 " in row  # 8 collections over 4 rounds


def test_report_takes_the_collector_out_of_the_ratio_it_prints_without_a_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 1 ms and 1.5 ms an execution, of which the collector 0.05 and 0.5 ms: 1.05x less it.
    small = [_run(10, 4, 0.04, 0.04, 8)]
    small[0].gc_seconds = 0.002
    large = [_run(40, 1, 0.06, 0.05, 3)]
    large[0].gc_seconds = 0.020
    _report.concurrency({10: small, 40: large})
    line = next(x for x in capsys.readouterr().out.splitlines() if "less the collector" in x)
    assert line.startswith("no target: ")
    assert line.endswith(": 1.05x (1.000 ms at 40, 0.950 ms at 10)"), line
