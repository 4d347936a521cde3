"""Operator control on the Cloudflare Workflows backend: what ``pause``, ``delete`` and
``restart`` from a step send to (or refuse before) the engine."""

from __future__ import annotations

from typing import Any

from ..client._restart import check_cut
from ..errors import ExecutionConflictError, InvalidRequestError
from ._mapping import TERMINAL_ENGINE, map_status

ENGINE_STEP_TYPE = {"step": "do", "sleep": "sleep", "wait": "waitForEvent"}
"""Our operation kinds as the engine's step types, for ``restart({from: {type}})``."""


def refuse_finished(execution_id: str, engine_status: str) -> None:
    """A finished instance cannot be paused (as on the Durable Object backend)."""
    if engine_status in TERMINAL_ENGINE:
        status = map_status(engine_status)
        raise ExecutionConflictError(
            f"the execution is {status}; a finished execution cannot be paused",
            execution_id=execution_id,
            status=status,
        )


def no_delete(execution_id: str) -> InvalidRequestError:
    return InvalidRequestError(
        "Cloudflare Workflows has no delete of one instance: the engine keeps instances for "
        "the account's retention period and removes them itself",
        execution_id=execution_id,
    )


def restart_from(from_step: str, kind: str, occurrence: int) -> dict[str, Any]:
    """The engine's restart options: ``{from: {name, count, type}}``."""
    check_cut(kind, occurrence)
    return {"from": {"name": from_step, "count": occurrence, "type": ENGINE_STEP_TYPE[kind]}}
