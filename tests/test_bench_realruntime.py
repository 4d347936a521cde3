"""``bench._realruntime``'s report of the real-runtime bench (``worker/bench.py``'s JSON)."""

from __future__ import annotations

import pytest
from bench import _realruntime


def _result(history: bool) -> dict[str, object]:
    rounds: dict[str, list[float]] = {
        "engine_sql": [0.2, 0.1, 0.4],
        "engine_kv": [0.5, 0.5, 0.5],
        "engine_memory": [0.1, 0.1, 0.1],
        "put": [0.2, 0.2, 0.2],
        "sql_exec": [0.02, 0.02, 0.02],
    }
    if history:
        # Per round 1.5x, 3x, 1.25x against engine_sql: the median of the ratios is 1.5x
        # (the ratio of the medians, 0.45 / 0.2, would say 2.25x).
        rounds["engine_sql_history"] = [0.3, 0.3, 0.5]
        rounds["engine_sql_history_offbox"] = [0.2, 0.15, 0.4]
    medians = {key: sorted(values)[1] for key, values in rounds.items()}
    return {
        "steps": 200,
        "rounds": 3,
        "all_rounds": rounds,
        "ms_per_step_or_call": medians,
        "loop_turns_per_step": {"engine_sql": 0.08},
        "commits_per_step": 1.015,
        "committed_bytes_per_step": 563.0,
        "history_statements_per_run": {"engine_sql_history": 35} if history else {},
    }


def test_history_on_off_is_the_median_of_each_rounds_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    verdicts = _realruntime.report(_result(history=True))
    out = capsys.readouterr().out
    assert "engine + history, SQL journal, its D1's SQL in the object" in out
    assert "median of the rounds' ratios: 1.50x with its SQL here" in out
    assert "1.00x with D1 elsewhere" in out
    assert verdicts == [
        "[MET] real runtime: engine over the SQL journal 0.200 ms/step (median) <= 0.2 ms "
        "(key-value 0.500, floors: put 0.200, sql.exec 0.020)"
    ]


def test_a_result_without_the_history_rows_prints_no_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    _realruntime.report(_result(history=False))
    out = capsys.readouterr().out
    assert "history on / off" not in out
    assert "engine, SQL journal (SQLite-backed object)" in out


def test_without_the_runtime_it_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    verdicts = _realruntime.report(_realruntime.Unavailable("no kit here"))
    assert "not available: no kit here" in capsys.readouterr().out
    assert verdicts == ["[SKIPPED] real runtime: not available: no kit here"]


def test_the_cpu_table_prints_each_kind_and_an_executions_part(capsys: pytest.CaptureFixture[str]) -> None:
    result = _result(history=False)
    rounds = {
        "bare": [3.0, 4.0, 3.5],
        "new_object": [13.0, 14.0, 12.0],
        "storage_floor": [15.0, 15.0, 14.0],
        "run_1": [20.0, 24.0, 19.0],
        "run_10": [22.0, 25.0, 23.0],
    }
    result["cpu"] = {
        "executions": 200,
        "rounds": 3,
        "clock_ticks_per_second": 100,
        "cpu_ms_per_request": {key: sorted(values)[1] for key, values in rounds.items()},
        "all_rounds": rounds,
    }
    _realruntime.report(result)
    out = capsys.readouterr().out
    assert "200 requests of each kind a round, 3 rounds" in out
    assert "an execution of 1 step (client.run; a new execution object)" in out
    # Per round: 7, 10, 7 for 1 step; 9, 11, 11 for 10 steps.
    assert "its row less the new object's, median of the rounds): 1 step 7.00 ms, 10 steps 11.00 ms" in out
    assert "doing a 1-step execution's storage work (no engine)" in out
    # Per round: 5, 9, 5 for 1 step; 7, 10, 9 for 10 steps.
    assert "its row less its storage work's, median of the rounds): 1 step 5.00 ms, 10 steps 9.00 ms" in out
