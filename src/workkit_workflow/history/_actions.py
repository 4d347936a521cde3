"""The timeline page's actions: cancel, send an event, restart from a step, pause,
continue, delete.

One body format for every server that mounts the page (``serve --app`` and the
example Worker), so the page's script is the same everywhere:

===========  =============================================  ===============================
verb         body                                           answer
===========  =============================================  ===============================
``cancel``   ``{"reason": str?}``                           ``{"cancelled": bool}``
``event``    ``{"type": str, "payload": any?, "id": str?}``  ``{"accepted": bool}``
``restart``  ``{"from_step": str, "execution_id": str?,``  ``{"execution_id": str}`` (new)
             ``"kind": str?, "occurrence": int?}``
``pause``    ``{}``                                         ``{"paused": bool}``
``unpause``  ``{}``                                         ``{"unpaused": bool}``
``delete``   ``{}``                                         ``{"deleted": true}``
===========  =============================================  ===============================

``cancel`` also takes ``"compensate": false`` (terminate without compensation).

Bad bodies raise :class:`~workkit_workflow.errors.InvalidRequestError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..engine import _journal as jn
from ..errors import InvalidRequestError

VERBS = ("cancel", "event", "restart", "pause", "unpause", "delete")
_CONTROL = ("pause", "unpause", "delete")
MAX_TEXT = 500


@dataclass(frozen=True)
class Action:
    verb: str
    text: str | None = None
    """The cancel reason, the event type or the step to restart from."""
    payload: Any = None
    ident: str | None = None
    """The event id, or the restarted execution's id."""
    options: Mapping[str, Any] | None = None
    """``compensate`` of a cancel; ``kind`` and ``occurrence`` of a restart."""


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
        _only(body, {"reason", "compensate", *extra})
        compensate = body.get("compensate", True)
        if not isinstance(compensate, bool):
            raise InvalidRequestError("'compensate' must be true or false", field="compensate")
        return Action(verb, _text(body, "reason"), options={"compensate": compensate})
    if verb == "event":
        _only(body, {"type", "payload", "id", *extra})
        return Action(verb, _text(body, "type", required=True), body.get("payload"), _text(body, "id"))
    if verb == "restart":
        _only(body, {"from_step", "execution_id", "kind", "occurrence", *extra})
        # Checked again, and explained, by the client's restart.
        cut = {"kind": _text(body, "kind") or "step", "occurrence": body.get("occurrence", 1)}
        if isinstance(cut["occurrence"], bool) or not isinstance(cut["occurrence"], int):
            raise InvalidRequestError("'occurrence' must be a whole number", field="occurrence")
        step = _text(body, "from_step", required=True)
        return Action(verb, step, ident=_text(body, "execution_id"), options=cut)
    if verb in _CONTROL:
        _only(body, set(extra))
        return Action(verb)
    raise InvalidRequestError(f"unknown action {verb!r} (one of {', '.join(VERBS)})", status=404)


async def perform(client: Any, execution_id: str, action: Action) -> dict[str, Any]:
    """Run ``action`` through a :class:`~workkit_workflow.DurableWorkflows` client."""
    handle = client.execution(execution_id)
    options = dict(action.options or {})
    if action.verb == "cancel":
        return {"cancelled": bool(await handle.cancel(action.text, **options))}
    if action.verb == "pause":
        return {"paused": bool(await handle.pause())}
    if action.verb == "unpause":
        return {"unpaused": bool(await handle.unpause())}
    if action.verb == "delete":
        await handle.delete()
        return {"deleted": True}
    if action.verb == "event":
        assert action.text is not None
        accepted = await handle.send_event(action.text, action.payload, event_id=action.ident)
        return {"accepted": bool(accepted)}
    assert action.text is not None
    restarted = await client.restart(
        execution_id, from_step=action.text, new_execution_id=action.ident, wait=False, **options
    )
    return {"execution_id": restarted.execution_id}
