"""The public surface is pinned: what users import, and what stays private."""

from __future__ import annotations

import ast
from pathlib import Path

import workkit_workflow
from workkit_workflow import errors

PACKAGE = Path(workkit_workflow.__file__).parent


def test_exported_members() -> None:
    assert sorted(workkit_workflow.__all__) == [
        "CompensationContext",
        "DurableWorkflows",
        "ExecutionHandle",
        "NonRetryableError",
        "REGISTRY",
        "RetryPolicy",
        "Status",
        "StepContext",
        "Workflow",
        "WorkflowContext",
        "WorkflowError",
        "WorkflowExecutionDO",
        "WorkflowResult",
        "__version__",
        "create_durable_workflow",
        "current_step",
        "errors",
        "workflow",
    ]
    for name in workkit_workflow.__all__:
        assert hasattr(workkit_workflow, name), name


def test_the_names_other_checks_rely_on() -> None:
    from workkit_workflow import (  # noqa: F401
        NonRetryableError,
        RetryPolicy,
        Workflow,
        WorkflowError,
        WorkflowExecutionDO,
        create_durable_workflow,
    )
    from workkit_workflow.local import LocalNamespace  # noqa: F401

    assert issubclass(NonRetryableError, WorkflowError)


def test_every_error_is_a_workflow_error_with_a_code() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.WorkflowError), name
            assert isinstance(obj.code, str) and obj.code, name


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_cloudflare_adapter_touches_the_js_world() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(_imports(path) & {"js", "pyodide", "workers"})
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).as_posix() != "cloudflare/_workers.py"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_engine_does_not_need_pydantic() -> None:
    """The core runs where pydantic cannot load (the offline Pyodide of the tests):
    no module-level import of it (``_values`` loads it lazily, for annotated types)."""
    core = [
        "definitions/_workflow.py",
        "definitions/_contexts.py",
        "engine/_phase.py",
        "engine/_execution.py",
        "engine/_journal.py",
        "engine/_ports.py",
        "definitions/_values.py",
        "definitions/_retry.py",
        "definitions/_durations.py",
        "errors.py",
    ]
    for name in core:
        assert "pydantic" not in _imports(PACKAGE / name, top_level_only=True), name
