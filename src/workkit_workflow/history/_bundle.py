"""Outbox bundles: a commit's history records in one outbox record, copied without decoding.

Version 2 of the outbox record holds every history record of one commit::

    {"v":2, "seq":7, "at":1700000000.5, "execution_id":"...",
     "records":[["j:00000003", {...entry...}], ["state", {...execution row...}]]}

The i-th pair has sequence ``seq + i``. A step's entry is the journal's own text, embedded
as it was written: no decoding and no re-encoding on a projected step's hot path (that
cost about 27 us per commit, more than the rest of a step). Delivery drops what the
projection never shows (the output, the idempotency key...). An entry longer than
:data:`INLINE_MAX` is decoded and copied without those fields instead, so a large output
is not written twice.

Version 1 (one record per journal key, ``{"v":1, "seq":..., "kind":"step", "entry":...}``)
is still read: an older version of the library may have left some in storage.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..engine import _journal as jn

INLINE_MAX = 1024
"""Characters of journal text a bundle embeds as is; a longer entry is copied without its output."""

DROPPED = ("output", "idempotency_key", "idempotency_hash", "v", "undo")
"""Entry fields the history never shows."""

BUNDLE_VERSION = 2


class Piece(NamedTuple):
    """One record of a bundle: the journal key and the JSON text of its value."""

    key: str
    text: str


def step_piece(key: str, text: str) -> Piece:
    """A journal entry's record: its text as is when short, else decoded without its output."""
    if len(text) > INLINE_MAX:
        entry = jn.decode_record(key, text)
        for name in DROPPED:
            entry.pop(name, None)
        text = jn.dumps(entry)
    return Piece(key, text)


def execution_piece(row: dict[str, Any]) -> Piece:
    """An execution's record (its row, from the ``state`` and ``meta`` of the commit)."""
    return Piece(jn.STATE, jn.dumps(row))


def _smaller(piece: Piece) -> str:
    """The value without its bulk, for a record too large to store: an execution
    without its input, a step without its failed attempts."""
    bulk = "input" if piece.key == jn.STATE else "errors"
    value = {k: v for k, v in jn.loads(piece.text).items() if k != bulk}
    return jn.dumps({**value, "truncated": True})


def bundle_key(seq: int) -> str:
    return jn.seq_key(jn.OUTBOX, seq)


def bundles(seq: int, at: str, execution_id: str, pieces: list[Piece]) -> dict[str, str]:
    """The outbox records for ``pieces`` (sequences from ``seq`` on): one bundle if it fits in
    a stored value, else one per piece, each shortened if it does not fit alone."""
    whole = _bundle(seq, at, execution_id, pieces)
    key = bundle_key(seq)
    if _fits(key, whole):
        return {key: whole}
    out = {}
    for i, piece in enumerate(pieces):
        key = bundle_key(seq + i)
        one = _bundle(seq + i, at, execution_id, [piece])
        if not _fits(key, one):
            one = _bundle(seq + i, at, execution_id, [(piece.key, _smaller(piece))])
        jn.check_size(key, one, what="history record")
        out[key] = one
    return out


def _fits(key: str, text: str) -> bool:
    # A character is at most 4 bytes of UTF-8: most bundles need no encoding to tell.
    return (
        len(key) + 4 * len(text) <= jn.MAX_VALUE_BYTES or len(key) + len(text.encode()) <= jn.MAX_VALUE_BYTES
    )


def _bundle(seq: int, at: str, execution_id: str, pairs: list[Piece] | list[tuple[str, str]]) -> str:
    records = ",".join([f'["{key}",{text}]' for key, text in pairs])
    return (
        f'{{"v":{BUNDLE_VERSION},"seq":{seq},"at":{at},"execution_id":{execution_id},"records":[{records}]}}'
    )


class Record(NamedTuple):
    """One history record: the journal key it copies (``state`` for the execution) and its value."""

    seq: int
    at: float
    execution_id: str
    key: str
    value: dict[str, Any]


def records_of(key: str, text: str) -> list[Record]:
    """The history records an outbox record holds (a bundle, or a single version 1 record)."""
    try:
        data = jn.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or data.get("v") not in (jn.VERSION, BUNDLE_VERSION):
        # decode_record says precisely what is wrong with it.
        jn.decode_record(key, text)
        raise jn.JournalFormatError(f"outbox record {key!r} has an unknown version", key=key)
    seq, at, execution_id = int(data["seq"]), float(data["at"]), data["execution_id"]
    if data["v"] == jn.VERSION:
        return [_version_1(seq, at, execution_id, data)]
    # The values are neither expanded nor trimmed: the projection reads the fields it
    # shows, with their defaults.
    return [Record(seq + i, at, execution_id, k, value) for i, (k, value) in enumerate(data["records"])]


def _version_1(seq: int, at: float, execution_id: str, data: dict[str, Any]) -> Record:
    if data["kind"] == "execution":
        return Record(seq, at, execution_id, jn.STATE, data["execution"])
    prefix = jn.MAIN if data["phase"] == "main" else jn.COMPENSATION
    entry = data["entry"]
    return Record(seq, at, execution_id, jn.op_key(prefix, int(entry["op"])), entry)
