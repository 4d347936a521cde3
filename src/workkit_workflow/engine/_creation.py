"""What a creation writes: an execution's first records, and what the drive it starts
at once may take from them without reading them back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..definitions._workflow import Workflow
from . import _journal as jn
from ._state import ExecutionState


def begun_by(execution: ExecutionState, records: dict[str, str]) -> tuple[dict[str, str], int | None]:
    """``ExecutionState.begun`` for a creation whose write of ``records`` (just issued)
    begins the first incarnation. The drive it starts at once writes no start of its own
    and decodes neither record again; while no other write follows, it reads nothing back
    either, unless an observer added to that write: with no meta, the object held nothing
    (an execution's records are written with its meta or after it, and erased all at once:
    ``Retention.erase``), so ``records`` is all it holds."""
    whole = not any(observer.captures for observer in execution.observers)
    return records, execution.writes if whole else None


def new_meta(
    definition: Workflow, workflow: str, input: Any, execution_id: str, now: float
) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "workflow": workflow,
        "version": definition.version,
        "input": input,
        "created_at": now,
        "deadline": None if definition.timeout is None else now + definition.timeout,
        "restarted_from": None,
    }


def restored_records(restart: Mapping[str, Any]) -> dict[str, str]:
    """The journal entries and idempotent results a restart carries over."""
    puts: dict[str, str] = {}
    source = restart.get("execution_id")
    for entry in restart.get("entries", []):
        key = jn.op_key(jn.MAIN, int(entry["op"]))
        puts[key] = jn.encode_record(key, {**entry, "restored_from": source}, what="restored entry")
    for entry in restart.get("idempotent", []):
        key = jn.IDEMPOTENT + str(entry["idempotency_hash"])
        record = {
            "name": entry.get("name"),
            "output": entry.get("output"),
            "source": f"{entry.get('name')} in {source}",
        }
        puts[key] = jn.encode_record(key, record, what="recorded idempotent result")
    return puts


def new_state(now: float) -> dict[str, Any]:
    return {
        "status": "pending",
        "phase": "main",
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
        "incarnation": 0,
        "wake_at": None,
        "waiting_for": (),  # not a list: see ``_state.decode_state``
        "error": None,
        "failed_step": None,
        "step_attempt": 0,
        "cancel_requested_at": None,
        "cancel_reason": None,
        "compensation": None,
        "events_received": 0,
    }
