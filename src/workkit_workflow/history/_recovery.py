"""History records that lived only in memory, recovered after a crash.

A commit whose records are all references (a step's completion and the next step's
start: nearly every commit of a run) writes no outbox record. Its bundle waits in the
outbox's memory for the delivery, and the outbox's head says, in the same commit as the
first of them, from which operation of each phase on some records live only there
(``"mem"``). A commit of any other kind (a status change, a failure, a wait) stores every
bundle still in memory with it, since it may overwrite an entry they refer to, and each
delivery moves the mark past what it delivered (with the run's next commit, or with a commit
of its own when memory is left empty).

An object that died before delivering them leaves the mark. So does a write that failed
(``Outbox.aborted``): what memory held may name transitions that never happened, so it is
dropped and read back the same way. Its next instance (or its next drive), before
its drive writes anything (:meth:`Outbox.restore`), reads the journal from that
operation on and stores, in one commit with the head cleared of the mark, what those
entries show of their running and completed transitions as a *recovered* bundle
(``_bundle.RECOVERED_VERSION``). Some of them may have reached D1 before the crash: a
recovered record's event is inserted only if D1 does not hold the same transition yet,
told by phase, operation, status and attempt (a step starts an attempt once and
completes once; a restart is another execution). Its ``wf_steps`` row is written as any
other, guarded by its sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..engine import _journal as jn
from ..engine._ports import Storage
from ._bundle import Bundle, Record, step_piece
from ._d1 import D1Port
from ._projection import step_event

Transition = tuple[str, int, str, int]
"""A step's transition as the events table tells it: phase, operation, status, attempt."""


def lowered(mark: dict[str, int], keys: Iterable[str]) -> dict[str, int]:
    """``mark`` (a new dict if it changes) low enough for the operations of ``keys`` too."""
    for key in keys:
        low = mark.get(key[:2])
        if low is None or low > int(key[2:]):
            mark = {**mark, key[:2]: int(key[2:])}
    return mark


def mark_for(bundles: Iterable[Bundle], base: Mapping[str, int] | None) -> dict[str, int]:
    """The mark ``base`` lowered for every operation the ``bundles`` name."""
    mark = dict(base or {})
    for bundle in bundles:
        mark = lowered(mark, bundle.op_keys())
    return mark


async def read_back(storage: Storage, mark: Mapping[str, int], page: int) -> list[tuple[float, str, str]]:
    """The transitions the journal shows from each phase's operation in ``mark`` on."""
    items: list[tuple[float, str, str]] = []
    for prefix, start in sorted(mark.items()):
        while True:
            found = await storage.list(prefix=prefix, start=jn.op_key(prefix, start), limit=page)
            for key, text in found.items():
                items += derived(key, text)
            if len(found) < page:
                break
            start = jn.op_of(max(found)) + 1
    return items


def derived(key: str, text: str) -> list[tuple[float, str, str]]:
    """What a journal entry shows of the transitions a memory-only record may have held:
    its attempt's start and, once it completed, its completion, as (time, key, value)."""
    entry = jn.decode_record(key, text)
    if entry.get("kind") != "step" or entry.get("status") not in ("running", "completed"):
        return []  # any other transition was stored with its commit
    started = entry.get("attempt_started_at") or 0.0  # decode_record puts back a left-out one
    running = {
        "kind": "step",
        "name": entry.get("name"),
        "status": "running",
        "attempt": int(entry.get("attempt") or 0),
        "started_at": entry.get("started_at"),
    }
    out = [(float(started), key, jn.dumps(running))]
    if entry["status"] == "completed":
        out.append((float(entry.get("finished_at") or started), key, step_piece(key, text).text))
    return out


def transition(record: Record) -> Transition:
    """The transition the event of ``record`` holds (the projection's own event row)."""
    _, _, _, _, phase, op, _, status, attempt, _ = step_event(record)
    return phase, op, status, attempt


async def already_projected(db: D1Port, execution_id: str, records: list[Record]) -> frozenset[int]:
    """The sequences of the recovered records in ``records`` whose transition D1 (an event,
    or a step row's ``started_seq`` or ``finished_seq``), or an earlier record of the same
    page, holds already."""
    recovered = [r for r in records if r.recovered]
    if not recovered:
        return frozenset()
    seen = {transition(r) for r in records if not r.recovered and jn.is_op_key(r.key)}
    rows = await db.query(
        "SELECT phase, op, status, attempt FROM wf_transitions"
        " WHERE execution_id = ? AND kind = 'step' AND op >= ?",
        [execution_id, min(int(r.key[2:]) for r in recovered)],
    )
    seen.update((row["phase"], int(row["op"]), row["status"], int(row["attempt"] or 0)) for row in rows)
    return frozenset(r.seq for r in recovered if transition(r) in seen)
