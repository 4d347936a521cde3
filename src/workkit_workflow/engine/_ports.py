"""The small async ports the engine talks to, and the plain request/response types.

The core (definitions, journal, engine, execution object) depends only on
these. Adapters implement them: Durable Object storage under Pyodide
(``_cloudflare``), SQLite and memory for the local runtime (``local``).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class _Keep:
    """Sentinel: leave the alarm as it is."""

    def __repr__(self) -> str:
        return "KEEP_ALARM"


KEEP_ALARM: Any = _Keep()


class StorageReadError(Exception):
    """A read of the object's storage failed (a disk error, the runtime's storage refusing).

    The ports raise it from ``get``, ``get_many``, ``list`` and ``get_alarm``, so that a
    request that meets it is answered 503 ``storage_unavailable`` (retryable: nothing was
    written), as a failed write is, not 500 ``internal_error``; a run that meets it retries
    on its alarm. An ``Exception``: code that guards against any failure still sees it."""

    what = "read"

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"storage read failed: {cause!r}")
        self.cause = cause


@runtime_checkable
class Storage(Protocol):
    """Transactional key-value storage of one Durable Object; values are JSON text.

    ``commit`` is the one write the engine uses on its hot path: every put,
    delete and the alarm change land atomically, or none does. A port whose ``commit``
    writes before it returns, and whose awaitable then raises no ``Exception``, may say
    so with a class attribute ``commits_at_call = True`` (the local runtime's does):
    the engine then awaits it with no coroutine of its own around it. A port may also have
    ``commit_now(puts) -> bool``: a commit of puts alone (nothing deleted, the alarm kept)
    made before it returns, True; or False, with nothing written, and the engine calls
    ``commit`` (the Durable Object's SQL journal makes a step's commit so, with no await).
    A read that fails raises :class:`StorageReadError`.
    """

    async def get(self, key: str) -> str | None: ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]: ...

    async def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, str]: ...

    async def commit(
        self,
        puts: Mapping[str, str],
        deletes: Sequence[str] = (),
        alarm: float | _Keep | None = KEEP_ALARM,
    ) -> None:
        """Write ``puts``, remove ``deletes`` and set (float epoch seconds), clear
        (``None``) or keep the alarm, in one atomic write."""
        ...

    async def get_alarm(self) -> float | None: ...

    async def set_alarm(self, at: float | None) -> None: ...


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


class Clock(Protocol):
    """Wall time and waiting, injectable so tests can skip time.

    A clock may also offer ``call_later(seconds, callback) -> Cancellable`` (both of the
    package's do): the outboxes' deliveries then time out without a task of their own
    (``engine._outbox.Delivery._within``); without it they sleep on ``sleep``."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None: ...


PLAIN_CONTEXT = contextvars.Context()
"""An empty context for the engine's and the runtimes' own callbacks (a task's end, a
deferred flush): they read no context variable, so they need no copy of the caller's,
which would be one more object to collect for each of them."""


def _now_to_the_millisecond() -> float:
    # Milliseconds, as Cloudflare's clock (``Date.now()``) and its alarms have them:
    # every journal entry stores instants, and a millisecond's shorter text costs
    # less to write and to read back (a full-precision float is a third of a
    # replayed step's decoding).
    return (time.time_ns() + 500_000) // 1_000_000 / 1000


_LAST_READING: tuple[float, float] = (-1.0, -1.0)
"""The last reading of :func:`_now_from_javascript` and its instant (one tuple, so a
reader never pairs a reading with another's instant)."""


def _now_from_javascript() -> float:
    """:func:`_now_to_the_millisecond` under Pyodide, where ``time.time()`` is JavaScript's
    ``Date.now()``: whole milliseconds, which on Cloudflare do not move while code runs. So
    a reading is mostly the last one, whose rounding is kept: the integer arithmetic of the
    nanoseconds' rounding costs twice the clock's call there (a step reads it twice)."""
    global _LAST_READING
    reading = time.time()
    last = _LAST_READING
    if reading == last[0]:
        return last[1]
    instant = round(reading * 1000) / 1000
    _LAST_READING = (reading, instant)
    return instant


_NOW = _now_from_javascript if sys.platform == "emscripten" else _now_to_the_millisecond


class SystemClock:
    """The real clock, to the millisecond, and ``asyncio.sleep``."""

    now = staticmethod(_NOW)
    """A plain function, not a method: an execution keeps ``clock.now`` to call it, and a
    bound method kept is one more object per live execution for the collector to walk."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    @staticmethod
    def call_later(seconds: float, callback: Callable[[], None]) -> Cancellable:
        """``callback`` once ``seconds`` passed (a timeout, with no task of its own)."""
        return asyncio.get_running_loop().call_later(max(seconds, 0.0), callback, context=PLAIN_CONTEXT)


def call_later(
    clock: Clock,
    seconds: float,
    callback: Callable[[], None],
    spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
) -> Cancellable:
    """``callback`` once ``seconds`` passed on ``clock``, with no task of its own where the
    clock has ``call_later``, else a task ``spawn`` starts that sleeps on it; the returned
    object's ``cancel()`` drops it."""
    schedule = getattr(clock, "call_later", None)
    if schedule is not None:
        scheduled: Cancellable = schedule(seconds, callback)
        return scheduled
    timer = spawn(clock.sleep(seconds))
    timer.add_done_callback(lambda done: None if done.cancelled() else callback())
    return timer


class Host(Protocol):
    """What the hosting runtime gives an execution object besides storage."""

    storage: Storage
    clock: Clock
    object_name: str | None
    peers: Namespace | None
    """The namespace this object belongs to, to send requests to other objects of it
    (the mail outbox); None where the runtime gives none."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start background work owned by the object (cancelled if the object dies).
        A dead object is refused with its death, a ``BaseException`` (``coro`` closed)."""
        ...


def from_the_loop(call: Callable[..., Any], *args: Any) -> None:
    """``call(*args)`` in a callback the event loop runs itself (a timer, ``call_soon``),
    not in a task of the object's, so an eviction does not cancel it: an object that died
    since it was scheduled is refused what it starts with its death (``Host.spawn``), which
    has nowhere to go from here and nothing left to do. Anything else raises as it would."""
    try:
        call(*args)
    except (Exception, KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        return  # the object died after the callback was scheduled


@dataclass(frozen=True)
class WireRequest:
    """A request to the execution object, independent of the runtime."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


RUN_REQUEST = WireRequest("POST", "/execute")
"""What a request that drives its execution is logged as while the run goes on: its handler
holds this rather than the request (body, query, headers) for as long as the run lasts."""


@dataclass(frozen=True)
class WireResponse:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Namespace(Protocol):
    """A Durable Object namespace as the client sees it: send a request to the
    object named ``name`` and get its JSON answer."""

    async def request(
        self,
        name: str,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> WireResponse: ...
