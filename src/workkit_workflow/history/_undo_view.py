"""Each step's undo outcome (``compensation.undos`` of the state record), as the CLI
and the timeline page show it."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from ._timeline import error_text

_MARK = {"completed": "✓", "failed": "✗", "pending": "…", "running": "▶", "retrying": "↻"}


def _lines(compensation: Mapping[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """(mark, step, what was undone, outcome) per undo, last started first."""
    rows = []
    for undo in (compensation or {}).get("undos") or []:
        if not isinstance(undo, Mapping):
            continue  # stored data may be anything
        status = str(undo.get("status"))
        attempts = int(undo.get("attempts") or 0)
        outcome = status + (f", {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else "")
        error = error_text(undo.get("error")) if isinstance(undo.get("error"), dict) else None
        if error:
            outcome += f": {error}"
        what = "in-doubt step" if undo.get("step_status") == "in_doubt" else "completed step"
        rows.append((_MARK.get(status, "…"), str(undo.get("step")), what, outcome))
    return rows


def undo_text(compensation: Mapping[str, Any] | None) -> list[str]:
    """Plain-text lines for ``workkit-workflow show`` (empty without undo handlers)."""
    rows = _lines(compensation)
    if not rows:
        return []
    width = max(len(step) for _, step, _, _ in rows)
    return ["  undo handlers (last started first):"] + [
        f"    {mark} {step.ljust(width)}  {what.ljust(14)}  {outcome}" for mark, step, what, outcome in rows
    ]


def undo_html(compensation: Mapping[str, Any] | None) -> str:
    """The page's list of undo outcomes (empty without undo handlers)."""
    rows = _lines(compensation)
    if not rows:
        return ""
    items = "".join(
        f"<li data-undo='{escape(step)}'>{escape(mark)} <b>{escape(step)}</b> "
        f"<small>({escape(what)})</small>: {escape(outcome)}</li>"
        for mark, step, what, outcome in rows
    )
    head = "<h3>Undo handlers <small>last started first</small></h3>"
    return f"<div class='undos'>{head}<ul>{items}</ul></div>"
