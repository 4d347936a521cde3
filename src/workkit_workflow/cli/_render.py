"""How the CLI prints: timelines, journals and execution lists as plain text.

Everything printed for people goes through :func:`printable`: error messages, cancel
reasons, event types and step names are written by senders and step code, and a
terminal must not take their control sequences (ESC, a bidi override) as its own."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..history import ExecutionRecord
from ..history._journals import DAMAGED
from ..history._timeline import Attempt, Row, Timeline, error_text, span, when
from ..history._undo_view import undo_text

_MARK = {
    "completed": "✓",
    "failed": "✗",
    "lost": "✗",
    "running": "▶",
    "retrying": "↻",
    "abandoned": "⊘",
    "in_doubt": "?",
}


_ESCAPES: dict[int, str] = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},  # C0, DEL, C1
    **{c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def printable(text: str) -> str:
    """``text`` with its control characters written as escapes (``\\x1b``, ``\\n``):
    one line a terminal shows as it is. JSON output needs none (it escapes them itself)."""
    return text.translate(_ESCAPES)


def printable_lines(lines: Iterable[str]) -> str:
    """Lines joined for printing, each made :func:`printable`."""
    return "\n".join(printable(line) for line in lines)


def _mark(status: str) -> str:
    return _MARK.get(status, "…")


def _format_row(row: Row, out: list[str], width: int) -> None:
    kind = "" if row.kind == "step" else f" ({row.kind})"
    attempts = len(row.attempts)
    count = f"{attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
    out.append(
        f"  {_mark(row.status)} {(row.name + kind).ljust(width)}  {row.status.ljust(10)}"
        f"{count.ljust(12)}{_took(row.duration_ms).rjust(9)}".rstrip()
    )
    if attempts > 1 or row.error:
        for a in row.attempts:
            out.append(_attempt_line(a))
    for note in row.waits:
        mark = "⊘" if "abandoned" in note else "?" if row.status == "in_doubt" else "⏸"
        out.append(f"      {mark} {note}")


def _attempt_line(a: Attempt) -> str:
    # Unknown durations (a lost attempt never finished) are left out, not shown as "-".
    took = f" {span(a.duration_ms)}" if a.duration_ms is not None else ""
    detail = f"   {a.error}" if a.error else ""
    return f"      attempt {a.number}  {_mark(a.outcome)} {a.outcome.replace('_', ' ')}{took}{detail}"


def _took(ms: float | None) -> str:
    return span(ms) if ms is not None else ""


def format_timeline(timeline: Timeline, result: Any = None) -> str:
    e = timeline.execution
    ran = f"   ran {span(e.duration_ms)}" if e.duration_ms is not None else ""
    version = f"version {e.version}   " if e.version else ""
    out = [
        f"{e.workflow}  {e.execution_id}  [{e.status.upper()}]",
        f"  {version}created {when(e.created_at)}{ran}",
        *_parent_line(timeline),
        "",
        f"  {timeline.headline}",
        "",
        "steps:",
    ]
    width = max([len(r.name) + (0 if r.kind == "step" else len(r.kind) + 3) for r in timeline.rows] + [8])
    for row in timeline.main:
        _format_row(row, out, width)
    if not timeline.main:
        out.append("  (none)")
    comp = e.compensation or {}
    if comp or timeline.compensation:
        out += ["", f"compensation: {comp['status']}" if comp.get("status") else "compensation:"]
        out += undo_text(comp)
        for row in timeline.compensation:
            _format_row(row, out, width)
        if comp.get("error"):
            out.append(f"  ✗ {error_text(comp['error'])}")
    if result is not None:
        out += ["", f"result: {json.dumps(result, ensure_ascii=False)}"]
    return printable_lines(out)


def _parent_line(timeline: Timeline) -> list[str]:
    parent = timeline.parent
    if not parent:
        return []
    return [
        f"  child of {parent.get('execution_id')} ({parent.get('workflow')}, operation #{parent.get('op')})"
    ]


def format_journal(entries: Sequence[dict[str, Any]]) -> str:
    """A journal as a table: phase, op, name, kind, status, attempts, errors."""
    if not entries:
        return "(empty journal)"
    head = ("PHASE", "OP", "NAME", "KIND", "STATUS", "ATTEMPTS", "ERRORS")
    rows: list[tuple[str, ...]] = [head]
    for e in entries:
        errors = ", ".join(str(x.get("code")) for x in e.get("errors") or [])
        attempt = str(e["attempt"]) if e.get("attempt") else ""
        status = str(e.get("status", ""))
        cells = (e["phase"], str(e["op"]), str(e.get("name")), str(e.get("kind")), status, attempt, errors)
        rows.append(tuple(printable(str(c)) for c in cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def format_list(records: Sequence[ExecutionRecord]) -> str:
    if not records:
        return "no executions"
    head = ("EXECUTION", "WORKFLOW", "STATUS", "VERSION", "CREATED", "DURATION", "FAILED STEP / COMPENSATION")
    rows: list[tuple[str, ...]] = [head]
    for e in records:
        comp = (e.compensation or {}).get("status")
        note = " / ".join(x for x in (e.failed_step, f"compensation {comp}" if comp else None) if x)
        if e.status == DAMAGED:
            note = str((e.error or {}).get("message", ""))
        took = _took(e.duration_ms)
        cells = (e.execution_id, e.workflow, e.status, e.version or "", when(e.created_at), took, note)
        rows.append(tuple(printable(str(c)) for c in cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    return "\n".join(
        ("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:-1])) + "  " + r[-1]).rstrip()
        for r in rows
    )


def _record_json(e: ExecutionRecord) -> dict[str, Any]:
    return {k: getattr(e, k) for k in e.__dataclass_fields__}
