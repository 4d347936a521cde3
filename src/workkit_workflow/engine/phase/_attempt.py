"""One attempt of a step: its idempotency key, the call under its time limits, and
the journal record of a completed (or reused) result."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring
from typing import Any

from ...definitions._json import C_ENCODE, decoded
from ...definitions._steps import _CURRENT_STEP, MAX_KEY_CHARS, StepContext, StepOptions
from ...definitions._values import JSON_TYPES, validate
from ...errors import SerializationError, StepTimeoutError
from .. import _journal as jn
from .._pages import JournalWindow
from .._plugins import HANDED_MAX
from .._signals import Abort
from ._run import PhaseRun


class DeadlineReached(Exception):
    """The workflow's deadline cut a step attempt short (turned into an abort)."""


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def idempotency_key(run: PhaseRun, op: int, name: str, options: StepOptions, attempt: int) -> str:
    spec = options.idempotency_key
    if spec is None:
        return jn.default_idempotency_key(run.execution_id, run.prefix, op, name)
    if isinstance(spec, str):
        return spec
    ctx = StepContext(run.execution_id, run.workflow_name, name, attempt, "", run.execution.input)
    try:
        key = spec(ctx)
    except Exception as exc:
        raise Abort(
            SerializationError(f"idempotency_key of step {name!r} raised: {exc!r}"),
            step=name,
            attempt=ctx.attempt,
            compensate=True,
        ) from None
    if not isinstance(key, str) or not key or not jn.is_unicode(key):
        raise Abort(
            SerializationError(
                f"idempotency_key of step {name!r} must return a non-empty str of valid Unicode, got {key!r}"
            ),
            step=name,
            attempt=ctx.attempt,
            compensate=True,
        )
    if len(key) > MAX_KEY_CHARS:
        raise Abort(
            SerializationError(
                f"idempotency_key of step {name!r} must return at most {MAX_KEY_CHARS} characters, "
                f"got {len(key)}"
            ),
            step=name,
            attempt=ctx.attempt,
            compensate=True,
        )
    return key


def complete_reused(
    run: PhaseRun, op: int, name: str, options: StepOptions, key_hash: str, reused: dict[str, Any]
) -> Any:
    """Complete the step with the result an earlier execution recorded under its key."""
    now = run.execution.now()
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
    key, text = run.record(op, record)
    run.execution.defer(key, text, name)
    return validate(options.output, record["output"], what=f"output of {name!r}")


def encode_output(data: Any, name: str) -> str:
    """The output's JSON text, or SerializationError (its message is built only then)."""
    try:
        # ``dumps``, spelt out for the usual output, a dict
        text = "".join(C_ENCODE(data, 0)) if type(data) is dict and C_ENCODE else jn.dumps(data)
    except (TypeError, ValueError, RecursionError):
        text = ""
    if text and text.isascii():
        return text
    return jn.encode_value(data, what=f"output of step {name!r}")


def completed_envelope(running_text: str, finished_at: float) -> str:
    """The text ``encode_entry`` gives for ``{**running, "status": "completed",
    "finished_at": finished_at}``, from the running entry's text: one small encode
    instead of the whole entry again. The status's key and value only occur once
    (a quote inside a JSON string is escaped), so replacing the first is exact."""
    text = running_text.replace('"status":"running"', '"status":"completed"', 1)
    return f'{text[:-1]},"finished_at":{jn.number_text(finished_at)}}}'


def keyed_running_text(name: str, attempt: int, started_at: float, key_text: str, key_hash: str) -> str:
    """``encode_entry``'s text for a keyed step's running entry with nothing else in it (the
    six fields of ``running_step_text``, then ``idempotency_key`` and ``idempotency_hash``),
    written out: the encoder's whole entry is most of a keyed step's cost above a plain one's.
    ``tests/test_step_envelope.py`` holds it to the encoder's text."""
    fields, _ = key_fields_text(key_text, key_hash)
    return f"{jn.running_step_text(name, attempt, started_at)[:-1]}{fields}}}"


def key_fields_text(key_text: str, key_hash: str) -> tuple[str, str]:
    """The two fields a keyed running entry's text ends with (``,"idempotency_key":...,
    "idempotency_hash":...``, before its closing brace), and the last alone: what the step's
    completed text keeps of them (``keyed_completed_envelope``). The hash (``hash_key``'s
    ``sha256:`` and hex digits) is a JSON string as it is."""
    hashed = f',"idempotency_hash":"{key_hash}"'
    return f',"idempotency_key":{encode_basestring(key_text)}{hashed}', hashed


def keyed_completed_envelope(running_text: str, finished_at: float) -> str:
    """``encode_entry``'s text for the completion of a keyed step's running entry whose key
    fields end it (``idempotency_key``, then ``idempotency_hash``), less its output: the key
    itself is not journaled once the step completed, its hash stays. The key's field is cut
    out of the running text (its name, a quote after a comma, occurs nowhere inside a JSON
    string), and the rest completed as :func:`completed_envelope` completes any."""
    cut = running_text.find(',"idempotency_key":')
    kept = running_text.find(',"idempotency_hash":', cut)
    return completed_envelope(running_text[:cut] + running_text[kept:], finished_at)


def defer_with_output(
    run: PhaseRun,
    op: int,
    record: dict[str, Any],
    output_text: str,
    envelope: str | None = None,
    *,
    key: str | None = None,
    data: Any,
) -> Any:
    """Journal a completed record whose output is ``data``, encoded as ``output_text``
    (``envelope``: the record's text without the output, if known; ``key``: the entry's
    storage key, if the caller has it); the output, as it reads back."""
    # The output is serialized once and spliced into the entry's JSON, and
    # the step's return value is decoded from it: first run and replay see
    # the same value (tuples become lists, as they will on replay).
    if key is None:
        key = jn.op_key(run.prefix, op)
    if envelope is None:
        envelope = jn.encode_entry(key, record if "v" in record else {"v": jn.OP_VERSION, **record})
    text = f'{envelope[:-1]},"output":{output_text}}}'
    if not (text.isascii() and len(key) + len(text) <= jn.MAX_VALUE_BYTES):
        jn.check_size(key, text, what=f"output of step {record['name']!r}")
    output = decoded(data, output_text)
    execution = run.execution
    if execution.hands_entries and type(run.entries) is JournalWindow and not record.get("undo"):
        # ``PhaseRun.completed`` forgets the record: it is for the observers alone, which never
        # read the output (``HANDED_MAX``). Without it, the value holds no container, and the
        # history keeps it untracked by the collector.
        run.completed(op, record)
        execution.defer(key, text, record["name"], record)
        return output
    record["output"] = output
    run.completed(op, record)
    # A long text's value holds a large output: observers read the text (``HANDED_MAX``).
    execution.defer(key, text, record["name"], record if len(text) <= HANDED_MAX else None)
    return output


async def invoke(
    run: PhaseRun, call: Callable[[StepContext], Any], ctx: StepContext, options: StepOptions, name: str
) -> Any:
    """Call the step's code with its context current, bounded by its timeout and the deadline."""
    token = _CURRENT_STEP.set(ctx)
    try:
        result = call(ctx)
        if type(result) in JSON_TYPES or not inspect.isawaitable(result):
            return result
        return await limited(run, result, options.timeout, name)
    finally:
        _CURRENT_STEP.reset(token)


def limited(run: PhaseRun, result: Awaitable[Any], limit: float | None, name: str) -> Awaitable[Any]:
    """``result`` bounded by the step's time ``limit`` and the workflow's deadline."""
    deadline_left = None if run.deadline is None else run.deadline - run.execution.now()
    if deadline_left is not None and (limit is None or deadline_left < limit):
        return _bounded(run, result, max(deadline_left, 0.0), deadline=True)
    if limit is not None:
        return _bounded(run, result, limit, deadline=False, step=name)
    return result


async def _bounded(
    run: PhaseRun, awaitable: Awaitable[Any], seconds: float, *, deadline: bool, step: str = ""
) -> Any:
    async def attempt() -> Any:
        return await awaitable

    execution = run.execution
    try:
        work = execution.spawn(attempt())
    except BaseException:
        # The object died before the attempt was scheduled: never leave the
        # handler's coroutine un-awaited.
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        raise
    timer = execution.spawn(execution.clock.sleep(seconds))
    try:
        await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
    if work.done():
        return work.result()
    work.cancel()
    if deadline:
        raise DeadlineReached()
    raise StepTimeoutError(
        f"step {step!r} attempt ran longer than its timeout of {seconds:g}s", timeout=seconds
    )


def unrecorded(run: PhaseRun, key_hash: str) -> bool:
    """Whether no step can have recorded this key, known without a read: every key of the
    journal is known (its window scanned) and this one is not among them, nor among the
    results a restart carried over (a new key, the usual: no coroutine of the lookup's)."""
    entries = run.entries
    if type(entries) is JournalWindow and not entries.scanned:
        return False
    execution = run.execution
    return key_hash not in execution.keyed and key_hash not in execution.idempotent


async def recorded(run: PhaseRun, key_hash: str) -> dict[str, Any] | None:
    """What a completed step with this idempotency key recorded, if one did."""
    if isinstance(run.entries, JournalWindow):
        await run.entries.scan_hashes()  # a later operation may hold this key
    return await run.execution.idempotent_output(key_hash)
