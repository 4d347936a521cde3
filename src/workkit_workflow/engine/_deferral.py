"""Operation completions that wait for the execution's next write.

A step's completion is not written on its own: :meth:`Deferral.defer` keeps it until the
next write (the next operation's start, the phase's end, or, if the body suspended with it
left, a write of its own a few iterations of the loop later, waiting on nothing), which
carries it in the same atomic commit. Nearly every step costs one write, not two.
:class:`ExecutionState` is a :class:`Deferral`: its single write path
(``ExecutionState.write``) takes what waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, Protocol, cast

from ._ports import PLAIN_CONTEXT, from_the_loop
from ._signals import StorageFailure


class _Writer(Protocol):
    _pending: dict[str, str]

    def write(self, puts: Mapping[str, str]) -> Awaitable[None]: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...


class Deferral:
    """The completions the next write of an execution carries."""

    __slots__ = (
        "_driving", "_flush_scheduled", "_loop", "_pending", "_pending_entries", "_pending_steps",
        "hands_entries",
    )  # fmt: skip

    def __init__(self, *, names: bool) -> None:
        self._pending: dict[str, str] = {}
        self._pending_entries: dict[str, Mapping[str, Any]] = {}
        """The values of the deferred completions the engine built, by key."""
        self.hands_entries = False
        """Whether a journal observer reads the values the engine built (the history
        projection's does): a step hands them to the write only then."""
        self._pending_steps: list[str] | None = [] if names else None
        """The names of the deferred completions, for the fault hook (kept only with one)."""
        self._flush_scheduled = False
        self._driving = False
        """Set while :meth:`deferring` runs a phase body: a completion the body defers then
        is flushed by the driver when the body suspends, not by a callback of its own."""
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop the deferred flush is scheduled on, looked up once: on CPython 3.11
        ``get_running_loop`` makes a ``getpid`` system call every time."""

    def defer(self, key: str, text: str, name: str, entry: Mapping[str, Any] | None = None) -> None:
        """Queue an operation's completion for the next write; ``entry``: the value
        ``text`` encodes, if the caller built it (the write hands it to the observers)."""
        self._pending[key] = text
        if self.hands_entries:
            if entry is not None:
                self._pending_entries[key] = entry
            else:
                self._pending_entries.pop(key, None)
        if self._pending_steps is not None:
            self._pending_steps.append(name)
        if not self._driving:
            self._schedule_flush()

    def drop_deferred(self) -> None:
        """Forget what waits (the write that carried it failed: storage is the truth)."""
        self._pending = {}
        self._pending_entries = {}
        if self._pending_steps is not None:
            self._pending_steps = []

    def deferring(self, body: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
        """``body`` (a phase body, which the phase awaits) with the deferral's end of the
        loop turn tied to it: what it defers and has not written when it suspends or ends
        is flushed then. A step's completion is nearly always carried by the next
        operation's write before the body suspends, so it costs no callback. The body
        runs in a copy of the context it starts in, as it would in a task of its own."""
        return _Deferring(body, self)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = self._loop
            if loop is None or loop.is_closed():
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._flush_soon, context=PLAIN_CONTEXT)

    def _flush_soon(self) -> None:
        # The body that left the completion usually runs again in this same turn of the loop
        # (it suspended to let others run: a ``sleep(0)``, a storage turn), and its next
        # write carries the completion: look once the turn's callbacks have run, before
        # starting a write of its own. A body that waits longer gets its flush one loop
        # iteration later than at this callback, still without waiting on anything.
        if self._pending:
            loop = cast(asyncio.AbstractEventLoop, self._loop)  # set by ``_schedule_flush``
            loop.call_soon(self._flush_late, context=PLAIN_CONTEXT)
        else:
            self._flush_scheduled = False

    def _flush_late(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            writer = cast(_Writer, self)  # the ExecutionState this is
            # An object that died since: nothing to write (its next instance replays).
            from_the_loop(writer.spawn, _flush(writer))


async def _flush(state: _Writer) -> None:
    if state._pending:
        # A failure is kept by the state; the runner stops at its next write.
        with contextlib.suppress(StorageFailure):
            await state.write({})


class _Deferring(Coroutine[Any, Any, Any]):
    """A phase body that schedules the flush of the completions it left pending each
    time it suspends or ends. It runs ``body`` as ``await body`` would, without a
    coroutine of its own around it (every turn of the body goes through it), in a
    context of its own: what the body sets in context variables stays its own, as in
    a task of its own (the next phase's body does not see it)."""

    __slots__ = ("_body", "_context", "_state")

    def __init__(self, body: Coroutine[Any, Any, Any], state: Deferral) -> None:
        self._body = body
        self._state = state
        self._context = contextvars.copy_context()

    def __next__(self) -> Any:
        # How an await resumes it with nothing sent (``_resume`` spelt out: a call less
        # per turn).
        state = self._state
        state._driving = True
        try:
            return self._context.run(self._body.send, None)
        finally:
            state._driving = False
            if state._pending:
                state._schedule_flush()

    def send(self, value: Any) -> Any:
        return self._resume(self._body.send, value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        # A task throws the exception instance alone, and an await passes it on so
        # (the other forms are deprecated).
        return self._resume(self._body.throw, typ if val is None else val)

    def _resume(self, step: Callable[[Any], Any], arg: Any) -> Any:
        state = self._state
        state._driving = True
        try:
            return self._context.run(step, arg)
        finally:
            state._driving = False
            if state._pending:
                state._schedule_flush()

    def close(self) -> None:
        self._body.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # type: ignore[return-value]
