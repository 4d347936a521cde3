"""The Storage port over a Durable Object's ``ctx.storage``.

Values cross into JavaScript only through ``_workers``' conversions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..definitions._json import check_size
from ..engine._ports import KEEP_ALARM, StorageReadError
from ._workers import to_js, to_py

_KEYS_PER_CALL = 128
"""Keys one ``storage.delete`` call accepts."""


def _text_map(value: Any) -> dict[str, str]:
    converted = to_py(value)
    if converted is None:
        return {}
    if not isinstance(converted, Mapping):
        raise TypeError(f"expected a Map from storage, got {type(converted).__name__}")
    return {str(k): v for k, v in converted.items() if isinstance(v, str)}


class DurableObjectStorage:
    """The Storage port over ``ctx.storage`` of a SQLite-backed Durable Object.

    Values are JSON text, the one value type that round-trips exactly (floats
    like ``2.0`` come back as ints otherwise). ``commit`` issues its put,
    delete and alarm calls without an ``await`` between them, which Cloudflare
    coalesces into one atomic write; sizes are checked before anything is
    issued, because a batch with an oversize value is half-written.
    """

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    async def get(self, key: str) -> str | None:
        value = to_py(await _read(lambda: self._storage.get(key)))
        return value if isinstance(value, str) else None

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        if not keys:
            return {}
        return _text_map(await _read(lambda: self._storage.get(to_js(list(keys)))))

    async def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, str]:
        options: dict[str, Any] = {}
        if prefix is not None:
            options["prefix"] = prefix
        if start is not None:
            options["start"] = start
        if end is not None:
            options["end"] = end
        if limit is not None:
            options["limit"] = limit
        if reverse:
            options["reverse"] = True
        result = await _read(lambda: self._storage.list(to_js(options)) if options else self._storage.list())
        return _text_map(result)

    async def commit(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> None:
        for key, value in puts.items():
            if not isinstance(value, str):
                raise TypeError(f"storage value for {key!r} must be str, got {type(value).__name__}")
            check_size(key, value, what=f"stored value {key!r}")
        # Issued back to back, awaited after: one implicit transaction on Cloudflare.
        # At most 128 keys per put or delete call (the runtime's limit): a commit that
        # stores the history kept in memory, or deletes a whole execution, takes several.
        pending = []
        items = list(puts.items())
        for at in range(0, len(items), _KEYS_PER_CALL):
            pending.append(self._storage.put(to_js(dict(items[at : at + _KEYS_PER_CALL]))))
        keys = list(deletes)
        for at in range(0, len(keys), _KEYS_PER_CALL):
            pending.append(self._storage.delete(to_js(keys[at : at + _KEYS_PER_CALL])))
        if alarm is not KEEP_ALARM:
            if alarm is None:
                pending.append(self._storage.deleteAlarm())
            else:
                pending.append(self._storage.setAlarm(_ms(alarm)))
        for promise in pending:
            await promise

    async def get_alarm(self) -> float | None:
        value = await read_alarm(self._storage)
        return None if value is None else float(value) / 1000.0

    async def set_alarm(self, at: float | None) -> None:
        if at is None:
            await self._storage.deleteAlarm()
        else:
            await self._storage.setAlarm(_ms(at))


async def _read(call: Callable[[], Any]) -> Any:
    """What ``call()``, a read of ``ctx.storage``, gives when awaited; its failure, as it is
    called or awaited, as the port says (:class:`StorageReadError`)."""
    try:
        return await call()
    except Exception as exc:
        raise StorageReadError(exc) from exc


async def read_alarm(storage: Any) -> Any:
    """``ctx.storage``'s alarm, in ms since the epoch, or None."""
    return to_py(await _read(storage.getAlarm))


def _ms(at: float) -> int:
    # Rounded up: an alarm that fires before the engine's wake-up time finds
    # nothing due and parks again at the same (rounded-down) millisecond.
    return math.ceil(round(at * 1000.0, 3))
