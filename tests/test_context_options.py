"""What the workflow context hands the engine for each call, on its fast paths and off them.

``ctx.step``: the shared ``DEFAULT_OPTIONS`` for a step with none, options built without
their checks for one whose only option is an ASCII key (``keyed_options``), and
``make_options`` for any other; each is what ``make_options`` gives for the same arguments,
and a key it would refuse is refused. ``ctx.sleep``: a number of seconds in range is taken
as it is (``plain_seconds``), any other duration is what ``to_seconds`` makes of it or
refuses. ``ctx.wait_for_event``: a default is checked only when there is one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workkit_workflow import RetryPolicy, WorkflowContext
from workkit_workflow.definitions._durations import MAX_DURATION, to_seconds
from workkit_workflow.definitions._steps import (
    DEFAULT_OPTIONS,
    MISSING,
    StepContext,
    StepOptions,
    keyed_options,
    make_options,
)
from workkit_workflow.errors import DefinitionError, InvalidOptionError


class Recorder:
    """The engine's side of the context: what each call hands it."""

    def __init__(self) -> None:
        self.options: list[StepOptions] = []
        self.calls: list[dict[str, Any]] = []

    def sleep(self, name: str, *, until: float | None, duration: float | None) -> Coroutine[Any, Any, Any]:
        self.calls.append({"until": until, "duration": duration})
        return _done()

    def wait(
        self, name: str, event_type: str, *, timeout: float | None, default: Any
    ) -> Coroutine[Any, Any, Any]:
        self.calls.append({"timeout": timeout, "default": default})
        return _done()

    def step(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...] | None, options: StepOptions
    ) -> Coroutine[Any, Any, Any]:
        self.options.append(options)
        self.calls.append({"fn": fn, "args": args})
        return _done()


async def _done() -> None:
    return None


def context() -> tuple[WorkflowContext, Recorder]:
    recorder = Recorder()
    return WorkflowContext(recorder, "e-1", "flow", None), recorder  # type: ignore[arg-type]


def options_of(**kwargs: Any) -> StepOptions:
    ctx, recorder = context()
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


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"idempotency_key": "k"}, {"retry": RetryPolicy(max_attempts=2)}],
    ids=["no option", "a key of its own", "checked options"],
)
def test_the_port_gets_the_steps_function_and_its_arguments_as_given(kwargs: dict[str, Any]) -> None:
    # The call is made by the port only if the step runs: a replayed step makes none.
    ctx, recorder = context()

    def charge(amount: int, currency: str) -> str:
        return f"{amount} {currency}"

    ctx.step("s", charge, 42, "EUR", **kwargs).close()  # type: ignore[attr-defined]
    assert recorder.calls[-1] == {"fn": charge, "args": (42, "EUR")}


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


@pytest.mark.parametrize("seconds", [0, 1, 2.5, 0.001, MAX_DURATION, int(MAX_DURATION)])
def test_a_sleep_of_seconds_in_range_is_taken_as_to_seconds_takes_it(seconds: float) -> None:
    ctx, recorder = context()
    ctx.sleep("nap", seconds).close()  # type: ignore[attr-defined]
    duration = recorder.calls[-1]["duration"]
    assert duration == to_seconds(seconds) and type(duration) is float


@pytest.mark.parametrize(
    "duration", [-1, -0.5, float("nan"), float("inf"), True, 10**400, MAX_DURATION + 1, None, [1]]
)
def test_any_other_sleep_is_refused_as_to_seconds_refuses_it(duration: Any) -> None:
    ctx, _ = context()
    with pytest.raises(InvalidOptionError) as refused:
        to_seconds(duration, what="sleep 'nap'")
    with pytest.raises(InvalidOptionError, match=r"^sleep 'nap'") as raised:
        ctx.sleep("nap", duration)
    assert str(raised.value) == str(refused.value)


def test_a_sleep_given_as_text_or_timedelta_is_converted() -> None:
    from datetime import timedelta

    ctx, recorder = context()
    ctx.sleep("a", "5s").close()  # type: ignore[attr-defined]
    ctx.sleep("b", timedelta(minutes=2)).close()  # type: ignore[attr-defined]
    assert [call["duration"] for call in recorder.calls] == [5.0, 120.0]


def test_a_wait_hands_its_default_only_when_it_has_one_and_checks_it() -> None:
    ctx, recorder = context()
    ctx.wait_for_event("w", "go").close()  # type: ignore[attr-defined]
    ctx.wait_for_event("w", "go", default={"a": 1}, timeout=3).close()  # type: ignore[attr-defined]
    assert recorder.calls == [{"timeout": None, "default": MISSING}, {"timeout": 3.0, "default": {"a": 1}}]
    with pytest.raises(DefinitionError, match=r"wait 'w': default is not JSON-serializable"):
        ctx.wait_for_event("w", "go", default=object())
