"""The step operation: replay its journaled outcome, or run attempts with its retry loop.

A step's entry moves through ``running`` (an attempt started), ``retrying`` (a
durable wait before the next attempt) and ``completed`` or ``failed``. An entry
found ``running`` on replay is an attempt lost with the object: it runs again
without using up the retry policy, up to its ``max_lost_attempts`` in a row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from ...definitions._retry import RetryPolicy
from ...definitions._steps import StepContext, StepOptions
from ...definitions._values import to_data, validate
from ...errors import SerializationError, StepFailedError, WorkflowTimeoutError
from .. import _journal as jn
from .._pages import JournalWindow
from .._pause import is_paused
from .._signals import Abort, ControlSignal
from ._attempt import (
    DeadlineReached,
    complete_reused,
    completed_envelope,
    defer_with_output,
    encode_output,
    hash_key,
    idempotency_key,
    invoke,
    keyed_completed_envelope,
    keyed_running_text,
    recorded,
    unrecorded,
)
from ._run import PhaseRun

MAX_ERRORS_KEPT = 10
"""Attempt errors kept per journal entry, newest last (bounds an entry's size)."""

_RETRY: Any = object()
"""An attempt failed and its retry wait is over: run the next one."""


@dataclass
class Progress:
    """What a step carries from one attempt to the next (and from its entry on replay)."""

    attempt: int
    errors: Sequence[dict[str, Any]]
    """Newest last; ``()`` until an attempt fails (no list held by a step that never does)."""
    key_text: str | None
    first_started: float | None
    failures: int
    lost: int = 0

    @classmethod
    def resume(cls, entry: dict[str, Any] | None) -> Progress:
        if entry is None:
            return cls(0, (), None, None, 0)
        return cls(
            int(entry["attempt"]),
            list(entry.get("errors") or []),
            entry.get("idempotency_key"),
            entry.get("started_at"),
            int(entry.get("failures", 0)),
        )

    def add_error(self, error: dict[str, Any]) -> list[dict[str, Any]]:
        return [*self.errors, error][-MAX_ERRORS_KEPT:]


async def run_step(
    run: PhaseRun, op: int, name: str, call: Callable[[StepContext], Any], options: StepOptions
) -> Any:
    run.enter(op, name)
    try:
        # An entry already in memory is read without a coroutine (most steps).
        if run.is_read(op):
            entry = run.replayed_read(op, "step", name)
        else:
            entry = await run.replayed(op, "step", name)
        policy = options.retry or run.retry
        if entry is None:
            progress = Progress(0, (), None, None, 0)
        elif entry["status"] == "completed":
            return _output(options, entry.get("output"), name)
        elif entry["status"] == "failed":
            raise run.failed(entry)
        else:
            progress = await _resume(run, op, name, entry, policy.max_lost_attempts)
        return await attempts(run, op, name, call, options, policy, progress)
    finally:
        run.leave(op)


async def attempts(
    run: PhaseRun,
    op: int,
    name: str,
    call: Callable[[StepContext], Any],
    options: StepOptions,
    policy: RetryPolicy,
    progress: Progress,
) -> Any:
    """The step's attempts from ``progress`` on, each after the wait its policy sets: the
    output of the first that completes (a failure that ends the retries raises)."""
    while True:
        if is_paused(run.execution.state):
            await run.hold(op)
        run.check_continue(name, progress.attempt)
        progress.attempt += 1
        result = await _attempt(run, op, name, call, options, policy, progress)
        if result is not _RETRY:
            return result


def replayed_step(run: PhaseRun, op: int, name: str, options: StepOptions) -> Coroutine[Any, Any, Any] | None:
    """The output of a step the journal in memory holds as completed, or None for
    :func:`run_step` to handle: a replay's hot path, without its bookkeeping (the
    step is over as soon as it is reached, so nothing can see it in flight).

    It has no effect unless it returns an output: the entry of any other step stays
    where ``run_step`` looks for it (a paged journal's ``ready`` is not called)."""
    if options.output is not None:
        return None
    entries = run.entries
    entry = entries.get(op)
    if entry is None:
        if type(entries) is not JournalWindow:
            return None
        # A journal window holds the entry as text (``_pages``): its output, if it is this
        # step completed as most are; any other text stays for ``ready`` to decode.
        text = entries.texts.get(op)
        found = None if text is None else jn.completed_step_output(text, name)
        if found is None:
            return None
        key_hash, output = found
        if key_hash is not None:
            entries.remember_key(key_hash, op)  # for a later step asking for the same key
        del entries.texts[op]
        # ``run.went_by(op, None)``, inlined (the text is forgotten already).
        run.generation += 1
        if run.parked:
            run._maybe_idle()
        return replayed_output(output)
    if entry.get("status") != "completed":
        return None
    if entry.get("kind") != "step" or entry.get("name") != name:
        return None  # run_step reports the mismatch
    run.went_by(op, entry)
    return replayed_output(entry.get("output"))


async def replayed_output(output: Any) -> Any:
    """An operation the journal holds as finished, awaited: what it returned."""
    return output


async def _resume(run: PhaseRun, op: int, name: str, entry: dict[str, Any], cap: int) -> Progress:
    """The progress of a step whose last attempt was lost (``cap``: how many in a row
    fail it) or waits for its retry."""
    progress = Progress.resume(entry)
    if entry["status"] == "running":
        entry = await _recover_lost_attempt(run, op, entry, progress, cap)
    elif entry["status"] == "retrying":
        await run.wait_until(op, name, float(entry["retry_at"]), progress.attempt)
    progress.lost = int(entry.get("lost", 0))
    return progress


async def _recover_lost_attempt(
    run: PhaseRun, op: int, entry: dict[str, Any], progress: Progress, cap: int
) -> dict[str, Any]:
    # The attempt started and never journaled: the object died mid-step.
    lost_in_a_row = int(entry.get("lost", 0)) + 1
    lost = {
        "code": "attempt_lost",
        "message": "the execution object stopped while this attempt ran",
        "type": "AttemptLost",
        "retryable": lost_in_a_row < cap,
        "attempt": progress.attempt,
        "started_at": entry.get("attempt_started_at"),
        "finished_at": None,
        "duration_ms": None,
    }
    progress.errors = progress.add_error(lost)
    if lost_in_a_row >= cap:
        raise await run.fail(op, {**entry, "errors": progress.errors}, lost)
    return {**entry, "lost": lost_in_a_row}


async def _attempt(
    run: PhaseRun,
    op: int,
    name: str,
    call: Callable[[StepContext], Any],
    options: StepOptions,
    policy: RetryPolicy,
    progress: Progress,
) -> Any:
    """One attempt; its output, or ``_RETRY`` once the wait before the next one is over."""
    execution = run.execution
    if progress.key_text is None:
        progress.key_text = (
            jn.default_idempotency_key(run.execution_id, run.prefix, op, name)
            if options.idempotency_key is None
            else idempotency_key(run, op, name, options, progress.attempt)
        )
    # Only a key the options give is journaled and looked up (a derived one is unique).
    key_hash = None if options.idempotency_key is None else hash_key(progress.key_text)
    if key_hash is not None and not unrecorded(run, key_hash):
        reused = await recorded(run, key_hash)
        if reused is not None:
            return complete_reused(run, op, name, options, key_hash, reused)
    key, running, running_text = _running_entry(run, op, name, progress, key_hash, options)
    if execution.hands_entries:
        await execution.write({key: running_text}, entries={key: running})
    else:
        await execution.write({key: running_text})
    if execution.faulting:
        execution.fault("before_step", step=name, attempt=progress.attempt)
    ctx = StepContext(
        run.execution_id, run.workflow_name, name, progress.attempt, progress.key_text, execution.input
    )
    try:
        value = await invoke(run, call, ctx, options, name)
        data = to_data(value)
        output_text = encode_output(data, name)
    except ControlSignal:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await attempt_failed(run, op, name, policy, running, exc, progress)
        return _RETRY
    if execution.faulting:
        execution.fault("after_side_effect", step=name, attempt=progress.attempt)
    completed, envelope = _completion(running, running_text, key_hash, execution.now())
    try:
        output = defer_with_output(run, op, completed, output_text, envelope, key=key, data=data)
    except SerializationError as exc:
        raise await unstorable_output(run, op, running, exc, progress) from None
    if key_hash is not None:
        execution.remember_idempotent(key_hash, key)
    return output if options.output is None else _output(options, output, name)


def _completion(
    running: dict[str, Any], running_text: str, key_hash: str | None, finished: float
) -> tuple[dict[str, Any], str | None]:
    """The completed record of the attempt ``running`` started, and its text less the output
    where it is written out (None: ``defer_with_output`` encodes the record)."""
    completed = {**running, "status": "completed", "finished_at": finished}
    if key_hash is None:
        return completed, completed_envelope(running_text, finished)
    del completed["idempotency_key"]  # not journaled once the step completed; its hash stays
    if len(running) != _KEYED_FIELDS:
        return completed, None
    return completed, keyed_completed_envelope(running_text, finished)  # the usual keyed attempt


def _output(options: StepOptions, output: Any, name: str) -> Any:
    return output if options.output is None else validate(options.output, output, what=f"output of {name!r}")


def _running_entry(
    run: PhaseRun, op: int, name: str, progress: Progress, key_hash: str | None, options: StepOptions
) -> tuple[str, dict[str, Any], str]:
    """The attempt's start, to journal before it runs: its key, the running entry, its text."""
    now = run.execution.now()
    if progress.first_started is None:
        progress.first_started = now
    # Fields at their defaults are left out (journal format v2, see _journal).
    running: dict[str, Any] = {
        "v": jn.OP_VERSION,
        "kind": "step",
        "name": name,
        "status": "running",
        "attempt": progress.attempt,
        "started_at": progress.first_started,
    }
    if now != progress.first_started:
        running["attempt_started_at"] = now
    if progress.failures:
        running["failures"] = progress.failures
    if progress.lost:
        running["lost"] = progress.lost
    if progress.errors:
        running["errors"] = progress.errors
    if key_hash is not None:
        running["idempotency_key"] = progress.key_text
        running["idempotency_hash"] = key_hash
    if options.undo is not None:
        # Journaled before the attempt can have its effect: an in-doubt step is undone too.
        running["undo"] = options.undo.record(progress.key_text)
    key = jn.op_key(run.prefix, op)
    run.entries[op] = running
    if len(running) == 6:  # the usual first attempt: no field beyond the six above
        text = jn.running_step_text(name, progress.attempt, progress.first_started)
        if text.isascii():
            return key, running, text
    elif key_hash is not None and len(running) == _KEYED_FIELDS:  # the six and the key's two
        key_text = running["idempotency_key"]
        text = keyed_running_text(name, progress.attempt, progress.first_started, key_text, key_hash)
        if text.isascii() and len(key) + len(text) <= jn.MAX_VALUE_BYTES:
            return key, running, text
    return key, running, jn.encode_entry(key, running)


_KEYED_FIELDS = 8
"""A keyed attempt's running entry with nothing but the usual six fields and the key's two."""


async def attempt_failed(
    run: PhaseRun,
    op: int,
    name: str,
    policy: RetryPolicy,
    running: dict[str, Any],
    exc: Exception,
    progress: Progress,
) -> None:
    """Journal the failed attempt: fail the step (raises), or wait durably for the retry."""
    execution = run.execution
    started, finished, attempt = _attempt_started(running), execution.now(), progress.attempt
    if isinstance(exc, DeadlineReached):
        timeout = WorkflowTimeoutError("the workflow ran past its timeout while this step ran")
        error = dict(
            jn.serialize_error(
                timeout, attempt=attempt, started_at=started, finished_at=finished, retryable=False
            )
        )
        await run.fail(op, {**running, "errors": progress.add_error(error)}, error)
        raise Abort(timeout, step=name, attempt=attempt, compensate=True) from None
    progress.failures += 1
    retry = (
        jn.is_retryable(exc, policy.non_retryable)
        and progress.failures < policy.max_attempts
        and not run.stopping
        and not execution.cancel_requested
    )
    retry_at = finished + policy.next_delay(progress.failures, execution.rng) if retry else None
    if retry_at is not None and run.deadline is not None and retry_at >= run.deadline:
        retry, retry_at = False, None
    error = dict(
        jn.serialize_error(exc, attempt=attempt, started_at=started, finished_at=finished, retryable=retry)
    )
    progress.errors = progress.add_error(error)
    if retry_at is None:
        failed = {**running, "errors": progress.errors, "failures": progress.failures}
        raise await run.fail(op, failed, error) from None
    retrying = {
        **running,
        "status": "retrying",
        "retry_at": retry_at,
        "error": error,
        "errors": progress.errors,
        "failures": progress.failures,
        "lost": 0,
    }
    key, text = run.record(op, retrying)
    await execution.write({key: text})
    await run.wait_until(op, name, retry_at, attempt)


async def unstorable_output(
    run: PhaseRun, op: int, running: dict[str, Any], exc: SerializationError, progress: Progress
) -> StepFailedError:
    """Fail the step whose output cannot be stored (too large, not valid Unicode)."""
    error = dict(
        jn.serialize_error(
            exc,
            attempt=progress.attempt,
            started_at=_attempt_started(running),
            finished_at=run.execution.now(),
            retryable=False,
        )
    )
    return await run.fail(op, {**running, "errors": progress.add_error(error)}, error)


def _attempt_started(running: dict[str, Any]) -> float:
    return float(running.get("attempt_started_at", running["started_at"]))
