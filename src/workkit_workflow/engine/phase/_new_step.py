"""A step the journal has no entry for, with the default options: its first attempt
written out on its own, the engine's hot path (a new execution's every step).

It does what :func:`run_step` does for such a step, with nothing to look up or branch on:
no entry to replay, no idempotency key of the options' to check, no undo to journal, no
output model, no time limit of its own. Everything else goes the general way: a paused
execution (``run_step`` itself), and a failed attempt (its retries are ``attempts``, from
the progress this one made).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from ...definitions._steps import (
    _CURRENT_STEP,
    DEFAULT_OPTIONS,
    FirstAttempt,
    first_attempt_context,
    plain_call,
)
from ...definitions._values import JSON_TYPES, to_data
from ...errors import SerializationError
from .. import _journal as jn
from .._pause import is_paused
from .._signals import ControlSignal
from ._attempt import completed_envelope, defer_with_output, encode_output, limited
from ._run import PhaseRun
from ._step import Progress, attempt_failed, attempts, run_step, unstorable_output


async def run_new_step(
    run: PhaseRun, op: int, name: str, fn: Callable[..., Any], args: tuple[Any, ...] | None
) -> Any:
    """``run_step(run, op, name, call, DEFAULT_OPTIONS)`` for an ``op`` past the journal's end,
    where ``call`` is ``fn(*args)``, or ``fn(ctx)`` if ``args`` is None (a builder's handler)."""
    execution = run.execution
    # Nothing to check on the usual step: not paused, not cancelled, no deadline.
    state = execution.state or {}
    unusual = bool(
        run.stopping
        or run.deadline is not None
        or state.get("paused")
        or state.get("cancel_requested_at") is not None
    )
    if unusual and is_paused(state):
        return await run_step(run, op, name, plain_call(fn, args), DEFAULT_OPTIONS)
    run.enter(op, name)
    try:
        if unusual:
            run.check_continue(name, 0)
        started = execution.now()
        key, running, text = _running_entry(run, op, name, started)
        if execution.hands_entries:
            await execution.write({key: text}, entries={key: running})
        else:
            await execution.write({key: text})
        if execution.faulting:
            execution.fault("before_step", step=name, attempt=1)
        first = (run.execution_id, run.workflow_name, name, run.prefix, op, execution.input)
        failure: Exception | None = None
        # ``invoke``'s call, made here: the context is built only if the step's code asks.
        token = _CURRENT_STEP.set(first)
        try:
            value = fn(*args) if args is not None else fn(first_attempt_context(first))
            if type(value) not in JSON_TYPES and inspect.isawaitable(value):
                value = await limited(run, value, None, name)
            data = to_data(value)
            output_text = encode_output(data, name)
        except (ControlSignal, asyncio.CancelledError):
            raise
        except Exception as exc:
            failure = exc
        finally:
            _CURRENT_STEP.reset(token)
        if failure is not None:
            progress = _progress(first, started)
            await attempt_failed(run, op, name, run.retry, running, failure, progress)
            return await attempts(run, op, name, plain_call(fn, args), DEFAULT_OPTIONS, run.retry, progress)
        if execution.faulting:
            execution.fault("after_side_effect", step=name, attempt=1)
        finished = execution.now()
        completed = {**running, "status": "completed", "finished_at": finished}
        try:
            envelope = completed_envelope(text, finished)
            defer_with_output(run, op, completed, output_text, envelope, key=key, data=data)
        except SerializationError as exc:
            raise await unstorable_output(run, op, running, exc, _progress(first, started)) from None
        return completed["output"]
    finally:
        run.leave(op)


def _running_entry(run: PhaseRun, op: int, name: str, started: float) -> tuple[str, dict[str, Any], str]:
    """The first attempt's running entry as ``_running_entry`` builds it: its key, itself
    (kept by the run while the step runs) and its text."""
    running = {
        "v": jn.OP_VERSION, "kind": "step", "name": name, "status": "running", "attempt": 1,
        "started_at": started,
    }  # fmt: skip
    key = jn.op_key(run.prefix, op)
    run.entries[op] = running
    text = jn.running_step_text(name, 1, started)
    if not text.isascii():
        text = jn.encode_entry(key, running)
    return key, running, text


def _progress(first: FirstAttempt, started: float) -> Progress:
    """What the first attempt leaves its retries (or the failure of its output)."""
    return Progress(1, (), first_attempt_context(first).idempotency_key, started, 0)
