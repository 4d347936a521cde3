"""The timeline pages' frame: the stylesheet, the page around a body, and small shared pieces
(a status badge, a duration, a link to one execution)."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from . import _live
from ._timeline import span

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
.badge.running{background:var(--run)}.badge.retrying,.badge.sleeping,.badge.waiting,.badge.pending,
.badge.paused{background:var(--wait)}
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
