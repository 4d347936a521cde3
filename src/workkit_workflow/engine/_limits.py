"""Per-key concurrency limits, on the execution's side (``definitions._limit``).

An execution of a workflow with a ``Limit`` is created ``queued``, with its key
and the name of its key's coordinator (``_limit_coordinator``) in its meta.
Before its first incarnation, the drive asks the coordinator for a slot:

* granted: the execution goes ``pending`` and runs as any other;
* not granted: it parks, still ``queued`` (``describe()`` shows its place in
  the queue), with an alarm to ask again in ``QUEUED_RECHECK`` seconds; the
  coordinator wakes it (``POST /wake``) as soon as a slot is its own.

When it settles (completed, failed or cancelled, after its compensation), the
write that settles it also mails ``release`` to the coordinator (a settle hook
of the state): the slot is given back durably, exactly when it stops running.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..definitions._ids import LIMIT_PREFIX
from ..definitions._workflow import Workflow
from ..errors import InvalidRequestError
from ._mail import Mail
from ._runner import Runner
from ._state import ExecutionState

log = logging.getLogger("workkit_workflow")

QUEUED_RECHECK = 60.0
"""Seconds a queued execution waits before asking its coordinator again, should
the coordinator's wake-up be lost."""


def coordinator_name(workflow: str, key: str) -> str:
    """The object of ``key``'s coordinator: ``limit:<workflow>:<key>``, the workflow's name
    escaped (``%`` as ``%25``, then ``:`` as ``%3A``) so that it holds no ``:`` and two
    (workflow, key) pairs never share a coordinator (``p10``/``x:y`` and ``p10:x``/``y``)."""
    # A name without '%' or ':' is unchanged, so coordinators deployed before the escape
    # keep their objects; an execution records its coordinator's name in its meta, so one
    # already queued keeps asking the object it recorded.
    escaped = workflow.replace("%", "%25").replace(":", "%3A")
    return f"{LIMIT_PREFIX}{escaped}:{key}"


def limit_meta(execution: ExecutionState, definition: Workflow, input: Any) -> dict[str, Any] | None:
    """What a new execution records about its limit (``None``: no limit)."""
    limit = definition.concurrency
    if limit is None:
        return None
    if execution.host.peers is None:
        # It could never reach its coordinator: refuse now rather than queue for ever.
        raise InvalidRequestError(
            f"workflow {definition.name!r} has a concurrency limit, which needs the object's own "
            "namespace binding (WorkflowExecutionDO.namespace_binding) to reach its coordinator"
        )
    key = limit.key_of(input)
    return {"key": key, "max": limit.max, "coordinator": coordinator_name(definition.name, key)}


def needs_slot(execution: ExecutionState) -> bool:
    """Whether the drive must get a slot before the execution may run: it has a limit,
    holds no slot yet (``holds_slot``, recorded with the grant, so another feature
    changing the status meanwhile cannot let it run without one) and is not cancelled."""
    meta, state = execution.meta or {}, execution.state or {}
    return (
        isinstance(meta.get("concurrency"), dict)
        and not state.get("holds_slot")
        and state.get("phase") == "main"
        and not execution.cancel_requested
    )


async def wait_for_slot(execution: ExecutionState, runner: Runner) -> bool:
    """In the drive, for an execution that :func:`needs_slot`: True once it may run (it
    holds a slot, or it was cancelled meanwhile and must end), False when it parked."""
    assert execution.meta is not None
    limit = execution.meta["concurrency"]
    answer = await _acquire(execution, limit)
    if execution.state is None or execution.cancel_requested:
        return True  # cancelled while asking: the main phase ends it, the release follows
    now = execution.now()
    if answer is not None and answer.get("granted"):
        changes: dict[str, Any] = {"holds_slot": True, "queue": None}
        if execution.state["status"] == "queued":
            changes["status"] = "pending"
        await execution.write_state(changes)
        return True
    position = answer.get("position") if answer is not None else None
    if answer is None:
        log.warning("workkit_workflow: %s could not reach %s", execution.execution_id, limit["coordinator"])
    queue = {"key": limit["key"], "position": position, "coordinator": limit["coordinator"]}
    wake_at = now + QUEUED_RECHECK
    await execution.write_state(
        {"status": "queued", "queue": queue, "wake_at": wake_at}, alarm=runner.park_alarm(wake_at, now)
    )
    return False


async def _acquire(execution: ExecutionState, limit: Mapping[str, Any]) -> dict[str, Any] | None:
    peers = execution.host.peers
    if peers is None:
        return None
    body = {"op": "acquire", "execution_id": execution.execution_id, "max": limit["max"]}
    try:
        answer = await peers.request(limit["coordinator"], "POST", "/limit", body)
    except Exception:
        return None  # asked again at the recheck alarm
    limit_view = answer.body.get("limit") if answer.ok and isinstance(answer.body, dict) else None
    return limit_view if isinstance(limit_view, dict) else None


def release_mail(
    execution: ExecutionState, state: Mapping[str, Any], puts: Mapping[str, str]
) -> dict[str, str]:
    """The settle hook: give the slot back (also from the queue, if it never ran)."""
    limit = (execution.meta or {}).get("concurrency")
    if not isinstance(limit, dict) or not isinstance(execution.mail, Mail):
        return {}
    body = {"op": "release", "execution_id": execution.execution_id}
    return execution.mail.message(
        limit["coordinator"], "POST", "/limit", body, id=f"{execution.execution_id}:release"
    )


async def wake(execution: ExecutionState) -> bool:
    """``POST /wake`` from the coordinator: a queued execution asks again now."""
    await execution.ensure_loaded()
    if execution.state is None or execution.state.get("status") != "queued":
        return False
    await execution.storage.set_alarm(execution.now())
    return True
