"""In-runtime scenarios: each drives executions through the real ``WORKFLOW_DO`` namespace
binding with the package's client, checks what it sees, and returns a report that ends with
``"sentinel": "<name>:reached"`` (only written after every check of the scenario ran).

A failed check raises ``CheckFailed``; the entry module answers it as HTTP 500 with the report.
"""

import asyncio
import json

from flows import counters_stub

from workkit_workflow import create_durable_workflow
from workkit_workflow.cloudflare._workers import to_js
from workkit_workflow.errors import ExecutionNotFoundError


class CheckFailed(Exception):
    pass


def expect(condition, what, **seen):
    if not condition:
        raise CheckFailed(f"{what}: {json.dumps(seen, default=repr)[:1500]}")


async def counters(env, prefix):
    stub = counters_stub(env)
    response = await stub.fetch(f"https://counters/all?prefix={prefix}")
    return json.loads(await response.text())["counters"]


def counts(all_counters, execution_id):
    return {k.split(":", 1)[1]: v for k, v in all_counters.items() if k.startswith(execution_id + ":")}


async def three_step_retry(env, eid):
    client = create_durable_workflow(env.WORKFLOW_DO)
    handle = await client.run("rt-three", {"order": 7}, execution_id=eid)
    result = await handle.result(timeout=30)
    expect(result.ok, "rt-three succeeds", error=result.error and result.error.to_dict())
    expect(result.value == {"a": 1, "b": 3, "c": 1, "input": {"order": 7}}, "outputs", value=result.value)
    journal = await handle.journal()
    steps = [(e["name"], e["status"], e.get("attempt")) for e in journal if e["kind"] == "step"]
    expect(
        [s[:2] for s in steps] == [("a", "completed"), ("b", "completed"), ("c", "completed")],
        "journal",
        steps=steps,
    )
    seen = counts(await counters(env, eid), eid)
    expect(seen == {"a": 1, "b": 3, "c": 1}, "each step ran as often as its attempts", counters=seen)
    return {"value": result.value, "journal": steps, "counters": seen, "sentinel": "three_step_retry:reached"}


async def saga_compensation(env, eid):
    client = create_durable_workflow(env.WORKFLOW_DO)
    handle = await client.run("rt-saga", None, execution_id=eid)
    result = await handle.result(timeout=30)
    expect(not result.ok and result.status == "failed", "rt-saga fails", status=result.status)
    error = result.error.to_dict()
    expect(result.error.failed_step == "charge", "the failed step is named", error=error)
    expect(
        (result.error.error or {}).get("code") == "non_retryable",
        "the step error keeps its code",
        error=error,
    )
    seen = counts(await counters(env, eid), eid)
    expect(
        seen == {"reserve": 1, "charge": 1, "release": 1},
        "no retry of a non-retryable step; compensation ran once",
        counters=seen,
    )
    compensation = result.error.compensation
    return {
        "status": result.status,
        "error": error,
        "compensation": compensation,
        "counters": seen,
        "sentinel": "saga_compensation:reached",
    }


async def oversize_output(env, eid):
    client = create_durable_workflow(env.WORKFLOW_DO)
    handle = await client.run("rt-oversize", None, execution_id=eid)
    result = await handle.result(timeout=30)
    expect(
        not result.ok and result.status == "failed",
        "an oversize output fails the execution",
        status=result.status,
    )
    step_error = result.error.error or {}
    expect(
        step_error.get("code") == "serialization_error",
        "as a serialization error",
        error=result.error.to_dict(),
    )
    described = await handle.describe()
    expect(described["status"] == "failed", "the object still answers", described=described)
    return {"error": step_error, "status": described["status"], "sentinel": "oversize_output:reached"}


async def concurrent_starts(env, eid):
    client = create_durable_workflow(env.WORKFLOW_DO)
    handles = await asyncio.gather(*[client.start("rt-once", {"i": i}, execution_id=eid) for i in range(20)])
    created = [h.created for h in handles]
    expect(
        created.count(True) == 1 and created.count(False) == 19, "exactly one start creates", created=created
    )
    result = await handles[0].result(timeout=30)
    expect(result.ok and result.value == {"n": 1}, "one execution ran", value=result.value)
    meta = await handles[0].meta()
    seen = counts(await counters(env, eid), eid)
    expect(seen == {"only": 1}, "its step ran once", counters=seen)
    return {
        "created": created.count(True),
        "input": meta.get("input"),
        "counters": seen,
        "sentinel": "concurrent_starts:reached",
    }


async def raw(env, eid, method, path, body=None, raw_body=None, content_type="application/json"):
    stub = env.WORKFLOW_DO.get(env.WORKFLOW_DO.idFromName(eid))
    options = {"method": method, "headers": to_js({"content-type": content_type})}
    if raw_body is not None:
        options["body"] = raw_body
    elif body is not None:
        options["body"] = json.dumps(body)
    response = await stub.fetch("https://workkit-workflow.internal" + path, **options)
    text = await response.text()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = {"not_json": text[:300]}
    return int(response.status), parsed


MALFORMED = [
    # (label, method, path, body or raw text, expected status, expected error code)
    ("not json", "POST", "/execute", "raw:{not json", 400, "invalid_request"),
    ("not an object", "POST", "/execute", [1, 2], 400, "invalid_request"),
    ("missing workflow", "POST", "/execute", {"execution_id": "{eid}"}, 400, "invalid_request"),
    (
        "unknown field",
        "POST",
        "/execute",
        {"workflow": "rt-once", "execution_id": "{eid}", "extra": 1},
        400,
        "invalid_request",
    ),
    (
        "wait as a string",
        "POST",
        "/execute",
        {"workflow": "rt-once", "execution_id": "{eid}", "wait": "yes"},
        400,
        "invalid_request",
    ),
    (
        "workflow as a number",
        "POST",
        "/execute",
        {"workflow": 5, "execution_id": "{eid}"},
        400,
        "invalid_request",
    ),
    (
        "bad id pattern",
        "POST",
        "/execute",
        {"workflow": "rt-once", "execution_id": "-bad id"},
        400,
        "invalid_request",
    ),
    (
        "id with a final newline",
        "POST",
        "/execute",
        {"workflow": "rt-once", "execution_id": "{eid}\n"},
        400,
        "invalid_request",
    ),
    (
        "another object's id",
        "POST",
        "/execute",
        {"workflow": "rt-once", "execution_id": "someone-else"},
        400,
        "invalid_request",
    ),
    (
        "unknown workflow",
        "POST",
        "/execute",
        {"workflow": "no-such-flow", "execution_id": "{eid}"},
        404,
        "unknown_workflow",
    ),
    (
        "restart with a wrong entry",
        "POST",
        "/execute",
        {
            "workflow": "rt-once",
            "execution_id": "{eid}",
            "restart": {
                "execution_id": "x",
                "from_step": "only",
                "entries": [{"v": 3, "op": 0, "kind": "step", "name": "a", "status": "completed"}],
            },
        },
        400,
        "invalid_request",
    ),
    (
        "oversize body",
        "POST",
        "/execute",
        "raw:" + json.dumps({"workflow": "rt-once", "execution_id": "{eid}", "input": "y" * 2_600_000}),
        413,
        "invalid_request",
    ),
    ("event without type", "POST", "/event", {"payload": 1}, 400, "invalid_request"),
    ("event type empty", "POST", "/event", {"type": ""}, 400, "invalid_request"),
    ("cancel reason not text", "POST", "/cancel", {"reason": 5}, 400, "invalid_request"),
    ("status of nothing", "GET", "/status", None, 404, "execution_not_found"),
    ("wrong method", "GET", "/execute", None, 405, "method_not_allowed"),
    ("unknown route", "GET", "/nope", None, 404, "not_found"),
    ("bad wait query", "GET", "/result?wait=abc", None, 400, "invalid_request"),
]


async def malformed_requests(env, eid):
    outcomes = []
    for label, method, path, body, status, code in MALFORMED:
        raw_body = None
        if isinstance(body, str) and body.startswith("raw:"):
            raw_body, body = body[4:].replace("{eid}", eid), None
        elif body is not None:
            body = json.loads(json.dumps(body).replace("{eid}", eid))
        got_status, got = await raw(env, eid, method, path, body, raw_body)
        got_code = (got.get("error") or {}).get("code") if isinstance(got, dict) else None
        outcomes.append({"label": label, "status": got_status, "code": got_code})
        expect(
            got_status == status and got_code == code,
            f"malformed request {label!r}",
            expected=[status, code],
            got=[got_status, got],
        )
    # Nothing above created the execution: it still does not exist, and a valid start works.
    status, _ = await raw(env, eid, "GET", "/status")
    expect(status == 404, "no malformed request created the execution", status=status)
    client = create_durable_workflow(env.WORKFLOW_DO)
    result = await (await client.run("rt-once", None, execution_id=eid)).result(timeout=30)
    expect(result.ok, "a valid start after them works", error=result.error and result.error.to_dict())
    return {"outcomes": outcomes, "sentinel": "malformed_requests:reached"}


async def undo_and_state(env, eid):
    client = create_durable_workflow(env.WORKFLOW_DO)
    handle = await client.run("rt-undo", None, execution_id=eid)
    result = await handle.result(timeout=30)
    expect(not result.ok and result.error.failed_step == "charge", "rt-undo fails at charge")
    undos = [(u["step"], u["status"]) for u in result.error.compensation["undos"]]
    expect(undos == [("pay", "completed"), ("reserve", "completed")], "undone last first", undos=undos)
    journal = await handle.journal()
    comp = [(e["name"], e.get("output")) for e in journal if e["phase"] == "compensation"]
    expect(
        comp[0] == ("undo:pay", {"undid": "pay", "output": {"name": "pay", "n": 1}, "input": ["pay"]}),
        "the undo got the step's output and arguments",
        comp=comp,
    )
    seen = counts(await counters(env, eid), eid)
    expected = {"reserve": 1, "pay": 1, "charge": 1, "undo:pay": 1, "undo:reserve": 1}
    expect(seen == expected, "every undo ran once", counters=seen)
    state = await handle.state()
    expect(state == {"stage": "charging"}, "live state after settling", state=state)
    return {"undos": undos, "state": state, "counters": seen, "sentinel": "undo_and_state:reached"}


async def _until_deleted(handle, seconds):
    """Poll the status until the object answers 404; how many polls it took."""
    for polls in range(int(seconds * 10)):
        try:
            await handle.status()
        except ExecutionNotFoundError:
            return polls + 1
        await asyncio.sleep(0.1)
    raise CheckFailed(f"{handle.execution_id} still answers after {seconds}s")


async def retention_and_delete(env, eid):
    """Retention deletes a settled execution by its alarm; ``delete`` at once, past 128 keys."""
    client = create_durable_workflow(env.WORKFLOW_DO)
    handle = await client.run("rt-retain", None, execution_id=eid)
    view = await handle.describe()
    expect(view["status"] == "completed", "rt-retain completes", view=view)
    # Counted from the settle write (the clock moves between the two reads of it in workerd).
    expect(view["delete_at"] >= view["finished_at"] + 1, "delete_at is a second on", view=view)
    polls = await _until_deleted(handle, 15)
    many = await client.run("rt-many", {"steps": 140}, execution_id=eid + "-many")
    result = await many.result(timeout=30)
    expect(result.ok and result.value == 140, "rt-many completes", status=result.status)
    try:
        await client.execution(eid).delete()
    except ExecutionNotFoundError:
        pass
    else:
        raise CheckFailed("delete of a deleted execution did not answer not found")
    await many.delete()
    expect(await _until_deleted(many, 1) == 1, "delete answers once the storage is gone")
    return {"polls": polls, "sentinel": "retention_and_delete:reached"}


async def pause_and_unpause(env, eid):
    """A sleep that comes due while paused ends only after ``unpause``."""
    client = create_durable_workflow(env.WORKFLOW_DO)
    handle = await client.run("rt-nap", {"seconds": 2}, execution_id=eid)
    expect(await handle.status() == "sleeping", "rt-nap sleeps")
    expect(await handle.pause() is True, "pause acknowledged")
    await asyncio.sleep(3)  # the nap comes due while paused
    view = await handle.describe()
    expect(view["status"] == "paused" and view["paused_at"], "still paused", view=view)
    seen = counts(await counters(env, eid), eid)
    expect(seen == {"before": 1}, "nothing ran while paused", counters=seen)
    expect(await handle.unpause() is True, "unpause acknowledged")
    result = await handle.result(timeout=20)
    expect(result.ok and result.value == "rested", "rt-nap finishes after unpause", status=result.status)
    seen = counts(await counters(env, eid), eid)
    expect(seen == {"before": 1, "after": 1}, "each step once", counters=seen)
    return {"sentinel": "pause_and_unpause:reached"}


CHECKS = {
    "three_step_retry": three_step_retry,
    "saga_compensation": saga_compensation,
    "oversize_output": oversize_output,
    "concurrent_starts": concurrent_starts,
    "malformed_requests": malformed_requests,
    "undo_and_state": undo_and_state,
    "retention_and_delete": retention_and_delete,
    "pause_and_unpause": pause_and_unpause,
}
