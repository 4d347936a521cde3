"""Entry module of the example Worker (``main`` in wrangler.toml).

It must re-export the Durable Object class under its own name (the runtime
looks up ``WorkflowExecutionDO`` in this module), import the workflows so
they are registered in every isolate, and serve the HTTP API of ``app.py``.
"""

from __future__ import annotations

from typing import Any

import app
import order_flow  # noqa: F401  (registers the "order" workflow)

from workkit_workflow import WorkflowExecutionDO, run_schedules
from workkit_workflow.cloudflare import WireResponse, make_response, make_text_response, read_request

__all__ = ["WorkflowExecutionDO", "on_fetch", "on_scheduled"]


async def serve(request: Any, env: Any) -> Any:
    wire = await read_request(request)
    if app.is_page(wire):
        status, page = await app.page(wire, env)
        if isinstance(page, str):
            return make_text_response(status, page, {"content-type": "text/html; charset=utf-8"})
        return make_response(WireResponse(status, page))
    status, body = await app.handle(wire, env)
    return make_response(WireResponse(status, body))


try:
    from workers import WorkerEntrypoint
except ImportError:  # workerd without the Python SDK (e.g. 1.20241112.0 used in tests)
    WorkerEntrypoint = None

if WorkerEntrypoint is not None:

    class Default(WorkerEntrypoint):  # type: ignore[misc,valid-type]
        """The Worker's fetch handler (compatibility dates from 2025-08-14 call ``fetch``)."""

        async def fetch(self, request: Any) -> Any:
            return await serve(request, self.env)

        async def on_fetch(self, request: Any, *_runtime_args: Any) -> Any:
            """Compatibility dates before 2025-08-14 call this; the April-2025 SDK
            passes ``(request, undefined, undefined)``."""
            return await self.fetch(request)

        async def scheduled(self, controller: Any, *_runtime_args: Any) -> None:
            """Cron Triggers (``[triggers] crons`` in wrangler.toml): start the due ticks
            of every registered schedule, at the trigger's ``scheduledTime``."""
            await run_schedules(self.env.WORKFLOW_DO, controller)

        async def on_scheduled(self, controller: Any, *_runtime_args: Any) -> None:
            """The handler's name before 2025-08-14."""
            await self.scheduled(controller)

    __all__ = ["Default", "WorkflowExecutionDO"]
else:

    async def on_fetch(request: Any, env: Any) -> Any:
        """Module-level handler, for runtimes without the ``workers`` module."""
        return await serve(request, env)

    async def on_scheduled(controller: Any, env: Any, *_runtime_args: Any) -> None:
        """Module-level Cron Trigger handler, for runtimes without the ``workers`` module."""
        await run_schedules(env.WORKFLOW_DO, controller)
