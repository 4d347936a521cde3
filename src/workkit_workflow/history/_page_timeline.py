"""One execution's timeline as HTML: the time axis, a row per step with its attempts and
output, compensation, the result and the input."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from ._outcomes import Outcomes, pretty, preview, size
from ._page_html import _badge, _took
from ._query import ExecutionRecord
from ._timeline import Attempt, Row, Timeline, span, when
from ._undo_view import undo_html


def _finite(t: float | None) -> bool:
    return t is not None and isinstance(t, (int, float)) and math.isfinite(t)


def _position(t: float | None, timeline: Timeline) -> float:
    if t is None:
        return 0.0
    total = timeline.end - timeline.start
    share = (t - timeline.start) / total * 100.0 if total > 0 else 0.0
    # Stored instants may be absurd (far future): a span of infinity must not
    # become a NaN position in the page's CSS.
    return min(max(share, 0.0), 100.0) if math.isfinite(share) else 0.0


_TICK_STEPS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900,
    1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800,
)  # fmt: skip


def _clock(t: float, step: float) -> str | None:
    """A tick's label: the time of day (UTC), with the date once ticks are days apart."""
    try:
        moment = datetime.fromtimestamp(t, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None
    if step >= 86400:
        return moment.strftime("%Y-%m-%d")
    if step < 1:
        return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    return moment.strftime("%H:%M:%S")


def _axis(timeline: Timeline) -> str:
    """A ruler of real (UTC) timestamps over the tracks: the time axis."""
    start, end = timeline.start, timeline.end
    total = end - start
    ticks: list[str] = []
    if math.isfinite(total) and total > 0 and _finite(start):
        step = next((s for s in _TICK_STEPS if total / s <= 5), None)
        if step is not None:
            first = math.ceil(start / step) * step
            marks = [first + i * step for i in range(int((end - first) / step) + 1)]
            for t in marks[:12]:
                label = _clock(t, step)
                if label is None:
                    continue
                at = _position(t, timeline)
                edge = " first" if at < 8 else " last" if at > 92 else ""
                ticks.append(
                    f"<span class='tick{edge}' style='left:{at:.2f}%'><span>{escape(label)}</span></span>"
                )
    title = f"{when(start)} → {when(end)}"
    return (
        f"<div class='axis' title='{escape(title)}'><div class='spacer'>{escape(when(start))}</div>"
        f"<div class='ruler'>{''.join(ticks)}</div><div class='spacer'>UTC</div></div>"
    )


def _segment(cls: str, start: float | None, end: float | None, timeline: Timeline, title: str) -> str:
    left = _position(start, timeline)
    right = _position(end if end is not None else timeline.end, timeline)
    width = max(right - left, 0.6)
    left = min(left, 100.0 - width)
    return (
        f"<span class='seg {cls}' style='left:{left:.2f}%;width:{width:.2f}%' title='{escape(title)}'></span>"
    )


def _attempt_line(a: Attempt) -> str:
    took = span(a.duration_ms)
    if a.outcome == "completed":
        return f"<li>attempt {a.number}: completed in {escape(took)}</li>"
    if a.outcome == "running":
        return f"<li>attempt {a.number}: running since {escape(when(a.started_at))}</li>"
    label = {
        "lost": "lost (the object died during it)",
        "in_doubt": "in doubt (the execution ended while it ran)",
    }.get(a.outcome, "failed")
    # A lost attempt has no known end: say nothing rather than a placeholder.
    after = f" after {escape(took)}" if a.duration_ms is not None else ""
    error = f": {escape(a.error)}" if a.error else ""
    return f"<li class='err'>attempt {a.number}: {label}{after}{error}</li>"


def _value(key: str, label: str, value: Any) -> str:
    """A collapsed, pretty-printed, size-capped value."""
    text, full = pretty(value)
    cut = (
        f"<div class='cut'>showing {size(len(text))} of {size(full)}: "
        "the rest is in the journal (<code>workkit-workflow journal</code>)</div>"
        if full > len(text)
        else ""
    )
    return (
        f"<details class='io' data-key='{escape(key)}'><summary>{escape(label)} "
        f"<code>{escape(preview(value))}</code></summary><pre>{escape(text)}</pre>{cut}</details>"
    )


_STEP_STATUS_NOTE = {
    "abandoned": "abandoned: the execution ended before it finished",
    "in_doubt": "in doubt: the execution ended while it ran; compensation was told",
}


def _row(row: Row, timeline: Timeline, output: tuple[bool, Any] = (False, None)) -> str:
    segments = []
    for before, after in zip(row.attempts, row.attempts[1:], strict=False):
        segments.append(_segment("wait", before.finished_at, after.started_at, timeline, "retry backoff"))
    for a in row.attempts:
        segments.append(_segment(a.outcome, a.started_at, a.finished_at, timeline, f"attempt {a.number}"))
    if row.kind != "step":
        cls = "abandoned" if row.status == "abandoned" else "wait"
        segments.append(_segment(cls, row.started_at, row.finished_at, timeline, row.kind))
    details = [_attempt_line(a) for a in row.attempts] if len(row.attempts) > 1 or row.error else []
    details += [f"<li class='waitnote'>{escape(w)}</li>" for w in row.waits]
    if row.status in _STEP_STATUS_NOTE and not any("ended" in w for w in row.waits):
        details.append(f"<li class='statusnote'>{escape(_STEP_STATUS_NOTE[row.status])}</li>")
    if row.error and not row.attempts:
        details.append(f"<li class='err'>{escape(row.error)}</li>")
    if row.child is not None:
        details.append(f"<li class='child'>child execution {_execution_link(row.child)}</li>")
    has_output, value = output
    if has_output:
        label = "payload" if row.kind == "wait" else "output"
        details.append(f"<li>{_value(f'out:{row.phase}:{row.op}', label, value)}</li>")
    kind = "" if row.kind == "step" else f" <small>({escape(row.kind)})</small>"
    count = len(list(row.attempts))
    attempts = f"<div class='meta'>{count} attempt{'s' if count != 1 else ''}</div>" if count else ""
    started = f" title='started {escape(when(row.started_at))}'" if row.started_at is not None else ""
    return (
        f"<div class='step {escape(row.status)}' data-step='{escape(row.name)}' "
        f"data-status='{escape(row.status)}'{started}>"
        f"<div><div class='name'>{escape(row.name)}{kind}</div>{_badge(row.status)}{attempts}</div>"
        f"<div class='track'>{''.join(segments)}</div>"
        f"<div class='dur'>{_took(row.duration_ms)}</div>"
        + (f"<ul class='details'>{''.join(details)}</ul>" if details else "")
        + "</div>"
    )


def _rows(rows: list[Row], timeline: Timeline, outcomes: Outcomes) -> str:
    shown = []
    for r in rows:
        key = (r.phase, -1 if r.op is None else r.op)
        shown.append(_row(r, timeline, (key in outcomes.outputs, outcomes.outputs.get(key))))
    return "".join(shown)


def _execution_link(execution_id: str) -> str:
    # Relative to this page (``<base>/executions/<id>``); ``./`` keeps an id with a colon
    # from reading as a URL scheme.
    href = "./" + quote(execution_id, safe="")
    return f"<a class='execution-link' href='{escape(href)}'><code>{escape(execution_id)}</code></a>"


def _parent(timeline: Timeline) -> str:
    parent = timeline.parent
    if not parent:
        return ""
    op = escape(str(parent.get("op")))
    return f" · child of {_execution_link(str(parent['execution_id']))} (operation #{op})"


def _version(e: ExecutionRecord) -> str:
    return f" · version <code>{escape(e.version)}</code>" if e.version else ""


def _ran(e: ExecutionRecord) -> str:
    # The page shows no wall-clock time: the same state gives the same bytes
    # (the live refresh swaps only on a change; HEAD matches GET).
    return "" if e.duration_ms is None else f" · ran {escape(span(e.duration_ms))}"


def _execution_body(timeline: Timeline, outcomes: Outcomes) -> str:
    e: ExecutionRecord = timeline.execution
    comp = e.compensation or {}
    axis = _axis(timeline) if timeline.rows else ""
    main_rows = _rows(timeline.main, timeline, outcomes) or "<p class='empty'>No steps.</p>"
    body = [
        f"<h1>{escape(e.workflow)} {_badge(e.status)}</h1>",
        f"<div class='meta'>execution <code>{escape(e.execution_id)}</code>{_version(e)} · created "
        f"{escape(when(e.created_at))}{_ran(e)}{_parent(timeline)}</div>",
        f"<div class='headline {escape(e.status)}' id='headline'>{escape(timeline.headline)}</div>",
        f"<h2>Steps</h2><section class='phase main'>{axis}{main_rows}</section>",
    ]
    if comp or timeline.compensation:
        comp_rows = _rows(timeline.compensation, timeline, outcomes)
        status = comp.get("status", "")
        body.append(
            f"<h2>Compensation {_badge(status) if status else ''}</h2>"
            f"{undo_html(comp)}<section class='phase compensation'>{axis}"
            f"{comp_rows or '<p class=empty>No compensation steps.</p>'}</section>"
        )
    if outcomes.state:
        # live state: what the workflow published with ctx.set_state
        values = "".join(f"<li>{_value(f'state:{k}', k, v)}</li>" for k, v in outcomes.state.items())
        body.append(f"<h2>State</h2><ul class='state' id='state-values'>{values}</ul>")
    if outcomes.has_result:
        body.append(f"<h2>Result</h2><div id='result'>{_value('result', 'result', outcomes.result)}</div>")
    if e.input is not None:
        body.append(f"<h2>Input</h2>{_value('input', 'input', e.input)}")
    return "".join(body)
