"""The durable execution behind one Durable Object.

``ExecutionCore`` owns everything about one execution inside one object
instance: the cached ``meta``/``state`` records (every write goes through it,
so concurrent requests never lose an update), the single runner that drives
the phases, and the operations the wire exposes (execute, status, cancel,
event, journal, meta, result, alarm).

Invariants kept here:

* every state change is one ``Storage.commit`` (puts, deletes and alarm
  together);
* at most one runner per object instance (``_runner.Runner``), and every
  acknowledged signal (event, cancel) is observed by a runner whatever point
  of parking it is at: the protocol is stated in ``_runner``;
* while a phase runs, an alarm (the lease) is set, so if the object dies the
  alarm resumes it; when it parks, the alarm is the earliest wake-up;
* the alarm handler never raises, except :class:`AlarmNotSet` when it could
  not durably set the next alarm: then the runtime's own alarm retry is the
  only wake-up left.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _journal as jn
from ._context import CompensationContext, InDoubtStep, WorkflowContext
from ._definition import REGISTRY, Registry, Workflow, check_name
from ._ports import KEEP_ALARM, Clock, Host, Storage
from ._retry import NO_RETRY
from ._run import ControlSignal, Outcome, PhaseRun
from ._runner import Runner
from ._values import to_data, validate
from .errors import (
    ExecutionConflictError,
    ExecutionNotFoundError,
    InvalidRequestError,
    SerializationError,
    UnknownWorkflowError,
    WorkflowError,
)

if TYPE_CHECKING:
    from .history._outbox import Outbox

log = logging.getLogger("workkit_workflow")

FaultHook = Callable[..., None]

DEFAULT_LEASE = 5.0
"""Seconds a running phase's alarm is set ahead: if the object dies mid-step,
this alarm resumes the execution at most this long afterwards. While the
runner is alive the alarm renews it when it fires (one write per lease period,
none per step), so a short lease costs long steps a write every few seconds
and buys prompt recovery after a crash."""

ABANDONED = {"running": "in_doubt", "retrying": "abandoned", "sleeping": "abandoned", "waiting": "abandoned"}
"""What an unfinished journal entry becomes when its phase ends without it: a
step attempt that may have run is ``in_doubt`` (compensation is told), a
retry wait, sleep or event wait is ``abandoned``."""


class AlarmNotSet(Exception):
    """The alarm handler could not durably set the next alarm: raised out of it so
    that the runtime's own alarm retry wakes the execution again."""


class StorageFailure(ControlSignal):
    """A storage write failed: the runner stops and the alarm retries later.

    A ``BaseException`` so it cannot turn into a step or workflow failure on
    its way through user code.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"storage write failed: {cause!r}")
        self.cause = cause


def _noop_fault(point: str, **info: Any) -> None:
    return None


class ExecutionCore:
    def __init__(
        self,
        host: Host,
        *,
        registry: Registry = REGISTRY,
        lease: float = DEFAULT_LEASE,
        rng: random.Random | None = None,
        faults: FaultHook | None = None,
        history: Any = None,
    ) -> None:
        self.host = host
        self.storage: Storage = host.storage
        self.clock: Clock = host.clock
        self.registry = registry
        self.lease = lease
        self.rng = rng or random.Random()
        self.fault: FaultHook = faults or _noop_fault
        self._meta: dict[str, Any] | None = None
        self._state: dict[str, Any] | None = None
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self._create_lock = asyncio.Lock()
        self._event_lock = asyncio.Lock()
        self.runner = Runner(self.spawn, self._drive_safely)
        self._run: PhaseRun | None = None
        self._alarm_unset = False
        self._pending: dict[str, str] = {}
        self._pending_steps: list[str] = []
        self._flush_scheduled = False
        self._write_failure: BaseException | None = None
        self._inbox: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, dict[str, Any]] = {}
        self._settled: asyncio.Event | None = None
        self._alarm_failures = 0
        self.input: Any = None
        self.writes = 0
        self.history: Outbox | None = None
        if history is not None:
            from .history._outbox import Outbox

            self.history = Outbox(self, history)

    # -- plumbing ------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self.host.spawn(coro)

    @property
    def execution_id(self) -> str:
        return str((self._meta or {}).get("execution_id", ""))

    @property
    def workflow_name(self) -> str:
        return str((self._meta or {}).get("workflow", ""))

    @property
    def cancel_requested(self) -> bool:
        return bool(self._state and self._state.get("cancel_requested_at") is not None)

    async def write(
        self, puts: Mapping[str, str], deletes: Sequence[str] = (), alarm: Any = KEEP_ALARM
    ) -> None:
        """One atomic storage write, carrying any deferred step completions with it."""
        if self._write_failure is not None:
            raise StorageFailure(self._write_failure)
        deferred = list(self._pending_steps)
        if self._pending:
            merged = self._pending
            merged.update(puts)
            self._pending = {}
            self._pending_steps = []
        else:
            merged = dict(puts)
        if self.history is not None:
            merged.update(self.history.capture(merged))
            alarm = self.history.alarm_for(alarm)
        self.writes += 1
        try:
            await self.storage.commit(merged, deletes, alarm)
        except Exception as exc:
            if deferred:
                # Step completions were in this write: the runner must stop and
                # replay from storage (its next write raises this).
                self._write_failure = exc
            raise StorageFailure(exc) from exc
        if self.history is not None:
            self.history.kick()
        for step in deferred:
            self.fault("after_journal", step=step)

    def defer(self, key: str, text: str, name: str) -> None:
        """Queue an operation's completion for the next write (the next operation's
        start, the phase's end, or the end of this loop turn, whichever comes first)."""
        self._pending[key] = text
        self._pending_steps.append(name)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            self.spawn(self._flush())

    async def _flush(self) -> None:
        if self._pending:
            # A failure is kept in _write_failure; the runner stops at its next write.
            with contextlib.suppress(StorageFailure):
                await self.write({})

    def idempotent_output(self, key_hash: str) -> dict[str, Any] | None:
        return self._idempotent.get(key_hash)

    def remember_idempotent(self, key_hash: str, entry: dict[str, Any]) -> None:
        self._idempotent[key_hash] = entry

    def take_event(self, event_type: str) -> tuple[str, dict[str, Any]] | None:
        for key in sorted(self._inbox):
            record = self._inbox[key]
            if record.get("type") == event_type:
                del self._inbox[key]
                return key, record
        return None

    # -- loading -----------------------------------------------------------------

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        async with self._load_lock:
            if self._loaded:
                return
            keys = [jn.META, jn.STATE] if self.history is None else [jn.META, jn.STATE, self.history.HEAD]
            found = await self.storage.get_many(keys)
            if self.history is not None:
                self.history.load(found, complete=False)
            self._meta = jn.decode_record(jn.META, found[jn.META]) if jn.META in found else None
            self._state = jn.decode_record(jn.STATE, found[jn.STATE]) if jn.STATE in found else None
            self._loaded = True

    def _require(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self._meta is None or self._state is None:
            raise ExecutionNotFoundError("no execution with this id", execution_id=None)
        return self._meta, self._state

    async def _write_state(
        self,
        changes: Mapping[str, Any],
        *,
        puts: Mapping[str, str] | None = None,
        deletes: Sequence[str] = (),
        alarm: Any = KEEP_ALARM,
    ) -> None:
        # The cache changes synchronously, before the write is issued, so a
        # request interleaving at the await sees (and builds on) the new state.
        assert self._state is not None
        previous = self._state
        state = {**previous, **changes, "updated_at": self.now()}
        text = jn.encode_record(jn.STATE, state, what="execution state")
        self._state = state
        try:
            await self.write({**(puts or {}), jn.STATE: text}, deletes, alarm)
        except StorageFailure:
            if self._state is state:
                self._state = previous  # nothing was written: the cache follows storage
            raise

    # -- requests ------------------------------------------------------------------

    async def execute(
        self,
        *,
        workflow: str,
        input: Any,
        execution_id: str | None,
        wait: bool,
        restart: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create the execution if it does not exist, then drive it (or let the alarm).

        Returns ``(status view, created)``. A second call for the same id, at
        the same time or later, never starts a second run.
        """
        await self._ensure_loaded()
        async with self._create_lock:
            if self._meta is not None:
                if self._meta.get("workflow") != workflow:
                    raise ExecutionConflictError(
                        f"execution {self._meta.get('execution_id')!r} already runs workflow "
                        f"{self._meta.get('workflow')!r}, not {workflow!r}",
                        execution_id=self._meta.get("execution_id"),
                    )
                created = False
            else:
                await self._create(workflow, input, execution_id, restart, driven_here=wait)
                created = True
        if wait:
            await self._drive_until_quiet()
        # Without wait, the alarm set at creation (due now) starts the execution.
        return self.view(), created

    async def _create(
        self,
        workflow: str,
        input: Any,
        execution_id: str | None,
        restart: Mapping[str, Any] | None,
        *,
        driven_here: bool,
    ) -> None:
        definition = self.registry.get(workflow)
        if definition.input_type is not None:
            validate(definition.input_type, input, what="workflow input")
        execution_id = execution_id or str(uuid.uuid4())
        now = self.now()
        meta = {
            "execution_id": execution_id,
            "workflow": workflow,
            "input": input,
            "created_at": now,
            "deadline": None if definition.timeout is None else now + definition.timeout,
            "restarted_from": None,
        }
        puts: dict[str, str] = {}
        if restart:
            meta["restarted_from"] = {
                "execution_id": restart.get("execution_id"),
                "from_step": restart.get("from_step"),
            }
            source = restart.get("execution_id")
            for entry in restart.get("entries", []):
                key = jn.op_key(jn.MAIN, int(entry["op"]))
                puts[key] = jn.encode_record(key, {**entry, "restored_from": source}, what="restored entry")
            for entry in restart.get("idempotent", []):
                key = jn.IDEMPOTENT + str(entry["idempotency_hash"])
                record = {
                    "name": entry.get("name"),
                    "output": entry.get("output"),
                    "source": f"{entry.get('name')} in {source}",
                }
                puts[key] = jn.encode_record(key, record, what="recorded idempotent result")
        meta_text = jn.encode_record(jn.META, meta, what="workflow input")
        state = {
            "status": "pending",
            "phase": "main",
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
            "incarnation": 0,
            "wake_at": None,
            "waiting_for": [],
            "error": None,
            "failed_step": None,
            "step_attempt": 0,
            "cancel_requested_at": None,
            "cancel_reason": None,
            "compensation": None,
            "events_received": 0,
        }
        state_text = jn.encode_record(jn.STATE, state, what="execution state")
        # The alarm is the guarantee that the execution starts, whoever drives it:
        # due now, or, when this request drives it at once, a lease that resumes
        # it only if the object dies first.
        alarm = now + self.lease if driven_here else now
        await self.write({**puts, jn.META: meta_text, jn.STATE: state_text}, alarm=alarm)
        self._meta, self._state = meta, state

    async def status(self) -> dict[str, Any]:
        await self._ensure_loaded()
        self._require()
        return self.view()

    def view(self) -> dict[str, Any]:
        meta, state = self._require()
        run = self._run if self.runner.active else None
        return {
            "execution_id": meta["execution_id"],
            "workflow": meta["workflow"],
            "status": state["status"],
            "settled": state["phase"] == "done",
            "created_at": state["created_at"],
            "updated_at": state["updated_at"],
            "started_at": state.get("started_at"),
            "finished_at": state.get("finished_at"),
            "wake_at": state.get("wake_at"),
            "waiting_for": state.get("waiting_for") or [],
            "error": state.get("error"),
            "failed_step": state.get("failed_step"),
            "step_attempt": state.get("step_attempt", 0),
            "compensation": state.get("compensation"),
            "cancel_reason": state.get("cancel_reason"),
            "running": sorted(run.current.values()) if run is not None else [],
        }

    async def journal(self) -> list[dict[str, Any]]:
        await self._ensure_loaded()
        self._require()
        entries = []
        for prefix, phase in ((jn.MAIN, "main"), (jn.COMPENSATION, "compensation")):
            for key, text in (await self.storage.list(prefix=prefix)).items():
                entry = jn.decode_record(key, text)
                entry.pop("idempotency_key", None)
                entry["phase"] = phase
                entries.append(entry)
        return entries

    async def meta(self) -> dict[str, Any]:
        await self._ensure_loaded()
        meta, state = self._require()
        journal = await self.journal()
        attempts = sum(int(e.get("attempt", 0)) for e in journal if e.get("kind") == "step")
        return {
            **{k: v for k, v in meta.items() if k != "v"},
            "status": state["status"],
            "started_at": state.get("started_at"),
            "finished_at": state.get("finished_at"),
            "attempts": attempts,
            "steps": sum(1 for e in journal if e["phase"] == "main"),
            "incarnations": state.get("incarnation", 0),
        }

    async def result(self, wait: float = 0.0) -> dict[str, Any]:
        """The outcome once settled; waits up to ``wait`` seconds (in memory, a
        convenience only) for it."""
        await self._ensure_loaded()
        self._require()
        if wait > 0 and not self._is_settled():
            settled = self._settled_event()
            waiter = self.spawn(settled.wait())
            timer = self.spawn(self.clock.sleep(wait))
            try:
                await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                timer.cancel()
        view = self.view()
        if not view["settled"]:
            return {"settled": False, **view}
        if view["status"] == "completed":
            raw = await self.storage.get(jn.RESULT)
            value = jn.decode_record(jn.RESULT, raw)["value"] if raw is not None else None
            return {**view, "ok": True, "value": value}
        return {**view, "ok": False, "journal": await self.journal()}

    def _is_settled(self) -> bool:
        return bool(self._state and self._state.get("phase") == "done")

    def _settled_event(self) -> asyncio.Event:
        if self._settled is None:
            self._settled = asyncio.Event()
        if self._is_settled():
            self._settled.set()
        return self._settled

    async def cancel(self, reason: str | None = None) -> tuple[dict[str, Any], bool]:
        """Request cancellation. Returns ``(view, changed)``; a finished execution is left alone."""
        await self._ensure_loaded()
        _, state = self._require()
        if state["phase"] != "main" or state["status"] in jn.TERMINAL:
            return self.view(), False
        await self._write_state(
            {"status": "cancelled", "cancel_requested_at": self.now(), "cancel_reason": reason},
            alarm=self.runner.signal(self.now()),
        )
        run = self._run
        if run is not None and run.prefix == jn.MAIN:
            run.stop()
        self.runner.wake()
        return self.view(), True

    async def send_event(self, event_type: str, payload: Any, event_id: str | None) -> dict[str, Any]:
        """Deliver an external event to the inbox; duplicates (same id) are ignored."""
        check_name(event_type, "event type")
        await self._ensure_loaded()
        self._check_accepts_events(event_type)
        event_id = event_id or str(uuid.uuid4())
        marker = jn.EVENT_ID + event_id
        if len(marker) > 512:
            raise InvalidRequestError("event id is longer than 500 characters")
        async with self._event_lock:
            if await self.storage.get(marker) is not None:
                return {"accepted": False, "duplicate": True, "event_id": event_id}
            # The execution may have finished during that read: decide on what is
            # true now, in the same step as the write.
            state = self._check_accepts_events(event_type)
            seq = int(state.get("events_received", 0)) + 1
            key = jn.seq_key(jn.INBOX, seq)
            record = {
                "id": event_id,
                "type": event_type,
                "payload": payload,
                "received_at": self.now(),
            }
            text = jn.encode_record(key, record, what=f"payload of event {event_type!r}")
            # In the inbox before the write is issued, so a runner replaying meanwhile
            # finds it; taken back out if the write fails.
            self._inbox[key] = record
            try:
                await self._write_state(
                    {"events_received": seq},
                    puts={key: text, marker: jn.dumps({"v": jn.VERSION, "key": key})},
                    alarm=self.runner.signal(self.now()),
                )
            except StorageFailure:
                self._inbox.pop(key, None)
                raise
        if self._run is not None:
            self._run.deliver(event_type)
        self.runner.wake()
        return {"accepted": True, "duplicate": False, "event_id": event_id}

    def _check_accepts_events(self, event_type: str) -> dict[str, Any]:
        _, state = self._require()
        if state["status"] in jn.TERMINAL or state["phase"] != "main":
            raise ExecutionConflictError(
                f"the execution is {state['status']}; the {event_type!r} event was not delivered",
                status=state["status"],
            )
        return state

    # -- the alarm -------------------------------------------------------------

    async def alarm(self) -> None:
        """Resume whatever is due.

        Failures set the next alarm here, because the runtime retries a raising
        handler only a few times and then drops the alarm for good. The one
        exception: when no next alarm could be stored, :class:`AlarmNotSet` is
        raised, since the runtime's retry is then the only wake-up left.
        """
        try:
            await self._on_alarm()
        except ControlSignal as exc:
            if not isinstance(exc, StorageFailure):
                raise
            if not await self._retry_alarm_later(exc):
                raise AlarmNotSet("could not set the next alarm after a storage failure") from exc
        except Exception as exc:
            if not await self._retry_alarm_later(exc):
                raise AlarmNotSet(f"could not set the next alarm after {exc!r}") from exc
        if self._alarm_unset:
            self._alarm_unset = False
            raise AlarmNotSet("the runner could not set its next alarm")

    async def _on_alarm(self) -> None:
        self.fault("in_alarm")
        if self.runner.active:
            # The runner is alive in this instance: renew its lease.
            await self.storage.set_alarm(self.now() + self.lease)
            return
        if self.history is not None and await self._only_history_is_due():
            # An alarm brought forward to retry history delivery while the
            # execution is parked: deliver, re-arm, do not replay the workflow.
            assert self._state is not None
            await self.history.settle()
            await self.storage.set_alarm(self.history.alarm_for(self._state.get("wake_at")))
            return
        await self._drive_until_quiet()

    async def _only_history_is_due(self) -> bool:
        """Parked, not cancelled, its wake-up still ahead and no event waiting."""
        await self._ensure_loaded()
        state = self._state
        if state is None or state["phase"] != "main" or state["status"] not in ("sleeping", "waiting"):
            return False
        wake_at = state.get("wake_at")
        if wake_at is not None and wake_at <= self.now():
            return False
        return not await self.storage.list(prefix=jn.INBOX, limit=1)

    async def _retry_alarm_later(self, exc: BaseException) -> bool:
        """Set an alarm after a backoff that grows with consecutive failures;
        False when even that write failed."""
        self._alarm_failures += 1
        delay = min(2.0**self._alarm_failures, 300.0)
        log.warning("workkit_workflow: alarm failed (%r); retrying in %.0fs", exc, delay)
        try:
            await self.storage.set_alarm(self.now() + delay)
        except Exception:
            log.exception("workkit_workflow: could not set the retry alarm")
            return False
        return True

    # -- the runner ----------------------------------------------------------------

    async def _drive_until_quiet(self) -> None:
        runner = self.runner.wake()
        await asyncio.wait({runner})
        if not runner.cancelled():
            exc = runner.exception()
            if exc is not None and not isinstance(exc, (Exception, StorageFailure)):
                raise exc

    async def _drive_safely(self) -> None:
        self._alarm_unset = False  # judged per run: the alarm handler asks about the run it awaited
        try:
            await self._drive()
            self._alarm_failures = 0
        except StorageFailure as exc:
            self._forget()
            self._alarm_unset = not await self._retry_alarm_later(exc.cause)
        except WorkflowError as exc:
            self._forget()
            self._alarm_unset = not await self._retry_alarm_later(exc)
        except Exception as exc:
            log.exception("workkit_workflow: the runner failed")
            self._forget()
            self._alarm_unset = not await self._retry_alarm_later(exc)
        finally:
            self._run = None

    def _forget(self) -> None:
        """Drop cached state after a failed write: storage is the truth, reload it."""
        self._loaded = False
        self._pending = {}
        self._pending_steps = []
        self._write_failure = None
        self._meta = self._state = None

    async def _drive(self) -> None:
        while True:
            self.runner.mark()
            snapshot = await self.storage.list()
            meta_text, state_text = snapshot.get(jn.META), snapshot.get(jn.STATE)
            if meta_text is None or state_text is None:
                await self.storage.set_alarm(None)
                return
            self._meta = jn.decode_record(jn.META, meta_text)
            self._state = jn.decode_record(jn.STATE, state_text)
            self._loaded = True
            if self.history is not None:
                self.history.load(snapshot, complete=True)
            state = self._state
            if state["phase"] == "done":
                await self.write({}, alarm=None)
                self._settled_event().set()
                if self.history is not None:
                    await self.history.settle()
                return
            try:
                definition = self.registry.get(self._meta["workflow"])
            except UnknownWorkflowError as exc:
                # A deploy without this workflow: keep the execution, try again later.
                await self._write_state({"stalled": exc.to_dict()}, alarm=self.now() + 60.0)
                return
            main_entries, comp_entries = self._load_entries(snapshot)
            self._inbox.update(
                {k: jn.decode_record(k, v) for k, v in snapshot.items() if k.startswith(jn.INBOX)}
            )
            self._idempotent = {
                key[len(jn.IDEMPOTENT) :]: jn.decode_record(key, text)
                for key, text in snapshot.items()
                if key.startswith(jn.IDEMPOTENT)
            }
            self._idempotent.update(
                (e["idempotency_hash"], e)
                for e in main_entries.values()
                if e.get("status") == "completed" and e.get("idempotency_hash")
            )
            now = self.now()
            changes: dict[str, Any] = {
                "incarnation": int(state.get("incarnation", 0)) + 1,
                "wake_at": None,
                "stalled": None,
            }
            if state["status"] in ("pending", "sleeping", "waiting"):
                changes["status"] = "running"
            if state.get("started_at") is None:
                changes["started_at"] = now
            await self._write_state(changes, alarm=now + self.lease)
            if self._state["phase"] == "main":
                outcome = await self._main_phase(definition, main_entries)
            else:
                outcome = await self._compensation_phase(definition, main_entries, comp_entries)
            if outcome is None or (outcome.kind == "parked" and self.runner.signalled):
                continue
            return

    def _load_entries(
        self, snapshot: Mapping[str, str]
    ) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
        main: dict[int, dict[str, Any]] = {}
        comp: dict[int, dict[str, Any]] = {}
        for key, text in snapshot.items():
            if key.startswith(jn.MAIN):
                main[jn.op_of(key)] = jn.decode_record(key, text)
            elif key.startswith(jn.COMPENSATION):
                comp[jn.op_of(key)] = jn.decode_record(key, text)
        return main, comp

    async def _main_phase(self, definition: Workflow, entries: dict[int, dict[str, Any]]) -> Outcome | None:
        """Run the body; returns the outcome if the drive is over, None to go on."""
        assert self._meta is not None and self._state is not None
        if self.cancel_requested:
            await self._end_main(definition, Outcome("stopped"), entries)
            return None
        run = PhaseRun(
            self,
            prefix=jn.MAIN,
            entries=entries,
            retry=definition.retry,
            deadline=self._meta.get("deadline"),
        )
        self._run = run
        self.input = self._meta.get("input")
        ctx = WorkflowContext(run, self.execution_id, definition.name, self.input)

        async def body() -> Any:
            value = self.input
            if definition.input_type is not None:
                value = validate(definition.input_type, value, what="workflow input")
                ctx.input = value
            return await definition.run(ctx, value)

        outcome = await run.execute(body)
        self._run = None
        if outcome.kind == "parked":
            await self._park(outcome)
            return outcome
        if outcome.kind == "completed" and self.cancel_requested:
            # Cancel arrived while the last step ran: it was acknowledged, so it
            # wins, and compensation undoes that step too.
            outcome = Outcome("stopped")
        await self._end_main(definition, outcome, run.entries)
        return None if self._state and self._state["phase"] == "compensation" else outcome

    def _settle_entries(self, prefix: str, entries: Mapping[int, dict[str, Any]]) -> dict[str, str]:
        """The writes that close the phase's unfinished entries (see ``ABANDONED``)."""
        puts: dict[str, str] = {}
        now = self.now()
        for op, entry in entries.items():
            status = ABANDONED.get(str(entry.get("status")))
            if status is None:
                continue
            key = jn.op_key(prefix, op)
            settled = {**entry, "status": status, "settled_at": now}
            if status == "in_doubt":
                # Kept for compensation: the key lets an undo find the effect.
                settled["idempotency_key"] = entry.get("idempotency_key")
            puts[key] = jn.encode_record(key, settled, what=f"journal entry of {entry.get('name')!r}")
        return puts

    async def _end_main(
        self, definition: Workflow, outcome: Outcome, entries: Mapping[int, dict[str, Any]]
    ) -> None:
        now = self.now()
        settled = self._settle_entries(jn.MAIN, entries)
        if outcome.kind == "completed":
            try:
                text = jn.encode_record(jn.RESULT, {"value": to_data(outcome.value)}, what="workflow result")
            except SerializationError as exc:
                outcome = Outcome("failed", error=exc.to_dict(), failed_step=None)
            else:
                await self._write_state(
                    {"status": "completed", "phase": "done", "finished_at": now, "waiting_for": []},
                    puts={**settled, jn.RESULT: text},
                    alarm=None,
                )
                self._settled_event().set()
                return
        compensate = definition.compensation is not None and outcome.compensate
        status = "cancelled" if outcome.kind == "stopped" else "failed"
        changes: dict[str, Any] = {"status": status, "finished_at": now, "waiting_for": []}
        if outcome.kind == "failed":
            changes.update(error=outcome.error, failed_step=outcome.failed_step, step_attempt=outcome.attempt)
        else:
            changes["error"] = (
                {"code": "cancelled", "message": self._state.get("cancel_reason") or "cancelled"}
                if self._state
                else None
            )
        if compensate:
            changes.update(
                phase="compensation",
                compensation={
                    "status": "pending",
                    "started_at": None,
                    "finished_at": None,
                    "error": None,
                },
            )
            await self._write_state(changes, puts=settled, alarm=now)
            return
        changes.update(phase="done", compensation=None)
        await self._write_state(changes, puts=settled, alarm=None)
        self._settled_event().set()

    async def _compensation_phase(
        self,
        definition: Workflow,
        main_entries: dict[int, dict[str, Any]],
        entries: dict[int, dict[str, Any]],
    ) -> Outcome | None:
        assert self._meta is not None and self._state is not None
        handler = definition.compensation
        state = self._state
        compensation = dict(state.get("compensation") or {})
        if handler is None:
            await self._write_state({"phase": "done"}, alarm=None)
            self._settled_event().set()
            return Outcome("completed")
        if compensation.get("status") != "running":
            compensation.update(status="running", started_at=self.now())
            await self._write_state({"compensation": compensation})
        outputs = {
            e["name"]: e.get("output")
            for _, e in sorted(main_entries.items())
            if e.get("kind") == "step" and e.get("status") == "completed"
        }
        in_doubt = [
            InDoubtStep(
                name=str(e["name"]),
                op=op,
                attempt=int(e.get("attempt", 0)),
                idempotency_key=e.get("idempotency_key"),
                started_at=e.get("attempt_started_at"),
            )
            for op, e in sorted(main_entries.items())
            if e.get("status") == "in_doubt"
        ]
        run = PhaseRun(self, prefix=jn.COMPENSATION, entries=entries, retry=NO_RETRY, deadline=None)
        self._run = run
        self.input = self._meta.get("input")
        ctx = CompensationContext(
            run,
            self.execution_id,
            definition.name,
            self.input,
            status=state["status"],
            failed_step=state.get("failed_step"),
            error=state.get("error"),
            step_outputs=outputs,
            in_doubt_steps=in_doubt,
        )

        async def body() -> Any:
            self.fault("in_compensation")
            result = handler(ctx)
            if inspect.isawaitable(result):
                result = await result
            return None

        outcome = await run.execute(body)
        self._run = None
        if outcome.kind == "parked":
            await self._park(outcome)
            return outcome
        compensation.update(
            status="completed" if outcome.kind == "completed" else "failed",
            finished_at=self.now(),
            error=outcome.error if outcome.kind == "failed" else None,
        )
        await self._write_state(
            {"compensation": compensation, "phase": "done"},
            puts=self._settle_entries(jn.COMPENSATION, run.entries),
            alarm=None,
        )
        self._settled_event().set()
        return outcome

    async def _park(self, outcome: Outcome) -> None:
        assert self._state is not None and self._meta is not None
        wakes = [
            t
            for t in (
                outcome.wake_at,
                self._meta.get("deadline") if self._state["phase"] == "main" else None,
            )
            if t is not None
        ]
        if any(self._inbox_has(t) for t in outcome.waiting_for):
            wakes.append(self.now())
        wake_at = min(wakes) if wakes else None
        changes: dict[str, Any] = {"wake_at": wake_at, "waiting_for": outcome.waiting_for}
        if self._state["status"] == "running":
            changes["status"] = "waiting" if outcome.waiting_for else "sleeping"
        await self._write_state(changes, alarm=self.runner.park_alarm(wake_at, self.now()))

    def _inbox_has(self, event_type: str) -> bool:
        return any(r.get("type") == event_type for r in self._inbox.values())
