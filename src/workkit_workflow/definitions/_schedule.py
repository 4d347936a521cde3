"""Schedules: start a workflow on a cron schedule.

A :class:`Schedule` is code, like a workflow: it registers itself by name when
its module is imported. Which ticks are due, and what the catch-up policy keeps
of them, is pure arithmetic here; the durable "last tick" record lives in the
schedule's own object and the starting is done by ``client._schedules``.

Cron expressions are parsed by cronsim (pure Python, standard library only, so
it loads in Pyodide), restricted to what Cloudflare Cron Triggers accept: five
fields, UTC.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ..errors import DefinitionError, InvalidOptionError
from ._ids import SCHEDULE_PREFIX, reserved_prefix

if TYPE_CHECKING:
    from ._workflow import Workflow

CatchUp = Literal["latest", "all", "none"]
CATCH_UP_POLICIES: tuple[str, ...] = ("latest", "all", "none")

ON_TIME = 60.0
"""Seconds after its time a tick still counts as on time, not missed (cron's
granularity is a minute; a trigger arrives within seconds of its tick)."""

MAX_CATCH_UP = 1000
"""The largest ``max_catch_up``: every missed tick is one execution started in one trigger."""

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,99}$")

ScheduleInput = Any | Callable[[datetime], Any]


def parse_cron(expression: object) -> str:
    """The 5-field form of ``expression`` (aliases such as ``@daily`` expanded), or
    :class:`InvalidOptionError` saying what is wrong with it."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidOptionError(f"cron must be a non-empty string, got {expression!r}", cron=expression)
    text = " ".join(expression.split())
    text = _ALIASES.get(text.lower(), text)
    fields = text.split(" ")
    if len(fields) != 5:
        raise InvalidOptionError(
            f"cron {expression!r} has {len(fields)} fields; it needs 5 "
            "(minute hour day-of-month month day-of-week, UTC) or an alias such as @daily",
            cron=expression,
        )
    text = " ".join(_single_value_steps(f) for f in fields)
    from cronsim import CronSim, CronSimError

    try:
        next(CronSim(text, datetime(2000, 1, 1, tzinfo=UTC)))
    except (CronSimError, ValueError) as exc:
        raise InvalidOptionError(f"cron {expression!r} is invalid: {exc}", cron=expression) from None
    except StopIteration:
        raise InvalidOptionError(f"cron {expression!r} never fires", cron=expression) from None
    return text


_SINGLE_RANGE_STEP = re.compile(r"^([A-Za-z0-9]+)-([A-Za-z0-9]+)/\d+$")


def _single_value_steps(field: str) -> str:
    """``5-5/2`` as ``5``: cronsim 2.8 reads a step over a one-value range as an open
    range (``5-59/2``); cron (crontab(5), Cloudflare) means the one value."""
    terms = []
    for term in field.split(","):
        match = _SINGLE_RANGE_STEP.match(term)
        same = match is not None and match.group(1).upper() == match.group(2).upper()
        terms.append(match.group(1) if match is not None and same else term)
    return ",".join(terms)


def tick_id(schedule: str, tick: float) -> str:
    """The execution id of one tick: ``<schedule>:<UTC minute>``, e.g.
    ``nightly-report:2026-11-30T03:00Z``. A trigger delivered twice names the same
    execution, which ``/execute`` creates once."""
    return f"{schedule}:{_utc(tick).strftime('%Y-%m-%dT%H:%MZ')}"


def tick_of(execution_id: str) -> tuple[str, float] | None:
    """The schedule and the tick an execution id names, if it has a tick's form
    (``tick_id``'s reverse; a user's own id may have that form too)."""
    found = _TICK_ID.match(execution_id)
    if found is None:
        return None
    try:
        at = datetime.strptime(found["minute"], "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return found["name"], at.timestamp()


_TICK_ID = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._\-]{0,99}):(?P<minute>\d{4}-\d\d-\d\dT\d\d:\d\dZ)$")


def schedule_object(schedule: str) -> str:
    """The name of the object that keeps a schedule's last tick."""
    return f"{SCHEDULE_PREFIX}{schedule}"


@dataclass(frozen=True)
class Schedule:
    """Start ``workflow`` at every tick of ``cron`` (five fields, UTC)::

        Schedule("nightly-report", cron="0 3 * * *", workflow=report, input={"scope": "all"})

    ``input`` is the execution's input, or a function of the tick's time
    (an aware ``datetime``) that returns it. ``catch_up`` says what happens to
    ticks missed while nothing ran: ``"latest"`` (default) starts only the most
    recent missed tick, ``"all"`` starts each of them (at most ``max_catch_up``,
    the most recent ones), ``"none"`` starts none (only on-time ticks run).
    """

    name: str
    cron: str
    workflow: Workflow | str
    input: ScheduleInput = None
    catch_up: CatchUp = "latest"
    max_catch_up: int = 100
    register: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DefinitionError(
                f"schedule name {self.name!r} must be 1-100 characters of letters, digits, '.', '_' "
                "or '-', starting with a letter or digit (it goes into execution ids)"
            )
        reserved = reserved_prefix(tick_id(self.name, 0))
        if reserved is not None:
            raise InvalidOptionError(
                f"schedule name {self.name!r}: its ticks' execution ids would start with {reserved!r}, "
                "a prefix reserved for the library's own objects; choose another name",
                schedule=self.name,
            )
        object.__setattr__(self, "cron", parse_cron(self.cron))
        if self.catch_up not in CATCH_UP_POLICIES:
            raise InvalidOptionError(
                f"schedule {self.name!r}: catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, "
                f"got {self.catch_up!r}",
                catch_up=self.catch_up,
            )
        bound = self.max_catch_up
        if not isinstance(bound, int) or isinstance(bound, bool) or not 1 <= bound <= MAX_CATCH_UP:
            raise InvalidOptionError(
                f"schedule {self.name!r}: max_catch_up must be an integer from 1 to {MAX_CATCH_UP}",
                max_catch_up=bound,
            )
        if not isinstance(self.workflow, str) and not hasattr(self.workflow, "run"):
            raise DefinitionError(f"schedule {self.name!r}: workflow must be a Workflow or its name")
        if self.register:
            SCHEDULES.register(self)

    @property
    def workflow_name(self) -> str:
        return self.workflow if isinstance(self.workflow, str) else self.workflow.name

    def input_for(self, tick: float) -> Any:
        return self.input(_utc(tick)) if callable(self.input) else self.input

    def next_tick(self, after: float) -> float:
        """The first tick strictly after ``after`` (epoch seconds)."""
        from cronsim import CronSim

        return next(CronSim(self.cron, _utc(after))).timestamp()

    def due(self, last: float | None, now: float) -> tuple[list[float], float | None]:
        """The ticks to start at ``now`` after the last recorded tick ``last``, and the
        tick to record next (``None``: nothing new is due).

        Due ticks are those in ``(last, now]``; a schedule with no record yet has
        missed nothing, so only an on-time tick is due, and ``now`` is recorded as
        where it starts from (a trigger that fires between its ticks must not make
        it wait for ever). The catch-up policy then keeps all (bounded), the
        latest, or only an on-time one.
        """
        floor = now - ON_TIME if last is None else last
        newest_first = self._ticks_back(now, floor, self.max_catch_up if self.catch_up == "all" else 1)
        if not newest_first:
            return [], (now if last is None else None)
        newest = newest_first[0]
        if self.catch_up == "none" and now - newest >= ON_TIME:
            return [], newest
        return sorted(newest_first), newest

    def owed_due(self, owed: list[float], now: float) -> tuple[list[float], list[float]]:
        """Of the owed ticks (passed over because their start failed), those to try
        again at ``now`` and those to give up, each oldest first.

        An owed tick is tried again while the catch-up policy would still start it
        had it been missed: with ``"all"``, while it is among the ``max_catch_up``
        most recent ticks; with ``"latest"``, while no later tick is due; with
        ``"none"``, while it is on time (less than a minute old).
        """
        ordered = sorted(t for t in owed if t <= now)  # a later one (the clock went back) waits
        if not ordered:
            return [], []
        if self.catch_up == "none":
            keep = [t for t in ordered if now - t < ON_TIME]
        else:
            limit = self.max_catch_up if self.catch_up == "all" else 1
            window = self._ticks_back(now, ordered[0] - 1, limit)
            keep = [t for t in ordered if len(window) < limit or t >= window[-1]]
        return keep, [t for t in ordered if t not in keep]

    def _ticks_back(self, now: float, floor: float, limit: int) -> list[float]:
        """Up to ``limit`` ticks in ``(floor, now]``, newest first."""
        from cronsim import CronSim

        # cronsim iterates strictly before its start: start one second after now.
        ticks: list[float] = []
        for moment in CronSim(self.cron, _utc(int(now) + 1), reverse=True):
            at = moment.timestamp()
            if at <= floor or len(ticks) >= limit:
                break
            ticks.append(at)
        return ticks


def _utc(instant: float) -> datetime:
    return datetime.fromtimestamp(instant, tz=UTC)


class ScheduleRegistry:
    """Schedules by name; a later one with the same name replaces the earlier."""

    def __init__(self) -> None:
        self._by_name: dict[str, Schedule] = {}

    def register(self, schedule: Schedule) -> None:
        self._by_name[schedule.name] = schedule

    def unregister(self, name: str) -> None:
        self._by_name.pop(name, None)

    def all(self) -> list[Schedule]:
        return [self._by_name[name] for name in sorted(self._by_name)]

    def get(self, name: str) -> Schedule:
        try:
            return self._by_name[name]
        except KeyError:
            raise DefinitionError(f"no schedule named {name!r} is registered", schedule=name) from None


SCHEDULES = ScheduleRegistry()
"""Every schedule defined in this process (the Worker's scheduled handler fires these)."""
