"""What the client makes of the execution object's answers: the outcome of a request, or
its error, and the repeats of a request its storage refused for a moment."""

from __future__ import annotations

import asyncio
from typing import Any

from ..engine._ports import Namespace, WireResponse
from ..errors import TransportError, from_wire

STORAGE_RETRIES = (0.05, 0.25)
"""Seconds the client waits before sending a request again that the object refused with 503
``storage_unavailable`` (its storage failed a read or a write for a moment, and it wrote
nothing: the same request again is safe); after the last, the error is the caller's."""


def unavailable(response: WireResponse) -> bool:
    """Whether the object refused the request because its storage failed (it wrote nothing)."""
    error = response.body.get("error") if isinstance(response.body, dict) else None
    return response.status == 503 and isinstance(error, dict) and error.get("code") == "storage_unavailable"


async def send_again(namespace: Namespace, *request: Any) -> WireResponse:
    """``namespace.request(*request)`` sent again after each of ``STORAGE_RETRIES``, until the
    object answers otherwise. The request's arguments are passed, not captured: a closure
    would give every caller's frame a cell per variable it captures, held by each request in
    flight."""
    response = None
    for delay in STORAGE_RETRIES:
        await asyncio.sleep(delay)
        response = await namespace.request(*request)
        if not unavailable(response):
            break
    assert response is not None
    return response


def raise_for(response: WireResponse) -> dict[str, Any]:
    body = response.body
    if response.ok and isinstance(body, dict):
        return body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        raise from_wire(body["error"])
    raise TransportError(f"unexpected answer from the execution object: {response.status} {body!r}")
