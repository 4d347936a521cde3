"""Per-step undo handlers on the Cloudflare Workflows backend.

They run inside ``run`` after a terminal failure, as the Durable Object backend
runs them: last started first (here: last called first, which is the same order
for steps that start when called), each as the step ``compensation: undo:<step>``
with its own retry policy and timeout, a failed one not stopping the rest,
then ``on_failure`` with their outcomes in ``ctx.undos``. The engine journals
them like any step, so a replay of ``run`` does not run a finished undo again.
The engine retries a lost attempt itself: there are no in-doubt steps here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..definitions._steps import StepContext, StepOptions
from ..definitions._undo import StepUndo, UndoHandler
from ..definitions._workflow import Workflow
from ..errors import StepFailedError
from ._run import EngineRun


async def run_undos(
    definition: Workflow, run: EngineRun, main: EngineRun, error: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run the undo of every completed step, last first; their outcomes."""
    outcomes = []
    for _, (name, label, output, options) in sorted(main.undoable.items(), reverse=True):
        spec = options.undo
        assert spec is not None
        bare = StepContext(main.execution_id, main.workflow, name, 1, "", main.input)
        info = StepUndo(
            step=name,
            status="completed",
            output=output,
            input=spec.args if spec.ref is not None else main.input,
            idempotency_key=main._idempotency_key(label, options, bare),
            error=error,
            reason="failed",
            attempt=0,
            execution_id=main.execution_id,
            workflow=main.workflow,
        )
        undo_options = StepOptions(retry=spec.retry or definition.retry, timeout=spec.timeout)
        view: dict[str, Any] = {
            "step": name,
            "step_status": "completed",
            "status": "completed",
            "error": None,
        }
        try:
            await run.step("undo:" + name, _calling(spec.handler, info), None, undo_options)
        except StepFailedError as exc:
            view.update(status="failed", error=exc.error)
        outcomes.append(view)
    return outcomes


def _calling(handler: UndoHandler, info: StepUndo) -> Callable[[StepContext], Any]:
    return lambda _ctx: handler(info)
