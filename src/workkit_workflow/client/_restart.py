"""Where ``DurableWorkflows.restart`` cuts a journal: the operation to run again,
named by kind, name and occurrence, as Cloudflare's ``restart({from: {name, count, type}})``."""

from __future__ import annotations

from typing import Any

from ..engine._undo import PREFIX, undo_order
from ..errors import ExecutionConflictError, InvalidRequestError

KINDS = ("step", "sleep", "wait")

UNDONE = ("completed", "in_doubt", "running")
"""Statuses of an undo in the source's compensation journal that undid its step, or may
have: such a step is not carried over. An undo that failed for good left its step's
effect in place: the step is carried over, and a restart that fails undoes it again."""


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
    journal: list[dict[str, Any]], from_step: str, kind: str, occurrence: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """From the source's journal (both phases, with the undos' keys): the entries the new
    execution keeps (those before the cut) and the idempotent results it carries
    (completed steps from the cut on).

    A step the source's compensation undid is neither: its effect is gone, so carried
    over it would be missing from the restarted execution, and undone a second time if
    that fails too. It runs again, so the restart must cut at it or before it."""
    entries = [{k: v for k, v in e.items() if k != "phase"} for e in journal if e.get("phase") == "main"]
    undone = undone_ops(journal)
    cut = cut_index(entries, from_step, kind, occurrence)
    kept = [e for e in entries[:cut] if e.get("status") == "completed"]
    if len(kept) != cut:
        raise InvalidRequestError(
            f"every operation before {kind} {from_step!r} must have completed to restart from it"
        )
    for index, entry in enumerate(kept):
        if entry.get("op") in undone:
            raise _undone_before_cut(entries[: index + 1], from_step, kind)
    # Completed steps from the cut on keep their recorded idempotent results:
    # re-run with the same key, they return them instead of acting twice.
    idempotent = [
        {"idempotency_hash": e["idempotency_hash"], "name": e.get("name"), "output": e.get("output")}
        for e in entries[cut:]
        if e.get("status") == "completed"
        and e.get("kind") == "step"
        and e.get("idempotency_hash")
        and e.get("op") not in undone
    ]
    return kept, idempotent


def undone_ops(journal: list[dict[str, Any]]) -> set[int]:
    """The ops of the main-phase steps the source's compensation undid (see ``UNDONE``)."""
    main = {int(e["op"]): e for e in journal if e.get("phase") == "main"}
    comp = {int(e["op"]): e for e in journal if e.get("phase") == "compensation"}
    undone = set()
    # The undos take the first compensation positions, in undo_order (engine._undo.outcomes).
    for position, (op, entry) in enumerate(undo_order(main)):
        ran = comp.get(position) or {}
        if ran.get("name") == PREFIX + str(entry.get("name")) and ran.get("status") in UNDONE:
            undone.add(op)
    return undone


def _undone_before_cut(entries: list[dict[str, Any]], from_step: str, kind: str) -> InvalidRequestError:
    """The refusal of a cut after a step the source undid, ``entries[-1]``: where to cut instead."""
    name = entries[-1].get("name")
    occurrence = sum(1 for e in entries if e.get("name") == name and e.get("kind") == "step")
    which = "" if occurrence == 1 else f" (occurrence {occurrence})"
    return InvalidRequestError(
        f"step {name!r} was undone by the source's compensation, so a restart from {kind} "
        f"{from_step!r} cannot carry it over as completed: restart from step {name!r}{which}, "
        "or an earlier operation, to run it again",
        undone={"from_step": name, "kind": "step", "occurrence": occurrence},
    )


def check_compensation_ended(view: dict[str, Any]) -> None:
    """Refuse to restart an execution while its compensation runs (or is about to): which
    of its steps end up undone, and so which a restart may carry over, is not known yet."""
    compensation = view.get("compensation") or {}
    if compensation.get("status") in ("pending", "running"):
        raise ExecutionConflictError(
            f"execution {view.get('execution_id')!r} is being compensated: restart it once its "
            "compensation has ended (result() waits for it)",
            execution_id=view.get("execution_id"),
            status=view.get("status"),
        )


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
