"""A page of plain steps projected straight from the values the engine built.

Nearly every page a run delivers holds only steps that start and complete plainly (their
first attempt, nothing rare). Their completions go to ``wf_step_pages``, one row per 100
operations of a phase (``_schema``); a step still running at the page's end, or one whose
completion carries failed attempts, is a ``wf_step_rows`` row as the records would write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from json.encoder import encode_basestring
from operator import attrgetter
from typing import Any

from ..engine import _journal as jn
from ._bundle import Bundle, Parts, Piece, Record, plain_pieces
from ._d1 import Statement, inserts
from ._pages import _INSTANTS, Pages, _instant, page_inserts, page_step
from ._projection import (
    _NOT_PLAIN,
    _PLAIN_COLUMNS,
    _PLAIN_CONFLICT,
    _held_by_row,
    execution_events,
    execution_inserts,
)

_USUAL = _NOT_PLAIN | {"errors", "attempt_started_at"}
"""A completion with none of these keys (its first attempt, with nothing rare) is the usual
one, which :func:`plain_projection` writes itself when its instants' texts are known."""

_NOT_DONE: Mapping[str, Any] = {"status": None}
"""What :func:`_project` reads of a commit's two values that are not a completion and the
next step's start, in this order: no usual pair."""

_NO_START: tuple[None, None] = (None, None)
"""What :func:`plain_projection` finds of a completion's start that its page does not hold."""

_SPLIT: list[Statement] = []
"""What :func:`_project` returns for a page with bundles of pieces (:func:`_split` first)."""

_PARTS, _SEQ = attrgetter("parts"), attrgetter("seq")


def tail_projection(
    execution_id: str, commits: Sequence[Mapping[str, Mapping[str, Any]]], seqs: Sequence[int]
) -> list[Statement] | None:
    """:func:`plain_projection` of a page of memory's tail (``Held._tail``): the values of
    each of ``commits``, and the sequence of each one's first record (``seqs``; one more, past
    the page, is not read)."""
    statements = _project(execution_id, commits, seqs, None)
    return None if statements is _SPLIT else statements


def plain_projection(
    execution_id: str, bundles: list[Bundle], executions: list[Record] | None = None
) -> list[Statement] | None:
    """The statements of a page of bundles held in memory (:func:`_project`); a page with
    bundles of pieces (a short execution's history) is split first (:func:`_split`;
    ``executions``: its execution records)."""
    statements = _project(execution_id, map(_PARTS, bundles), map(_SEQ, bundles), executions)
    if statements is not _SPLIT:
        return statements
    split = _split(execution_id, bundles)
    return None if split is None else plain_projection(execution_id, *split)


def _project(
    execution_id: str, commits: Iterable[Parts], seqs: Iterable[int], executions: list[Record] | None
) -> list[Statement] | None:
    """The statements of a page of plain steps' bundles held in memory, or None when it
    holds anything else (then :func:`projection` of their records says it); D1 then shows
    what :func:`projection`'s would (``tests/test_history_transitions.py`` compares them).

    Nearly every page of a run: each commit a step's completion and the next one's start, as
    the values the engine built (``Capture.capture``), a usual pair (first attempts, nothing
    rare, instants whose texts are known) written here, its start kept for the next commit.
    Any other commit goes through :func:`_other`; ``_SPLIT`` if one holds pieces."""
    starts: dict[str, tuple[int, Mapping[str, Any]]] = {}
    rows: list[tuple[Any, ...]] = []
    pages: Pages = {}
    instants: Mapping[Any, str] = _INSTANTS
    block = before = ""  # the block of the page entry written last; the start kept from the bundle before
    page: list[str] = []
    kept: tuple[int, Mapping[str, Any]] = (0, {})  # that start's sequence and entry
    started: int | None
    for parts, seq in zip(commits, seqs, strict=False):  # a tail's ``seqs`` go on one past it
        if type(parts) is dict and len(parts) == 2:
            key, after = parts
            done, start = (parts[key], parts[after]) if key < after else (_NOT_DONE, _NOT_DONE)
            if (
                start["status"] == "running"
                and start["attempt"] == 1
                and done["status"] == "completed"
                and done["attempt"] == 1
                and _USUAL.isdisjoint(done)
                and (begun := instants.get(at := done.get("started_at")) or _instant(at)) is not None
                and (ended := instants.get(at := done.get("finished_at")) or _instant(at)) is not None
            ):  # page_step's entry, spelt out (the transitions tests compare the two)
                if key == before:
                    started = kept[0]
                else:
                    if before:
                        starts[before] = kept
                    started = starts.pop(key, _NO_START)[0]
                if key[:-2] != block:
                    block = key[:-2]
                    page = pages.setdefault(block, [])
                page.append(
                    f'"{key[2:]}":[{encode_basestring(done.get("name") or "")},1,{begun},null,{ended},{seq},'
                    f"{'null' if started is None else started}]"
                )
                before, kept = after, (seq + 1, start)
                continue
        if isinstance(parts, list):
            return _SPLIT
        if before:
            starts[before], before = kept, ""
        if not _other(pages, rows, starts, execution_id, parts, seq):
            return None
    if before:
        starts[before] = kept
    return _statements(execution_id, starts, rows, pages, executions)


def _other(
    pages: Pages,
    rows: list[tuple[Any, ...]],
    starts: dict[str, tuple[int, Mapping[str, Any]]],
    execution_id: str,
    parts: Mapping[str, Mapping[str, Any]],
    seq: int,
) -> bool:
    """A commit of :func:`_project`'s page that is not the usual pair, in the order of its
    operations: a first attempt's start waits for its completion in ``starts``, a
    completion goes on its page or is a row (:func:`_unusual`); False if it holds anything else."""
    for key in sorted(parts):
        entry = parts[key]
        status = entry["status"]
        if status == "running":
            if entry["attempt"] != 1:
                return False  # a later attempt's start: an event
            starts[key] = seq, entry
        elif status != "completed" or not _unusual(
            pages, rows, execution_id, key, entry, seq, starts.pop(key, _NO_START)[0]
        ):
            return False
        seq += 1
    return True


def _statements(
    execution_id: str,
    starts: dict[str, tuple[int, Mapping[str, Any]]],
    rows: list[tuple[Any, ...]],
    pages: Pages,
    executions: list[Record] | None,
) -> list[Statement] | None:
    """:func:`plain_projection`'s statements, once its pass over the page left ``starts`` (each
    a row), ``rows`` and ``pages``; None if a start left over is no plain one."""
    for key, (seq, entry) in starts.items():
        if not entry.keys().isdisjoint(_NOT_PLAIN):
            return None
        rows.append(plain_row(execution_id, key, entry, seq, seq, None))
    steps = inserts("wf_step_rows", _PLAIN_COLUMNS, _PLAIN_CONFLICT, rows) + page_inserts(execution_id, pages)
    return execution_inserts(executions) + steps + execution_events(executions) if executions else steps


def _split(execution_id: str, bundles: list[Bundle]) -> tuple[list[Bundle], list[Record]] | None:
    """A page with bundles of pieces as :func:`plain_projection` reads one: the step pieces
    of each as bundles of their values (the engine's, or decoded from their texts), a new
    one wherever a key does not sort after the one before it (a step's start and its
    completion, folded into one bundle) or the execution's record stood between, and the
    execution's records apart; None if a piece is a reference held without its value or
    text (its records read it back), or the record of anything else."""
    split: list[Bundle] = []
    executions: list[Record] = []
    for bundle in bundles:
        parts = bundle.parts
        if not isinstance(parts, list):
            split.append(bundle)
            continue
        values: dict[str, Mapping[str, Any]] = {}
        first, last = 0, ""
        for i, piece in enumerate(parts):
            key = piece.key
            if values and (key <= last or key == jn.STATE):
                split.append(Bundle.held(bundle.key, bundle.seq + first, bundle.at, execution_id, values))
                values = {}
            if key == jn.STATE:
                executions.append(
                    Record(bundle.seq + i, bundle.when, execution_id, key, jn.loads(piece.text))
                )
                continue
            entry = piece.entry
            if entry is None:
                if not piece.text or not jn.is_op_key(key):
                    return None
                entry = jn.loads(piece.text)
            if (entry.get("kind") or "step") != "step":
                return None
            if not values:
                first = i
            values[key], last = entry, key
        if values:
            split.append(Bundle.held(bundle.key, bundle.seq + first, bundle.at, execution_id, values))
    return split, executions


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
    (``page_step``) or in ``rows``; False if it is no plain one (something rare) or has no
    time (an event: no plain page)."""
    if entry.get("finished_at") is None or not _NOT_PLAIN.isdisjoint(entry):
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


def foldable(memory: Mapping[str, Bundle], seq: int) -> list[Piece] | None:
    """The pieces of the bundles memory holds (``Held._memory``, for the end's fold of
    ``Capture._store``), if each holds values whose transitions their steps' rows hold, and
    their sequences run on to ``seq``; else None."""
    out: list[Piece] = []
    expected: int | None = None
    for bundle in memory.values():
        if isinstance(bundle.parts, list) or (expected is not None and bundle.seq != expected):
            return None
        pieces = plain_pieces(bundle.parts)
        if any(_held_by_row(piece.entry or {}) is None for piece in pieces):
            return None
        out += pieces
        expected = bundle.seq + len(pieces)
    return out if expected == seq else None
