"""The phase run with its operations: what workflow and compensation contexts call."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from ...definitions._steps import DEFAULT_OPTIONS, StepOptions, plain_call
from .. import _journal as jn
from .._pages import JournalWindow
from .._signals import Suspend
from ._child import run_child
from ._new_step import run_new_step
from ._run import PhaseRun
from ._set_state import run_set_state
from ._sleep import run_sleep
from ._step import replayed_output, replayed_step, run_step
from ._wait import run_wait


class Phase(PhaseRun):
    """A :class:`PhaseRun` that implements the contexts' ``Operations`` port.

    Each operation takes its position when it is *called* (not when awaited), so
    positions follow call order even under ``asyncio.gather``.
    """

    def step(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...] | None, options: StepOptions
    ) -> Coroutine[Any, Any, Any]:
        # ``allocate``, spelt out: every step of every execution comes here.
        if self.suspended:
            raise Suspend()
        op = self.next_op
        self.next_op = op + 1
        entries = self.entries
        if type(entries) is JournalWindow and op >= entries.end:
            # A new step: nothing to replay.
            if options is DEFAULT_OPTIONS:
                return run_new_step(self, op, name, fn, args)
            key = options.idempotency_key
            if (
                isinstance(key, str)
                and options.retry is None
                and options.timeout is None
                and options.output is None
                and options.undo is None
            ):  # its only option is a key of its own (``keyed_options``, the usual keyed step)
                return run_new_step(self, op, name, fn, args, key)
        replayed = replayed_step(self, op, name, options)
        if replayed is not None:
            return replayed  # no call made: the journal answers
        return run_step(self, op, name, plain_call(fn, args), options)

    def sleep(self, name: str, *, until: float | None, duration: float | None) -> Coroutine[Any, Any, None]:
        op = self.allocate()
        if _finished_from_text(self, op, "sleep", name) is not jn.NOT_PLAIN:
            return replayed_output(None)
        return run_sleep(self, op, name, until, duration)

    def wait(
        self, name: str, event_type: str, *, timeout: float | None, default: Any
    ) -> Coroutine[Any, Any, Any]:
        op = self.allocate()
        output = _finished_from_text(self, op, "wait", name)
        if output is not jn.NOT_PLAIN:
            return replayed_output(output)
        return run_wait(self, op, name, event_type, timeout, default)

    def child(
        self, name: str, workflow: str, input: Any, execution_id: str | None
    ) -> Coroutine[Any, Any, Any]:
        op = self.allocate()
        output = _finished_from_text(self, op, "child", name)
        if output is not jn.NOT_PLAIN:
            return replayed_output(output)
        return run_child(self, op, name, workflow, input, execution_id)

    def set_state(self, key: str, text: str) -> Coroutine[Any, Any, None]:
        return run_set_state(self, self.allocate(), key, text)


def _finished_from_text(run: PhaseRun, op: int, kind: str, name: str) -> Any:
    """What the finished wait, child or sleep at ``op`` returned, if the journal window
    holds its text as the operation writes it (``jn.finished_op_output``), else
    ``jn.NOT_PLAIN`` for the operation to replay from its entry. A replay's hot path, as a
    completed step's text is (``replayed_step``): a loop that waits or sleeps replays each
    earlier turn at each wake-up, and decoding those entries was most of it."""
    entries = run.entries
    if type(entries) is not JournalWindow:
        return jn.NOT_PLAIN
    text = entries.texts.get(op)
    if text is None:
        return jn.NOT_PLAIN
    output = jn.finished_op_output(text, op, kind, name)
    if output is not jn.NOT_PLAIN:
        del entries.texts[op]
        run.went_by(op, None)
    return output
