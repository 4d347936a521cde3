"""What the history projection leaves out and the page shows: outputs, the result and
the live state.

The projection drops outputs on purpose (D1 rows stay small, and an output may
be large or private), so the page reads them from the journal: through the
client where a runtime is at hand (``serve --app``, a Worker), or straight from
a local runtime file, read-only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import WorkflowError

MAX_SHOWN = 20_000
"""Characters of one pretty-printed value the page shows; the rest is cut."""


@dataclass(frozen=True)
class Outcomes:
    outputs: Mapping[tuple[str, int], Any] = field(default_factory=dict)
    """``(phase, op)`` → the output of a completed operation (a wait's: the event payload)."""
    has_result: bool = False
    result: Any = None
    """The workflow's return value, once it completed."""
    state: Mapping[str, Any] = field(default_factory=dict)
    """The live state the workflow published with ``ctx.set_state``, by key."""


def from_journal(entries: Iterable[Any], *, has_result: bool = False, result: Any = None) -> Outcomes:
    """Outcomes from journal entries as ``ExecutionHandle.journal()`` returns them."""
    outputs: dict[tuple[str, int], Any] = {}
    for entry in entries:
        # Stored data may be anything: an entry without a usable position is skipped.
        if not isinstance(entry, dict) or entry.get("status") != "completed" or "output" not in entry:
            continue
        op = entry.get("op")
        if isinstance(op, int) and not isinstance(op, bool):
            outputs[(str(entry.get("phase", "main")), op)] = entry["output"]
    return Outcomes(outputs, has_result, result)


async def client_outcomes(client: Any, execution_id: str) -> Outcomes:
    """Outcomes through a :class:`~workkit_workflow.DurableWorkflows` client (two requests)."""
    handle = client.execution(execution_id)
    entries = await handle.journal()
    state = await _live_state(handle)
    try:
        result = await handle.result(timeout=0)
    except WorkflowError:  # not settled yet
        return replace(from_journal(entries), state=state)
    found = from_journal(entries, has_result=bool(result.ok), result=result.value if result.ok else None)
    return replace(found, state=state)


async def _live_state(handle: Any) -> dict[str, Any]:
    try:
        state = await handle.state()
    except WorkflowError:  # a backend without live state
        return {}
    return state if isinstance(state, dict) else {}


def file_outcomes(path: str, execution_id: str) -> Outcomes | None:
    """Outcomes read from a local runtime file (None if it holds no such journal)."""
    import sqlite3

    from ._journals import JournalFile

    try:
        journals = JournalFile.open(path)
    except (OSError, sqlite3.Error):
        return None
    try:
        if not journals.has_journals():
            return None
        stored = journals.execution(execution_id)
        entries = journals.journal(execution_id)
        state = journals.live_state(execution_id)
    except (WorkflowError, sqlite3.Error, ValueError, KeyError):
        return None
    finally:
        journals.close()
    if stored.result is None:
        return replace(from_journal(entries), state=state)
    return replace(from_journal(entries, has_result=True, result=stored.result.get("value")), state=state)


def pretty(value: Any, limit: int = MAX_SHOWN) -> tuple[str, int]:
    """``value`` as indented JSON, cut to ``limit`` characters; and its full length.

    Never raises: a value nested too deeply to print is shown by its type."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=repr)
    except (ValueError, TypeError, RecursionError):
        text = f"<{type(value).__name__} that cannot be shown>"
    return text[:limit], len(text)


def preview(value: Any, limit: int = 80) -> str:
    """One short line of ``value`` for a collapsed summary."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=repr)
    except (ValueError, TypeError, RecursionError):
        return type(value).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def size(chars: int) -> str:
    if chars < 1000:
        return f"{chars} chars"
    if chars < 1_000_000:
        return f"{chars / 1000:.1f} kB"
    return f"{chars / 1_000_000:.1f} MB"
