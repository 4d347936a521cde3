"""Steps of workflow definitions replaced for a test, and put back after it."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from ..definitions._contexts import WorkflowContext
from ..definitions._steps import MISSING
from ..definitions._workflow import Workflow


class StepMocks:
    """Steps of workflow definitions replaced for a test, and how to put them back.

    Definitions are module-level objects the engine finds by name, so a
    replacement is made on the definition itself and undone by :meth:`restore`.
    """

    def __init__(self) -> None:
        self._by_workflow: dict[int, tuple[Workflow, dict[str, Callable[..., Any]]]] = {}
        self._undo: list[Callable[[], None]] = []

    def replace(
        self,
        workflow: Workflow,
        step: str,
        *,
        output: Any = MISSING,
        handler: Callable[..., Any] | None = None,
    ) -> None:
        if (output is MISSING) == (handler is None):
            raise ValueError("mock_step takes exactly one of output= or handler=")
        if handler is not None and not callable(handler):
            raise ValueError("mock_step's handler must be callable")
        replacement = handler if handler is not None else _constant(output)
        if workflow._fn is None:
            self._replace_builder_step(workflow, step, replacement)
            return
        entry = self._by_workflow.get(id(workflow))
        if entry is None:
            entry = (workflow, {})
            self._by_workflow[id(workflow)] = entry
            self._wrap_function(workflow, entry[1])
        entry[1][step] = replacement

    def _replace_builder_step(self, workflow: Workflow, step: str, replacement: Callable[..., Any]) -> None:
        index = next((i for i, op in enumerate(workflow._ops) if op.name == step), None)
        if index is None or workflow._ops[index].kind != "step":
            known = ", ".join(repr(op.name) for op in workflow._ops if op.kind == "step")
            raise ValueError(f"workflow {workflow.name!r} has no step {step!r} (its steps: {known})")
        original = workflow._ops[index]
        workflow._ops[index] = dataclasses.replace(original, handler=replacement)

        def undo() -> None:
            workflow._ops[index] = original

        self._undo.append(undo)

    def _wrap_function(self, workflow: Workflow, mocks: dict[str, Callable[..., Any]]) -> None:
        original = workflow._fn
        assert original is not None

        async def mocked(ctx: Any, input: Any) -> Any:
            return await original(cast(WorkflowContext, _MockedContext(ctx, mocks)), input)

        workflow._fn = mocked

        def undo() -> None:
            workflow._fn = original
            self._by_workflow.pop(id(workflow), None)

        self._undo.append(undo)

    def restore(self) -> None:
        """Put every replaced step back, newest first."""
        while self._undo:
            self._undo.pop()()


def _constant(output: Any) -> Callable[..., Any]:
    def handler(*_args: Any) -> Any:
        return output

    return handler


class _MockedContext:
    """A code-first workflow's context whose ``step`` calls a replacement for mocked names."""

    def __init__(self, ctx: WorkflowContext, mocks: Mapping[str, Callable[..., Any]]) -> None:
        self._ctx = ctx
        self._mocks = mocks

    def step(self, name: str, fn: Callable[..., Any], *args: Any, **options: Any) -> Awaitable[Any]:
        return self._ctx.step(name, self._mocks.get(name, fn), *args, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)
