"""The timeline page: server-rendered HTML, no build step, no JavaScript.

Mount it in a Worker (or any server) with :func:`history_page`, or render the
two pages yourself with :func:`render_index` and :func:`render_execution_page`::

    status, html = await history_page(client.history, path, query)
    return Response(html, status=status, headers={"content-type": "text/html; charset=utf-8"})

``workkit-workflow serve`` serves the same pages over the local runtime.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import ExecutionNotFoundError, WorkflowError
from ._query import ExecutionPage, ExecutionRecord, HistoryQuery
from ._timeline import Attempt, Row, Timeline, build, error_text, span, when

_CSS = """
:root{--ok:#2e7d32;--fail:#c62828;--wait:#b26a00;--comp:#6a1b9a;--run:#1565c0;--mute:#5f6368;
--line:#e0e0e0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#202124}
body{margin:0;background:#fafafa}
header.top{background:#202124;color:#fff;padding:10px 24px;font-size:15px}
header.top a{color:#fff;text-decoration:none;font-weight:600}
main{max-width:1100px;margin:0 auto;padding:20px 24px}
h1{font-size:22px;margin:0 0 6px}
h2{font-size:16px;margin:26px 0 8px;color:#3c4043}
.headline{font-size:17px;padding:12px 16px;border-radius:6px;margin:12px 0;border-left:6px solid var(--mute);
background:#fff}
.headline.failed{border-color:var(--fail);background:#fdecea}
.headline.completed{border-color:var(--ok);background:#edf7ed}
.headline.cancelled{border-color:var(--comp);background:#f5eefa}
.meta{color:var(--mute);font-size:13px;margin:4px 0}
.meta code{color:#202124}
.badge{display:inline-block;font-size:12px;font-weight:700;padding:2px 8px;border-radius:10px;color:#fff;
background:var(--mute);text-transform:uppercase;letter-spacing:.03em}
.badge.completed{background:var(--ok)}.badge.failed{background:var(--fail)}
.badge.running{background:var(--run)}.badge.retrying,.badge.sleeping,.badge.waiting,.badge.pending{background:var(--wait)}
.badge.cancelled{background:var(--comp)}.badge.lost{background:#8d6e63}
.badge.abandoned{background:#9e9e9e}.badge.in_doubt{background:#8d6e63}.step.abandoned .name{color:#757575}
table{border-collapse:collapse;width:100%;background:#fff;font-size:14px}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--mute);text-transform:uppercase}
tr.row-failed td.name{color:var(--fail);font-weight:700}
td.name,td:nth-child(7){white-space:nowrap}
section.phase{background:#fff;border:1px solid var(--line);border-radius:6px;padding:6px 0}
section.phase.compensation{border-color:#cbb2dc}
.step{display:grid;grid-template-columns:210px 1fr 90px;gap:10px;padding:8px 14px;
border-bottom:1px solid var(--line)}
.step:last-child{border-bottom:0}
.step .name{font-weight:600;word-break:break-word}
.step.failed .name{color:var(--fail)}
.track{position:relative;height:18px;background:#f1f3f4;border-radius:3px;margin-top:2px}
.seg{position:absolute;top:2px;height:14px;border-radius:2px;min-width:4px}
.seg.completed{background:var(--ok)}.seg.failed{background:var(--fail)}.seg.lost{background:#8d6e63}
.seg.running{background:var(--run)}
.seg.wait{background:repeating-linear-gradient(45deg,#f9a825 0 4px,#fff3c4 4px 8px)}
.compensation .seg.completed{background:var(--comp)}
.details{grid-column:2/4;font-size:13px;color:#3c4043;margin:2px 0 0;padding:0;list-style:none}
.details li{margin:2px 0}
.details .err{color:var(--fail)}
.details .waitnote{color:var(--wait)}
.dur{text-align:right;color:var(--mute);font-variant-numeric:tabular-nums;font-size:13px}
pre{background:#f1f3f4;padding:8px;border-radius:4px;font-size:12px;overflow:auto;max-height:160px}
form.filters{margin:0 0 12px;font-size:13px}form.filters input,form.filters select{font-size:13px;padding:3px}
.empty{color:var(--mute);padding:16px}
"""


def _page(title: str, body: str, base: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header class='top'><a href='{escape(base)}'>workkit-workflow · executions</a></header>"
        f"<main>{body}</main></body></html>"
    )


def _badge(status: str) -> str:
    return f"<span class='badge {escape(status)}'>{escape(status)}</span>"


def _link(base: str, execution_id: str) -> str:
    return f"{base.rstrip('/')}/executions/{quote(execution_id, safe='')}"


def render_index(page: ExecutionPage, *, base: str = "/", filters: Mapping[str, str] | None = None) -> str:
    """The list of executions (newest first) with filters and a next-page link."""
    filters = dict(filters or {})
    rows = []
    for e in page.executions:
        comp = (e.compensation or {}).get("status")
        outcome = error_text(e.error) if e.status == "failed" else ""
        rows.append(
            f"<tr class='row-{escape(e.status)}'>"
            f"<td class='name'><a href='{escape(_link(base, e.execution_id))}'>"
            f"{escape(e.execution_id)}</a></td>"
            f"<td>{escape(e.workflow)}</td><td>{_badge(e.status)}</td>"
            f"<td>{escape(e.failed_step or '')}</td><td>{escape(outcome or '')}</td>"
            f"<td>{_badge(comp) if comp else ''}</td>"
            f"<td>{escape(when(e.created_at))}</td><td class='dur'>{escape(span(e.duration_ms))}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>execution</th><th>workflow</th><th>status</th><th>failed step</th>"
        "<th>error</th><th>compensation</th><th>created</th><th>duration</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p class='empty'>No executions recorded yet.</p>"
    )
    statuses = ["", "pending", "running", "sleeping", "waiting", "completed", "failed", "cancelled"]
    options = "".join(
        f"<option value='{s}'{' selected' if filters.get('status') == s else ''}>{s or 'any status'}</option>"
        for s in statuses
    )
    form = (
        f"<form class='filters' method='get' action='{escape(base)}'>"
        f"workflow <input name='workflow' value='{escape(filters.get('workflow', ''))}'> "
        f"<select name='status'>{options}</select> <button>filter</button></form>"
    )
    more = ""
    if page.cursor:
        query = urlencode({**{k: v for k, v in filters.items() if v}, "cursor": page.cursor})
        more = f"<p><a href='{escape(base)}?{escape(query)}'>older executions →</a></p>"
    return _page("Executions", f"<h1>Executions</h1>{form}{table}{more}", base)


def _position(t: float | None, timeline: Timeline) -> float:
    if t is None:
        return 0.0
    total = timeline.end - timeline.start
    share = (t - timeline.start) / total * 100.0 if total > 0 else 0.0
    # Stored instants may be absurd (far future): a span of infinity must not
    # become a NaN position in the page's CSS.
    return min(max(share, 0.0), 100.0) if math.isfinite(share) else 0.0


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


def _row(row: Row, timeline: Timeline) -> str:
    segments = []
    for before, after in zip(row.attempts, row.attempts[1:], strict=False):
        segments.append(_segment("wait", before.finished_at, after.started_at, timeline, "retry backoff"))
    for a in row.attempts:
        segments.append(_segment(a.outcome, a.started_at, a.finished_at, timeline, f"attempt {a.number}"))
    if row.kind != "step":
        segments.append(_segment("wait", row.started_at, row.finished_at, timeline, row.kind))
    details = [_attempt_line(a) for a in row.attempts] if len(row.attempts) > 1 or row.error else []
    details += [f"<li class='waitnote'>{escape(w)}</li>" for w in row.waits]
    if row.error and not row.attempts:
        details.append(f"<li class='err'>{escape(row.error)}</li>")
    kind = "" if row.kind == "step" else f" <small>({escape(row.kind)})</small>"
    count = len(list(row.attempts))
    attempts = f"<div class='meta'>{count} attempt{'s' if count != 1 else ''}</div>" if count else ""
    return (
        f"<div class='step {escape(row.status)}' data-step='{escape(row.name)}' "
        f"data-status='{escape(row.status)}'>"
        f"<div><div class='name'>{escape(row.name)}{kind}</div>{_badge(row.status)}{attempts}</div>"
        f"<div class='track'>{''.join(segments)}</div>"
        f"<div class='dur'>{escape(span(row.duration_ms))}</div>"
        + (f"<ul class='details'>{''.join(details)}</ul>" if details else "")
        + "</div>"
    )


def render_execution_page(history: Any, *, base: str = "/") -> str:
    """One execution as a timeline: header sentence, main steps, compensation."""
    timeline = history if isinstance(history, Timeline) else build(history)
    e: ExecutionRecord = timeline.execution
    comp = e.compensation or {}
    main_rows = "".join(_row(r, timeline) for r in timeline.main) or "<p class='empty'>No steps.</p>"
    body = [
        f"<h1>{escape(e.workflow)} {_badge(e.status)}</h1>",
        f"<div class='meta'>execution <code>{escape(e.execution_id)}</code> · created "
        f"{escape(when(e.created_at))} · ran {escape(span(e.duration_ms))}</div>",
        f"<div class='headline {escape(e.status)}' id='headline'>{escape(timeline.headline)}</div>",
        f"<h2>Steps</h2><section class='phase main'>{main_rows}</section>",
    ]
    if comp or timeline.compensation:
        comp_rows = "".join(_row(r, timeline) for r in timeline.compensation)
        status = comp.get("status", "")
        body.append(
            f"<h2>Compensation {_badge(status) if status else ''}</h2>"
            f"<section class='phase compensation'>{comp_rows or '<p class=empty>No compensation steps.</p>'}"
            "</section>"
        )
    if e.input is not None:
        body.append(f"<h2>Input</h2><pre>{escape(json.dumps(e.input, indent=2)[:4000])}</pre>")
    return _page(f"{e.workflow} {e.execution_id}", "".join(body), base)


def render_not_found(execution_id: str, *, base: str = "/") -> str:
    return _page(
        "Not found",
        f"<h1>Not found</h1><p>No history for execution <code>{escape(execution_id)}</code>.</p>",
        base,
    )


async def history_page(
    query: HistoryQuery, path: str, params: Mapping[str, str] | None = None, *, base: str = "/"
) -> tuple[int, str]:
    """Route ``path`` (relative to ``base``) to a page: ``/`` lists, ``/executions/<id>`` shows one.

    Returns ``(status, html)``; bad filters give 400, an unknown execution 404.
    """
    params = dict(params or {})
    rest = path[len(base.rstrip("/")) :] if path.startswith(base.rstrip("/")) else path
    rest = "/" + rest.strip("/")
    try:
        if rest.startswith("/executions/"):
            from urllib.parse import unquote

            execution_id = unquote(rest[len("/executions/") :])
            try:
                history = await query.get_execution(execution_id)
            except ExecutionNotFoundError:
                return 404, render_not_found(execution_id, base=base)
            return 200, render_execution_page(history, base=base)
        if rest == "/":
            page = await query.list_executions(
                workflow=params.get("workflow") or None,
                status=params.get("status") or None,
                cursor=params.get("cursor") or None,
                limit=50,
            )
            return 200, render_index(page, base=base, filters=params)
    except WorkflowError as exc:
        return 400, _page("Bad request", f"<h1>Bad request</h1><p>{escape(exc.message)}</p>", base)
    return 404, _page("Not found", "<h1>Not found</h1>", base)


__all__ = ["history_page", "render_execution_page", "render_index", "render_not_found"]
