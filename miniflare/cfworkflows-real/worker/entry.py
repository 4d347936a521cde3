"""The Worker of the real-runtime tier: the README's Cloudflare Workflows usage, verbatim.

Each workflow of ``flows.py`` is exported as a ``WorkflowEntrypoint`` in the README's
recommended form (``class X(flow.as_cloudflare_workflow()): ...``), one in the
assignment form. ``Default.fetch`` serves the scenarios' requests through
``create_durable_workflow(self.env.<BINDING>)``; a request's arguments are its JSON body.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import urlsplit

from flows import (
    MARKS,
    approval_flow,
    big_flow,
    count_flow,
    long_flow,
    mark,
    nap_flow,
    plain_flow,
    retry_flow,
    saga_flow,
)
from workers import Response, WorkerEntrypoint

from workkit_workflow import WorkflowError, create_durable_workflow
from workkit_workflow.cloudflare._workers import sdk_has_native_non_retryable


class RetryFlow(retry_flow.as_cloudflare_workflow()):
    """Cloudflare Workflows entry point for retry_flow."""


class SagaFlow(saga_flow.as_cloudflare_workflow()):
    """Cloudflare Workflows entry point for saga_flow."""


class NapFlow(nap_flow.as_cloudflare_workflow()):
    """Cloudflare Workflows entry point for nap_flow."""


class ApprovalFlow(approval_flow.as_cloudflare_workflow()):
    """Cloudflare Workflows entry point for approval_flow."""


class LongFlow(long_flow.as_cloudflare_workflow()):
    """Cloudflare Workflows entry point for long_flow."""


class CountFlow(count_flow.as_cloudflare_workflow()):
    """Cloudflare Workflows entry point for count_flow, with a ``run`` of its own, as a user
    writes one to log or time a run: the SDK wraps it too, and ``super().run()`` gets the
    step it wrapped (``once_wrapped_step``)."""

    async def run(self, event, step):
        mark(f"{event.get('instanceId')}:run")
        return await super().run(event, step)


class BigFlow(big_flow.as_cloudflare_workflow()):
    """Cloudflare Workflows entry point for big_flow."""


PlainFlow = plain_flow.as_cloudflare_workflow("PlainFlow")


def _flows(env: Any) -> dict[str, tuple[Any, Any]]:
    # The bindings, spelled as a user spells them.
    return {
        "retry": (env.RETRY_FLOW, retry_flow),
        "saga": (env.SAGA_FLOW, saga_flow),
        "nap": (env.NAP_FLOW, nap_flow),
        "approval": (env.APPROVAL_FLOW, approval_flow),
        "long": (env.LONG_FLOW, long_flow),
        "count": (env.COUNT_FLOW, count_flow),
        "big": (env.BIG_FLOW, big_flow),
        "plain": (env.PLAIN_FLOW, plain_flow),
    }


def _reply(body: Any) -> Response:
    return Response(json.dumps(body), headers={"content-type": "application/json"})


def _error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, WorkflowError):
        return {"raised": type(exc).__name__, **exc.to_dict()}
    return {"raised": type(exc).__name__, "message": str(exc)}


async def _route(env: Any, path: str, q: dict[str, Any]) -> Any:
    if path == "/ping":
        # What the tier runs on: the Python, and whether the runtime's built-in SDK makes a
        # raised NonRetryableError final (else the backend retries steps itself).
        return {"python": sys.version.split()[0], "native_non_retryable": sdk_has_native_non_retryable()}
    if path == "/marks":
        return MARKS
    binding, definition = _flows(env)[q["flow"]]
    client = create_durable_workflow(binding)
    if path == "/start":
        handle = await client.run(definition, q.get("input"), execution_id=q["id"])
        return {"execution_id": handle.execution_id, "created": handle.created}
    handle = client.execution(q["id"])
    if path == "/status":
        return {"status": await handle.status()}
    if path == "/describe":
        return await handle.describe()
    if path == "/result":
        result = await handle.result(timeout=q.get("timeout", 30))
        error = result.error.to_dict() if result.error is not None else None
        return {"ok": result.ok, "status": result.status, "value": result.value, "error": error}
    if path == "/event":
        return {"sent": await handle.send_event(q["type"], q.get("payload"))}
    if path == "/cancel":
        return {"cancelled": await handle.cancel()}
    if path == "/pause":
        await handle.pause()
        return {"paused": True}
    if path == "/unpause":
        await handle.unpause()
        return {"unpaused": True}
    if path == "/restart":
        cut = {"kind": q.get("kind", "step")} if q.get("from_step") else {}
        restarted = await client.restart(q["id"], from_step=q.get("from_step"), **cut)
        return {"execution_id": restarted.execution_id}
    raise LookupError(path)


class Default(WorkerEntrypoint):
    async def fetch(self, request: Any) -> Response:
        path = urlsplit(str(request.url)).path
        try:
            return _reply({"ok": await _route(self.env, path, await request.json())})
        except Exception as exc:
            return _reply({"raised": _error(exc)})
