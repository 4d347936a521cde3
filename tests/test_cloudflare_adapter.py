"""The adapter's CPython-visible parts, and the runtime-test plumbing (skip vs fail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workkit_workflow import create_durable_workflow
from workkit_workflow.cloudflare._storage import _ms
from workkit_workflow.cloudflare._workers import IN_PYODIDE, DurableObjectBase, headers_of, to_js, to_py

from _cf_harness import require, summary


def test_on_cpython_nothing_is_converted_and_the_class_is_plain() -> None:
    assert not IN_PYODIDE and DurableObjectBase is object
    value = {"a": [1]}
    assert to_js(value) is value and to_py(value) is value and to_py(None) is None


def test_alarm_milliseconds_round_up() -> None:
    assert _ms(1_767_225_601.0890045) == 1_767_225_601_090
    assert _ms(1_767_225_600.25) == 1_767_225_600_250
    assert _ms(12.0) == 12_000


def test_headers_of_lowercases_names() -> None:
    class Message:
        def items(self) -> list[tuple[str, str]]:
            return [("Content-Type", "application/json"), ("X-A", "1")]

    assert headers_of(Message()) == {"content-type": "application/json", "x-a": "1"}
    assert headers_of(None) == {}


def test_a_non_binding_is_refused_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="namespace binding"):
        create_durable_workflow(object())


def test_missing_runtime_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Path("/nonexistent/workkit/runtime")
    monkeypatch.delenv("WORKKIT_REQUIRE_RUNTIME", raising=False)
    with pytest.raises(pytest.skip.Exception, match="runtime missing"):
        require(missing)
    monkeypatch.setenv("WORKKIT_REQUIRE_RUNTIME", "1")
    with pytest.raises(pytest.fail.Exception, match="runtime missing"):
        require(missing)


def test_the_sentinel_line_is_required() -> None:
    assert summary("PASS x\n3 passed, 0 failed\n") == (3, 0)
    assert summary("check: 2 passed, 1 failed, 0 skipped") == (2, 1)
    with pytest.raises(AssertionError, match="no 'N passed, N failed' line"):
        summary("Traceback ...")
