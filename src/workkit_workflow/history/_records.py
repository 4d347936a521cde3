"""Stored outbox records read back: the history records a bundle of any version holds
(``_bundle`` says what each version is), with references resolved from the journal."""

from __future__ import annotations

from typing import Any

from ..engine import _journal as jn
from ._bundle import _COPIES_VERSION, BUNDLE_VERSION, RECOVERED_VERSION, UNREAD, Record


def records_of(key: str, text: str, execution_id: str) -> list[Record]:
    """The history records an outbox record of ``execution_id`` holds (a version 3 or 2
    bundle, or a single version 1 record)."""
    try:
        data = jn.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, list) and len(data) % 3 == 2 and data[0] == RECOVERED_VERSION:
        seq, triples = int(data[1]), data[2:]
        return [
            Record(seq + i, float(at), execution_id, key, value, recovered=True)
            for i, (at, key, value) in enumerate(zip(triples[::3], triples[1::3], triples[2::3], strict=True))
        ]
    if isinstance(data, list) and len(data) % 2 == 1 and data[0] == BUNDLE_VERSION:
        seq, at, pairs = int(data[1]), float(data[2]), data[3:]
        # The values are neither expanded nor trimmed: the projection reads the fields
        # it shows, with their defaults. A reference's value is UNREAD until ``resolved``.
        out = []
        for i in range(0, len(pairs), 2):
            k, value = pairs[i], pairs[i + 1]
            if isinstance(value, dict):
                out.append(Record(seq + i // 2, at, execution_id, k, value))
            else:
                attempt = None if value is None else int(value)
                out.append(Record(seq + i // 2, at, execution_id, k, UNREAD, attempt))
        return out
    if not isinstance(data, dict) or data.get("v") not in (jn.VERSION, _COPIES_VERSION):
        # decode_record says precisely what is wrong with it.
        jn.decode_record(key, text)
        raise jn.JournalFormatError(f"outbox record {key!r} has an unknown version", key=key)
    seq, at, execution_id = int(data["seq"]), float(data["at"]), data["execution_id"]
    if data["v"] == jn.VERSION:
        return [_version_1(seq, at, execution_id, data)]
    return [Record(seq + i, at, execution_id, k, value) for i, (k, value) in enumerate(data["records"])]


def _version_1(seq: int, at: float, execution_id: str, data: dict[str, Any]) -> Record:
    if data["kind"] == "execution":
        return Record(seq, at, execution_id, jn.STATE, data["execution"])
    prefix = jn.prefix_of(data["phase"])
    entry = data["entry"]
    return Record(seq, at, execution_id, jn.op_key(prefix, int(entry["op"])), entry)


def resolved(records: list[Record], entries: dict[str, str]) -> list[Record]:
    """``records`` with each reference's value read from ``entries`` (journal key -> text).

    A completed step's reference is its entry. A running one's is its entry while that
    attempt still runs, else what its event shows of it (a later record, newer, has the
    rest). A reference whose entry is gone (the execution was deleted meanwhile) has
    nothing left to show: it is left out."""
    out = []
    for record in records:
        if record.value is UNREAD:
            text = entries.get(record.key)
            if text is None:
                continue
            entry = jn.loads(text)
            attempt = record.attempt
            if attempt is not None and (entry.get("status") != "running" or entry.get("attempt") != attempt):
                kept = {k: entry[k] for k in ("kind", "name", "started_at") if k in entry}
                entry = kept | {"status": "running", "attempt": attempt}
            record = record._replace(value=entry)
        out.append(record)
    return out
