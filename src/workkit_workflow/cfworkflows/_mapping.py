"""How the definitions' concepts map onto Cloudflare Workflows: durations, retry
policies, statuses, step outputs, and how the engine's aborts look."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeAlias

from ..cloudflare._workers import (
    to_py,
)
from ..definitions._retry import RetryPolicy
from ..definitions._values import to_data
from ..definitions._workflow import Workflow
from ..engine import _journal as jn
from ..engine._journal import Status
from ..errors import (
    SerializationError,
    TransportError,
)

AnyWorkflow: TypeAlias = "Workflow"  # type: ignore[type-arg]
"""A definition of any input type (``Workflow`` was generic when this was written)."""

MAX_STEP_OUTPUT = 1 << 20
"""The engine's limit on one step's result (and on an event payload): 1 MiB."""
MAX_STEP_NAME = 256
MAX_WAIT = "365 days"
"""What an unbounded ``wait_for_event`` asks the engine for (its default is 24 hours)."""
COMPENSATION_PREFIX = "compensation: "
FAILURE_SUFFIX = " (failure)"


# -- mapping: durations, retry policies, statuses ------------------------------------


def format_duration(seconds: float) -> str:
    """A duration as the engine's string form (``"10 seconds"``), never a bare number.

    The engine's duration strings have whole units only, so a fraction of a
    second rounds *up* (a wait is never shorter than asked).
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be finite and non-negative, got {seconds!r}")
    whole = math.ceil(seconds - 1e-9)
    return "1 second" if whole == 1 else f"{whole} seconds"


def step_config(policy: RetryPolicy, timeout: float | None, *, native_retries: bool) -> dict[str, Any]:
    """The ``step.do`` config for a retry policy and a per-attempt timeout.

    ``limit`` counts retries after the first attempt. With ``native_retries``
    off (old SDKs), the engine makes one attempt and this module retries.
    """
    limit = policy.max_attempts - 1 if native_retries else 0
    retries: dict[str, Any] = {
        "limit": limit,
        "delay": format_duration(policy.initial_delay),
        "backoff": "constant" if policy.backoff_multiplier == 1.0 else "exponential",
    }
    config: dict[str, Any] = {"retries": retries}
    if timeout is not None:
        config["timeout"] = format_duration(max(timeout, 1.0))
    return config


STATUS_MAP: dict[str, Status] = {
    "queued": "pending",
    "unknown": "pending",
    "running": "running",
    "waitingForPause": "running",
    "waiting": "waiting",
    "paused": "paused",
    "complete": "completed",
    "errored": "failed",
    "terminated": "cancelled",
}
"""Engine instance status → ours. ``waiting`` covers both a sleep and an event wait
(the engine does not say which); ``paused`` waits for an operator's ``resume``
(``unpause()`` here)."""

TERMINAL_ENGINE = frozenset({"complete", "errored", "terminated"})


def map_status(engine_status: str) -> Status:
    try:
        return STATUS_MAP[engine_status]
    except KeyError:
        raise TransportError(f"the Workflows engine reported an unknown status {engine_status!r}") from None


def json_output(value: Any, *, what: str, limit: int = MAX_STEP_OUTPUT) -> Any:
    """``value`` as plain JSON data (tuples become lists) within the engine's size limit."""
    text = jn.encode_value(to_data(value), what=what)
    size = len(text.encode())
    if size > limit:
        raise SerializationError(
            f"{what} is {size} bytes as JSON; Cloudflare Workflows stores at most {limit} bytes per step",
            what=what,
            size=size,
            limit=limit,
        )
    return jn.loads(text)


# -- the SDK (its JS-facing parts live in the Cloudflare adapter) --------------------------


def _plain(value: Any) -> Any:
    value = to_py(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


ENGINE_ABORT = "Aborting engine:"
"""How the engine's abort errors begin (terminate, pause, restart, delete...)."""


def is_engine_abort(exc: BaseException) -> bool:
    """Whether ``exc`` is the engine aborting the run (it throws into the pending
    ``step`` call on terminate, pause or restart), not a failure of the workflow.

    The engine itself tells these apart by message only (its ``isAbortError``), so
    this does too: such an error must not count as a step failure, end a wait as
    a timeout, or run compensation.
    """
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) else str(exc)
    return ENGINE_ABORT in text


def engine_attempt(ctx: Any) -> int | None:
    ctx = _plain(ctx)
    if isinstance(ctx, dict):
        attempt = ctx.get("attempt")
        if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1:
            return attempt
    return None
