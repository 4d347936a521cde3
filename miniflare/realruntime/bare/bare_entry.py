"""A Worker that embeds the package but no pydantic (none is vendored): POST bodies cannot be
validated, and the execution object must say so instead of accepting them unchecked.

GET / answers ``{"ready": true}``; POST /execute?id=ID forwards the body to that execution
object's ``/execute`` and answers ``{"status": ..., "body": ...}`` of the object's reply."""

import json
from urllib.parse import parse_qs, urlsplit

from workers import Response, WorkerEntrypoint

from workkit_workflow import WorkflowExecutionDO, workflow

__all__ = ["Default", "WorkflowExecutionDO"]


@workflow("bare-noop")
async def bare_noop(ctx, data):
    return await ctx.step("only", lambda: {"ran": True})


def _json(value):
    return Response(json.dumps(value), headers={"content-type": "application/json"})


async def _serve(env, request):
    url = urlsplit(str(request.url))
    if str(request.method) == "GET":
        return _json({"ready": True})
    execution_id = parse_qs(url.query).get("id", ["bare-1"])[0]
    stub = env.WORKFLOW_DO.get(env.WORKFLOW_DO.idFromName(execution_id))
    response = await stub.fetch(
        "https://do/execute",
        method="POST",
        body=await request.text(),
        headers={"content-type": "application/json"},
    )
    return _json({"status": response.status, "body": json.loads(await response.text())})


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return await _serve(self.env, request)

    async def on_fetch(self, request, *_runtime_args):
        return await _serve(self.env, request)
