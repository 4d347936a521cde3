"""A step the journal has no entry for, with the default options: its first attempt
written out on its own, the engine's hot path (a new execution's every step).

It does what :func:`run_step` does for such a step, with nothing to look up or branch on:
no entry to replay, no idempotency key of the options' to check, no undo to journal, no
output model, no time limit of its own. Everything else goes the general way: a paused
execution (``run_step`` itself), and a failed attempt (its retries are ``attempts``, from
the progress this one made). A step whose only option is a key of its own is the next
most usual: :func:`run_new_step` writes its first attempt out as well, its key journaled
(and looked up, without a read, where no step can hold it yet)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from ...definitions._json import decoded, number_text
from ...definitions._steps import (
    _CURRENT_STEP,
    DEFAULT_OPTIONS,
    FirstAttempt,
    StepOptions,
    first_attempt_context,
    keyed_options,
    plain_call,
)
from ...definitions._values import JSON_TYPES, to_data
from ...errors import SerializationError
from .. import _journal as jn
from .._journal import FIRST_COMPLETED_TEXT_MIDDLE, FIRST_RUNNING_TEXT_MIDDLE, STEP_TEXT_HEAD
from .._pages import JournalWindow
from .._pause import is_paused
from .._plugins import HANDED_MAX
from .._signals import ControlSignal
from ._attempt import encode_output, hash_key, key_fields_text, limited, unrecorded
from ._run import PhaseRun
from ._step import Progress, attempt_failed, attempts, run_step, unstorable_output

Fn = Callable[..., Any]
Args = tuple[Any, ...] | None


async def run_new_step(
    run: PhaseRun, op: int, name: str, fn: Fn, args: Args, key_text: str | None = None
) -> Any:
    """``run_step(run, op, name, call, options)`` for an ``op`` past the journal's end: ``call`` is
    ``fn(*args)`` (``fn(ctx)`` if ``args`` is None), ``options`` the defaults or ``key_text`` alone."""
    execution = run.execution
    state = execution.state or {}  # the usual step's: not paused, not cancelled, no deadline
    unusual = run.stopping or run.deadline is not None or state.get("paused")
    unusual = bool(unusual or state.get("cancel_requested_at") is not None)
    key_hash = "" if key_text is None else hash_key(key_text)
    if (unusual and is_paused(state)) or not (key_text is None or unrecorded(run, key_hash)):
        return await run_step(run, op, name, plain_call(fn, args), _options(key_text))  # a key maybe held
    run.active += 1  # ``run.enter(op, name)``, spelt out
    run.generation += 1
    run.current[op] = name
    try:
        if unusual:
            run.check_continue(name, 0)
        started = execution.now()
        running = {
            "v": jn.OP_VERSION, "kind": "step", "name": name, "status": "running", "attempt": 1,
            "started_at": started,
        }  # fmt: skip
        key = run.prefix + str(op).zfill(8)  # ``op_key``, spelt out
        run.entries[op] = running
        name_text, started_text = encode_basestring(name), number_text(started)
        text = f"{STEP_TEXT_HEAD}{name_text}{FIRST_RUNNING_TEXT_MIDDLE}{started_text}}}"
        if key_text is not None:  # journaled with the start; the completion keeps its hash
            text, started_text = _keyed(running, text, started_text, key_text, key_hash)
        text = text if text.isascii() else jn.encode_entry(key, running)  # its checks, then
        await execution.write({key: text}, entries={key: running} if execution.hands_entries else None)
        if execution.faulting:
            execution.fault("before_step", step=name, attempt=1)
        first = (run.execution_id, run.workflow_name, name, run.prefix, op, execution.input, key_text)
        failure: Exception | None = None
        token = _CURRENT_STEP.set(first)  # a context is built only if the step's code asks
        try:
            value = fn(*args) if args is not None else fn(first_attempt_context(first))
            if type(value) not in JSON_TYPES:
                if inspect.isawaitable(value):
                    value = await limited(run, value, None, name)
                value = to_data(value)
            output_text = encode_output(value, name)
        except (ControlSignal, asyncio.CancelledError):
            raise
        except Exception as exc:
            failure = exc
        finally:
            _CURRENT_STEP.reset(token)
        if failure is not None:
            return await _retried(run, plain_call(fn, args), running, failure, first, started)
        if execution.faulting:
            execution.fault("after_side_effect", step=name, attempt=1)
        try:
            return _completion(run, op, key, running, name_text, started_text, output_text, value, key_hash)
        except SerializationError as exc:
            raise await unstorable_output(run, op, running, exc, _progress(first, started)) from None
    finally:
        run.leave(op)


def _keyed(
    running: dict[str, Any], text: str, started_text: str, key_text: str, key_hash: str
) -> tuple[str, str]:
    """A first attempt's start with a key of the step's own: its two fields added to the running
    entry, its running text (``keyed_running_text``'s), and the text from the start's instant to
    the key's hash, which its completion keeps (the key itself it drops:
    ``keyed_completed_envelope``)."""
    running["idempotency_key"], running["idempotency_hash"] = key_text, key_hash
    fields, hashed = key_fields_text(key_text, key_hash)
    return f"{text[:-1]}{fields}}}", started_text + hashed


def _completion(
    run: PhaseRun,
    op: int,
    key: str,
    running: dict[str, Any],
    name_text: str,
    started_text: str,
    output_text: str,
    data: Any,
    key_hash: str = "",
) -> Any:
    """Journal the first attempt's completion with its output (``data``, whose JSON text is
    ``output_text``) and return the output as it reads back: ``completed_envelope`` then
    ``defer_with_output``, spelt out (with no undo, the entry is never kept). Its text is
    written out from the name's and the start's (the encoder's, as ``running_step_text``'s).
    The completed entry's dict is built only if something reads it: an observer handed the
    entries (``hands_entries``), or a journal that keeps its entries (not a window).
    ``key_hash``: a key of the step's own (none if empty), whose hash ``started_text`` ends with
    (the key itself is not journaled once the step completed); the execution then knows the key
    completed."""
    execution = run.execution
    finished = execution.now()
    finished_text = number_text(finished)
    text = (
        f"{STEP_TEXT_HEAD}{name_text}{FIRST_COMPLETED_TEXT_MIDDLE}{started_text}"
        f',"finished_at":{finished_text},"output":{output_text}}}'
    )
    if not (text.isascii() and len(key) + len(text) <= jn.MAX_VALUE_BYTES):
        jn.check_size(key, text, what=f"output of step {running['name']!r}")
    output = decoded(data, output_text)
    if key_hash:  # nothing below can fail: the completion is deferred with it
        execution.remember_idempotent(key_hash, key)
    entries = run.entries
    windowed = type(entries) is JournalWindow
    if windowed:
        # ``PhaseRun.completed`` forgets a finished entry so; an op past the journal's end
        # was never reached in it (``JournalWindow.release`` less what it never holds).
        entries.pop(op, None)
        if not execution.hands_entries:
            execution.defer(key, text, running["name"])
            return output
    completed = {**running, "status": "completed", "finished_at": finished}
    if key_hash:
        del completed["idempotency_key"]  # not journaled once the step completed; its hash stays
    if windowed:
        # For the observers alone, which never read the output (``HANDED_MAX``): without it, the
        # value holds no container, and the history keeps it untracked by the collector.
        execution.defer(key, text, running["name"], completed)
        return output
    completed["output"] = output
    entries[op] = completed
    execution.defer(key, text, running["name"], completed if len(text) <= HANDED_MAX else None)
    return output


async def _retried(
    run: PhaseRun,
    call: Callable[..., Any],
    running: dict[str, Any],
    failure: Exception,
    first: FirstAttempt,
    started: float,
) -> Any:
    """The first attempt (``first``) failed: journal it, then go on as ``run_step`` does (retries)."""
    name, op = first[2], first[4]
    progress = _progress(first, started)
    await attempt_failed(run, op, name, run.retry, running, failure, progress)
    return await attempts(run, op, name, call, _options(first[6]), run.retry, progress)


def _options(key_text: str | None) -> StepOptions:
    """The options of a new step with this key of its own (none: the defaults)."""
    return DEFAULT_OPTIONS if key_text is None else keyed_options(key_text)


def _progress(first: FirstAttempt, started: float) -> Progress:
    """What the first attempt leaves its retries (or the failure of its output)."""
    return Progress(1, (), first_attempt_context(first).idempotency_key, started, 0)
