"""The error tree of workkit_workflow.

Every error the library raises or reports is a :class:`WorkflowError` with a
stable ``code`` and JSON-serializable fields (``to_dict()``)::

    WorkflowError
    ├── NonRetryableError          raise it from a step: no further attempts
    ├── ExecutionFailedError       the terminal failure of an execution (result().error)
    ├── StepFailedError            a step failed for good (seen by code-first workflows)
    ├── StepTimeoutError           one attempt ran past the step's timeout (retryable)
    ├── WorkflowTimeoutError       the execution ran past the workflow's timeout
    ├── WaitTimeoutError           wait_for_event reached its timeout without an event
    ├── ReplayMismatchError        replay met a different step than the journal recorded
    ├── SerializationError         a value is not JSON-serializable or too big to store
    ├── DefinitionError            a workflow definition is invalid
    │   ├── InvalidOptionError     a duration, instant or retry knob is out of range
    │   │                          (also a ValueError)
    │   └── UnknownWorkflowError   no workflow is registered under that name
    │       └── VersionUnavailableError  the workflow is, but not in that version
    ├── InvalidRequestError        a request to the execution object was malformed (4xx)
    ├── ExecutionNotFoundError     no execution has that id
    ├── ExecutionConflictError     the id is taken, or the execution is in the wrong state
    ├── ExecutionNotFinishedError  result() gave up waiting for a terminal state
    └── TransportError             the execution object answered something unexpected

A step error that is not a ``WorkflowError`` is retried unless it has a
``retryable = False`` attribute. Its ``code`` attribute, if any, is kept.

Every error is a value: it pickles, deep-copies and compares equal (same
class, message and fields) after a round trip, so results holding one can be
copied, cached or sent between processes.
"""

from __future__ import annotations

from typing import Any


def _rebuild(cls: type[WorkflowError], args: tuple[Any, ...], state: dict[str, Any]) -> WorkflowError:
    # Bypasses __init__: subclasses take keyword-only fields that ``args``
    # (the message alone) cannot replay, and the state already holds them.
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class WorkflowError(Exception):
    """Base of every workkit_workflow error. ``code`` is stable; ``message`` is for people."""

    code: str = "workflow_error"
    retryable: bool = True

    def __init__(self, message: str = "", *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable description, as sent over the wire."""
        return {"code": self.code, "message": self.message, **self.details}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, WorkflowError)
        return self.args == other.args and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        # Consistent with __eq__ (equal errors share class, code and message)
        # while staying usable in sets, as exceptions usually are.
        return hash((type(self), self.code, self.message))


class NonRetryableError(WorkflowError):
    """Raised by a step to fail it at once, without the remaining attempts."""

    code = "non_retryable"
    retryable = False


class StepTimeoutError(WorkflowError):
    """One attempt of a step ran longer than its ``timeout``. Retried like any error."""

    code = "step_timeout"


class WorkflowTimeoutError(WorkflowError):
    """The execution ran past the workflow's ``timeout``; no more steps start."""

    code = "workflow_timeout"
    retryable = False


class WaitTimeoutError(WorkflowError):
    """A ``wait_for_event`` reached its timeout and the definition gave no default."""

    code = "wait_timeout"
    retryable = False


class ReplayMismatchError(WorkflowError):
    """Replay met a different operation than the journal recorded at that position.

    The workflow's code changed under a running execution. The execution fails
    without compensation; fix the code or start a new execution with
    ``restart_from``.
    """

    code = "replay_mismatch"
    retryable = False


class SerializationError(WorkflowError):
    """A value is not JSON-serializable, or its journal entry is over the size limit."""

    code = "serialization_error"
    retryable = False


class DefinitionError(WorkflowError):
    """A workflow definition is invalid (duplicate step names, bad options...)."""

    code = "invalid_definition"
    retryable = False


class InvalidOptionError(DefinitionError, ValueError):
    """A duration, an instant or a retry knob is out of range or malformed.

    Raised where the value is given (``RetryPolicy(...)``, ``Workflow(timeout=...)``,
    ``ctx.sleep(...)``), never later. It is also a :class:`ValueError`.
    """

    code = "invalid_option"


class UnknownWorkflowError(DefinitionError):
    """No workflow is registered under the requested name in this Worker."""

    code = "unknown_workflow"


class VersionUnavailableError(UnknownWorkflowError):
    """The workflow is registered, but not in the version asked for (``workflow``,
    ``version``, and ``deployed``: the versions this Worker has)."""

    code = "version_unavailable"


class InvalidRequestError(WorkflowError):
    """A request to the execution object was malformed."""

    code = "invalid_request"
    retryable = False


class ExecutionNotFoundError(WorkflowError):
    """No execution exists with this id."""

    code = "execution_not_found"
    retryable = False


class ExecutionConflictError(WorkflowError):
    """The execution id is taken by another workflow, or the execution cannot do that now."""

    code = "execution_conflict"
    retryable = False


class ExecutionNotFinishedError(WorkflowError):
    """``result(timeout=...)`` returned before the execution reached a terminal state."""

    code = "execution_not_finished"


class TransportError(WorkflowError):
    """The execution object answered with something the client does not understand."""

    code = "transport_error"


class StepFailedError(WorkflowError):
    """A step failed for good. Code-first workflows may catch it and carry on."""

    code = "step_failed"
    retryable = False

    def __init__(self, message: str, *, step: str, attempt: int, error: dict[str, Any]) -> None:
        super().__init__(message, step=step, attempt=attempt, error=error)
        self.step = step
        self.attempt = attempt
        self.error = error


class ExecutionFailedError(WorkflowError):
    """The terminal failure of an execution, as ``result().error`` reports it.

    ``code`` is the failed step's error code (or ``workflow_timeout``,
    ``cancelled``, ``replay_mismatch``...). ``journal`` is the full journal.
    """

    code = "execution_failed"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str,
        execution_id: str,
        status: str,
        failed_step: str | None,
        step_attempt: int,
        error: dict[str, Any] | None,
        compensation: dict[str, Any] | None,
        journal: list[dict[str, Any]],
    ) -> None:
        super().__init__(
            message,
            code=code,
            execution_id=execution_id,
            status=status,
            failed_step=failed_step,
            step_attempt=step_attempt,
            error=error,
            compensation=compensation,
            journal=journal,
        )
        self.execution_id = execution_id
        self.status = status
        self.failed_step = failed_step
        self.step_attempt = step_attempt
        self.error = error
        self.compensation = compensation
        self.journal = journal


_BY_CODE: dict[str, type[WorkflowError]] = {
    cls.code: cls
    for cls in (
        WorkflowError,
        NonRetryableError,
        StepTimeoutError,
        WorkflowTimeoutError,
        WaitTimeoutError,
        ReplayMismatchError,
        SerializationError,
        DefinitionError,
        InvalidOptionError,
        UnknownWorkflowError,
        VersionUnavailableError,
        InvalidRequestError,
        ExecutionNotFoundError,
        ExecutionConflictError,
        ExecutionNotFinishedError,
        TransportError,
    )
}


def from_wire(payload: dict[str, Any]) -> WorkflowError:
    """Rebuild an error the execution object reported (``{"code", "message", ...}``)."""
    code = str(payload.get("code", "workflow_error"))
    message = str(payload.get("message", ""))
    details = {k: v for k, v in payload.items() if k not in ("code", "message")}
    cls = _BY_CODE.get(code, WorkflowError)
    return cls(message, code=code, **details)


__all__ = [
    "DefinitionError",
    "ExecutionConflictError",
    "ExecutionFailedError",
    "ExecutionNotFinishedError",
    "ExecutionNotFoundError",
    "InvalidOptionError",
    "InvalidRequestError",
    "NonRetryableError",
    "ReplayMismatchError",
    "SerializationError",
    "StepFailedError",
    "StepTimeoutError",
    "TransportError",
    "UnknownWorkflowError",
    "VersionUnavailableError",
    "WaitTimeoutError",
    "WorkflowError",
    "WorkflowTimeoutError",
    "from_wire",
]
