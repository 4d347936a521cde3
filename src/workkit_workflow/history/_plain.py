"""A page of plain steps projected straight from the values the engine built.

Nearly every page a run delivers holds only steps that start and complete plainly (their
first attempt, nothing rare). Their completions go to ``wf_step_pages``, one row per 100
operations of a phase (``_schema``); a step still running at the page's end, or one whose
completion carries failed attempts, is a ``wf_step_rows`` row as the records would write.
"""

from __future__ import annotations

from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from ..engine import _journal as jn
from ._bundle import Bundle
from ._d1 import Statement, inserts
from ._pages import _INSTANTS, Pages, page_inserts, page_step
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
    (failed attempts, an instant that is no whole millisecond), is a row. The usual
    completion (a first attempt's, no errors, both instants' texts known) writes its entry
    here; any other takes :func:`page_step` (17.9k instructions a step rather than 22.2k,
    counted with callgrind over a run's plain pages)."""
    starts: dict[str, tuple[int, Mapping[str, Any]]] = {}
    rows: list[tuple[Any, ...]] = []
    pages: Pages = {}
    instants: Mapping[Any, str] = _INSTANTS
    block = ""
    page: list[str] = []
    for bundle in bundles:
        parts = bundle.parts
        if isinstance(parts, list):
            return None
        seq = bundle.seq
        for key in sorted(parts):
            entry = parts[key]
            if entry["status"] == "running":
                if entry["attempt"] != 1:
                    return None  # a later attempt's start: an event
                starts[key] = seq, entry  # a first attempt's start
                seq += 1
                continue
            if entry["status"] != "completed" or not entry.keys().isdisjoint(_NOT_PLAIN):
                return None
            start = starts.pop(key, None)
            started = None if start is None else start[0]
            begun = instants.get(entry.get("started_at"))
            ended = instants.get(entry.get("finished_at"))
            usual = entry["attempt"] == 1 and "errors" not in entry and "attempt_started_at" not in entry
            if begun is None or ended is None or not usual:
                if not _unusual(pages, rows, execution_id, key, entry, seq, started):
                    return None
            else:  # page_step's entry, spelt out (the transitions tests compare the two)
                if key[:-2] != block:
                    block = key[:-2]
                    page = pages.setdefault(block, [])
                page.append(
                    f'"{key[2:]}":[{encode_basestring(entry.get("name") or "")},1,{begun},null,{ended},{seq},'
                    f"{'null' if started is None else started}]"
                )
            seq += 1
    for key, (seq, entry) in starts.items():
        if not entry.keys().isdisjoint(_NOT_PLAIN):
            return None
        rows.append(plain_row(execution_id, key, entry, seq, seq, None))
    return inserts("wf_step_rows", _PLAIN_COLUMNS, _PLAIN_CONFLICT, rows) + page_inserts(execution_id, pages)


def _unusual(
    pages: Pages,
    rows: list[tuple[Any, ...]],
    execution_id: str,
    key: str,
    entry: Mapping[str, Any],
    seq: int,
    started: int | None,
) -> bool:
    """Put a completion ``plain_projection`` does not write itself on its page
    (``page_step``) or in ``rows``; False if it has no time (an event: no plain page)."""
    if entry.get("finished_at") is None:
        return False
    if not page_step(pages, key, entry, seq, started):
        rows.append(plain_row(execution_id, key, entry, seq, started, seq))
    return True


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
