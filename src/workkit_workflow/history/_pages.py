"""Plain completed steps as entries of ``wf_step_pages`` rows (schema version 3, ``_schema``).

Both projections write them: :func:`_projection.projection` from a batch's records, and
:func:`_plain.plain_projection` from the values the engine built.
"""

from __future__ import annotations

from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from ..engine._journal import phase_of
from ._d1 import Statement, inserts

_PAGE_COLUMNS = "execution_id, phase, block, steps"
_PAGE_CONFLICT = (
    "ON CONFLICT (execution_id, phase, block) "
    "DO UPDATE SET steps = json_patch(excluded.steps, wf_step_pages.steps)"
)
"""A page merges in the entries it lacks, keeping those it holds (a plain completion is final)."""

Pages = dict[str, list[str]]
"""The entries of one execution's ``wf_step_pages`` rows as text, by the journal key's
prefix and block (``j:000002``: the key less its last two digits)."""


def page_step(pages: Pages, key: str, entry: Mapping[str, Any], seq: int, started: int | None) -> bool:
    """Add a plain step's entry to its ``wf_step_pages`` row (``_schema``), from its
    completion (``entry``, sequence ``seq``) and its start's sequence; False if it has none
    (failed attempts, or an instant that is no whole millisecond; the engine's always are):
    it is a row then.

    The entry is written as text, not by ``json.dumps`` of a list: a float's shortest text
    is most of that cost, and so is an integer's (about 1k instructions each). An instant's
    text is kept (``_instant``), a first attempt's number is a literal, and the page and the
    entry's name are read off the zero-padded journal key (``j:00000238`` is block
    ``000002``, entry ``"00000238"``)."""
    if entry.get("errors"):
        return False
    started_at: Any = entry.get("started_at")
    finished_at: Any = entry.get("finished_at")
    try:
        start = _INSTANTS.get(started_at) or _instant(started_at)
        end = _INSTANTS.get(finished_at) or _instant(finished_at)
    except TypeError:  # not a number (no release writes one): the row shows what it is
        return False
    attempt_started_at = entry.get("attempt_started_at")
    if attempt_started_at is None or attempt_started_at == started_at:
        attempt_start: str | None = "null"
    else:
        attempt_start = _instant(attempt_started_at)
    if start is None or end is None or attempt_start is None:
        return False
    attempt = entry.get("attempt")
    attempt_text = "1" if attempt == 1 else int(attempt or 0)
    page = pages.get(key[:-2])
    if page is None:
        page = pages[key[:-2]] = []
    page.append(
        f'"{key[2:]}":[{encode_basestring(entry.get("name") or "")},{attempt_text},{start},'
        f"{attempt_start},{end},{seq},{'null' if started is None else started}]"
    )
    return True


_INSTANTS: dict[float, str] = {}
"""The whole milliseconds of the instants written last, as text: consecutive steps' often
are the same (a step can take less than one, and on Cloudflare the clock does not move
while code runs)."""


def _instant(seconds: Any) -> str | None:
    """``seconds`` as a whole number of milliseconds, if that is exactly what it is (SQLite's
    ``/ 1000.0`` gives the same float back), else None."""
    try:
        ms = round(seconds * 1000)
    except (TypeError, ValueError, OverflowError):
        return None
    if not -(2**53) < ms < 2**53 or ms / 1000 != seconds:
        return None
    if len(_INSTANTS) >= 64:
        _INSTANTS.clear()
    text = _INSTANTS[seconds] = str(ms)
    return text


def page_inserts(execution_id: str, pages: Pages) -> list[Statement]:
    """The statements merging execution ``execution_id``'s ``pages`` into ``wf_step_pages``."""
    rows = [
        (execution_id, phase_of(block), int(block[2:]), "{" + ",".join(page) + "}")
        for block, page in pages.items()
    ]
    return inserts("wf_step_pages", _PAGE_COLUMNS, _PAGE_CONFLICT, rows)
