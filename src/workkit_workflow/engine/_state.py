"""One execution's state in memory, and the one path every write takes.

:class:`ExecutionState` caches the ``meta`` and ``state`` records: every change
goes through :meth:`~ExecutionState.write_state`, which updates the cache before
the write is issued, so concurrent requests never lose an update. Every write
goes through :meth:`~ExecutionState.write`: one atomic ``Storage.commit``
(puts, deletes and the alarm together) that also carries the operation
completions deferred by :meth:`~ExecutionState.defer` and what a journal
observer adds. It also holds what the phase runner reads between writes: the
event inbox and the recorded idempotent results.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from typing import Any, Protocol

from ..errors import ExecutionNotFoundError
from . import _journal as jn
from ._mail import Mail
from ._pause import hold_status
from ._plugins import JournalObserver
from ._ports import KEEP_ALARM, PLAIN_CONTEXT, Clock, Host, Storage
from ._signals import StorageFailure

FaultHook = Callable[..., None]
SettleHook = Callable[[Mapping[str, Any], Mapping[str, str]], Mapping[str, str]]
"""``hook(state, puts)``: records to add to the write that settles the execution."""


def _noop_fault(point: str, **info: Any) -> None:
    return None


@functools.cache
def _shared_rng() -> random.Random:
    """Retry jitter for object instances not given their own generator: seeding one from the
    OS costs about 30 us, which every new object instance would otherwise pay. Made on first
    use, never at import: Workers refuse entropy while a module is imported."""
    return random.Random()


class LiveRun(Protocol):
    """The phase run driving the execution now, as requests see it."""

    prefix: str
    current: dict[int, str]
    """The operations in flight, by position."""

    def stop(self) -> None: ...

    def deliver(self, event_type: str) -> None: ...

    def wake_parked(self) -> None: ...


class ExecutionState:
    """The cached records of one execution and its single write path."""

    def __init__(self, host: Host, *, rng: random.Random | None, faults: FaultHook | None) -> None:
        self.host = host
        self.storage: Storage = host.storage
        self.clock: Clock = host.clock
        self.now: Callable[[], float] = host.clock.now
        """The clock's time (its bound method: read twice per step)."""
        self.rng = rng or _shared_rng()
        self.fault: FaultHook = faults or _noop_fault
        self.faulting = faults is not None
        """Whether a fault hook is installed (the hot path skips building its arguments)."""
        self._commits_at_call = bool(getattr(self.storage, "commits_at_call", False))
        """Whether a write can skip its coroutine (see :meth:`write`)."""
        self.meta: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.loaded = False
        self._load_lock: asyncio.Lock | None = None
        """Held by the request loading the records; dropped once they are loaded."""
        self._pending: dict[str, str] = {}
        self._pending_steps: list[str] | None = [] if faults is not None else None
        """The names of the deferred completions, for the fault hook (kept only with one)."""
        self._flush_scheduled = False
        self._driving = False
        """Set while :meth:`deferring` runs a phase body: a completion the body defers then
        is flushed by the driver when the body suspends, not by a callback of its own."""
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop the deferred flush is scheduled on, looked up once: on CPython 3.11
        ``get_running_loop`` makes a ``getpid`` system call every time."""
        self._write_failure: BaseException | None = None
        self.inbox: dict[str, dict[str, Any]] = {}
        self.idempotent: dict[str, dict[str, Any]] = {}
        """The idempotent results a restart carried over (``i:`` records), by key hash."""
        self.keyed: dict[str, str] = {}
        """The journal's completed steps that have an idempotency key: the storage key of
        each one's entry, by key hash. The entry is read back only when a step asks for
        its key (:meth:`idempotent_output`), so the keys of a long journal hold no entry
        (nor output) in memory."""
        self._settled: asyncio.Event | None = None
        self.input: Any = None
        self.writes = 0
        self.observers: list[JournalObserver] = []
        """Journal observers (the mail outbox, the history projection), in the order
        their ``alarm_for`` is applied."""
        self.mail: Mail | None = None
        """The outbox of requests to other objects (set by ``ExecutionCore``)."""
        self.settle_hooks: list[SettleHook] = []
        """Called in the write that moves the execution to ``phase: done`` (a child's
        outcome for its parent is one)."""
        self.run: LiveRun | None = None
        """The phase run in progress, if any (set by the phases, read by requests)."""

    # -- plumbing ------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self.host.spawn(coro)

    @property
    def execution_id(self) -> str:
        return str((self.meta or {}).get("execution_id", ""))

    @property
    def workflow_name(self) -> str:
        return str((self.meta or {}).get("workflow", ""))

    @property
    def cancel_requested(self) -> bool:
        return bool(self.state and self.state.get("cancel_requested_at") is not None)

    # -- writes --------------------------------------------------------------

    def write(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> Awaitable[None]:
        """One atomic storage write, carrying any deferred step completions with it.

        Storage that writes at the call (``commits_at_call``: the local runtime's) is
        awaited as it is, with no coroutine of this method's around it: at thousands of
        executions in flight, every object held across the await is walked by the
        garbage collector. Its await can raise no ``Exception`` (the object's death is a
        ``BaseException``), so the outcome is known here."""
        if self._write_failure is not None:
            raise StorageFailure(self._write_failure)
        carried = bool(self._pending)
        steps: list[str] | None = None
        if carried:
            merged = self._pending
            merged.update(puts)
            self._pending = {}
            if self._pending_steps is not None:
                steps, self._pending_steps = self._pending_steps, []
        else:
            merged = dict(puts)
        for observer in self.observers:
            merged.update(observer.capture(merged))
            alarm = observer.alarm_for(alarm)
        self.writes += 1
        if not self._commits_at_call:
            return self._committed(merged, deletes, alarm, carried, steps)
        try:
            turns = self.storage.commit(merged, deletes, alarm)
        except Exception as exc:
            raise self._failed(exc, carried) from exc
        self._written(steps)
        return turns

    async def _committed(
        self,
        puts: Mapping[str, str],
        deletes: Sequence[str],
        alarm: Any,
        carried: bool,
        steps: list[str] | None,
    ) -> None:
        try:
            await self.storage.commit(puts, deletes, alarm)
        except Exception as exc:
            raise self._failed(exc, carried) from exc
        self._written(steps)

    def _written(self, steps: list[str] | None) -> None:
        """The write is durable: the observers deliver what it held; the fault hook
        may crash the object after the deferred completions it carried."""
        for observer in self.observers:
            observer.kick()
        if steps:
            for step in steps:
                self.fault("after_journal", step=step)

    def _failed(self, exc: Exception, carried: bool) -> StorageFailure:
        if carried:
            # Step completions were in this write: the runner must stop and
            # replay from storage (its next write raises this).
            self._write_failure = exc
        for observer in self.observers:
            observer.aborted()
        return StorageFailure(exc)

    def defer(self, key: str, text: str, name: str) -> None:
        """Queue an operation's completion for the next write (the next operation's
        start, the phase's end, or the end of this loop turn, whichever comes first)."""
        self._pending[key] = text
        if self._pending_steps is not None:
            self._pending_steps.append(name)
        if not self._driving:
            self._schedule_flush()

    def deferring(self, body: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
        """``body`` (a phase body, to run as a task) with the deferral's end of the loop
        turn tied to it: what it defers and has not written when it suspends or ends is
        flushed then. A step's completion is nearly always carried by the next
        operation's write before the body suspends, so it costs no callback."""
        return _Deferring(body, self)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = self._loop
            if loop is None or loop.is_closed():
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._flush_soon, context=PLAIN_CONTEXT)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            self.spawn(self._flush())

    async def _flush(self) -> None:
        if self._pending:
            # A failure is kept in _write_failure; the runner stops at its next write.
            with contextlib.suppress(StorageFailure):
                await self.write({})

    async def write_state(
        self,
        changes: Mapping[str, Any],
        *,
        puts: Mapping[str, str] | None = None,
        deletes: Sequence[str] = (),
        alarm: Any = KEEP_ALARM,
    ) -> None:
        # The cache changes synchronously, before the write is issued, so a
        # request interleaving at the await sees (and builds on) the new state.
        assert self.state is not None
        previous = self.state
        # hook(control): while paused the status stays "paused" (engine/_pause.py)
        state = hold_status(previous, {**previous, **changes, "updated_at": self.now()})
        if self.settle_hooks and state.get("phase") == "done" and previous.get("phase") != "done":
            extra = dict(puts or {})
            for hook in self.settle_hooks:
                extra.update(hook(state, extra))
            puts = extra
        text = jn.encode_record(jn.STATE, state, what="execution state")
        self.state = state
        try:
            await self.write({**(puts or {}), jn.STATE: text}, deletes, alarm)
        except StorageFailure:
            if self.state is state:
                self.state = previous  # nothing was written: the cache follows storage
            raise

    def forget(self) -> None:
        """Drop cached state after a failed write: storage is the truth, reload it."""
        self.loaded = False
        self._pending = {}
        if self._pending_steps is not None:
            self._pending_steps = []
        self._write_failure = None
        self.meta = self.state = None

    # -- reads ---------------------------------------------------------------

    async def ensure_loaded(self) -> None:
        if self.loaded:
            return
        lock = self._load_lock
        if lock is None:
            lock = self._load_lock = asyncio.Lock()
        async with lock:
            if self.loaded:
                return
            keys = [jn.META, jn.STATE, *(observer.HEAD for observer in self.observers)]
            found = await self.storage.get_many(keys)
            for observer in self.observers:
                observer.load(found, complete=False)
            self.meta = jn.decode_record(jn.META, found[jn.META]) if jn.META in found else None
            self.state = jn.decode_record(jn.STATE, found[jn.STATE]) if jn.STATE in found else None
            self.loaded = True
            self._load_lock = None  # loaded: the next load (after ``forget``) makes its own

    def require(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.meta is None or self.state is None:
            raise ExecutionNotFoundError("no execution with this id", execution_id=None)
        return self.meta, self.state

    async def idempotent_output(self, key_hash: str) -> dict[str, Any] | None:
        """What a completed step with this key recorded: its journal entry (read back from
        the write still deferred, or from storage), else a result a restart carried over."""
        key = self.keyed.get(key_hash)
        if key is not None:
            text = self._pending.get(key)
            if text is None:
                text = await self.storage.get(key)
            if text is not None:  # None: the deferred write failed (the runner stops at its next)
                return jn.decode_record(key, text)  # a completed entry: it never changes
        return self.idempotent.get(key_hash)

    def remember_idempotent(self, key_hash: str, key: str) -> None:
        """The step whose entry is at storage ``key`` completed with this key."""
        self.keyed[key_hash] = key

    def take_event(self, event_type: str) -> tuple[str, dict[str, Any]] | None:
        for key in sorted(self.inbox):
            record = self.inbox[key]
            if record.get("type") == event_type:
                del self.inbox[key]
                return key, record
        return None

    def inbox_has(self, event_type: str) -> bool:
        return any(r.get("type") == event_type for r in self.inbox.values())

    # -- settling ------------------------------------------------------------

    async def settle_observers(self) -> bool:
        """Deliver what every observer has pending; False if some is left for a later alarm."""
        settled = True
        for observer in self.observers:
            settled = await observer.settle() and settled
        return settled

    def observed_alarm(self, alarm: Any) -> Any:
        """The alarm a write of ``alarm`` would set, once the observers have had their say."""
        for observer in self.observers:
            alarm = observer.alarm_for(alarm)
        return alarm

    def is_settled(self) -> bool:
        return bool(self.state and self.state.get("phase") == "done")

    def settled_event(self) -> asyncio.Event:
        """Set once the execution is settled; made for the first request that waits."""
        if self._settled is None:
            self._settled = asyncio.Event()
        if self.is_settled():
            self._settled.set()
        return self._settled

    def announce_settled(self) -> None:
        """The execution is settled: wake the requests waiting for it, if any (an
        execution no request waits for makes no event)."""
        if self._settled is not None:
            self._settled.set()


class _Deferring(Coroutine[Any, Any, Any]):
    """A phase body that schedules the flush of the completions it left pending each
    time it suspends or ends. It runs ``body`` as ``await body`` would, without a
    coroutine of its own around it (every turn of the body goes through it)."""

    __slots__ = ("_body", "_state")

    def __init__(self, body: Coroutine[Any, Any, Any], state: ExecutionState) -> None:
        self._body = body
        self._state = state

    def __next__(self) -> Any:
        # How a task resumes its coroutine (``_resume`` spelt out: a call less per turn).
        state = self._state
        state._driving = True
        try:
            return self._body.send(None)
        finally:
            state._driving = False
            if state._pending:
                state._schedule_flush()

    def send(self, value: Any) -> Any:
        return self._resume(self._body.send, value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        # A task throws the exception instance alone (the other forms are deprecated).
        return self._resume(self._body.throw, typ if val is None else val)

    def _resume(self, step: Callable[[Any], Any], arg: Any) -> Any:
        state = self._state
        state._driving = True
        try:
            return step(arg)
        finally:
            state._driving = False
            if state._pending:
                state._schedule_flush()

    def close(self) -> None:
        self._body.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # type: ignore[return-value]
