"""What a local object instance runs on: its host (the ``ctx``) and its storage.

Both serve one object of a :class:`~workkit_workflow.local.LocalNamespace`, which
they reach through the small :class:`Owner` protocol below.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..engine._ports import KEEP_ALARM, PLAIN_CONTEXT, Clock, Namespace, StorageReadError, WireResponse
from ._backends import Backend

_T = TypeVar("_T")


class Owner(Protocol):
    """What a host and its storage use of their namespace."""

    clock: Clock
    backend: Backend
    stats: StorageStats
    faults: Callable[[str | None, str, Mapping[str, Any]], bool] | None
    write_hook: Callable[[str, Mapping[str, str], Sequence[str]], None] | None

    def evict(self, name: str) -> None: ...

    async def request(
        self,
        name: str,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> WireResponse: ...

    def _object_idle(self, since: float) -> None: ...

    def _alarm_recorded(self, obj: str, at: float | None) -> None: ...

    def _turns(self, loop: asyncio.AbstractEventLoop | None) -> int: ...


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

    commits_at_call = True
    """``commit`` writes before it returns, and what it returns raises no ``Exception``
    when awaited (only the object's death): the engine's write then needs no coroutine
    of its own around it (``ExecutionState.write``)."""

    def __init__(self, host: LocalHost) -> None:
        self._host = host
        self._ns = host.namespace
        self._obj = host.name

    def _gate(self) -> Awaitable[None]:
        self._host.check_alive()
        return self._turns()

    @types.coroutine
    def _turns(self) -> Generator[None, None, None]:
        # Another request can run at every storage await, as measured on
        # Cloudflare from Python (one ready to run: ``LocalNamespace._turns``).
        # A bare ``yield`` is what ``asyncio.sleep(0)`` does, without its two
        # frames for every in-flight storage call.
        turns = self._ns._turns(self._host.loop)
        while turns:
            yield
            turns -= 1
        self._host.check_alive()

    async def get(self, key: str) -> str | None:
        await self._gate()
        self._ns.stats.reads += 1
        return _read(self._ns.backend.get_many, self._obj, [key]).get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        await self._gate()
        self._ns.stats.reads += 1
        return _read(self._ns.backend.get_many, self._obj, list(keys))

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
        return _read(self._ns.backend.list, self._obj, prefix, start, end, limit, reverse)

    def commit(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> Awaitable[None]:
        # The write is issued (and durable) at the call, before the await, as a put
        # issued on Cloudflare is visible to later reads at once. A plain function
        # returning the turns to await: no coroutine frame for the hot path's write.
        self._host.check_alive()
        size = 0
        for key, value in puts.items():
            if not isinstance(value, str):
                raise TypeError(f"storage value for {key!r} must be str, got {type(value).__name__}")
            # An ASCII string (a journal record, nearly always) is as long as its UTF-8 bytes.
            size += len(key) + (len(value) if value.isascii() else len(value.encode()))
        ns = self._ns
        if ns.write_hook is not None:
            ns.write_hook(self._obj, puts, deletes)
        ns.backend.commit(self._obj, puts, deletes, alarm)
        stats = ns.stats
        stats.writes += 1
        stats.bytes_written += size
        if alarm is not KEEP_ALARM:
            stats.alarm_sets += 1
            ns._alarm_recorded(self._obj, alarm)
        return self._turns()

    async def get_alarm(self) -> float | None:
        await self._gate()
        if self._host.in_alarm_handler:
            return None
        return _read(self._ns.backend.get_alarm, self._obj)

    def set_alarm(self, at: float | None) -> Awaitable[None]:
        return self.commit({}, (), at)


class LocalHost:
    """The ``ctx`` a local object instance gets: storage, clock, background tasks."""

    is_workkit_host = True

    def __init__(self, namespace: Owner, object_name: str) -> None:
        self.namespace = namespace
        self.name = object_name
        self.object_name: str | None = object_name
        self.clock: Clock = namespace.clock
        self.peers: Namespace | None = namespace
        """Its own namespace: objects reach each other through it, as through a binding."""
        self.alive = True
        self.in_alarm_handler = False
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop its tasks run on (storage looks at it to decide on a turn)."""
        self.idle_since = namespace.clock.now()
        """When the last task of this instance finished (namespace clock)."""
        self.tasks: dict[asyncio.Task[Any], asyncio.Future[Any] | None] = {}
        """Its running tasks, each with the future its caller awaits if it serves a
        request (``serve``)."""
        self.storage = LocalStorage(self)
        self.instance: Any = None
        """The object instance it hosts (the namespace's live objects are their hosts: one
        object less per live instance)."""
        self.alarm_task: asyncio.Task[None] | None = None
        """The instance's alarm handler while it runs."""
        self.alarm_written = False
        """Storage took an alarm for this object while its alarm handler ran."""
        self.faults: Callable[..., None] | None = self._fault if namespace.faults is not None else None

    def check_alive(self) -> None:
        if not self.alive:
            raise ObjectEvicted(self.object_name)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        if not self.alive:
            coro.close()
            raise ObjectEvicted(self.object_name)
        # Not create_task(context=): Pyodide's WebLoop (the local runtime inside a Worker)
        # does not take it.
        loop = self.loop = asyncio.get_running_loop()
        task = loop.create_task(coro)
        self.tasks[task] = None
        task.add_done_callback(self, context=PLAIN_CONTEXT)
        return task

    def serve(self, coro: Coroutine[Any, Any, Any]) -> tuple[asyncio.Task[Any], asyncio.Future[Any]]:
        """Run a request's handler as a task of this instance; the future takes the
        task's outcome. A caller that gives up cancels the future, not the handler
        (as on Cloudflare, where a disconnected client does not stop the object)."""
        task = self.spawn(coro)
        reply: asyncio.Future[Any] = task.get_loop().create_future()
        self.tasks[task] = reply
        return task, reply

    def forget(self, task: asyncio.Task[Any]) -> None:
        """The caller of ``serve`` no longer waits for ``task``."""
        if task in self.tasks:
            self.tasks[task] = None

    def busy(self) -> bool:
        return any(not task.done() for task in self.tasks)

    def __call__(self, task: asyncio.Task[Any]) -> None:
        """The done callback of each of its tasks (the host itself, not a bound method of
        it: one object less kept per instance, and every full garbage collection walks
        each live object)."""
        self._reap(task)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        reply = self.tasks.pop(task, None)
        if self.alive and not self.busy():
            self.idle_since = self.clock.now()
            self.namespace._object_idle(self.idle_since)
        if reply is not None and not reply.done():
            _settle(reply, task)
        # A task killed with its object has no one left to look at it.
        if not task.cancelled() and isinstance(task.exception(), (ObjectEvicted, SimulatedCrash)):
            return

    def _fault(self, point: str, **info: Any) -> None:
        hook = self.namespace.faults
        if hook is not None and hook(self.object_name, point, info):
            self.namespace.evict(self.name)
            raise SimulatedCrash(point, info)


def _read(call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)``, a read of the backend; its failure as the port says
    (:class:`StorageReadError`)."""
    try:
        return call(*args)
    except Exception as exc:
        raise StorageReadError(exc) from exc


def _settle(reply: asyncio.Future[Any], task: asyncio.Task[Any]) -> None:
    """Give ``reply`` the outcome of ``task``, which has ended."""
    if task.cancelled():
        reply.cancel()
    elif (exc := task.exception()) is not None:
        reply.set_exception(exc)
    else:
        reply.set_result(task.result())
