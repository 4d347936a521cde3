"""``LocalNamespace``: a faithful stand-in for a Durable Object namespace binding.

Use it wherever ``env.WORKFLOW_DO`` goes. It runs the very same
``WorkflowExecutionDO`` code with the semantics measured on Cloudflare:

* one live instance per object name; in-memory state is lost on eviction,
  committed storage is not;
* another request ready to run gets a turn at every storage ``await``
  (``interleave="storage"``, the default; an ``await`` with nothing else ready
  skips its loop turn, at most 15 in a row), or at random extra points
  (``"chaos"``) to flush out races;
* one alarm per object, delivered at least once after its time; a handler that
  raises is retried (about 2, 4, 8, 16, 32, 64 s), then the alarm is dropped;
* opening a namespace on an existing SQLite file delivers the alarms that were
  pending when the last process died: interrupted executions carry on. Nothing
  else is scanned at start-up, as on Cloudflare;
* one SQLite file has one owner: a second ``LocalNamespace`` on it (in this
  process or another) raises :class:`DatabaseInUseError` (see ``_lock``);
* an object idle for ``idle_eviction`` seconds (no request, alarm handler or
  task of its own running) is evicted, as Cloudflare does after about 10 s, so
  a long session keeps only busy objects in memory;
* when storage cannot record an alarm's retry or removal (disk full), the
  alarm is held back in memory with a growing delay instead of being
  redelivered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from ..engine._journal import dumps, loads
from ..engine._ports import Cancellable, Clock, SystemClock, WireRequest, WireResponse
from ..errors import TransportError
from ._alarm_loop import AlarmLoop, _Hold
from ._backends import Backend, MemoryBackend, SqliteBackend
from ._host import LocalHost, ObjectEvicted, SimulatedCrash, StorageStats
from ._lock import FileLock, lockable

DEFAULT_IDLE_EVICTION = 10.0
"""Seconds an object may sit idle before it is evicted (Cloudflare: about 10 s)."""


MAX_SKIPPED_TURNS = 15
"""Storage awaits in a row that go without their loop turn while nothing else is
ready to run (``interleave="storage"``): the loop still polls for I/O and runs
due timers at least every 16th storage await."""

FaultPredicate = Callable[[str | None, str, Mapping[str, Any]], bool]


def _encoded(body: Any) -> bytes:
    """A request's body as the bytes ``stub.fetch`` sends: JSON text (none for None)."""
    if body is None:
        return b""
    try:
        return dumps(body).encode()  # the package's codec: its C encoder, made once
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        # What it refuses (NaN, a lone surrogate, a cycle) ``json`` writes, or refuses,
        # as it always did: the object answers it with its own error.
        return json.dumps(body).encode()


def _through_json(body: Any) -> Any:
    """``body`` copied through JSON text, as a response crosses to its caller."""
    try:
        text = dumps(body)
    except (TypeError, ValueError, RecursionError):
        return json.loads(json.dumps(body))
    return loads(text)


class LocalNamespace(AlarmLoop):
    """A local Durable Object namespace running ``WorkflowExecutionDO`` objects.

    ``path=None`` keeps storage in memory (it survives eviction, not the
    process); a path keeps it in a SQLite file, which this namespace owns until
    ``close()`` (:class:`DatabaseInUseError` if another one holds it). ``clock``
    defaults to the system clock; pass a :class:`VirtualClock` to skip time.

    ``idle_eviction`` is how long (seconds, on ``clock``) an object with nothing
    running stays in memory; ``None`` keeps every object until closed.
    Eviction, like alarm delivery, is done by the background loop, so it is off
    with ``deliver_alarms=False``.
    """

    def __init__(
        self,
        path: str | None = None,
        clock: Clock | None = None,
        *,
        object_class: Any = None,
        env: Any = None,
        interleave: str = "storage",
        seed: int | None = None,
        synchronous: str = "FULL",
        faults: FaultPredicate | None = None,
        deliver_alarms: bool = True,
        idle_eviction: float | None = DEFAULT_IDLE_EVICTION,
    ) -> None:
        if interleave not in ("storage", "chaos", "none"):
            raise ValueError("interleave must be 'storage', 'chaos' or 'none'")
        if idle_eviction is not None and not idle_eviction >= 0:
            raise ValueError("idle_eviction must be a number of seconds >= 0, or None")
        if object_class is None:
            from ..cloudflare._object import WorkflowExecutionDO

            object_class = WorkflowExecutionDO
        self.path = path
        self.clock: Clock = clock or SystemClock()
        self.object_class = object_class
        self.env = env
        self.interleave = interleave
        self.faults = faults
        self.deliver_alarms = deliver_alarms
        self.idle_eviction = idle_eviction
        self._lock = FileLock(path) if path is not None and lockable(path) else None
        try:
            self.backend: Backend = (
                MemoryBackend() if path is None else SqliteBackend(path, synchronous=synchronous)
            )
        except BaseException:
            self._release()
            raise
        self.stats = StorageStats()
        self._rng = random.Random(seed)
        self._skipped = 0
        """Storage awaits in a row that skipped their turn (see :meth:`_turns`)."""
        self._live: dict[str, LocalHost] = {}
        self._alarm_loop: asyncio.Task[None] | None = None
        self._alarm_event: asyncio.Event | None = None
        self._retries: dict[str, int] = {}
        self._holds: dict[str, _Hold] = {}
        self._planned: float | None = None
        """When the background loop looks again by itself (None: only when woken)."""
        self._look: Cancellable | None = None
        """The timer of that look (``_plan``)."""
        self._looking = False
        """Whether the loop is looking at the stored alarms now (it then plans its next look)."""
        self._eviction_due: float | None = None
        """No object can be due for eviction before this (None: none is idle)."""
        self._closed = False
        self.write_hook: Callable[[str, Mapping[str, str], Sequence[str]], None] | None = None

    # -- the namespace API --------------------------------------------------

    def id_from_name(self, name: str) -> str:
        return name

    def request(
        self,
        name: str,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> Coroutine[Any, Any, WireResponse]:
        """Send one request to the object ``name``, as ``stub.fetch`` would.

        A plain function returning ``fetch``'s coroutine: one frame less for every
        request in flight. The body is encoded at the call."""
        self._start()
        return self.fetch(
            name, WireRequest(method=method, path=path, query=dict(query or {}), body=_encoded(body))
        )

    async def fetch(self, name: str, request: WireRequest) -> WireResponse:
        """Deliver a raw request (any bytes) to the object ``name``."""
        self._start()
        host = self._instance(name)
        task, reply = host.serve(host.instance.fetch(request))
        del request  # not held here while the object serves it (an execution's whole run)
        try:
            response: WireResponse = await reply
        except (asyncio.CancelledError, ObjectEvicted, SimulatedCrash):
            if task.cancelled() or not host.alive:
                raise TransportError(f"the object {name!r} was reset while serving the request") from None
            raise
        finally:
            host.forget(task)
        # The body crosses a process boundary on Cloudflare: copy it through JSON.
        return WireResponse(response.status, _through_json(response.body))

    def _instance(self, name: str) -> LocalHost:
        """The live instance of ``name``, made if there is none: its host."""
        host = self._live.get(name)
        if host is None:
            host = LocalHost(self, name)
            host.instance = self.object_class(host, self.env)
            self._live[name] = host
        return host

    # -- failures ------------------------------------------------------------

    def evict(self, name: str) -> None:
        """Kill the live instance of ``name``: its tasks stop, its memory is gone."""
        live = self._live.pop(name, None)
        if live is None:
            return
        live.alive = False
        current = asyncio.current_task() if _loop_running() else None
        for task in list(live.tasks):
            if task is not current:
                task.cancel()

    def evict_all(self) -> None:
        for name in list(self._live):
            self.evict(name)

    def live_objects(self) -> list[str]:
        return sorted(self._live)

    # -- interleaving -------------------------------------------------------------

    def _turns(self, loop: asyncio.AbstractEventLoop | None) -> int:
        """How many times a storage await on ``loop`` lets the event loop run something else."""
        if self.interleave == "storage":
            # A turn while nothing else is ready lets nothing else run: it is only a
            # loop iteration and a poll for I/O (a tenth of a step's CPU on SQLite).
            # CPython's loops show their ready queue (any other loop always turns).
            ready = getattr(loop, "_ready", None)
            if ready is not None and not ready and self._skipped < MAX_SKIPPED_TURNS:
                self._skipped += 1
                return 0
            self._skipped = 0
            return 1
        if self.interleave == "none":
            return 0
        return self._rng.randint(0, 4)

    # -- lifecycle ------------------------------------------------------------------

    async def idle(self, timeout: float = 30.0, *, name: str | None = None) -> None:
        """Wait until no request or alarm handler runs (of object ``name``, or of
        any object), for tests, demos and the CLI. ``timeout`` is real seconds."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            if name is None:
                lives = list(self._live.values())
            else:
                lives = [self._live[name]] if name in self._live else []
            busy = [t for live in lives for t in live.tasks if not t.done()]
            if not busy:
                return
            if loop.time() >= end:
                raise TimeoutError("objects still busy")
            await asyncio.wait(busy, timeout=max(end - loop.time(), 0.0))

    def advertise(self, address: str | None) -> None:
        """Publish the address (``http://host:port``) this owner answers on, in the
        SQLite file's lock file, so other processes go through it."""
        if self._lock is not None:
            self._lock.advertise(address)

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    async def close(self) -> None:
        """Stop alarm delivery, kill live objects and close storage."""
        if self._closed:
            return
        self._closed = True
        if self._alarm_loop is not None:
            self._alarm_loop.cancel()
            with contextlib.suppress(BaseException):
                await self._alarm_loop
        tasks = [t for live in self._live.values() for t in live.tasks]
        self.evict_all()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        try:
            self.backend.close()
        finally:
            self._release()

    async def __aenter__(self) -> LocalNamespace:
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
