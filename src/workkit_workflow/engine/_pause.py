"""Whether an execution is paused, and how its status reads while it is.

A paused execution carries ``state["paused"] = {"at": <when>, "status": <status
to restore>}`` and ``state["status"] == "paused"``. The status it had (or is
given meanwhile: a step that fails while paused moves it to ``failed``) is kept
in ``paused["status"]`` and restored when it continues. Pure functions over the
state record, so the write path (``_state``) and the phase runner can ask
without importing the requests that pause and continue (``_control``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PAUSED = "paused"


def is_paused(state: Mapping[str, Any] | None) -> bool:
    """Paused, and not being cancelled (a cancel ends the pause of the main phase, so
    that compensation runs; a compensation that runs after a cancel can be paused)."""
    if not state or not state.get("paused"):
        return False
    return state.get("cancel_requested_at") is None or state.get("phase") != "main"


def hold_status(previous: Mapping[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """The state a write leaves, keeping ``paused`` as the status while paused.

    A status set while paused (``failed`` by a step that finished meanwhile)
    becomes the one continuing restores; settling (phase ``done``) ends the pause.
    """
    pause = state.get("paused")
    if not pause:
        return state
    if state.get("phase") == "done":
        state["paused"] = None
        if state.get("status") == PAUSED:
            state["status"] = pause["status"]  # settled by a write that left the status alone
        return state
    if previous.get("paused") and state.get("status") != PAUSED:
        state["paused"] = {**pause, "status": state["status"]}
        state["status"] = PAUSED
    return state
