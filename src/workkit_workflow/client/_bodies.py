"""What the client sends: execution ids and timeouts checked before they name an object
or a wait, and the ``/execute`` body made from a workflow and its input."""

from __future__ import annotations

import math
from typing import Any, cast

from ..definitions._ids import execution_id_problem
from ..definitions._workflow import Workflow
from ..errors import InvalidRequestError


def check_id(execution_id: object) -> str:
    """Refuse an id no execution can have (malformed, or the name of one of the
    library's own objects) before it names an object or a key."""
    problem = execution_id_problem(execution_id)
    if problem is not None:
        raise InvalidRequestError(problem, field="execution_id")
    return cast(str, execution_id)  # anything but a string has a problem


def check_timeout(timeout: object) -> float | None:
    """``result(timeout=)``: None (no bound) or a finite number of seconds, 0 or more.
    NaN would never count down, so the wait would never end."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < math.inf:
        raise InvalidRequestError(
            f"timeout must be a finite number of seconds, 0 or more (None: no bound), got {timeout!r}",
            field="timeout",
        )
    return float(timeout)


def execute_body(
    workflow: Workflow | str, input: Any, execution_id: str, wait: bool, version: str | None
) -> dict[str, Any]:
    """The ``/execute`` body of ``DurableWorkflows.run``, its input validated and made JSON data."""
    from ..definitions._values import to_data, validate

    name = workflow.name if isinstance(workflow, Workflow) else workflow
    if version is None and isinstance(workflow, Workflow):
        version = workflow.version
    if isinstance(workflow, Workflow) and workflow.input_type is not None:
        input = to_data(validate(workflow.input_type, input, what="workflow input"))
    else:
        input = to_data(input)
    body = {"workflow": name, "input": input, "execution_id": execution_id, "wait": wait}
    if version is not None:
        body["version"] = version
    return body
