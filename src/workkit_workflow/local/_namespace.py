"""``LocalNamespace``: a faithful stand-in for a Durable Object namespace binding.

Use it wherever ``env.WORKFLOW_DO`` goes. It runs the very same
``WorkflowExecutionDO`` code with the semantics measured on Cloudflare:

* one live instance per object name; in-memory state is lost on eviction,
  committed storage is not;
* another request may run at every storage ``await`` (``interleave="storage"``,
  the default), or at random extra points (``"chaos"``) to flush out races;
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
import logging
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._ports import KEEP_ALARM, Clock, SystemClock, WireRequest, WireResponse
from ..errors import TransportError
from ._backends import Backend, MemoryBackend, SqliteBackend
from ._lock import FileLock, lockable

log = logging.getLogger("workkit_workflow.local")

ALARM_RETRIES = 6

HOLD_MAX_DELAY = 64.0
"""Longest in-memory hold of an alarm storage could not update (the runtime's last retry gap)."""

DEFAULT_IDLE_EVICTION = 10.0
"""Seconds an object may sit idle before it is evicted (Cloudflare: about 10 s)."""

EVICTION_BATCH = 0.05
"""An object may stay up to this fraction of ``idle_eviction`` longer, so one scan evicts many."""


class ObjectEvicted(BaseException):
    """Raised inside an object's tasks once it was evicted: its process is gone."""


class SimulatedCrash(BaseException):
    """Raised at an injected fault point; the object is evicted on the spot."""

    def __init__(self, point: str, info: Mapping[str, Any]) -> None:
        super().__init__(f"simulated crash at {point} {dict(info)}")
        self.point = point
        self.info = dict(info)


@dataclass
class StorageStats:
    """Counts of storage operations, for tests and benchmarks."""

    reads: int = 0
    lists: int = 0
    writes: int = 0
    bytes_written: int = 0
    alarm_sets: int = 0

    def reset(self) -> None:
        self.reads = self.lists = self.writes = self.bytes_written = self.alarm_sets = 0


class LocalStorage:
    """The Storage port of one live object instance over a backend."""

    def __init__(self, host: LocalHost) -> None:
        self._host = host
        self._ns = host.namespace
        self._obj = host.name

    async def _gate(self) -> None:
        # Another request can run at every storage await, as measured on
        # Cloudflare from Python.
        self._host.check_alive()
        await self._ns._yield_point()
        self._host.check_alive()

    async def get(self, key: str) -> str | None:
        await self._gate()
        self._ns.stats.reads += 1
        return self._ns.backend.get_many(self._obj, [key]).get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        await self._gate()
        self._ns.stats.reads += 1
        return self._ns.backend.get_many(self._obj, list(keys))

    async def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, str]:
        await self._gate()
        self._ns.stats.lists += 1
        return self._ns.backend.list(self._obj, prefix, start, end, limit, reverse)

    async def commit(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> None:
        # The write is issued (and durable) before the await, as a put issued on
        # Cloudflare is visible to later reads at once.
        self._host.check_alive()
        for key, value in puts.items():
            if not isinstance(value, str):
                raise TypeError(f"storage value for {key!r} must be str, got {type(value).__name__}")
        self._ns._before_write(self._obj, puts, deletes)
        self._ns.backend.commit(self._obj, puts, deletes, alarm)
        stats = self._ns.stats
        stats.writes += 1
        stats.bytes_written += sum(len(k) + len(v.encode()) for k, v in puts.items())
        if alarm is not KEEP_ALARM:
            stats.alarm_sets += 1
            self._ns._alarm_recorded(self._obj)
        await self._gate()

    async def get_alarm(self) -> float | None:
        await self._gate()
        if self._host.in_alarm_handler:
            return None
        return self._ns.backend.get_alarm(self._obj)

    async def set_alarm(self, at: float | None) -> None:
        await self.commit({}, (), at)


class LocalHost:
    """The ``ctx`` a local object instance gets: storage, clock, background tasks."""

    is_workkit_host = True

    def __init__(self, namespace: LocalNamespace, object_name: str) -> None:
        self.namespace = namespace
        self.name = object_name
        self.object_name: str | None = object_name
        self.clock: Clock = namespace.clock
        self.alive = True
        self.in_alarm_handler = False
        self.idle_since = namespace.clock.now()
        """When the last task of this instance finished (namespace clock)."""
        self.tasks: set[asyncio.Task[Any]] = set()
        self.storage = LocalStorage(self)
        self.faults: Callable[..., None] | None = self._fault if namespace.faults is not None else None

    def check_alive(self) -> None:
        if not self.alive:
            raise ObjectEvicted(self.object_name)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        if not self.alive:
            coro.close()
            raise ObjectEvicted(self.object_name)
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def busy(self) -> bool:
        return any(not task.done() for task in self.tasks)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if self.alive and not self.busy():
            self.idle_since = self.clock.now()
            self.namespace._object_idle(self.idle_since)
        # A task killed with its object has no one left to look at it.
        if not task.cancelled() and isinstance(task.exception(), (ObjectEvicted, SimulatedCrash)):
            return

    def _fault(self, point: str, **info: Any) -> None:
        hook = self.namespace.faults
        if hook is not None and hook(self.object_name, point, info):
            self.namespace.evict(self.name)
            raise SimulatedCrash(point, info)


@dataclass
class _Live:
    host: LocalHost
    instance: Any
    alarm_task: asyncio.Task[None] | None = None
    requests: set[asyncio.Task[Any]] = field(default_factory=set)


@dataclass
class _Hold:
    """An alarm storage could not reschedule or clear: not delivered before ``until``."""

    failures: int
    until: float


FaultPredicate = Callable[[str | None, str, Mapping[str, Any]], bool]


class LocalNamespace:
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
            from .._object import WorkflowExecutionDO

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
        self._live: dict[str, _Live] = {}
        self._alarm_loop: asyncio.Task[None] | None = None
        self._alarm_event: asyncio.Event | None = None
        self._retries: dict[str, int] = {}
        self._holds: dict[str, _Hold] = {}
        self._planned: float | None = None
        """When the background loop looks again by itself (None: only when woken)."""
        self._eviction_due: float | None = None
        """No object can be due for eviction before this (None: none is idle)."""
        self._closed = False
        self.write_hook: Callable[[str, Mapping[str, str], Sequence[str]], None] | None = None

    # -- the namespace API --------------------------------------------------

    def id_from_name(self, name: str) -> str:
        return name

    async def request(
        self,
        name: str,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> WireResponse:
        """Send one request to the object ``name``, as ``stub.fetch`` would."""
        self._start()
        raw = b"" if body is None else json.dumps(body).encode()
        return await self.fetch(
            name, WireRequest(method=method, path=path, query=dict(query or {}), body=raw)
        )

    async def fetch(self, name: str, request: WireRequest) -> WireResponse:
        """Deliver a raw request (any bytes) to the object ``name``."""
        self._start()
        live = self._instance(name)
        task = live.host.spawn(live.instance.fetch(request))
        live.requests.add(task)
        try:
            response: WireResponse = await asyncio.shield(task)
        except (asyncio.CancelledError, ObjectEvicted, SimulatedCrash):
            if task.cancelled() or not live.host.alive:
                raise TransportError(f"the object {name!r} was reset while serving the request") from None
            raise
        finally:
            live.requests.discard(task)
        # The body crosses a process boundary on Cloudflare: copy it through JSON.
        return WireResponse(response.status, json.loads(json.dumps(response.body)))

    def _instance(self, name: str) -> _Live:
        live = self._live.get(name)
        if live is None:
            host = LocalHost(self, name)
            live = _Live(host=host, instance=self.object_class(host, self.env))
            self._live[name] = live
        return live

    # -- failures ------------------------------------------------------------

    def evict(self, name: str) -> None:
        """Kill the live instance of ``name``: its tasks stop, its memory is gone."""
        live = self._live.pop(name, None)
        if live is None:
            return
        live.host.alive = False
        current = asyncio.current_task() if _loop_running() else None
        for task in list(live.host.tasks):
            if task is not current:
                task.cancel()

    def evict_all(self) -> None:
        for name in list(self._live):
            self.evict(name)

    def live_objects(self) -> list[str]:
        return sorted(self._live)

    # -- the background loop: alarms and idle eviction -------------------------

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError("this LocalNamespace is closed")
        loop = asyncio.get_running_loop()
        if self.deliver_alarms and (
            self._alarm_loop is None or self._alarm_loop.done() or self._alarm_loop.get_loop() is not loop
        ):
            self._alarm_event = asyncio.Event()
            self._alarm_loop = loop.create_task(self._background())

    async def start(self) -> None:
        """Start delivering alarms (also done by the first request)."""
        self._start()

    def _wake(self) -> None:
        if self._alarm_event is not None:
            self._alarm_event.set()

    def _object_idle(self, since: float) -> None:
        # Only wake the loop when this object's eviction comes before the loop's
        # next planned look: not a scan of every alarm after every request.
        if self.idle_eviction is None:
            return
        deadline = since + self.idle_eviction
        if self._eviction_due is None or deadline < self._eviction_due:
            self._eviction_due = deadline
        if self._planned is None or deadline < self._planned:
            self._wake()

    def _alarm_recorded(self, obj: str) -> None:
        # Storage took a new alarm for ``obj``: whatever it could not record
        # before is superseded, and the disk works again.
        self._holds.pop(obj, None)
        self._wake()

    async def _background(self) -> None:
        assert self._alarm_event is not None
        while not self._closed:
            self._alarm_event.clear()
            now = self.clock.now()
            try:
                fired, next_alarm = self._deliver_due(now)
            except Exception as exc:
                # Storage unreadable for a moment: look again shortly, not in a hot loop.
                log.warning("cannot read pending alarms: %r", exc)
                fired, next_alarm = False, now + 1.0
            if fired:
                await asyncio.sleep(0)
                continue
            wake_at = [t for t in (next_alarm, self._evict_idle(now)) if t is not None]
            self._planned = min(wake_at) if wake_at else None
            waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._alarm_event.wait())}
            if self._planned is not None:
                waits.add(asyncio.ensure_future(self.clock.sleep(self._planned - now)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._planned = None
                for waiter in waits:
                    waiter.cancel()

    def _deliver_due(self, now: float) -> tuple[bool, float | None]:
        """Fire every due alarm; return whether any fired and when the next is due."""
        busy = {name for name, live in self._live.items() if live.alarm_task and not live.alarm_task.done()}
        stored = self.backend.alarms()
        for obj in [o for o in self._holds if o not in stored]:
            del self._holds[obj]
        due: list[tuple[float, str]] = []
        upcoming: float | None = None
        for obj, at in stored.items():
            if obj in busy:
                continue
            hold = self._holds.get(obj)
            at = at if hold is None else max(at, hold.until)
            if at <= now:
                due.append((at, obj))
            elif upcoming is None or at < upcoming:
                upcoming = at
        for _, obj in sorted(due):
            self._fire(obj)
        return bool(due), upcoming

    def _evict_idle(self, now: float) -> float | None:
        """Evict objects idle for ``idle_eviction``; return when the next one would be."""
        if self.idle_eviction is None or self._eviction_due is None:
            return None
        if now < self._eviction_due:
            return self._eviction_due  # no scan of every live object on every wake-up
        soonest: float | None = None
        for name, live in list(self._live.items()):
            if live.host.busy():
                continue
            deadline = live.host.idle_since + self.idle_eviction
            if deadline <= now:
                log.debug("evicting idle object %s", name)
                self.evict(name)
            elif soonest is None or deadline < soonest:
                soonest = deadline
        if soonest is not None:
            # Evict in batches: objects that finish moments apart go in one scan.
            soonest = max(soonest, now + self.idle_eviction * EVICTION_BATCH)
        self._eviction_due = soonest
        return soonest

    def _fire(self, obj: str) -> None:
        live = self._instance(obj)
        scheduled = self.backend.get_alarm(obj)
        # getAlarm() is None inside the handler, but the alarm stays stored until the
        # handler succeeds: a process killed mid-handler gets it again on restart.
        live.alarm_task = live.host.spawn(self._run_alarm(live, obj, scheduled))
        live.alarm_task.add_done_callback(lambda task: self._unstarted_alarm(task, obj, scheduled))

    def _unstarted_alarm(self, task: asyncio.Task[None], obj: str, scheduled: float | None) -> None:
        # An object killed before its alarm handler's first step never ran it:
        # Cloudflare retries that alarm, so the emulation must not drop it.
        if task.cancelled() and not self._closed and self.backend.get_alarm(obj) is None:
            self._reschedule(obj, self._retries.get(obj, 0), scheduled)

    async def _run_alarm(self, live: _Live, obj: str, scheduled: float | None) -> None:
        retry = self._retries.get(obj, 0)
        live.host.in_alarm_handler = True
        try:
            await live.instance.alarm({"retryCount": retry, "isRetry": retry > 0})
        except (ObjectEvicted, SimulatedCrash, asyncio.CancelledError):
            # The object died mid-handler: Cloudflare retries the alarm.
            self._reschedule(obj, retry, scheduled)
            raise
        except Exception as exc:
            log.warning("alarm handler of %s raised %r", obj, exc)
            self._reschedule(obj, retry, scheduled)
            return
        finally:
            live.host.in_alarm_handler = False
            # An alarm set while the handler ran is due for delivery now.
            self._wake()
        if self.backend.get_alarm(obj) == scheduled and not self._record(obj, None):
            return  # still stored: delivered again once the hold expires
        self._retries.pop(obj, None)

    def _reschedule(self, obj: str, retry: int, scheduled: float | None) -> None:
        unchanged = self.backend.get_alarm(obj) in (None, scheduled)
        if retry >= ALARM_RETRIES:
            log.warning("alarm of %s dropped after %d retries", obj, retry)
            self._retries.pop(obj, None)
            if unchanged:
                self._record(obj, None)
            return
        if unchanged:
            delay = 2.0 ** (retry + 1) * (1.0 + self._rng.uniform(0.0, 0.25))
            self._record(obj, self.clock.now() + delay)
        self._retries[obj] = retry + 1
        self._wake()

    def _record(self, obj: str, alarm: float | None) -> bool:
        """Store the runtime's own change to ``obj``'s alarm; hold the alarm back if storage fails."""
        try:
            self.backend.commit(obj, {}, (), alarm)
        except Exception as exc:
            self._hold(obj, exc, alarm)
            return False
        self._holds.pop(obj, None)
        return True

    def _hold(self, obj: str, exc: Exception, wanted: float | None) -> None:
        # The stored alarm still says "due": without this, the loop would deliver
        # it again at once, and again, for as long as the disk stays full.
        previous = self._holds.get(obj)
        failures = 1 if previous is None else previous.failures + 1
        delay = min(2.0**failures, HOLD_MAX_DELAY) * (1.0 + self._rng.uniform(0.0, 0.25))
        until = max(self.clock.now() + delay, wanted or 0.0)
        self._holds[obj] = _Hold(failures, until)
        log.warning(
            "cannot update the alarm of %s (%r); delivering it again in %.1f s",
            obj,
            exc,
            until - self.clock.now(),
        )
        self._wake()

    # -- interleaving -------------------------------------------------------------

    async def _yield_point(self) -> None:
        if self.interleave == "none":
            return
        turns = 1 if self.interleave == "storage" else self._rng.randint(0, 4)
        for _ in range(turns):
            await asyncio.sleep(0)

    def _before_write(self, obj: str, puts: Mapping[str, str], deletes: Sequence[str]) -> None:
        if self.write_hook is not None:
            self.write_hook(obj, puts, deletes)

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
            busy = [t for live in lives for t in live.host.tasks if not t.done()]
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
        tasks = [t for live in self._live.values() for t in live.host.tasks]
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
