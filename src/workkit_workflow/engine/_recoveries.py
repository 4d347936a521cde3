"""The recovery cap: an execution whose object keeps dying outside its steps is paused.

A *recovery* is an incarnation begun by an object instance that did not begin the one
before, while that one had neither parked nor settled (``state["driving"]``): the object
died under it (a deploy, an eviction, the runtime's CPU or memory limit). Most recoveries
are benign and go on where the journal stands. A crash that recurs at the same point,
on every wake-up, would loop for ever, one lease apart, each time billed up to the CPU
limit: a replay too heavy for one invocation, code between steps that never returns.

A step attempt that kills its object is journaled before it runs, and it is the step's
retry policy that caps it (``max_lost_attempts``, then ``attempt_lost``). What nothing
else caps is a death with no journal write between it and the one before. So the state
counts recoveries in a row that found the journal as the last one left it (its last
entry, key and text, in the phase being run: the *mark*); a recovery that finds it
moved starts the count again. Past the workflow's ``max_recoveries`` the execution is
paused, not failed: nothing is undone, an operator can deploy a fix and continue it
(``unpause``), which clears the count.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from . import _journal as jn
from ._pause import PAUSED
from ._ports import Storage

RECOVERY_LIMIT = "recovery_limit"
"""The code of the reason a recovery-capped execution carries while paused."""


async def journal_mark(storage: Storage, phase: str) -> str:
    """What a journal write would change: the last entry of ``phase``'s journal, its key
    and a checksum of its text ("" while the phase has none). One read, on a recovery only."""
    prefix = jn.prefix_of(phase)
    last = await storage.list(prefix=prefix, reverse=True, limit=1)
    for key, text in last.items():
        return f"{key}:{zlib.crc32(text.encode())}"
    return ""


def recovery_changes(state: Mapping[str, Any], mark: str, cap: int | None, now: float) -> dict[str, Any]:
    """The state's changes for an incarnation that recovers from one that died: the count
    of recoveries in a row at ``mark``, and, past ``cap`` (None: no cap), the pause."""
    previous = state.get("recoveries") or {}
    count = int(previous["count"]) + 1 if previous.get("mark") == mark else 1
    changes: dict[str, Any] = {"recoveries": {"count": count, "mark": mark}}
    # A cancel ends a pause of the main phase (``_pause``): its compensation runs instead.
    cancelling = state.get("cancel_requested_at") is not None and state.get("phase") == "main"
    if cap is not None and count > cap and not cancelling:
        changes.update(
            status=PAUSED,
            paused={
                "at": now,
                "status": state["status"],
                "reason": {
                    "code": RECOVERY_LIMIT,
                    "message": (
                        f"the execution's object died {count} times in a row with no journal "
                        f"write between (max_recoveries={cap}); fix what stops it, then unpause"
                    ),
                    "recoveries": count,
                },
            },
            driving=None,  # it parks in this write
        )
    return changes
