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

from collections.abc import Awaitable, Callable, Mapping
from html import escape
from typing import Any
from urllib.parse import unquote, urlencode

from ..errors import ExecutionNotFoundError, WorkflowError
from . import _live
from ._actions import parse_action
from ._actions import perform as perform_action
from ._live import READ_ONLY, Actions
from ._outcomes import Outcomes, client_outcomes
from ._page_html import _badge, _link, _page, _took
from ._page_timeline import _execution_body
from ._query import ExecutionPage, ExecutionReader, ExecutionRecord
from ._timeline import Timeline, build, error_text, when

_LIVE_STATUSES = frozenset(
    {"queued", "pending", "running", "sleeping", "waiting", "retrying", "blocked", "paused"}
)


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
    statuses = [
        "",
        "queued",
        "pending",
        "running",
        "sleeping",
        "waiting",
        "blocked",
        "paused",
        "completed",
        "failed",
        "cancelled",
    ]
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
    query: ExecutionReader,
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
