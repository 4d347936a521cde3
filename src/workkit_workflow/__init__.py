"""workkit_workflow: durable workflow execution for Cloudflare Python Workers.

Checkpoint and replay in a Durable Object, retries with durable backoff, saga
compensation, idempotency keys, durable sleep and external events.
"""

from . import errors
from ._client import DurableWorkflows, ExecutionHandle, WorkflowResult, create_durable_workflow
from ._context import CompensationContext, StepContext, WorkflowContext, current_step
from ._definition import REGISTRY, Workflow, workflow
from ._journal import Status
from ._object import WorkflowExecutionDO
from ._retry import RetryPolicy
from .errors import NonRetryableError, WorkflowError

__version__ = "0.2.0"

__all__ = [
    "REGISTRY",
    "CompensationContext",
    "DurableWorkflows",
    "ExecutionHandle",
    "NonRetryableError",
    "RetryPolicy",
    "Status",
    "StepContext",
    "Workflow",
    "WorkflowContext",
    "WorkflowError",
    "WorkflowExecutionDO",
    "WorkflowResult",
    "__version__",
    "create_durable_workflow",
    "current_step",
    "errors",
    "workflow",
]
