"""The timeline page's actions: cancel, send an event, restart from a step.

One body format for every server that mounts the page (``serve --app`` and the
example Worker), so the page's script is the same everywhere:

===========  =============================================  ===============================
verb         body                                           answer
===========  =============================================  ===============================
``cancel``   ``{"reason": str?}``                           ``{"cancelled": bool}``
``event``    ``{"type": str, "payload": any?, "id": str?}``  ``{"accepted": bool}``
``restart``  ``{"from_step": str, "execution_id": str?}``   ``{"execution_id": str}`` (new)
===========  =============================================  ===============================

Bad bodies raise :class:`~workkit_workflow.errors.InvalidRequestError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..engine import _journal as jn
from ..errors import InvalidRequestError

VERBS = ("cancel", "event", "restart")
MAX_TEXT = 500


@dataclass(frozen=True)
class Action:
    verb: str
    text: str | None = None
    """The cancel reason, the event type or the step to restart from."""
    payload: Any = None
    ident: str | None = None
    """The event id, or the restarted execution's id."""


def _text(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or not jn.is_unicode(value):
        raise InvalidRequestError(
            f"{key!r} must be a non-empty string of at most {MAX_TEXT} characters", field=key
        )
    return value


def _only(body: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise InvalidRequestError(
            f"unknown field {extra[0]!r} (allowed: {', '.join(sorted(allowed))})", field=extra[0]
        )


def parse_action(verb: str, body: Mapping[str, Any], *, extra: frozenset[str] = frozenset()) -> Action:
    """Check ``body`` for ``verb``; ``extra`` names fields a server reads itself (``wait``)."""
    if verb == "cancel":
        _only(body, {"reason", *extra})
        return Action(verb, _text(body, "reason"))
    if verb == "event":
        _only(body, {"type", "payload", "id", *extra})
        return Action(verb, _text(body, "type", required=True), body.get("payload"), _text(body, "id"))
    if verb == "restart":
        _only(body, {"from_step", "execution_id", *extra})
        return Action(verb, _text(body, "from_step", required=True), ident=_text(body, "execution_id"))
    raise InvalidRequestError(f"unknown action {verb!r} (one of {', '.join(VERBS)})", status=404)


async def perform(client: Any, execution_id: str, action: Action) -> dict[str, Any]:
    """Run ``action`` through a :class:`~workkit_workflow.DurableWorkflows` client."""
    handle = client.execution(execution_id)
    if action.verb == "cancel":
        return {"cancelled": bool(await handle.cancel(action.text))}
    if action.verb == "event":
        assert action.text is not None
        accepted = await handle.send_event(action.text, action.payload, event_id=action.ident)
        return {"accepted": bool(accepted)}
    assert action.text is not None
    restarted = await client.restart(
        execution_id, from_step=action.text, new_execution_id=action.ident, wait=False
    )
    return {"execution_id": restarted.execution_id}
