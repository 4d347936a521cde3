"""Plug-in hooks: optional features join an execution without the engine naming them.

A *journal observer* sees every write of one execution and may add records to
it, deliver them elsewhere and bring the alarm forward to retry a delivery. The
history projection (``workkit_workflow.history``) is one: it registers its
factory under ``"history"`` when imported, and an execution object built with
``history=<D1 binding>`` gets an observer from that factory. The engine only
calls the :class:`JournalObserver` methods below, at these points:

* ``load`` when the execution's records are read (a full snapshot or meta/state),
* ``capture`` and ``alarm_for`` inside every write, ``kick`` after it succeeded,
  ``aborted`` when it failed (``capture``, ``alarm_for`` and ``kick`` only where the
  observer's ``captures``, ``steers_kept_alarm`` and ``kick_due`` do not say they would
  change nothing),
* ``settle`` when the execution is done, or when only the observer's alarm is due,
* ``restore`` when a drive has read the execution in full, before it writes.

An execution has a list of observers (``ExecutionState.observers``): the engine's
own mail outbox (``_mail``) first, then the plug-ins'. Each ``alarm_for`` gets the
alarm the previous one returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from ..errors import InvalidOptionError
from ._ports import Clock, Storage

HANDED_MAX = 1024
"""The longest entry text whose value the engine hands to its observers (``capture``'s
``entries``) with its output. A longer one holds a large output, which an observer that keeps
values until it delivers them (the history's, for hundreds of commits) must not keep: it reads
the text instead. No observer reads an output: a value built for the observers alone has none."""


class ObservedExecution(Protocol):
    """What an observer may use of its execution (``_state.ExecutionState`` is one)."""

    storage: Storage
    clock: Clock
    fault: Callable[..., None]

    @property
    def execution_id(self) -> str: ...

    @property
    def workflow_name(self) -> str: ...

    def now(self) -> float: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...


class JournalObserver(Protocol):
    HEAD: str
    """A storage key of its own, read with the execution's ``meta`` and ``state``."""

    captures: bool
    """False: ``capture`` would add nothing to the next write and learn nothing from it,
    and the engine does not call it (a call per write saved)."""

    steers_kept_alarm: bool
    """False: ``alarm_for`` leaves the alarm of a write that keeps it (``KEEP_ALARM``)
    as it is, and the engine does not ask (a call per step saved)."""

    kick_due: bool
    """False: ``kick`` after the write would do nothing, and the engine does not call
    it. Read after the write; an observer that cannot tell keeps it True."""

    def load(self, records: Mapping[str, str], *, complete: bool) -> None:
        """Take what was read from storage (``complete``: the whole snapshot)."""
        ...

    def capture(
        self, puts: Mapping[str, str], entries: Mapping[str, Mapping[str, Any]] | None = None
    ) -> dict[str, str]:
        """The records to add to a write of ``puts`` (in the same atomic commit).

        ``entries``: the values of some of ``puts`` as the engine built them, to read
        instead of decoding their texts: only a step's entries, running (with its
        attempt's number) or completed, and a completion only when its text is at most
        ``HANDED_MAX`` long or its value lacks the output (over a journal that keeps no
        entries, where the value is built for the observers alone). The engine changes
        neither a value nor the mapping after the write (``ExecutionState.write``): an
        observer may keep both."""
        ...

    def alarm_for(self, alarm: Any) -> Any:
        """The alarm a write sets, given the one the engine asks for."""
        ...

    def kick(self) -> bool:
        """A write succeeded: start delivering in the background. True asks the writer
        for one turn of the event loop before it goes on, for that delivery to start: a
        run whose writes never wait (the SQL journal's, steps that await nothing) would
        otherwise hold everything until its end."""
        ...

    async def settle(self) -> bool:
        """Deliver what is pending now; False if some is left for a later alarm."""
        ...

    async def restore(self) -> None:
        """Called by the drive after a full load, before it writes: recover what an
        earlier instance held in memory only."""
        ...

    def aborted(self) -> None:
        """A write failed: nothing ``capture`` added to it was stored."""
        ...


ObserverFactory = Callable[[ObservedExecution, Any], JournalObserver]
"""``factory(execution, option)``: the observer of one execution, from the option's value."""

_OBSERVERS: dict[str, ObserverFactory] = {}


def register_observer(option: str, factory: ObserverFactory) -> None:
    """Register the observer an execution gets when built with ``option=<value>``."""
    _OBSERVERS[option] = factory


def make_observer(option: str, execution: ObservedExecution, value: Any) -> JournalObserver:
    try:
        factory = _OBSERVERS[option]
    except KeyError:
        raise InvalidOptionError(
            f"no plug-in serves the execution option {option!r}; import it first"
        ) from None
    return factory(execution, value)
