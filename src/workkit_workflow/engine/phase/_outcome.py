"""How a phase ended, read off what its body returned or raised."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ...errors import ReplayMismatchError, StepFailedError
from .. import _journal as jn
from .._signals import Abort, Stop, Suspend


@dataclass
class Outcome:
    kind: Literal["completed", "failed", "parked", "stopped"]
    value: Any = None
    error: dict[str, Any] | None = None
    failed_step: str | None = None
    attempt: int = 0
    compensate: bool = True
    wake_at: float | None = None
    waiting_for: Sequence[str] = ()


@dataclass
class Parked:
    """An operation waiting for its time (``wake_at``) or an event."""

    op: int
    wake_at: float | None
    event_type: str | None
    future: asyncio.Future[None]


def parked_outcome(parked: list[Parked]) -> Outcome:
    wakes = [p.wake_at for p in parked if p.wake_at is not None]
    waiting = sorted({p.event_type for p in parked if p.event_type is not None})
    return Outcome("parked", wake_at=min(wakes) if wakes else None, waiting_for=waiting)


def finished_outcome(
    value: Any, error: BaseException | None, entries: dict[int, dict[str, Any]], next_op: int, now: float
) -> Outcome:
    """The outcome of a body that ran to its end, returning ``value`` or raising ``error``
    (``next_op``: the first position it did not reach; the journal must have nothing
    from there on)."""
    try:
        if error is not None:
            raise error
    except Stop:
        return Outcome("stopped")
    except Abort as abort:
        return Outcome(
            "failed",
            error=abort.error.to_dict(),
            failed_step=abort.step,
            attempt=abort.attempt,
            compensate=abort.compensate,
        )
    except StepFailedError as exc:
        return Outcome("failed", error=exc.error, failed_step=exc.step, attempt=exc.attempt)
    except (asyncio.CancelledError, Suspend):
        return Outcome("parked")
    except Exception as exc:
        # The body raised outside any step: a bug or a deliberate failure.
        serialized = jn.serialize_error(exc, attempt=1, started_at=None, finished_at=now, retryable=False)
        return Outcome("failed", error=dict(serialized), failed_step=None, attempt=0)
    unreached = [op for op in entries if op >= next_op]
    if unreached:
        entry = entries[min(unreached)]
        mismatch = ReplayMismatchError(
            f"the journal has operation #{min(unreached)} ({entry.get('kind')} {entry.get('name')!r}) "
            "that the workflow code no longer reaches",
            position=min(unreached),
        )
        return Outcome("failed", error=mismatch.to_dict(), failed_step=entry.get("name"), compensate=False)
    return Outcome("completed", value=value)
