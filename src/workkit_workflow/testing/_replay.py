"""The replay check in your own tests: does this code still replay that journal?

Keep journals of real executions next to your tests (``await
handle.export()``, or ``workkit-workflow export ID --out FILE``), and check
every change against them, as this repository does with ``tests/golden``::

    from workkit_workflow.testing import check_replay

    def test_order_flow_still_replays_production_journals():
        for path in Path("tests/journals").glob("*.json"):
            report = check_replay(order_flow, path)
            assert report.ok, report.describe()

No step handler runs: the journal answers every operation.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from ..definitions._workflow import Workflow
from ..engine._export import StoredJournal, read_export
from ..engine._replay_check import ReplayReport, check_journal

JournalSource = StoredJournal | dict[str, Any] | list[dict[str, Any]] | str | os.PathLike[str]
"""An export document, a golden storage snapshot (``{"records": ...}``), the path
of a JSON file holding either, or the entries ``handle.journal()`` returned."""


def load_journal(source: JournalSource, *, input: Any = None) -> StoredJournal:
    """The journal ``source`` holds. A list of entries has no meta: ``input`` is
    the workflow input its replay gets."""
    if isinstance(source, StoredJournal):
        return source
    if isinstance(source, list):
        main = {int(e["op"]): e for e in source if e.get("phase", "main") == "main"}
        return StoredJournal("(entries)", {"input": input}, {}, main)
    if isinstance(source, dict):
        return read_export(source)
    path = Path(source)
    return read_export(json.loads(path.read_text(encoding="utf-8")), source=str(path))


async def check_replay_async(
    workflow: Workflow, journal: JournalSource, *, input: Any = None
) -> ReplayReport:
    """:func:`check_replay` for a test that already runs an event loop."""
    return await check_journal(workflow, load_journal(journal, input=input))


def check_replay(workflow: Workflow, journal: JournalSource, *, input: Any = None) -> ReplayReport:
    """Replay ``journal`` against ``workflow`` (whatever version the journal names)
    without running a handler. ``report.ok``; else ``report.mismatch`` (a
    ``ReplayMismatchError``: ``position``, ``expected``, ``found``) or
    ``report.error``, and ``report.describe()`` says it in one line.

    From a plain ``def`` test; an ``async def`` test awaits
    :func:`check_replay_async` instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(check_replay_async(workflow, journal, input=input))
    raise RuntimeError("check_replay() runs its own event loop: in an async test, await check_replay_async()")
