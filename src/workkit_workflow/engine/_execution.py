"""The durable execution behind one Durable Object.

``ExecutionCore`` assembles the pieces of one execution inside one object
instance and is what the execution object (``cloudflare._object``) talks to:

* ``_state``: the cached ``meta``/``state`` records and the one write path;
* ``_runner``: the single runner and its park/wake protocol;
* ``_drive`` and ``_phases``: what the runner does, phase by phase;
* ``_requests``: the operations the wire exposes (execute, status, cancel,
  event, journal, meta, result);
* ``_control`` and ``_retention``: pause, continue, delete, and deletion of a
  settled execution's storage after its retention period;
* ``_alarms``: the alarm, the lease and the backoff after failures;
* ``_mail``: the outbox of durable requests to other objects of the namespace;
* ``_plugins``: where optional features (the history projection) join in.

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

import random
from collections.abc import Mapping
from typing import Any

from ..definitions._workflow import REGISTRY, Registry
from ._alarms import DEFAULT_LEASE, Alarms
from ._children import outcome_mail
from ._control import Control
from ._drive import Driver
from ._limits import release_mail
from ._live_state import read as read_live_state
from ._mail import Mail
from ._plugins import make_observer
from ._ports import Clock, Host, Storage
from ._requests import Requests
from ._state import ExecutionState, FaultHook
from ._versions import VersionMoves


class ExecutionCore(Requests):
    """One execution in one object instance: its pieces, wired together. It answers the
    wire's requests itself (``Requests``, its base class: one object less per execution)."""

    def __init__(
        self,
        host: Host,
        *,
        registry: Registry = REGISTRY,
        lease: float = DEFAULT_LEASE,
        rng: random.Random | None = None,
        faults: FaultHook | None = None,
        history: Any = None,
        retention: float | None = None,
    ) -> None:
        self.execution = ExecutionState(host, rng=rng, faults=faults)
        # The mail outbox comes first: its alarm_for sees the engine's alarm unchanged.
        self.mail = Mail(self.execution, getattr(host, "peers", None))
        self.execution.observers.append(self.mail)
        self.execution.mail = self.mail
        self.execution.settle_hooks = _SETTLE_HOOKS
        if history is not None:
            # ``history`` is the D1 binding of the history projection, which plugs in here.
            self.execution.observers.append(make_observer("history", self.execution, history))
            self.execution.hands_entries = True  # it reads a step's values rather than decode them
        self.driver = Driver(self.execution, registry, lease=lease, retention=retention)
        super().__init__(self.execution, registry, self.driver.runner, lease=lease)
        self.mail.inbox = self  # a refusal becomes an event in the inbox

    # Stateless pieces that only a rare request or the alarm uses: made for it, not kept.

    @property
    def alarms(self) -> Alarms:
        """The alarm handler (its state, the backoff, is the driver's)."""
        return Alarms(self.execution, self.runner, self.driver, self.lease)

    @property
    def versions(self) -> VersionMoves:
        """versions: move an unfinished execution to another deployed version."""
        return VersionMoves(self.execution, self.registry, self.runner)

    @property
    def control(self) -> Control:
        """Operator control (engine/_control.py): pause, continue, delete."""
        return Control(self.execution, self.runner, self.driver.retention, self.view)

    # -- what the execution object calls besides the wire operations (``Requests``'):
    # the alarm handler and control. Properties, not bound methods kept as attributes:
    # every object the local runtime keeps alive is walked by each full garbage collection.

    @property
    def status(self) -> Any:
        """``/status``: the view every request answers with."""
        return self.view

    @property
    def alarm(self) -> Any:
        return self.alarms.alarm

    @property
    def move_to_version(self) -> Any:
        return self.versions.move

    @property
    def pause(self) -> Any:
        return self.control.pause

    @property
    def unpause(self) -> Any:
        return self.control.unpause

    @property
    def delete(self) -> Any:
        return self.control.delete

    # -- what the execution object and tools read ------------------------------

    @property
    def storage(self) -> Storage:
        return self.execution.storage

    @property
    def clock(self) -> Clock:
        return self.execution.clock

    @property
    def writes(self) -> int:
        return self.execution.writes

    @property
    def _state(self) -> dict[str, Any] | None:
        """The cached ``state`` record (interleaving tests watch it)."""
        return self.execution.state

    def now(self) -> float:
        return self.execution.now()

    async def live_state(self, key: str | None = None) -> dict[str, Any]:
        """What the workflow published with ``ctx.set_state`` (all keys, or one)."""
        return await read_live_state(self.execution, key)


def settle_mail(
    execution: ExecutionState, state: Mapping[str, Any], puts: Mapping[str, str]
) -> dict[str, str]:
    """The settle hook of children (the outcome for the parent) and of concurrency limits
    (the slot given back), in that order. A module function, not a bound method: nothing
    is kept per execution for it."""
    mail = outcome_mail(execution, state, puts)
    return {**mail, **release_mail(execution, state, {**puts, **mail})}


_SETTLE_HOOKS = (settle_mail,)
"""Every execution's settle hooks: one tuple, not one list per execution."""
