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
        "Limit",
        "NonRetryableError",
        "REGISTRY",
        "RetryPolicy",
        "Schedule",
        "Scheduler",
        "Status",
        "StepContext",
        "StepUndo",
        "Workflow",
        "WorkflowContext",
        "WorkflowError",
        "WorkflowExecutionDO",
        "WorkflowResult",
        "__version__",
        "create_durable_workflow",
        "current_step",
        "errors",
        "run_schedules",
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


def test_the_cloudflare_module_serves_http_from_a_worker() -> None:
    """What a Worker's own fetch handler needs (the example Worker uses it) is public."""
    from workkit_workflow import cloudflare

    assert sorted(cloudflare.__all__) == [
        "WireRequest",
        "WireResponse",
        "make_response",
        "make_text_response",
        "read_request",
    ]
    for name in cloudflare.__all__:
        assert getattr(cloudflare, name).__module__.startswith("workkit_workflow."), name


def test_the_example_worker_imports_nothing_private() -> None:
    worker = Path(__file__).parent.parent / "worker"
    private = {
        f"{path.name}: {node.module}"
        for path in sorted(worker.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("workkit_workflow")
        and any(part.startswith("_") for part in node.module.split("."))
    }
    assert private == set()


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
        "definitions/_steps.py",
        "definitions/_json.py",
        "engine/phase/_run.py",
        "engine/phase/_operations.py",
        "engine/phase/_step.py",
        "engine/phase/_attempt.py",
        "engine/phase/_sleep.py",
        "engine/phase/_wait.py",
        "engine/phase/_outcome.py",
        "engine/_state.py",
        "engine/_drive.py",
        "engine/_phases.py",
        "engine/_requests.py",
        "engine/_alarms.py",
        "engine/_signals.py",
        "engine/_plugins.py",
        "engine/_runner.py",
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
