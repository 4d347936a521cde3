"""One phase of an execution (the workflow body, or its compensation) over the journal.

The body is re-executed from the top on every drive. Each durable operation
(step, sleep, wait) gets a position in call order; a position the journal has
finished returns its recorded output, anything else runs and is journaled.
When every operation in flight is parked (a retry wait, a sleep, a wait for an
event) the phase *suspends*: the body is unwound and the execution object sets
an alarm for the earliest wake-up. Nothing waits in memory for time to pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from . import _journal as jn
from ._context import _CURRENT_STEP, StepContext
from ._definition import MISSING, StepOptions
from ._retry import RetryPolicy
from ._values import to_data, validate
from .errors import (
    ReplayMismatchError,
    SerializationError,
    StepFailedError,
    StepTimeoutError,
    WaitTimeoutError,
    WorkflowError,
    WorkflowTimeoutError,
)

if TYPE_CHECKING:
    from ._execution import ExecutionCore

MAX_ERRORS_KEPT = 10
"""Attempt errors kept per journal entry, newest last (bounds an entry's size)."""

MAX_LOST_ATTEMPTS = 5
"""Consecutive attempts lost to the object dying mid-step before the step fails.

A lost attempt may or may not have run, so it runs again (at least once)
without using up the retry policy's attempts; this cap only stops a step that
kills its process every time from looping forever."""


class ControlSignal(BaseException):
    """Private control flow; a ``BaseException`` so ``except Exception`` in user code
    never swallows it."""


class _Suspend(ControlSignal):
    """The phase parks: unwind the body."""


class _Stop(ControlSignal):
    """Cancellation was requested: start no further operation."""


class _Abort(ControlSignal):
    """The execution ends now (workflow timeout, replay mismatch)."""

    def __init__(self, error: WorkflowError, *, step: str | None, attempt: int, compensate: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.step = step
        self.attempt = attempt
        self.compensate = compensate


@dataclass
class Outcome:
    kind: Literal["completed", "failed", "parked", "stopped"]
    value: Any = None
    error: dict[str, Any] | None = None
    failed_step: str | None = None
    attempt: int = 0
    compensate: bool = True
    wake_at: float | None = None
    waiting_for: list[str] = field(default_factory=list)


@dataclass
class _Parked:
    op: int
    wake_at: float | None
    event_type: str | None
    future: asyncio.Future[None]


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:32]


class PhaseRun:
    """Drives one phase body over the journal entries of that phase."""

    def __init__(
        self,
        core: ExecutionCore,
        *,
        prefix: str,
        entries: dict[int, dict[str, Any]],
        retry: RetryPolicy,
        deadline: float | None,
    ) -> None:
        self.core = core
        self.prefix = prefix
        self.entries = entries
        self.retry = retry
        self.deadline = deadline
        self.next_op = 0
        self.active = 0
        self.parked: dict[int, _Parked] = {}
        self.generation = 0
        self.stopping = False
        self.suspended = False
        self.current: dict[int, str] = {}
        self._idle: asyncio.Future[None] | None = None
        self._quiet: asyncio.Event | None = None
        self._idle_check: asyncio.Task[None] | None = None

    # -- driving -------------------------------------------------------------

    async def execute(self, body: Callable[[], Awaitable[Any]]) -> Outcome:
        loop = asyncio.get_running_loop()
        self._idle = loop.create_future()
        self._quiet = asyncio.Event()
        self._quiet.set()

        async def main() -> Any:
            return await body()

        task = self.core.spawn(main())
        while True:
            await asyncio.wait({task, self._idle}, return_when=asyncio.FIRST_COMPLETED)
            if task.done() or (self.active == 0 and self.parked):
                break
            # A parked operation woke (its time came, or an event) between the idle
            # check and now: the body moved on, so it is not idle after all.
            self._idle = loop.create_future()
            self._maybe_idle()
        if not task.done():
            # Everything in flight is parked: suspend. Record the wake-ups first,
            # since unwinding the body removes the parked operations.
            parked = list(self.parked.values())
            self.suspended = True
            task.cancel()
            await asyncio.wait({task})
            if task.cancelled() or isinstance(task.exception(), (asyncio.CancelledError, _Suspend)):
                return self._parked_outcome(parked)
        # Siblings of a failed branch (asyncio.gather does not cancel them) finish
        # and journal their outputs before the phase settles.
        while self.active:
            self._quiet.clear()
            await self._quiet.wait()
        self.suspended = True
        for parked_op in list(self.parked.values()):
            if not parked_op.future.done():
                parked_op.future.set_exception(_Suspend())
        return self._outcome(task)

    def _parked_outcome(self, parked: list[_Parked]) -> Outcome:
        wakes = [p.wake_at for p in parked if p.wake_at is not None]
        waiting = sorted({p.event_type for p in parked if p.event_type is not None})
        return Outcome("parked", wake_at=min(wakes) if wakes else None, waiting_for=waiting)

    def _outcome(self, task: asyncio.Task[Any]) -> Outcome:
        try:
            value = task.result()
        except _Stop:
            return Outcome("stopped")
        except _Abort as abort:
            return Outcome(
                "failed",
                error=abort.error.to_dict(),
                failed_step=abort.step,
                attempt=abort.attempt,
                compensate=abort.compensate,
            )
        except StepFailedError as exc:
            return Outcome("failed", error=exc.error, failed_step=exc.step, attempt=exc.attempt)
        except (asyncio.CancelledError, _Suspend):
            return Outcome("parked")
        except Exception as exc:
            # The body raised outside any step: a bug or a deliberate failure.
            error = jn.serialize_error(
                exc, attempt=1, started_at=None, finished_at=self.core.now(), retryable=False
            )
            return Outcome("failed", error=dict(error), failed_step=None, attempt=0)
        unreached = [op for op in self.entries if op >= self.next_op]
        if unreached:
            entry = self.entries[min(unreached)]
            mismatch = ReplayMismatchError(
                f"the journal has operation #{min(unreached)} ({entry.get('kind')} {entry.get('name')!r}) "
                "that the workflow code no longer reaches",
                position=min(unreached),
            )
            return Outcome(
                "failed", error=mismatch.to_dict(), failed_step=entry.get("name"), compensate=False
            )
        return Outcome("completed", value=value)

    def stop(self) -> None:
        """Cancellation: parked operations end now, running steps finish first."""
        self.stopping = True
        for parked in list(self.parked.values()):
            if not parked.future.done():
                parked.future.set_exception(_Stop())

    def deliver(self, event_type: str) -> None:
        """An event arrived while this phase runs: wake the waits for its type."""
        for parked in list(self.parked.values()):
            if parked.event_type == event_type and not parked.future.done():
                parked.future.set_result(None)

    # -- bookkeeping ------------------------------------------------------------

    def _allocate(self) -> int:
        if self.suspended:
            raise _Suspend()
        op = self.next_op
        self.next_op += 1
        return op

    def _enter(self, op: int, name: str) -> None:
        self.active += 1
        self.generation += 1
        self.current[op] = name
        assert self._quiet is not None
        self._quiet.clear()

    def _leave(self, op: int) -> None:
        self.active -= 1
        self.generation += 1
        self.current.pop(op, None)
        if self.active == 0:
            assert self._quiet is not None
            self._quiet.set()
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.active == 0 and self.parked and (self._idle_check is None or self._idle_check.done()):
            self._idle_check = self.core.spawn(self._confirm_idle())

    async def _confirm_idle(self) -> None:
        # A finished gather branch reaches its parent a few loop turns later;
        # give the body those turns to start its next operation.
        generation = self.generation
        for _ in range(8):
            await asyncio.sleep(0)
        idle = self._idle
        if idle is None or idle.done():
            return
        if self.generation == generation and self.active == 0 and self.parked:
            idle.set_result(None)
        elif self.active == 0 and self.parked:
            self._maybe_idle_later()

    def _maybe_idle_later(self) -> None:
        self._idle_check = self.core.spawn(self._confirm_idle())

    async def _park(self, op: int, *, wake_at: float | None, event_type: str | None) -> None:
        """Wait for ``wake_at`` or an event; the phase suspends if all in flight is parked."""
        if self.stopping:
            raise _Stop()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        parked = _Parked(op, wake_at, event_type, future)
        self.parked[op] = parked
        self.active -= 1
        self.generation += 1
        timer = None
        if wake_at is not None:
            timer = self.core.spawn(self._ring(parked))
        if self.active == 0:
            assert self._quiet is not None
            self._quiet.set()
        self._maybe_idle()
        try:
            await future
        finally:
            self.parked.pop(op, None)
            self.active += 1
            self.generation += 1
            if timer is not None:
                timer.cancel()

    async def _ring(self, parked: _Parked) -> None:
        assert parked.wake_at is not None
        await self.core.clock.sleep(parked.wake_at - self.core.now())
        if not parked.future.done():
            parked.future.set_result(None)

    def _check_continue(self, name: str, attempt: int = 0) -> None:
        # Cancellation stops the main phase; the compensation it triggers must still run.
        if self.stopping or (self.core.cancel_requested and self.prefix == jn.MAIN):
            self.stopping = True
            raise _Stop()
        if self.deadline is not None and self.core.now() >= self.deadline:
            raise _Abort(
                WorkflowTimeoutError("the workflow ran past its timeout", deadline=self.deadline),
                step=name,
                attempt=attempt,
                compensate=True,
            )

    def _check_identity(self, op: int, entry: dict[str, Any], kind: str, name: str) -> None:
        if entry.get("kind") != kind or entry.get("name") != name:
            raise _Abort(
                ReplayMismatchError(
                    f"replay met {kind} {name!r} at operation #{op}, but the journal recorded "
                    f"{entry.get('kind')} {entry.get('name')!r} there: the workflow code changed "
                    "under a running execution",
                    position=op,
                    expected={"kind": entry.get("kind"), "name": entry.get("name")},
                    found={"kind": kind, "name": name},
                ),
                step=name,
                attempt=int(entry.get("attempt", 0)),
                compensate=False,
            )

    def _record(self, op: int, record: dict[str, Any]) -> tuple[str, str]:
        key = jn.op_key(self.prefix, op)
        self.entries[op] = record
        return key, jn.encode_record(key, record, what=f"journal entry of {record['name']!r}")

    def _failed(self, entry: dict[str, Any]) -> StepFailedError:
        error = entry.get("error") or {}
        return StepFailedError(
            f"step {entry['name']!r} failed: {error.get('message', '')}",
            step=entry["name"],
            attempt=int(entry.get("attempt", 0)),
            error=error,
        )

    async def _fail(self, op: int, entry: dict[str, Any], error: dict[str, Any]) -> StepFailedError:
        record = {**entry, "status": "failed", "error": error, "finished_at": self.core.now()}
        record.pop("idempotency_key", None)
        key, text = self._record(op, record)
        await self.core.write({key: text})
        return self._failed(record)

    # -- steps -----------------------------------------------------------------

    def step(
        self, name: str, call: Callable[[StepContext], Any], options: StepOptions
    ) -> Coroutine[Any, Any, Any]:
        op = self._allocate()
        return self._step(op, name, call, options)

    async def _step(
        self, op: int, name: str, call: Callable[[StepContext], Any], options: StepOptions
    ) -> Any:
        self._enter(op, name)
        try:
            return await self._step_body(op, name, call, options)
        finally:
            self._leave(op)

    async def _step_body(
        self, op: int, name: str, call: Callable[[StepContext], Any], options: StepOptions
    ) -> Any:
        entry = self.entries.get(op)
        if entry is not None:
            self._check_identity(op, entry, "step", name)
            if entry["status"] == "completed":
                return validate(options.output, entry.get("output"), what=f"output of {name!r}")
            if entry["status"] == "failed":
                raise self._failed(entry)
        policy = options.retry or self.retry
        attempt = int(entry["attempt"]) if entry else 0
        errors: list[dict[str, Any]] = list(entry.get("errors") or []) if entry else []
        key_text: str | None = entry.get("idempotency_key") if entry else None
        first_started = entry.get("started_at") if entry else None
        failures = int(entry.get("failures", 0)) if entry else 0
        if entry is not None and entry["status"] == "running":
            # The attempt started and never journaled: the object died mid-step.
            lost_in_a_row = int(entry.get("lost", 0)) + 1
            lost = {
                "code": "attempt_lost",
                "message": "the execution object stopped while this attempt ran",
                "type": "AttemptLost",
                "retryable": lost_in_a_row < MAX_LOST_ATTEMPTS,
                "attempt": attempt,
                "started_at": entry.get("attempt_started_at"),
                "finished_at": None,
                "duration_ms": None,
            }
            errors = [*errors, lost][-MAX_ERRORS_KEPT:]
            if lost_in_a_row >= MAX_LOST_ATTEMPTS:
                raise await self._fail(op, {**entry, "errors": errors}, lost)
            entry = {**entry, "lost": lost_in_a_row}
        elif entry is not None and entry["status"] == "retrying":
            await self._wait_until(op, name, float(entry["retry_at"]), attempt)
        while True:
            self._check_continue(name, attempt)
            attempt += 1
            if key_text is None:
                key_text = self._idempotency_key(op, name, options, attempt)
            ctx = StepContext(
                self.core.execution_id, self.core.workflow_name, name, attempt, key_text, self.core.input
            )
            key_hash = hash_key(key_text)
            if options.idempotency_key is not None:
                reused = self.core.idempotent_output(key_hash)
                if reused is not None:
                    return await self._complete_reused(op, name, options, key_hash, reused)
            now = self.core.now()
            running = {
                "op": op,
                "kind": "step",
                "name": name,
                "status": "running",
                "attempt": attempt,
                "failures": failures,
                "lost": int(entry.get("lost", 0)) if entry else 0,
                "started_at": first_started if first_started is not None else now,
                "attempt_started_at": now,
                "idempotency_key": key_text,
                "idempotency_hash": key_hash,
                "errors": errors,
            }
            first_started = running["started_at"]
            key, text = self._record(op, running)
            await self.core.write({key: text})
            self.core.fault("before_step", step=name, attempt=attempt)
            try:
                value = await self._invoke(call, ctx, options, name)
                data = to_data(value)
                output_text = jn.encode_value(data, what=f"output of step {name!r}")
            except ControlSignal:
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                finished = self.core.now()
                if isinstance(exc, _DeadlineReached):
                    timeout = WorkflowTimeoutError("the workflow ran past its timeout while this step ran")
                    error = dict(
                        jn.serialize_error(
                            timeout,
                            attempt=attempt,
                            started_at=now,
                            finished_at=finished,
                            retryable=False,
                        )
                    )
                    await self._fail(op, {**running, "errors": [*errors, error][-MAX_ERRORS_KEPT:]}, error)
                    raise _Abort(timeout, step=name, attempt=attempt, compensate=True) from None
                failures += 1
                retry = (
                    jn.is_retryable(exc, policy.non_retryable)
                    and failures < policy.max_attempts
                    and not self.stopping
                    and not self.core.cancel_requested
                )
                retry_at = finished + policy.next_delay(failures, self.core.rng) if retry else None
                if retry_at is not None and self.deadline is not None and retry_at >= self.deadline:
                    retry, retry_at = False, None
                error = dict(
                    jn.serialize_error(
                        exc, attempt=attempt, started_at=now, finished_at=finished, retryable=retry
                    )
                )
                errors = [*errors, error][-MAX_ERRORS_KEPT:]
                if retry_at is None:
                    raise await self._fail(
                        op, {**running, "errors": errors, "failures": failures}, error
                    ) from None
                retrying = {
                    **running,
                    "status": "retrying",
                    "retry_at": retry_at,
                    "error": error,
                    "errors": errors,
                    "failures": failures,
                    "lost": 0,
                }
                key, text = self._record(op, retrying)
                await self.core.write({key: text})
                await self._wait_until(op, name, retry_at, attempt)
                continue
            self.core.fault("after_side_effect", step=name, attempt=attempt)
            completed = {
                **running,
                "status": "completed",
                "finished_at": self.core.now(),
                "error": None,
            }
            completed.pop("idempotency_key", None)
            try:
                self._defer_with_output(op, completed, output_text)
            except SerializationError as exc:
                error = dict(
                    jn.serialize_error(
                        exc,
                        attempt=attempt,
                        started_at=now,
                        finished_at=self.core.now(),
                        retryable=False,
                    )
                )
                raise await self._fail(
                    op, {**running, "errors": [*errors, error][-MAX_ERRORS_KEPT:]}, error
                ) from None
            self.core.remember_idempotent(key_hash, self.entries[op])
            return validate(options.output, self.entries[op]["output"], what=f"output of {name!r}")

    def _idempotency_key(self, op: int, name: str, options: StepOptions, attempt: int) -> str:
        spec = options.idempotency_key
        if spec is None:
            return f"{self.core.execution_id}:{self.prefix}{op}:{name}"
        if isinstance(spec, str):
            return spec
        ctx = StepContext(self.core.execution_id, self.core.workflow_name, name, attempt, "", self.core.input)
        try:
            key = spec(ctx)
        except Exception as exc:
            raise _Abort(
                SerializationError(f"idempotency_key of step {name!r} raised: {exc!r}"),
                step=name,
                attempt=ctx.attempt,
                compensate=True,
            ) from None
        if not isinstance(key, str) or not key or not jn.is_unicode(key):
            raise _Abort(
                SerializationError(
                    f"idempotency_key of step {name!r} must return a non-empty str of valid Unicode, "
                    f"got {key!r}"
                ),
                step=name,
                attempt=ctx.attempt,
                compensate=True,
            )
        return key

    async def _complete_reused(
        self, op: int, name: str, options: StepOptions, key_hash: str, reused: dict[str, Any]
    ) -> Any:
        now = self.core.now()
        record: dict[str, Any] = {
            "op": op,
            "kind": "step",
            "name": name,
            "status": "completed",
            "attempt": 0,
            "started_at": now,
            "finished_at": now,
            "idempotency_hash": key_hash,
            "reused_from": reused.get("source") or reused.get("name"),
            "output": reused.get("output"),
            "error": None,
            "errors": [],
        }
        key, text = self._record(op, record)
        self.core.defer(key, text, name)
        return validate(options.output, record["output"], what=f"output of {name!r}")

    def _defer_with_output(self, op: int, record: dict[str, Any], output_text: str) -> None:
        # The output is serialized once and spliced into the entry's JSON, and
        # the step's return value is decoded from it: first run and replay see
        # the same value (tuples become lists, as they will on replay).
        key = jn.op_key(self.prefix, op)
        envelope = jn.dumps({"v": jn.VERSION, **record})
        text = envelope[:-1] + ',"output":' + output_text + "}"
        jn.check_size(key, text, what=f"output of step {record['name']!r}")
        record["output"] = jn.loads(output_text)
        self.entries[op] = record
        self.core.defer(key, text, record["name"])

    async def _invoke(
        self, call: Callable[[StepContext], Any], ctx: StepContext, options: StepOptions, name: str
    ) -> Any:
        token = _CURRENT_STEP.set(ctx)
        try:
            result = call(ctx)
            if not inspect.isawaitable(result):
                return result
            limit = options.timeout
            deadline_left = None if self.deadline is None else self.deadline - self.core.now()
            if deadline_left is not None and (limit is None or deadline_left < limit):
                return await self._bounded(result, max(deadline_left, 0.0), deadline=True)
            if limit is not None:
                return await self._bounded(result, limit, deadline=False, step=name)
            return await result
        finally:
            _CURRENT_STEP.reset(token)

    async def _bounded(
        self, awaitable: Awaitable[Any], seconds: float, *, deadline: bool, step: str = ""
    ) -> Any:
        async def run() -> Any:
            return await awaitable

        try:
            work = self.core.spawn(run())
        except BaseException:
            # The object died before the attempt was scheduled: never leave the
            # handler's coroutine un-awaited.
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise
        timer = self.core.spawn(self.core.clock.sleep(seconds))
        try:
            await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if work.done():
            return work.result()
        work.cancel()
        if deadline:
            raise _DeadlineReached()
        raise StepTimeoutError(
            f"step {step!r} attempt ran longer than its timeout of {seconds:g}s", timeout=seconds
        )

    async def _wait_until(self, op: int, name: str, at: float, attempt: int) -> None:
        while True:
            now = self.core.now()
            if at <= now:
                return
            self._check_continue(name, attempt)
            wake = at if self.deadline is None else min(at, self.deadline)
            await self._park(op, wake_at=wake, event_type=None)

    # -- sleeps and waits ----------------------------------------------------------

    def sleep(self, name: str, *, until: float | None, duration: float | None) -> Coroutine[Any, Any, None]:
        op = self._allocate()
        return self._sleep(op, name, until, duration)

    async def _sleep(self, op: int, name: str, until: float | None, duration: float | None) -> None:
        self._enter(op, name)
        try:
            entry = self.entries.get(op)
            if entry is not None:
                self._check_identity(op, entry, "sleep", name)
                if entry["status"] == "completed":
                    return
                wake_at = float(entry["wake_at"])
            else:
                self._check_continue(name)
                now = self.core.now()
                wake_at = until if until is not None else now + (duration or 0.0)
                entry = {
                    "op": op,
                    "kind": "sleep",
                    "name": name,
                    "status": "sleeping",
                    "started_at": now,
                    "wake_at": wake_at,
                }
                key, text = self._record(op, entry)
                if wake_at > now:
                    await self.core.write({key: text})
            await self._wait_until(op, name, wake_at, 0)
            key, text = self._record(op, {**entry, "status": "completed", "finished_at": self.core.now()})
            self.core.defer(key, text, name)
        finally:
            self._leave(op)

    def wait(
        self, name: str, event_type: str, *, timeout: float | None, default: Any
    ) -> Coroutine[Any, Any, Any]:
        op = self._allocate()
        return self._wait(op, name, event_type, timeout, default)

    async def _wait(self, op: int, name: str, event_type: str, timeout: float | None, default: Any) -> Any:
        self._enter(op, name)
        try:
            entry = self.entries.get(op)
            if entry is not None:
                self._check_identity(op, entry, "wait", name)
                if entry["status"] == "completed":
                    return entry.get("output")
                if entry["status"] == "failed":
                    raise self._failed(entry)
            else:
                self._check_continue(name)
                now = self.core.now()
                entry = {
                    "op": op,
                    "kind": "wait",
                    "name": name,
                    "status": "waiting",
                    "event_type": event_type,
                    "started_at": now,
                    "wake_at": None if timeout is None else now + timeout,
                }
                key, text = self._record(op, entry)
                await self.core.write({key: text})
            timeout_at = entry.get("wake_at")
            while True:
                self._check_continue(name)
                event = self.core.take_event(event_type)
                if event is not None:
                    event_key, event_record = event
                    done = {
                        **entry,
                        "status": "completed",
                        "finished_at": self.core.now(),
                        "event_id": event_record.get("id"),
                        "output": event_record.get("payload"),
                    }
                    key, text = self._record(op, done)
                    await self.core.write({key: text}, deletes=[event_key])
                    return done["output"]
                now = self.core.now()
                if timeout_at is not None and now >= timeout_at:
                    if default is not MISSING:
                        data = to_data(default)
                        done = {
                            **entry,
                            "status": "completed",
                            "finished_at": now,
                            "output": data,
                            "timed_out": True,
                        }
                        key, text = self._record(op, done)
                        self.core.defer(key, text, name)
                        return data
                    error = dict(
                        jn.serialize_error(
                            WaitTimeoutError(f"no {event_type!r} event arrived before the wait's timeout"),
                            attempt=1,
                            started_at=entry.get("started_at"),
                            finished_at=now,
                            retryable=False,
                        )
                    )
                    raise await self._fail(op, {**entry, "attempt": 1}, error)
                wake = timeout_at
                if self.deadline is not None:
                    wake = self.deadline if wake is None else min(wake, self.deadline)
                await self._park(op, wake_at=wake, event_type=event_type)
        finally:
            self._leave(op)


class _DeadlineReached(Exception):
    """The workflow's deadline cut a step attempt short (turned into an abort)."""
