"""workkit_workflow: durable workflow execution for Cloudflare Python Workers.

Checkpoint and replay in a Durable Object, retries with durable backoff, saga
compensation, idempotency keys, durable sleep and external events.
"""

from . import errors

# The plug-ins shipped with the package register themselves on import: the Cloudflare
# Workflows backend (its exporter and binding kind) and the history projection (a journal
# observer); the definitions, the client and the engine never import them.
from .cfworkflows import _client as _cfworkflows_client  # noqa: F401
from .cfworkflows import _entrypoint as _cfworkflows_entrypoint  # noqa: F401
from .client._client import DurableWorkflows, ExecutionHandle, WorkflowResult, create_durable_workflow
from .client._schedules import Scheduler, run_schedules
from .cloudflare._object import WorkflowExecutionDO
from .definitions._contexts import CompensationContext, WorkflowContext
from .definitions._limit import Limit
from .definitions._retry import RetryPolicy
from .definitions._schedule import Schedule
from .definitions._steps import StepContext, current_step
from .definitions._undo import StepUndo
from .definitions._workflow import REGISTRY, Workflow, workflow
from .engine._journal import Status
from .errors import NonRetryableError, WorkflowError
from .history import _outbox as _history_outbox  # noqa: F401

__version__ = "0.2.0"

__all__ = [
    "REGISTRY",
    "CompensationContext",
    "DurableWorkflows",
    "ExecutionHandle",
    "Limit",
    "NonRetryableError",
    "RetryPolicy",
    "Schedule",
    "Scheduler",
    "Status",
    "StepContext",
    "StepUndo",
    "Workflow",
    "WorkflowContext",
    "WorkflowError",
    "WorkflowExecutionDO",
    "WorkflowResult",
    "__version__",
    "create_durable_workflow",
    "current_step",
    "errors",
    "run_schedules",
    "workflow",
]
