"""An execution's journal as a file: what ``ExecutionHandle.export()`` and
``workkit-workflow export`` write, and what the replay check reads.

The export is plain JSON, versioned by ``format`` and ``format_version``::

    {"format": "workkit-workflow-export", "format_version": 1,
     "execution_id": ..., "meta": {workflow, version, input, created_at, ...},
     "state": {status, phase, ...}, "entries": [{phase, op, kind, name, status, output, ...}]}

The reader also takes the storage snapshot of the golden journals in
``tests/golden`` (``{"records": {"meta": ..., "state": ..., "j:00000000": ...}}``),
so a journal copied straight out of storage can be checked as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..definitions._versions import version_of
from ..errors import InvalidRequestError
from . import _journal as jn

EXPORT_FORMAT: Final = "workkit-workflow-export"
EXPORT_VERSION: Final = 1

_HIDDEN: Final = ("v", "idempotency_key")
"""Left out of exported entries: the record version, and the key (a secret to
some APIs; its hash stays)."""

_DERIVED_META: Final = (
    "v",
    "status",
    "started_at",
    "finished_at",
    "attempts",
    "steps",
    "incarnations",
    "recoveries",
)
"""What the ``/meta`` route adds to the stored meta (or the record version): not exported,
so an export made by the client and one read from a runtime file are the same."""

STATE_FIELDS: Final = (
    "status",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "wake_at",
    "waiting_for",
    "error",
    "failed_step",
    "step_attempt",
    "compensation",
    "cancel_reason",
    "blocked",
)
"""The state an export carries, for people reading it (the check needs none):
fields both the stored state and the status view have."""


@dataclass(frozen=True)
class StoredJournal:
    """One execution's journal as the replay check needs it."""

    execution_id: str
    meta: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    main: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The main phase's entries by operation position."""
    compensation: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def workflow(self) -> str:
        return str(self.meta.get("workflow", ""))

    @property
    def version(self) -> str:
        return version_of(self.meta)


def make_export(
    meta: Mapping[str, Any], state: Mapping[str, Any], entries: list[dict[str, Any]]
) -> dict[str, Any]:
    """The export document of one execution (``entries`` carry ``phase`` and ``op``)."""
    clean_meta = {k: v for k, v in meta.items() if k not in _DERIVED_META}
    clean_meta["version"] = version_of(meta)
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "execution_id": clean_meta.get("execution_id"),
        "meta": clean_meta,
        "state": {k: state.get(k) for k in STATE_FIELDS},
        "entries": [{k: v for k, v in e.items() if k not in _HIDDEN} for e in entries],
    }


def read_export(document: Any, *, source: str = "journal") -> StoredJournal:
    """A :class:`StoredJournal` from an export document or a golden storage snapshot;
    :class:`InvalidRequestError` naming ``source`` when it is neither."""
    if not isinstance(document, dict):
        raise InvalidRequestError(f"{source}: not a JSON object")
    if isinstance(document.get("records"), dict):
        return _from_records(document["records"], source)
    if document.get("format") != EXPORT_FORMAT:
        raise InvalidRequestError(
            f"{source}: not a workkit-workflow export (no format {EXPORT_FORMAT!r}) or storage snapshot"
        )
    if document.get("format_version") != EXPORT_VERSION:
        raise InvalidRequestError(
            f"{source}: export format version {document.get('format_version')!r}; "
            f"this library reads version {EXPORT_VERSION}"
        )
    meta, entries = document.get("meta"), document.get("entries")
    if (
        not isinstance(meta, dict)
        or not isinstance(entries, list)
        or not isinstance(meta.get("workflow"), str)
    ):
        raise InvalidRequestError(f"{source}: an export needs meta.workflow and a list of entries")
    main: dict[int, dict[str, Any]] = {}
    compensation: dict[int, dict[str, Any]] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("op"), int):
            raise InvalidRequestError(f"{source}: entry {position} has no integer op")
        target = compensation if entry.get("phase") == "compensation" else main
        target[int(entry["op"])] = entry
    state = document.get("state") if isinstance(document.get("state"), dict) else {}
    return StoredJournal(str(meta.get("execution_id", "")), meta, dict(state or {}), main, compensation)


def _from_records(records: dict[str, Any], source: str) -> StoredJournal:
    """A storage snapshot: key -> record (decoded JSON objects or their text)."""
    decoded: dict[str, dict[str, Any]] = {}
    for key, value in records.items():
        text = value if isinstance(value, str) else jn.dumps(value)
        decoded[key] = jn.decode_record(key, text)
    meta = decoded.get(jn.META)
    if meta is None:
        raise InvalidRequestError(f"{source}: the snapshot has no {jn.META!r} record")
    main = {jn.op_of(k): v for k, v in decoded.items() if k.startswith(jn.MAIN)}
    compensation = {jn.op_of(k): v for k, v in decoded.items() if k.startswith(jn.COMPENSATION)}
    state = decoded.get(jn.STATE, {})
    return StoredJournal(str(meta.get("execution_id", "")), meta, state, main, compensation)
