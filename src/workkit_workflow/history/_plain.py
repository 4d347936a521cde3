"""A page of plain steps projected straight from the values the engine built.

Nearly every page a run delivers holds only steps that start and complete plainly (their
first attempt, nothing rare). Their completions go to ``wf_step_pages``, one row per 100
operations of a phase (``_schema``); a step still running at the page's end, or one whose
completion carries failed attempts, is a ``wf_step_rows`` row as the records would write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..engine import _journal as jn
from ._bundle import Bundle
from ._d1 import Statement, inserts
from ._pages import Pages, page_inserts, page_step
from ._projection import _NOT_PLAIN, _PLAIN_COLUMNS, _PLAIN_CONFLICT


def plain_projection(execution_id: str, bundles: list[Bundle]) -> list[Statement] | None:
    """The statements of a page of plain steps' bundles held in memory, or None when it
    holds anything else (then :func:`projection` of their records says it).

    Nearly every page of a run: each bundle a step's completion and the next one's first
    start, held as the values the engine built (``Capture.capture``), with no execution
    record. Each is a transition a step's row or page entry holds. A page with a bundle of
    pieces (one stored, or held while its values were not at hand) is left to its records.
    D1 then shows what :func:`projection`'s statements show
    (``tests/test_history_transitions.py`` compares them).

    One pass, in the order of the operations: a start waits for its completion, which
    writes the step's page entry; a start left over, or a completion that is not a page's
    (failed attempts, an instant that is no whole millisecond), is a row."""
    starts: dict[str, tuple[int, Mapping[str, Any]]] = {}
    rows: list[tuple[Any, ...]] = []
    pages: Pages = {}
    for bundle in bundles:
        parts = bundle.parts
        if isinstance(parts, list):
            return None
        seq = bundle.seq
        for key in sorted(parts):
            entry = parts[key]
            if not entry.keys().isdisjoint(_NOT_PLAIN):
                return None
            status = entry["status"]
            if status == "running" and entry["attempt"] == 1:
                starts[key] = seq, entry  # a first attempt's start
            elif status != "completed" or entry.get("finished_at") is None:
                return None  # a later attempt's start: an event
            else:
                start = starts.pop(key, None)
                started = None if start is None else start[0]
                if not page_step(pages, key, entry, seq, started):
                    rows.append(plain_row(execution_id, key, entry, seq, started, seq))
            seq += 1
    rows += [plain_row(execution_id, key, entry, seq, seq, None) for key, (seq, entry) in starts.items()]
    return inserts("wf_step_rows", _PLAIN_COLUMNS, _PLAIN_CONFLICT, rows) + page_inserts(execution_id, pages)


def plain_row(
    execution_id: str, key: str, entry: Mapping[str, Any], seq: int, started: int | None, finished: int | None
) -> tuple[Any, ...]:
    """:func:`_projection._step_row` of a plain step's entry (one of :func:`plain_projection`'s: a step's,
    with none of ``_RARE``), without looking for what it cannot hold: 8.7k instructions a row
    rather than 12.4k (counted with callgrind over a run's plain pages), on the path nearly
    every row of a run takes (``tests/test_history_transitions.py`` compares the two)."""
    started_at = entry.get("started_at")
    attempt_started_at = entry.get("attempt_started_at")
    errors = entry.get("errors")
    return (
        execution_id,
        jn.phase_of(key),
        int(key[2:]),
        entry.get("name") or "",
        "step",  # a plain entry is a step's
        entry.get("status") or "running",
        int(entry.get("attempt") or 0),
        started_at,
        started_at if attempt_started_at is None else attempt_started_at,
        entry.get("finished_at"),
        jn.dumps(errors) if errors else "[]",
        seq,
        started,
        finished,
    )
