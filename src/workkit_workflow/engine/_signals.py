"""The engine's private control flow.

Signals are ``BaseException`` subclasses so that ``except Exception`` in user
code (a step, a workflow body, a compensation handler) never swallows them on
their way through it.
"""

from __future__ import annotations

from ..errors import WorkflowError


class ControlSignal(BaseException):
    """Private control flow; a ``BaseException`` so ``except Exception`` in user code
    never swallows it."""


class Suspend(ControlSignal):
    """The phase parks: unwind the body."""


class Stop(ControlSignal):
    """Cancellation was requested: start no further operation."""


class Abort(ControlSignal):
    """The execution ends now (workflow timeout, replay mismatch)."""

    def __init__(self, error: WorkflowError, *, step: str | None, attempt: int, compensate: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.step = step
        self.attempt = attempt
        self.compensate = compensate


class StorageFailure(ControlSignal):
    """A storage write failed, or a read inside a workflow's body (a journal page): the
    runner stops and the alarm retries later.

    A ``BaseException`` so it cannot turn into a step or workflow failure on
    its way through user code.
    """

    def __init__(self, cause: BaseException, what: str = "write") -> None:
        super().__init__(f"storage {what} failed: {cause!r}")
        self.cause = cause
        self.what = what


class AlarmNotSet(Exception):
    """The alarm handler could not durably set the next alarm: raised out of it so
    that the runtime's own alarm retry wakes the execution again."""
