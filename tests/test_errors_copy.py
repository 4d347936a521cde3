"""Every public error and result type is a value: it deep-copies, pickles and
compares equal after a round trip (issue #10, item 11)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from typing import Any

import pytest

from workkit_workflow import Workflow, WorkflowResult, errors
from workkit_workflow.http import HttpError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

# The keyword-only fields of the errors whose constructor needs more than a message.
REQUIRED_FIELDS: dict[str, dict[str, Any]] = {
    "StepFailedError": {"step": "charge", "attempt": 2, "error": {"code": "declined", "message": "no"}},
    "ExecutionFailedError": {
        "code": "declined",
        "execution_id": "e-1",
        "status": "failed",
        "failed_step": "charge",
        "step_attempt": 2,
        "error": {"code": "declined", "message": "no"},
        "compensation": {"status": "completed"},
        "journal": [{"v": 1, "op": 0, "name": "charge", "status": "failed"}],
    },
}


def _error_tree() -> list[type[errors.WorkflowError]]:
    found: list[type[errors.WorkflowError]] = []
    pending = [errors.WorkflowError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__.startswith("workkit_workflow")]


def _sample(cls: type[errors.WorkflowError]) -> errors.WorkflowError:
    fields = REQUIRED_FIELDS.get(cls.__name__, {"where": "test", "nested": {"a": [1, 2]}})
    return cls(f"{cls.__name__} happened", **fields)


TREE = _error_tree()


def test_the_tree_covers_every_public_error() -> None:
    public = {getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)}
    assert public <= set(TREE)
    assert HttpError in TREE
    assert {"JournalFormatError", "ExecutionFailedError"} <= {c.__name__ for c in TREE}
    # A new error with required fields must get a sample above, or _sample raises.
    for cls in TREE:
        required = [
            p.name
            for p in inspect.signature(cls).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.default is p.empty
        ]
        assert set(required) <= set(REQUIRED_FIELDS.get(cls.__name__, {})), cls


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_errors_copy_pickle_and_compare(cls: type[errors.WorkflowError]) -> None:
    error = _sample(cls)
    error.retryable = not error.retryable  # an instance attribute, as HttpError sets one
    for twin in (copy.copy(error), copy.deepcopy(error), pickle.loads(pickle.dumps(error))):
        assert type(twin) is cls
        assert twin == error and hash(twin) == hash(error)
        assert twin.to_dict() == error.to_dict()
        assert (twin.code, twin.message, twin.retryable, twin.args) == (
            error.code,
            error.message,
            error.retryable,
            error.args,
        )
        assert str(twin) == str(error) and repr(twin) == repr(error)
    deep = copy.deepcopy(error)
    assert deep.details == error.details and deep.details is not error.details
    nested = [k for k, v in error.details.items() if isinstance(v, (dict, list))]
    assert nested and all(deep.details[k] is not error.details[k] for k in nested)


def test_errors_compare_by_value() -> None:
    a = errors.SerializationError("too big", size=3)
    assert a == errors.SerializationError("too big", size=3)
    assert a != errors.SerializationError("too big", size=4)
    assert a != errors.NonRetryableError("too big", size=3)
    assert a != "too big"
    assert len({a, errors.SerializationError("too big", size=3)}) == 1


def test_the_code_of_a_copied_error_is_kept() -> None:
    error = errors.WorkflowError("x", code="custom_code")
    assert pickle.loads(pickle.dumps(error)).code == "custom_code"
    rebuilt = errors.from_wire(error.to_dict())
    assert pickle.loads(pickle.dumps(rebuilt)) == rebuilt


async def test_a_failed_result_copies_pickles_and_converts_to_a_dict(env: WorkflowTestEnv) -> None:
    def decline(input: Any, prev: Any, ctx: Any) -> None:
        raise errors.NonRetryableError("card declined")

    flow = Workflow(unique("declined")).step("charge", decline)
    result = await env.result(await env.run(flow, {"amount": 5}))
    assert not result.ok and isinstance(result.error, errors.ExecutionFailedError)
    for twin in (copy.deepcopy(result), pickle.loads(pickle.dumps(result))):
        assert twin == result
        assert isinstance(twin.error, errors.ExecutionFailedError)
        assert twin.error.failed_step == "charge" and twin.error.journal == result.error.journal
    as_dict = dataclasses.asdict(result)
    assert as_dict["ok"] is False and as_dict["error"] == result.error
    ok = WorkflowResult(ok=True, status="completed", value={"n": 1})
    assert pickle.loads(pickle.dumps(ok)) == ok == copy.deepcopy(ok)
    assert dataclasses.asdict(ok) == {"ok": True, "status": "completed", "value": {"n": 1}, "error": None}
