"""Live state: values a workflow publishes with ``ctx.set_state(key, value)`` for any
caller to read (``handle.state()``) while it runs and after it settles.

``set_state`` is a journal operation (kind ``state``, named by its key), so
replay checks its order like any other operation; the same commit that journals
it writes the value record ``ls:<key>``, so the value is readable as soon as the
call returns. On replay the operation finds its journal entry and writes
nothing: the stored value stays what the first run wrote (the last ``set_state``
of a key wins, as it did then).
"""

from __future__ import annotations

from typing import Any, Final

from ..definitions._steps import check_name
from ..errors import DefinitionError, InvalidRequestError
from . import _journal as jn
from ._state import ExecutionState

PREFIX: Final = "ls:"
"""Storage prefix of the value records: ``ls:<key>``."""


def record_key(key: str) -> str:
    return PREFIX + key


def encode(key: str, op: int, phase: str, text: str, now: float) -> str:
    """The value record; ``text`` is the value's checked JSON, spliced in as is."""
    head = jn.dumps({"v": jn.VERSION, "key": key, "op": op, "phase": phase, "updated_at": now})
    record = head[:-1] + ',"value":' + text + "}"
    jn.check_size(record_key(key), record, what=f"state {key!r}")
    return record


async def read(execution: ExecutionState, key: str | None = None) -> dict[str, Any]:
    """``{"state": {key: value}}``, or for one key ``{"key", "found", "value"}``."""
    await execution.ensure_loaded()
    execution.require()
    if key is not None:
        try:
            check_name(key, "state key")
        except DefinitionError as exc:
            raise InvalidRequestError(exc.message) from None
        text = await execution.storage.get(record_key(key))
        if text is None:
            return {"key": key, "found": False, "value": None}
        return {"key": key, "found": True, "value": jn.decode_record(record_key(key), text).get("value")}
    found = await execution.storage.list(prefix=PREFIX)
    values = {k[len(PREFIX) :]: jn.decode_record(k, text).get("value") for k, text in sorted(found.items())}
    return {"state": values}
