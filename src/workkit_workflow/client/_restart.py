"""Where ``DurableWorkflows.restart`` cuts a journal: the operation to run again,
named by kind, name and occurrence, as Cloudflare's ``restart({from: {name, count, type}})``."""

from __future__ import annotations

from typing import Any

from ..errors import ExecutionConflictError, InvalidRequestError

KINDS = ("step", "sleep", "wait")


def check_cut(kind: object, occurrence: object) -> None:
    """Refuse a kind or occurrence no journal entry can have."""
    if kind not in KINDS:
        raise InvalidRequestError(
            f"kind must be one of {', '.join(repr(k) for k in KINDS)}, got {kind!r}", field="kind"
        )
    if isinstance(occurrence, bool) or not isinstance(occurrence, int) or occurrence < 1:
        raise InvalidRequestError(
            f"occurrence counts from 1 (the first {kind} of that name), got {occurrence!r}",
            field="occurrence",
        )


def cut_index(entries: list[dict[str, Any]], from_step: str, kind: str, occurrence: int) -> int:
    """The position in the main journal of the ``occurrence``-th ``kind`` named ``from_step``."""
    seen = 0
    for index, entry in enumerate(entries):
        if entry.get("name") == from_step and entry.get("kind") == kind:
            seen += 1
            if seen == occurrence:
                return index
    if seen == 0:
        message = f"the journal has no operation named {from_step!r} of kind {kind}"
    else:
        message = (
            f"the journal has {seen} {kind} operation{'s' if seen != 1 else ''} named {from_step!r}, "
            f"so no occurrence {occurrence} to restart from"
        )
    raise InvalidRequestError(
        message,
        from_step=from_step,
        kind=kind,
        occurrence=occurrence,
    )


def restart_records(
    entries: list[dict[str, Any]], from_step: str, kind: str, occurrence: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The journal entries the new execution keeps (those before the cut) and the
    idempotent results it carries (completed steps from the cut on)."""
    cut = cut_index(entries, from_step, kind, occurrence)
    kept = [
        {k: v for k, v in e.items() if k != "phase"} for e in entries[:cut] if e.get("status") == "completed"
    ]
    if len(kept) != cut:
        raise InvalidRequestError(
            f"every operation before {kind} {from_step!r} must have completed to restart from it"
        )
    # Completed steps from the cut on keep their recorded idempotent results:
    # re-run with the same key, they return them instead of acting twice.
    idempotent = [
        {"idempotency_hash": e["idempotency_hash"], "name": e.get("name"), "output": e.get("output")}
        for e in entries[cut:]
        if e.get("status") == "completed" and e.get("kind") == "step" and e.get("idempotency_hash")
    ]
    return kept, idempotent


def check_restarted(meta: dict[str, Any], cut: dict[str, Any]) -> None:
    """A restart whose new id names an execution that exists: fine if that execution is this
    restart (a repeated request), a conflict otherwise (the source itself, or another
    execution), which would have been handed back as if restarted."""
    made = meta.get("restarted_from") or {}
    if any(made.get(field) != cut[field] for field in ("execution_id", "from_step", "kind", "occurrence")):
        raise ExecutionConflictError(
            f"execution {meta.get('execution_id')!r} already exists and is not this restart of "
            f"{cut['execution_id']!r}: give the restart another new_execution_id",
            execution_id=meta.get("execution_id"),
        )
