"""Outbox bundles: a commit's history records in one outbox record, a few dozen bytes.

Version 3, written now, is a JSON array::

    [3, seq, at, "j:00000003", null, "j:00000004", 1, "state", {...execution row...}]

a key and a value per record, the i-th record with sequence ``seq + i``. Most values are
*references* to the journal entry committed beside the record: ``null`` for a completed
step (the engine never rewrites its entry, so the journal keeps it until the record is
delivered), the attempt's number for a running one (its event holds nothing else; its
name is the key's for good). Any other entry is embedded as the journal's own text, not
decoded (decoding and re-encoding cost about 27 us per commit); one longer than
:data:`INLINE_MAX` is decoded and copied without what the history never shows (its
output...). The execution's id is the object's own, known to whoever delivers it.

Why references: the outbox record is a row of its own in the commit, and a copy of the
entries made that commit write about 2.7 more pages than the journal alone (WAL frames,
measured on the bench's steps: 4.3 pages per step against 1.6); with references it is
1.3 more. The outbox keeps each commit's records in memory until they are delivered
(:class:`Bundle`), so a reference is read back from the journal only when they were lost
(a restart) or deliveries fall far behind.

A commit of references only is not stored at all while the outbox holds it in memory
(``_outbox``); after a crash, its transitions come back from the journal as a version 4
bundle (:data:`RECOVERED_VERSION`, ``_recovery``).

Older versions are still read: an earlier release may have left some in storage.
Version 2 (``{"v":2, "seq":7, "at":..., "execution_id":"...", "records":[[key, entry],
...]}``) embeds every entry; version 1 is one record per journal key (``{"v":1,
"seq":..., "kind":"step", "entry":...}``).
"""

from __future__ import annotations

import json.decoder
from collections.abc import Container, Iterable, Mapping
from typing import Any, NamedTuple

from ..definitions._versions import version_of
from ..engine import _journal as jn

INLINE_MAX = 1024
"""Characters of journal text a bundle embeds as is; a longer entry is copied without its output."""

DROPPED = ("output", "idempotency_key", "idempotency_hash", "v", "undo")
"""Entry fields the history never shows."""

BUNDLE_VERSION = 3
"""The outbox record written: ``[3, seq, at, key, value...]``, with references."""

_COPIES_VERSION = 2
"""The bundle an earlier release wrote, every entry copied (still read)."""

RECOVERED_VERSION = 4
"""A *recovered* bundle: ``[4, seq, at, key, value, at, key, value...]``, the transitions a
crash may have left undelivered, read back from the journal (``_recovery``). Each record has
its own time; its event is inserted only if D1 does not hold that transition yet."""

_SCANSTRING: Any = getattr(json.decoder, "scanstring")  # noqa: B009  (not in typeshed)
_new = tuple.__new__
"""Builds a named tuple from all its fields, in C: a named tuple's own ``__new__`` is a
Python function, twice the cost, and a step's records make several on the hot path."""
_STEP_HEAD = f'{{"v":{jn.OP_VERSION},"kind":"step","name":"'
_COMPLETED = ',"status":"completed"'
_RUNNING = ',"status":"running","attempt":'


class Piece(NamedTuple):
    """One record of a bundle: the journal key and the JSON text of its value.

    ``ref``: what is stored instead, when the record is a reference (``null`` for a
    completed step, the attempt's number for a running one); ``text`` is then what
    delivery uses while the outbox still holds the bundle in memory."""

    key: str
    text: str
    ref: str | None = None
    name: str | None = None
    """A reference's step name (what its event shows besides its status and attempt)."""
    entry: Mapping[str, Any] | None = None
    """A reference's value as the engine built it (``plain_pieces``), if it said: what a
    delivery from memory reads instead of decoding ``text`` (then empty)."""


def step_piece(key: str, text: str) -> Piece:
    """A journal entry's record: a reference for a step that runs or completed, its text
    as is when short, else decoded without its output."""
    ref = name = None
    if text.startswith(_STEP_HEAD):
        ref, name = _reference(text)
    if len(text) > INLINE_MAX:
        # As the text says: the fields it leaves out at their defaults stay out, as in a
        # shorter one's (a value the projection reads with its defaults).
        entry = jn.loads(text)
        for dropped in DROPPED:
            entry.pop(dropped, None)
        text = jn.dumps(entry)
    return _new(Piece, (key, text, ref, name, None))


def plain_pieces(entries: Mapping[str, Mapping[str, Any]], *, values: bool = True) -> list[Piece]:
    """The records of a commit of a step's transitions whose values the engine handed over
    as it built them (``entries``, ``JournalObserver.capture``: a step's entries, running or
    completed), in key order: each a reference, told from its value, with no text (a
    delivery from memory reads the value itself).

    Nearly every commit of a run is one (a step's completion and the next one's start);
    the outbox builds them only when it needs them (``Bundle.pieces``); without ``values``,
    to be read back from the journal."""
    pieces = []
    for key in sorted(entries):
        entry = entries[key]
        ref = "null" if entry["status"] == "completed" else str(entry["attempt"])
        pieces.append(_new(Piece, (key, "", ref, entry["name"], entry if values else None)))
    return pieces


def _reference(text: str) -> tuple[str | None, str | None]:
    """The reference a step's entry is stored as, told without decoding it (None to store
    it), and the step's name.

    A completed step's entry is never rewritten: the journal keeps it. A running one's
    event holds nothing but its name (the key's, for good) and its attempt's number. The
    engine writes a step's ``status`` right after its ``name``, and ``attempt`` after
    that; the name is a JSON string, scanned to its closing quote, so what follows it
    is the entry's own fields. ``text`` starts with ``_STEP_HEAD``."""
    try:
        name, end = _SCANSTRING(text, len(_STEP_HEAD))
    except ValueError:
        return None, None
    if text.startswith(_COMPLETED, end):
        return "null", name
    if text.startswith(_RUNNING, end):
        start = end + len(_RUNNING)
        stop = text.find(",", start)
        attempt = text[start:stop] if stop > 0 else text[start:-1]  # the last field: up to "}"
        if attempt.isdigit() and attempt.isascii():
            return attempt, name
    return None, None


_EXECUTION_FIELDS = (
    "status",
    "phase",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "wake_at",
    "waiting_for",
    "waiting_for_count",
    "error",
    "failed_step",
    "step_attempt",
    "compensation",
    "cancel_reason",
)


def state_summary(state: Mapping[str, Any]) -> list[Any]:
    """What makes a state change worth a history event (not ``updated_at`` alone)."""
    compensation = state.get("compensation") or {}
    error = state.get("error") or {}
    return [
        state.get("status"),
        state.get("phase"),
        compensation.get("status"),
        sorted(state.get("waiting_for") or []),
        state.get("wake_at"),
        error.get("code"),
        state.get("cancel_requested_at"),
    ]


def execution_row(state: Mapping[str, Any], meta: Mapping[str, Any] | None, workflow: str) -> dict[str, Any]:
    """An execution's history row, from a commit's ``state`` and ``meta`` (if it writes one)."""
    row: dict[str, Any] = {f: state.get(f) for f in _EXECUTION_FIELDS}
    row["workflow"] = meta["workflow"] if meta else workflow
    if state.get("paused"):  # in the event's detail only: why, when it says (the page)
        row["paused"] = state["paused"]
    if meta is not None:
        row["input"] = meta.get("input")
        row["restarted_from"] = meta.get("restarted_from")
        row["version"] = version_of(meta)  # versions: kept in the event's detail
        if meta.get("parent"):  # in the event's detail only: the page links a child to its parent
            row["parent"] = meta["parent"]
    return row


def execution_piece(row: dict[str, Any]) -> Piece:
    """An execution's record (its row, from the ``state`` and ``meta`` of the commit)."""
    return Piece(jn.STATE, jn.dumps(row))


def _smaller(piece: Piece) -> str:
    """The value without its bulk, for a record too large to store: an execution
    without its input, a step without its failed attempts."""
    bulk = "input" if piece.key == jn.STATE else "errors"
    value = {k: v for k, v in jn.loads(piece.text).items() if k != bulk}
    return jn.dumps({**value, "truncated": True})


Parts = list[Piece] | Mapping[str, Mapping[str, Any]]
"""A bundle's records: their pieces, or the values the engine handed over, by journal key."""


def bundle_key(seq: int) -> str:
    return jn.seq_key(jn.OUTBOX, seq)


class Bundle(NamedTuple):
    """An outbox record as stored (``key``, ``text``) and the records it holds, kept in
    memory until delivered so that its references need no read."""

    key: str
    text: str
    seq: int
    at: float | None
    """The commit's time; None for one of a step's transitions held as their values
    (``Capture.capture``): theirs then (``when``), read only if the bundle is stored or
    one of its transitions is an event."""
    execution_id: str
    parts: Parts
    """Its records: their pieces, or, for a commit of a step's transitions that memory
    holds (``Capture``), the values the engine built, by journal key (``plain_pieces``)."""

    @property
    def when(self) -> float:
        """The commit's time: ``at``, or the newest instant its transitions' values hold
        (a running attempt's start, a completion's end: the engine's clock as it wrote)."""
        if self.at is not None or isinstance(self.parts, list):
            return self.at or 0.0
        instants = [
            entry.get("finished_at") or entry.get("attempt_started_at") or entry.get("started_at")
            for entry in self.parts.values()
        ]
        return max([float(at) for at in instants if isinstance(at, (int, float))], default=0.0)

    @classmethod
    def held(cls, key: str, seq: int, at: float | None, execution_id: str, parts: Parts) -> Bundle:
        """A bundle kept in memory only (no stored text)."""
        return _new(cls, (key, "", seq, at, execution_id, parts))

    @property
    def pieces(self) -> list[Piece]:
        parts = self.parts
        return parts if isinstance(parts, list) else plain_pieces(parts)

    def stored(self) -> list[Bundle]:
        """:func:`bundles` of a bundle held in memory only; one held as values (``Capture.
        capture``) stays so, for its delivery to project them (``plain_projection``)."""
        made = bundles(self.seq, self.when, self.execution_id, self.pieces)
        if len(made) > 1 or isinstance(self.parts, list):
            return made
        return [made[0]._replace(parts=self.parts)]

    def op_keys(self) -> Iterable[str]:
        """The journal keys of the operations it records (not ``state``'s)."""
        parts = self.parts
        keys = parts if not isinstance(parts, list) else [piece.key for piece in parts]
        return [key for key in keys if jn.is_op_key(key)]

    def records(self, superseded: Container[str] = ()) -> list[Record]:
        """Its records; a running step's whose key is in ``superseded`` (a newer record of
        the same page has that step's row) holds only what its event shows, undecoded."""
        seq, at, execution_id = self.seq, self.when, self.execution_id
        out = []
        for i, (key, text, ref, name, entry) in enumerate(self.pieces):
            attempt = None
            if name is not None and ref != "null" and key in superseded:
                value: dict[str, Any] = {"name": name, "status": "running", "attempt": int(ref or 0)}
            elif entry is not None:
                value = dict(entry)
            elif not text:  # a reference held without its value: read back (``resolved``)
                value, attempt = UNREAD, None if ref == "null" else int(ref or 0)
            else:
                value = jn.loads(text)
            out.append(_new(Record, (seq + i, at, execution_id, key, value, attempt, False)))
        return out


def bundles(seq: int, at: float, execution_id: str, pieces: list[Piece]) -> list[Bundle]:
    """The outbox records for ``pieces`` (sequences from ``seq`` on): one bundle if it fits in
    a stored value, else one per piece, each shortened if it does not fit alone."""
    at_text = jn.number_text(at)
    whole = _bundle(seq, at_text, pieces)
    key = bundle_key(seq)
    if _fits(key, whole):
        return [Bundle(key, whole, seq, at, execution_id, pieces)]
    out = []
    for i, piece in enumerate(pieces):
        key = bundle_key(seq + i)
        one = _bundle(seq + i, at_text, [piece])
        if not _fits(key, one):
            piece = Piece(piece.key, _smaller(piece))
            one = _bundle(seq + i, at_text, [piece])
        jn.check_size(key, one, what="history record")
        out.append(Bundle(key, one, seq + i, at, execution_id, [piece]))
    return out


def recovered_bundles(seq: int, items: list[tuple[float, str, str]]) -> dict[str, str]:
    """The outbox records holding recovered transitions ``items`` (time, journal key, JSON
    text of the value), with sequences from ``seq`` on: one if it fits, else one each."""
    parts = [f'{jn.number_text(at)},"{key}",{text}' for at, key, text in items]
    whole = f"[{RECOVERED_VERSION},{seq}," + ",".join(parts) + "]"
    if _fits(bundle_key(seq), whole):
        return {bundle_key(seq): whole}
    out = {}
    for i, part in enumerate(parts):
        one = f"[{RECOVERED_VERSION},{seq + i},{part}]"
        jn.check_size(bundle_key(seq + i), one, what="history record")
        out[bundle_key(seq + i)] = one
    return out


def _fits(key: str, text: str) -> bool:
    # A character is at most 4 bytes of UTF-8: most bundles need no encoding to tell.
    return (
        len(key) + 4 * len(text) <= jn.MAX_VALUE_BYTES or len(key) + len(text.encode()) <= jn.MAX_VALUE_BYTES
    )


def _bundle(seq: int, at: str, pieces: list[Piece]) -> str:
    parts = [f"[{BUNDLE_VERSION},{seq},{at}"]
    for key, text, ref, _, _ in pieces:
        parts.append(f'"{key}",{text if ref is None else ref}')
    return ",".join(parts) + "]"


class Record(NamedTuple):
    """One history record: the journal key it copies (``state`` for the execution) and its value."""

    seq: int
    at: float
    execution_id: str
    key: str
    value: dict[str, Any]
    """The entry or execution row; :data:`UNREAD` for a reference not read yet (``resolved``)."""
    attempt: int | None = None
    """A reference to a running step's entry: its attempt's number."""
    recovered: bool = False
    """Read back from the journal after a crash: its event may be in D1 already."""


UNREAD: dict[str, Any] = {}
"""A reference's value until the journal's entry is read (compared by identity)."""
