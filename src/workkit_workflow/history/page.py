"""The timeline page: server-rendered HTML, no build step, one small inline script.

Mount it in a Worker (or any server) with :func:`history_page`, or render the
two pages yourself with :func:`render_index` and :func:`render_execution_page`::

    status, html = await history_page(client.history, path, query)
    return Response(html, status=status, headers={"content-type": "text/html; charset=utf-8"})

``workkit-workflow serve`` serves the same pages over the local runtime.

The history projection holds no outputs: pass ``outcomes=`` (for instance
:func:`client_outcomes` over your client) to show them and the result. The
page acts (cancel, send an event, restart from a step) when ``actions=`` names
where :func:`parse_action` / :func:`perform_action` are served; the example
Worker's ``/ui`` shows both, behind its ``API_TOKEN``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote, unquote, urlencode

from ..errors import ExecutionNotFoundError, WorkflowError
from . import _live
from ._actions import parse_action
from ._actions import perform as perform_action
from ._live import READ_ONLY, Actions
from ._outcomes import Outcomes, client_outcomes, pretty, preview, size
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


def _page(title: str, body: str, base: str, *, live: bool = False) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_CSS}{_live.CSS}</style></head><body>"
        f"<header class='top'><a href='{escape(base)}'>workkit-workflow · executions</a>"
        "<span id='livemark' class='live'></span></header>"
        f"<main>{body}</main>{_live.script() if live else ''}</body></html>"
    )


def _badge(status: str) -> str:
    return f"<span class='badge {escape(status)}'>{escape(status.replace('_', ' '))}</span>"


def _took(ms: float | None) -> str:
    """A duration, or nothing while it is unknown (never a placeholder)."""
    return "" if ms is None else escape(span(ms))


def _link(base: str, execution_id: str) -> str:
    return f"{base.rstrip('/')}/executions/{quote(execution_id, safe='')}"


_LIVE_STATUSES = frozenset({"pending", "running", "sleeping", "waiting", "retrying"})


def is_settled(e: ExecutionRecord) -> bool:
    """Nothing more will happen by itself: the page stops refreshing."""
    comp = (e.compensation or {}).get("status")
    return e.status not in _LIVE_STATUSES and comp not in ("pending", "running")


def _live_region(inner: str, *, settled: bool, base: str, execution_id: str | None, actions: Actions) -> str:
    """The ``#live`` region the script refreshes; it carries what the script needs."""
    attrs = f" data-base='{escape(base.rstrip('/') + '/')}'"
    if execution_id is not None:
        attrs += f" data-id='{escape(execution_id)}'"
    if actions.api is not None:
        attrs += f" data-api='{escape(actions.api)}'"
    return f"<div id='live'{attrs}>{_fragment(inner, settled)}</div>"


def _fragment(inner: str, settled: bool) -> str:
    return f"<div id='state' data-settled='{'1' if settled else '0'}'></div>{inner}"


def _index_table(page: ExecutionPage, base: str) -> str:
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
            f"<td>{escape(when(e.created_at))}</td><td class='dur'>{_took(e.duration_ms)}</td></tr>"
        )
    if not rows:
        return "<p class='empty'>No executions recorded yet.</p>"
    return (
        "<div class='scroll'><table><thead><tr><th>execution</th><th>workflow</th><th>status</th>"
        "<th>failed step</th><th>error</th><th>compensation</th><th>created</th><th>duration</th>"
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def render_index(
    page: ExecutionPage,
    *,
    base: str = "/",
    filters: Mapping[str, str] | None = None,
    actions: Actions = READ_ONLY,
    fragment: str = "",
) -> str:
    """The list of executions (newest first) with filters and a next-page link;
    it refreshes itself while one of them is still going.

    ``fragment``: ``"1"`` only the refreshing region, ``"main"`` the page's body."""
    filters = dict(filters or {})
    settled = all(is_settled(e) for e in page.executions)
    table = _index_table(page, base)
    if fragment == "1":
        return _fragment(table, settled)
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
    token = _live.token_box() + "<p id='answer' role='status'></p>" if actions.token else ""
    region = _live_region(table, settled=settled, base=base, execution_id=None, actions=actions)
    body = f"<h1>Executions</h1>{token}{form}{region}{more}"
    return body if fragment == "main" else _page("Executions", body, base, live=True)


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
        f"<div class='meta'>execution <code>{escape(e.execution_id)}</code> · created "
        f"{escape(when(e.created_at))}{_ran(e)}</div>",
        f"<div class='headline {escape(e.status)}' id='headline'>{escape(timeline.headline)}</div>",
        f"<h2>Steps</h2><section class='phase main'>{axis}{main_rows}</section>",
    ]
    if comp or timeline.compensation:
        comp_rows = _rows(timeline.compensation, timeline, outcomes)
        status = comp.get("status", "")
        body.append(
            f"<h2>Compensation {_badge(status) if status else ''}</h2>"
            f"<section class='phase compensation'>{axis}"
            f"{comp_rows or '<p class=empty>No compensation steps.</p>'}</section>"
        )
    if outcomes.has_result:
        body.append(f"<h2>Result</h2><div id='result'>{_value('result', 'result', outcomes.result)}</div>")
    if e.input is not None:
        body.append(f"<h2>Input</h2>{_value('input', 'input', e.input)}")
    return "".join(body)


def render_execution_page(
    history: Any,
    *,
    base: str = "/",
    outcomes: Outcomes | None = None,
    actions: Actions = READ_ONLY,
    fragment: str = "",
) -> str:
    """One execution as a timeline: header sentence, time axis, main steps with
    their outputs, compensation, the result; the actions; live while it runs.

    ``fragment``: ``"1"`` only the refreshing region (what the page's script
    polls), ``"main"`` the page's body (what a page sent without data fetches)."""
    timeline = history if isinstance(history, Timeline) else build(history)
    e: ExecutionRecord = timeline.execution
    settled = is_settled(e)
    inner = _execution_body(timeline, outcomes or Outcomes())
    if fragment == "1":
        return _fragment(inner, settled)
    steps = [r.name for r in timeline.main]
    token = _live.token_box() if actions.token else ""
    region = _live_region(inner, settled=settled, base=base, execution_id=e.execution_id, actions=actions)
    body = token + region + _live.actions_panel(actions, steps)
    return body if fragment == "main" else _page(f"{e.workflow} {e.execution_id}", body, base, live=True)


def render_not_found(execution_id: str, *, base: str = "/") -> str:
    return _page(
        "Not found",
        f"<h1>Not found</h1><p>No history for execution <code>{escape(execution_id)}</code>.</p>",
        base,
    )


def render_locked(*, base: str = "/") -> str:
    """The page without its data, for a browser that has not given the token yet:
    the script fetches the content with the token kept in this tab."""
    body = (
        "<h1>Executions</h1><p class='why'>This page needs the API token: the data comes "
        "with it.</p>" + _live.token_box() + "<p id='answer' role='status'></p>"
        f"<div id='live' data-load='1' data-base='{escape(base.rstrip('/') + '/')}'>"
        "<div id='state' data-settled='0'></div></div>"
    )
    return _page("Executions", body, base, live=True)


OutcomeSource = Callable[[str], Awaitable["Outcomes | None"]]


async def history_page(
    query: HistoryQuery,
    path: str,
    params: Mapping[str, str] | None = None,
    *,
    base: str = "/",
    outcomes: OutcomeSource | None = None,
    actions: Actions = READ_ONLY,
) -> tuple[int, str]:
    """Route ``path`` (relative to ``base``) to a page: ``/`` lists, ``/executions/<id>`` shows one.

    ``outcomes`` loads an execution's outputs and result (the history projection
    has neither); ``actions`` says whether and how the page may act. With
    ``fragment=1`` in ``params`` the answer is only the region the page
    refreshes, with ``fragment=main`` the page's body.
    Returns ``(status, html)``; bad filters give 400, an unknown execution 404.
    """
    params = dict(params or {})
    fragment = params.pop("fragment", "")
    if fragment not in ("", "1", "main"):
        return 400, _page("Bad request", "<h1>Bad request</h1><p>fragment is 1 or main</p>", base)
    rest = path[len(base.rstrip("/")) :] if path.startswith(base.rstrip("/")) else path
    rest = "/" + rest.strip("/")
    try:
        if rest.startswith("/executions/"):
            execution_id = unquote(rest[len("/executions/") :])
            try:
                history = await query.get_execution(execution_id)
            except ExecutionNotFoundError:
                return 404, render_not_found(execution_id, base=base)
            found = await outcomes(execution_id) if outcomes is not None else None
            html = render_execution_page(
                history, base=base, outcomes=found, actions=actions, fragment=fragment
            )
            return 200, html
        if rest == "/":
            page = await query.list_executions(
                workflow=params.get("workflow") or None,
                status=params.get("status") or None,
                cursor=params.get("cursor") or None,
                limit=50,
            )
            return 200, render_index(page, base=base, filters=params, actions=actions, fragment=fragment)
    except WorkflowError as exc:
        return 400, _page("Bad request", f"<h1>Bad request</h1><p>{escape(exc.message)}</p>", base)
    return 404, _page("Not found", "<h1>Not found</h1>", base)


__all__ = [
    "READ_ONLY",
    "Actions",
    "Outcomes",
    "client_outcomes",
    "history_page",
    "parse_action",
    "perform_action",
    "render_execution_page",
    "render_index",
    "render_locked",
    "render_not_found",
]
