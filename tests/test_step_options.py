"""What ``ctx.step`` hands the engine as the step's options: the shared ``DEFAULT_OPTIONS``
for a step with none, options built without their checks for one whose only option is an
ASCII key (``keyed_options``), and ``make_options`` for any other. Each is the options
``make_options`` gives for the same arguments, and a key it would refuse is refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workkit_workflow import RetryPolicy, WorkflowContext
from workkit_workflow.definitions._steps import (
    DEFAULT_OPTIONS,
    StepContext,
    StepOptions,
    keyed_options,
    make_options,
)
from workkit_workflow.errors import DefinitionError


class Recorder:
    """The engine's side of ``ctx.step``: the options each call hands it."""

    def __init__(self) -> None:
        self.options: list[StepOptions] = []

    def step(
        self, name: str, call: Callable[[StepContext], Any], options: StepOptions
    ) -> Coroutine[Any, Any, Any]:
        self.options.append(options)
        return _done()


async def _done() -> None:
    return None


def options_of(**kwargs: Any) -> StepOptions:
    recorder = Recorder()
    ctx = WorkflowContext(recorder, "e-1", "flow", None)  # type: ignore[arg-type]
    ctx.step("s", lambda: 1, **kwargs).close()  # type: ignore[attr-defined]
    return recorder.options[-1]


def checked(**kwargs: Any) -> StepOptions:
    return make_options(
        retry=kwargs.get("retry"),
        timeout=kwargs.get("timeout"),
        idempotency_key=kwargs.get("idempotency_key"),
        output=kwargs.get("output"),
        where="step 's'",
    )


def test_a_step_with_no_option_gets_the_shared_defaults() -> None:
    assert options_of() is DEFAULT_OPTIONS


def by_name(ctx: StepContext) -> str:
    return f"k-{ctx.step}"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"idempotency_key": "charge:42"},
        {"idempotency_key": "clé-é"},  # not ASCII: checked
        {"idempotency_key": by_name},
        {"idempotency_key": "k", "retry": RetryPolicy(max_attempts=2)},
        {"idempotency_key": "k", "timeout": 5},
        {"retry": RetryPolicy(max_attempts=3)},
    ],
    ids=["ascii key", "key outside ascii", "key function", "key and retry", "key and timeout", "retry"],
)
def test_the_options_are_those_make_options_gives(kwargs: dict[str, Any]) -> None:
    options = options_of(**kwargs)
    assert options == checked(**kwargs) and hash(options) == hash(checked(**kwargs))
    assert repr(options) == repr(checked(**kwargs))


@given(st.text(st.characters(max_codepoint=127), min_size=1, max_size=64))
def test_a_key_of_its_own_is_built_as_make_options_builds_it(key: str) -> None:
    options = keyed_options(key)
    assert options == checked(idempotency_key=key)
    # Every field is the instance's own, as the dataclass's __init__ sets them.
    assert vars(options) == dataclasses.asdict(checked(idempotency_key=key))
    assert options_of(idempotency_key=key) == options
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.idempotency_key = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "must be non-empty, valid Unicode text"),
        ("a\ud800", "must be non-empty, valid Unicode text"),
        (5, "must be a string or a callable"),
    ],
    ids=["empty", "lone surrogate", "not text"],
)
def test_a_key_make_options_refuses_is_refused_at_the_call(key: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        options_of(idempotency_key=key)
