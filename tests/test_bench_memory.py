"""The memory section of the bench: the engine's CPU per step and, beside each run, the
machine's reference loop (``bench._memory``), as ``bench._report`` prints them."""

from __future__ import annotations

import pytest
from bench import _memory, _report
from bench import _workflows as _registered  # noqa: F401  (the bench's workflows)


async def test_each_run_is_measured_with_the_machines_reference_beside_it() -> None:
    values, references = await _memory.per_step(50, 3)
    assert len(values) == len(references) == 3
    assert all(v > 0 for v in values) and all(r > 0 for r in references)


def test_the_reference_loop_is_a_fixed_amount_of_work() -> None:
    assert _memory.reference_once(10) > 0
    with pytest.raises(RuntimeError):
        _memory.reference_once(0)


def test_the_step_is_printed_in_iterations_of_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    _report.memory_cpu("CPython", [30e-6, 20e-6, 40e-6], 1000, reference=[10e-6, 10e-6, 10e-6])
    printed = capsys.readouterr().out
    assert "median [min-max]: 30.0 [20.0-40.0] over 3 runs" in printed
    assert "10.00 [10.00-10.00] us an iteration" in printed
    assert "costs 3.0 [2.0-4.0] iterations of it" in printed
    _report.memory_cpu("CPython", [30e-6], 1000)
    assert "reference" not in capsys.readouterr().out
