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
import functools
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from ..errors import ExecutionNotFoundError
from . import _journal as jn
from ._deferral import Deferral
from ._mail import Mail
from ._pause import hold_status
from ._plugins import JournalObserver
from ._ports import KEEP_ALARM, Clock, Host, Storage, StorageReadError
from ._signals import StorageFailure

FaultHook = Callable[..., None]
SettleHook = Callable[["ExecutionState", Mapping[str, Any], Mapping[str, str]], Mapping[str, str]]
"""``hook(execution, state, puts)``: records to add to the write that settles the execution
(a module function: nothing is kept per execution for it)."""


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


class ExecutionState(Deferral):
    """The cached records of one execution and its single write path."""

    # Slots, not an instance dict: CPython shares one dict's keys among a class's instances
    # for at most 30 attributes, and this class and ``Deferral`` have 31, so each execution
    # in flight held a 1.6 KB dict of its own (and every attribute read looked in it).
    __slots__ = (
        "_commit_now", "_commits_at_call", "_load_lock", "_settled", "_write_failure", "begun", "clock",
        "fault", "faulting", "host", "idempotent", "inbox", "input", "keyed", "loaded", "mail", "meta",
        "now", "observers", "rng", "run", "settle_hooks", "state", "storage", "writes",
    )  # fmt: skip

    def __init__(self, host: Host, *, rng: random.Random | None, faults: FaultHook | None) -> None:
        super().__init__(names=faults is not None)
        self.host = host
        self.storage: Storage = host.storage
        self.clock: Clock = host.clock
        self.now: Callable[[], float] = host.clock.now
        """The clock's time (its bound method: read twice per step)."""
        self.rng = rng or _shared_rng()
        self.fault: FaultHook = faults or _noop_fault
        self.faulting = faults is not None
        """Whether a fault hook is installed (the hot path skips building its arguments)."""
        # How a write can skip its coroutine (see :meth:`write` and the Storage port).
        self._commits_at_call = bool(getattr(self.storage, "commits_at_call", False))
        self._commit_now: Callable[[Mapping[str, str]], bool] | None
        self._commit_now = getattr(self.storage, "commit_now", None)
        self.meta: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.loaded = False
        self._load_lock: asyncio.Lock | None = None
        """Held by the request loading the records; dropped once they are loaded."""
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
        self.settle_hooks: tuple[SettleHook, ...] = ()
        """Called in the write that settles it (``phase: done``): a child's outcome for its parent."""
        self.run: LiveRun | None = None
        """The phase run in progress, if any (set by the phases, read by requests)."""
        self.begun: tuple[dict[str, str], int | None] | None = None
        """What a creation that began the first incarnation wrote, for the drive it starts at
        once (``_creation.begun_by``); None once that drive began."""

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
        self,
        puts: Mapping[str, str],
        deletes: Sequence[str] = (),
        alarm: Any = KEEP_ALARM,
        entries: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Awaitable[None]:
        """One atomic storage write, carrying any deferred step completions with it.

        ``entries``: the values of ``puts``, all of them, as built before encoding (never
        changed afterwards); the observers get them with the deferred completions', so a
        step's transitions need no decoding to be recorded (``JournalObserver.capture``).

        A write storage makes at the call (``commit_now``, ``commits_at_call``: the port's
        doc) is awaited with no coroutine of this method's: at thousands of executions in
        flight, each object held across an await is walked by the garbage collector."""
        if self._write_failure is not None:
            raise StorageFailure(self._write_failure)
        carried = bool(self._pending)
        steps: list[str] | None = None
        if carried:
            merged = self._pending
            merged.update(puts)
            self._pending = {}
            if self._pending_entries:
                known, self._pending_entries = self._pending_entries, {}
                if entries is not None:
                    known.update(entries)
                else:
                    for key in puts:
                        known.pop(key, None)  # rewritten without its value: its text says
                entries = known
            if self._pending_steps is not None:
                steps, self._pending_steps = self._pending_steps, []
        else:
            merged = dict(puts)
        for observer in self.observers:
            if observer.captures:
                added = observer.capture(merged, entries)
                if added:
                    merged.update(added)
            if alarm is not KEEP_ALARM or observer.steers_kept_alarm:
                alarm = observer.alarm_for(alarm)
        self.writes += 1
        if not self._commits_at_call:
            if self._commit_now is not None and alarm is KEEP_ALARM and not deletes:
                try:
                    done = self._commit_now(merged)
                except Exception as exc:
                    raise self._failed(exc, carried) from exc
                if done:  # a future already done (``_WRITTEN``), read with no call
                    return asyncio.sleep(0) if self._written(steps) else (_WRITTEN or _written_now())
            return self._committed(merged, deletes, alarm, carried, steps)
        try:
            turns = self.storage.commit(merged, deletes, alarm)
        except Exception as exc:
            raise self._failed(exc, carried) from exc
        if self._written(steps):
            return _then_a_turn(turns)
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
        if self._written(steps):
            await asyncio.sleep(0)

    def _written(self, steps: list[str] | None) -> bool:
        """The write is durable: the observers deliver what it held; the fault hook
        may crash the object after the deferred completions it carried. True if an
        observer asks for a turn of the event loop before the writer goes on: a delivery
        it started would not run before the run's next wait otherwise, which over the
        Durable Object's SQL journal (no write awaits) may be its end (``kick``)."""
        turn = False
        for observer in self.observers:
            if observer.kick_due and observer.kick():
                turn = True
        if steps:
            for step in steps:
                self.fault("after_journal", step=step)
        return turn

    def _failed(self, exc: Exception, carried: bool) -> StorageFailure:
        if carried:
            # Step completions were in this write: the runner must stop and
            # replay from storage (its next write raises this).
            self._write_failure = exc
        for observer in self.observers:
            observer.aborted()
        return StorageFailure(exc)

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
        state = hold_status(previous, {**previous, **changes, "updated_at": self.now()})  # hook(control)
        settles = state.get("phase") == "done" and previous.get("phase") != "done"
        if settles and self.settle_hooks:
            extra = dict(puts or {})
            for hook in self.settle_hooks:
                extra.update(hook(self, state, extra))
            puts = extra
        text = jn.encode_record(jn.STATE, state, what="execution state")
        self.state = state
        try:
            await self.write({**(puts or {}), jn.STATE: text}, deletes, alarm)
        except StorageFailure:
            if self.state is state:
                self.state = previous  # nothing was written: the cache follows storage
            raise
        if settles:  # the execution's last write is made: wake its waiters
            self.announce_settled()

    def forget(self) -> None:
        """Drop cached state after a failed write: storage is the truth, reload it."""
        self.loaded = False
        self.begun = None
        self.drop_deferred()
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
            self.state = decode_state(found[jn.STATE]) if jn.STATE in found else None
            self.loaded = True
            self._load_lock = None  # loaded: the next load (after ``forget``) makes its own

    def require(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.meta is None or self.state is None:
            # The object's name is the execution's id (None where the runtime does not say it).
            raise ExecutionNotFoundError("no execution with this id", execution_id=self.host.object_name)
        return self.meta, self.state

    async def idempotent_output(self, key_hash: str) -> dict[str, Any] | None:
        """What a completed step with this key recorded: its journal entry (read back from
        the write still deferred, or from storage), else a result a restart carried over."""
        key = self.keyed.get(key_hash)
        if key is not None:
            text = self._pending.get(key)
            if text is None:
                try:
                    text = await self.storage.get(key)
                except StorageReadError as exc:  # inside the body (a step): the engine's signal
                    raise StorageFailure(exc.cause, "read") from exc
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
        """Wake the requests waiting for the settled execution (none waiting: no event)."""
        if self._settled is not None:
            self._settled.set()


async def _then_a_turn(turns: Awaitable[None]) -> None:
    """The write's own ``turns``, then one turn of the event loop (``ExecutionState._written``)."""
    await turns
    await asyncio.sleep(0)


_WRITTEN: asyncio.Future[None] | None = None
"""A future already done: what :meth:`ExecutionState.write` returns for a write made at
once, whose ``await`` is answered in C, with no coroutine of its own."""


def _written_now() -> Awaitable[None]:
    global _WRITTEN
    if _WRITTEN is None:
        _WRITTEN = asyncio.get_running_loop().create_future()
        _WRITTEN.set_result(None)
    return _WRITTEN


def decode_state(text: Any) -> dict[str, Any]:
    """The state record, decoded, with an empty ``waiting_for`` as an empty tuple in a dict
    built by insertion: a state holding no list is a dict of scalars, which the garbage
    collector does not track, nor the copies each write makes of it (a copy of a tracked
    dict is tracked). Each object tracked is walked by every full collection."""
    state = jn.decode_record(jn.STATE, text)
    if state.get("waiting_for") == []:
        state["waiting_for"] = ()
        state = dict(state.items())
    return state
