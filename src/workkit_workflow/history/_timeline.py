"""An execution's history as a timeline a person can read at a glance.

Shared by the CLI (``workkit-workflow show``) and the HTML page: each
operation becomes a row with its attempts (failed ones with their error),
its waits (retry backoff, durable sleep, waiting for an event) and its
duration; the header says in one sentence what happened.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..definitions._durations import out_of_range
from ._query import ExecutionHistory, ExecutionRecord, StepRecord, elapsed_ms


def _shown_ms(started_at: float | None, finished_at: float | None) -> float | None:
    """Elapsed milliseconds as drawn: never negative (clocks may step back)."""
    elapsed = elapsed_ms(started_at, finished_at)
    return None if elapsed is None else max(elapsed, 0.0)


@dataclass(frozen=True)
class Attempt:
    number: int
    outcome: str
    """``completed``, ``failed``, ``running``, ``lost`` (the object died during it, and
    the step ran again) or ``in_doubt`` (the execution ended while it ran: it may have
    had its effect)."""
    started_at: float | None
    finished_at: float | None
    error: str | None = None

    @property
    def duration_ms(self) -> float | None:
        return _shown_ms(self.started_at, self.finished_at)


@dataclass(frozen=True)
class Row:
    phase: str
    name: str
    kind: str
    status: str
    started_at: float | None
    finished_at: float | None
    attempts: list[Attempt] = field(default_factory=list)
    waits: list[str] = field(default_factory=list)
    """What the operation waited for: retry backoff, a sleep, an event."""
    error: str | None = None
    op: int | None = None
    """Its position in its phase's journal (outputs are keyed by phase and op)."""
    child: str | None = None
    """A child operation's child execution id."""

    @property
    def duration_ms(self) -> float | None:
        return _shown_ms(self.started_at, self.finished_at)


@dataclass(frozen=True)
class Timeline:
    execution: ExecutionRecord
    headline: str
    rows: list[Row]
    start: float
    end: float
    parent: dict[str, Any] | None = None
    """A child execution's parent: ``execution_id``, ``workflow``, ``op``."""

    @property
    def main(self) -> list[Row]:
        return [r for r in self.rows if r.phase == "main"]

    @property
    def compensation(self) -> list[Row]:
        return [r for r in self.rows if r.phase == "compensation"]


def error_text(error: dict[str, Any] | None) -> str | None:
    if not error:
        return None
    code, message = error.get("code"), error.get("message")
    if code and message and code != message:
        return f"{code}: {message}"
    return str(message or code)


def when(instant: float | None) -> str:
    """An instant for people (``2026-01-31 12:00:00 UTC``); the CLI and the page share it.

    Never raises: records come from storage and may hold any number (an older
    version accepted sleeps of 30,000 years), so an instant no date can show
    is written out as such."""
    if instant is None:
        return "-"
    try:
        return datetime.fromtimestamp(instant, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError, TypeError):
        return out_of_range(instant)


def span(ms: float | None) -> str:
    """A duration for people: ``12ms``, ``1.5s``, ``3m 20s``, ``2h 5m``, ``3d 4h``."""
    if ms is None:
        return "-"
    if not math.isfinite(ms):
        return "∞" if ms > 0 else "-"
    if ms < 1000:
        return f"{ms:.0f}ms"
    seconds = ms / 1000.0
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _attempts(step: StepRecord) -> list[Attempt]:
    attempts: list[Attempt] = []
    for err in step.errors:
        code = err.get("code")
        attempts.append(
            Attempt(
                number=int(err.get("attempt") or len(attempts) + 1),
                outcome="lost" if code == "attempt_lost" else "failed",
                started_at=err.get("started_at"),
                finished_at=err.get("finished_at"),
                error=error_text(err),
            )
        )
    seen = {a.number for a in attempts}
    if step.kind == "step" and step.attempt and step.attempt not in seen:
        outcome = {"completed": "completed", "running": "running", "in_doubt": "in_doubt"}.get(step.status)
        if outcome is not None:
            attempts.append(
                Attempt(
                    number=step.attempt,
                    outcome=outcome,
                    started_at=step.attempt_started_at or step.started_at,
                    finished_at=step.finished_at if outcome == "completed" else None,
                )
            )
    return sorted(attempts, key=lambda a: a.number)


def _waits(step: StepRecord, attempts: list[Attempt]) -> list[str]:
    waits = []
    for before, after in itertools.pairwise(attempts):
        if before.finished_at is not None and after.started_at is not None:
            waits.append(
                f"backoff {span((after.started_at - before.finished_at) * 1000)} "
                f"before attempt {after.number}"
            )
    abandoned = step.status == "abandoned"
    if step.retry_at is not None and step.status in ("retrying", "abandoned") and step.kind == "step":
        due = f"retry {step.attempt + 1} due {when(step.retry_at)}"
        waits.append(f"{due}: abandoned, the execution ended first" if abandoned else due)
    if step.status == "in_doubt":
        waits.append(f"attempt {step.attempt} may have run: the execution ended while it ran")
    if step.kind == "sleep":
        until = when(step.wake_at)
        if step.status == "completed":
            waits.append(f"slept until {until}")
        elif abandoned:
            waits.append(f"sleep abandoned: the execution ended before {until}")
        else:
            waits.append(f"sleeping until {until}")
    if step.kind == "child":
        waits.append(_child_note(step))
    if step.kind == "wait":
        what = f"event {step.event_type!r}"
        if step.status == "completed":
            waits.append(f"received {what}")
        elif abandoned:
            waits.append(f"wait abandoned: the execution ended before {what} came")
        else:
            deadline = f" (timeout {when(step.wake_at)})" if step.wake_at else ""
            waits.append(f"waiting for {what}{deadline}")
    return waits


CHILD_EVENT = "child:"


def child_of(step: StepRecord) -> str | None:
    """The child execution id of a child operation (its outcome's event type names it)."""
    if step.kind == "child" and step.event_type and step.event_type.startswith(CHILD_EVENT):
        return step.event_type[len(CHILD_EVENT) :]
    return None


def _child_note(step: StepRecord) -> str:
    child = child_of(step) or "?"
    if step.status == "completed":
        return f"child execution {child} completed"
    if step.status == "abandoned":
        return f"child execution {child} cancelled: the execution ended first"
    if step.status == "failed":
        return f"child execution {child} did not complete"
    return f"waiting for child execution {child}"


def parent_of(history: ExecutionHistory) -> dict[str, Any] | None:
    """The parent a child execution was started by (recorded with its creation)."""
    for event in history.events:
        parent = event.detail.get("parent") if event.kind == "execution" else None
        if isinstance(parent, dict) and parent.get("execution_id"):
            return parent
    return None


def _awaited(event_type: str) -> str:
    """What a waiting execution waits for, in words: an event, or a child's end."""
    if event_type.startswith(CHILD_EVENT):
        return f"child execution {event_type[len(CHILD_EVENT) :]}"
    return repr(event_type)


def headline(execution: ExecutionRecord, paused_reason: Mapping[str, Any] | None = None) -> str:
    """What happened, in one sentence (``paused_reason``: why it is paused, if it says)."""
    status = execution.status
    compensation = execution.compensation or {}
    comp_status = compensation.get("status")
    took = span(execution.duration_ms)
    if status == "completed":
        text = f"Completed in {took}."
    elif status == "failed":
        where = f"step {execution.failed_step!r}" if execution.failed_step else "the workflow"
        attempt = f" (attempt {execution.step_attempt})" if execution.step_attempt else ""
        text = f"Failed at {where}{attempt}: {error_text(execution.error) or 'no error recorded'}."
    elif status == "cancelled":
        reason = execution.cancel_reason or "no reason given"
        text = f"Cancelled ({reason})."
    elif status == "waiting":
        awaited = ", ".join(_awaited(w) for w in execution.waiting_for) or "an event"
        more = (execution.waiting_for_count or 0) - len(execution.waiting_for)
        text = f"Waiting for {awaited}" + (f" and {more} more." if more > 0 else ".")
    elif status == "sleeping":
        text = f"Sleeping until {when(execution.wake_at)}."
    elif status == "paused":
        why = (paused_reason or {}).get("message")
        text = f"Paused: {why}." if why else "Paused: no new step starts until it continues."
    elif status == "blocked":
        which = f"version {execution.version!r} of its workflow" if execution.version else "its workflow"
        text = f"Blocked: {which} is not deployed; it carries on once it is."
    else:
        text = f"{status.capitalize()}."
    if comp_status == "completed":
        text += " Compensation ran and completed: the effects were undone."
    elif comp_status == "failed":
        text += f" Compensation FAILED: {error_text(compensation.get('error')) or 'no error recorded'}."
    elif comp_status in ("pending", "running"):
        text += " Compensation is in progress."
    return text


def build(history: ExecutionHistory) -> Timeline:
    rows = []
    for step in history.steps:
        attempts = _attempts(step)
        rows.append(
            Row(
                phase=step.phase,
                name=step.name,
                kind=step.kind,
                status=step.status,
                started_at=step.started_at,
                finished_at=step.finished_at,
                attempts=attempts,
                waits=_waits(step, attempts),
                error=error_text(step.error) if step.status == "failed" else None,
                op=step.op,
                child=child_of(step),
            )
        )
    execution = history.execution
    instants = [execution.created_at, execution.started_at, execution.finished_at]
    for row in rows:
        instants += [row.started_at, row.finished_at]
    known = [t for t in instants if t is not None]
    compensation = execution.compensation or {}
    if compensation.get("finished_at"):
        known.append(float(compensation["finished_at"]))
    reason = _paused_reason(history) if execution.status == "paused" else None
    return Timeline(execution, headline(execution, reason), rows, min(known), max(known), parent_of(history))


def _paused_reason(history: ExecutionHistory) -> Mapping[str, Any] | None:
    """Why the execution is paused, as its last execution event says (the recovery cap
    gives a reason; an operator's pause none)."""
    for event in reversed(history.events):
        if event.kind == "execution":
            reason = (event.detail.get("paused") or {}).get("reason")
            return reason if isinstance(reason, Mapping) else None
    return None
