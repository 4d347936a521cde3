"""RetryPolicy and durations refuse bad knobs where they are given, and the
backoff maths never overflows (issue #10, items 8 and 9)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workkit_workflow import RetryPolicy, Workflow, workflow
from workkit_workflow.definitions._durations import MAX_DURATION, iso, to_instant, to_seconds
from workkit_workflow.definitions._retry import MAX_ATTEMPTS
from workkit_workflow.errors import DefinitionError, InvalidOptionError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -3},
        {"max_attempts": MAX_ATTEMPTS + 1},
        {"max_attempts": 2.0},
        {"max_attempts": True},
        {"backoff_multiplier": NAN},
        {"backoff_multiplier": INF},
        {"backoff_multiplier": -2.0},
        {"backoff_multiplier": 0.0},
        {"backoff_multiplier": 0.999},
        {"backoff_multiplier": 1e200},
        {"backoff_multiplier": "2"},
        {"backoff_multiplier": True},
        {"jitter": NAN},
        {"jitter": -0.1},
        {"jitter": 1.5},
        {"jitter": INF},
        {"jitter": None},
        {"initial_delay": NAN},
        {"initial_delay": INF},
        {"initial_delay": -1},
        {"initial_delay": 10**400},
        {"initial_delay": MAX_DURATION + 1},
        {"max_delay": NAN},
        {"max_delay": -0.5},
        {"max_delay": "400d"},
        {"initial_delay": 5, "max_delay": 1},
        {"non_retryable": "ValueError"},
        {"non_retryable": ("ValueError", 3)},
        {"non_retryable": ("",)},
        {"non_retryable": 5},
        {"max_lost_attempts": 0},
        {"max_lost_attempts": MAX_ATTEMPTS + 1},
        {"max_lost_attempts": 2.5},
        {"max_lost_attempts": True},
        {"max_lost_attempts": "5"},
    ],
)
def test_every_knob_is_validated_at_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        RetryPolicy(**kwargs)
    # One error, three ways to catch it: the tree, the definition errors, ValueError.
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, DefinitionError)
    assert caught.value.code == "invalid_option" and "RetryPolicy" in caught.value.message


def test_the_bounds_themselves_are_accepted() -> None:
    RetryPolicy(max_attempts=1, initial_delay=0, max_delay=0, backoff_multiplier=1, jitter=0)
    RetryPolicy(max_attempts=MAX_ATTEMPTS, initial_delay="365d", backoff_multiplier=1e6, jitter=1)
    RetryPolicy(max_lost_attempts=1)
    RetryPolicy(max_lost_attempts=MAX_ATTEMPTS)
    policy = RetryPolicy(non_retryable=["KeyError"])  # any iterable of names
    assert policy.non_retryable == ("KeyError",)


@pytest.mark.parametrize("multiplier", [1.0, 1.0000001, 1.5, 2, 10.0, 1e3, 1e6])
@pytest.mark.parametrize(
    ("initial", "cap"), [(0.0, 0.0), (1e-300, 1.0), (0.05, 0.05), (1.0, 30.0), (1e3, MAX_DURATION)]
)
def test_next_delay_never_overflows_and_never_exceeds_the_cap(
    multiplier: float, initial: float, cap: float
) -> None:
    policy = RetryPolicy(
        max_attempts=5, initial_delay=initial, max_delay=cap, backoff_multiplier=multiplier, jitter=0.5
    )
    rng = random.Random(1)
    previous = 0.0
    for attempt in [*range(-1, 40), 1_000, 10**6, 2**64, 10**400]:
        base = policy.base_delay(attempt)
        assert math.isfinite(base) and previous <= base <= cap
        previous = base
        delay = policy.next_delay(attempt, rng)
        assert 0.0 <= delay <= cap * 1.5


def test_huge_multipliers_reach_the_cap_at_once() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=0.01, max_delay=0.05, backoff_multiplier=1e6, jitter=0)
    assert [policy.next_delay(n) for n in range(1, 6)] == [0.01, 0.05, 0.05, 0.05, 0.05]


def test_exact_powers_stay_exact() -> None:
    policy = RetryPolicy(max_attempts=9, initial_delay=0.5, max_delay=1e4, backoff_multiplier=3, jitter=0)
    assert [policy.base_delay(n) for n in range(1, 8)] == [0.5 * 3**k for k in range(7)]


def test_create_keeps_every_knob() -> None:
    policy = RetryPolicy.create(
        max_attempts=7,
        initial_delay="250ms",
        max_delay=timedelta(minutes=2),
        backoff_multiplier=3.5,
        jitter=0.4,
        non_retryable=["KeyError", "card_declined"],
    )
    assert policy == RetryPolicy(
        max_attempts=7,
        initial_delay=0.25,
        max_delay=120.0,
        backoff_multiplier=3.5,
        jitter=0.4,
        non_retryable=("KeyError", "card_declined"),
    )
    assert policy.to_dict() == {
        "max_attempts": 7,
        "initial_delay": 0.25,
        "max_delay": 120.0,
        "backoff_multiplier": 3.5,
        "jitter": 0.4,
        "non_retryable": ["KeyError", "card_declined"],
    }
    with pytest.raises(InvalidOptionError, match="backoff_multiplier"):
        RetryPolicy.create(backoff_multiplier=NAN)


async def test_a_huge_multiplier_fails_the_step_cleanly_not_with_overflow(env: WorkflowTestEnv) -> None:
    calls: list[int] = []

    def flaky(input: Any, prev: Any, ctx: Any) -> None:
        calls.append(ctx.attempt)
        raise ConnectionError("down")

    policy = RetryPolicy(max_attempts=5, initial_delay=0.01, max_delay=0.05, backoff_multiplier=1e6)
    handle = await env.run(Workflow(unique("huge-backoff"), retry=policy).step("call", flaky), {})
    result = await env.result(handle)
    assert calls == [1, 2, 3, 4, 5]
    assert result.error is not None and result.error.code == "ConnectionError"
    assert [e["status"] for e in await handle.journal()] == ["failed"]


# -- durations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1h30m", 5400.0),
        ("1h 30m 15s", 5415.0),
        ("2d12h", 216000.0),
        ("1w1d", 691200.0),
        ("1.5h", 5400.0),
        ("10 seconds", 10.0),
        ("3 mins", 180.0),
        ("2 hrs", 7200.0),
        (" 7d ", 604800.0),
        ("365d", MAX_DURATION),
    ],
)
def test_duration_strings_add_up(text: str, seconds: float) -> None:
    assert to_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "10",
        "10s junk",
        "10s5",
        "1h30",
        "s",
        "-5s",
        "1.5.3s",
        "5mss",
        "5 parsecs",
        "\u0661\u0660s",  # Arabic-Indic digits
        "1" * 200 + "s",
        "366d",
        "53w",
        "1e3s",
        NAN,
        INF,
        -INF,
        -0.001,
        MAX_DURATION + 1,
        1e12,
        10**400,
        timedelta(days=366),
        timedelta(seconds=-1),
        True,
        None,
        [1],
    ],
)
def test_bad_durations_are_refused(value: Any) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        to_seconds(value, what="sleep 'x'")
    assert isinstance(caught.value, ValueError) and "sleep 'x'" in caught.value.message


@pytest.mark.parametrize("value", [NAN, INF, -1.0, 1e12, "1000d", 10**400])
def test_definitions_refuse_bad_durations(value: Any) -> None:
    with pytest.raises(InvalidOptionError):
        Workflow(unique("t"), timeout=value)
    with pytest.raises(InvalidOptionError):
        Workflow(unique("s")).sleep("nap", value)
    with pytest.raises(InvalidOptionError):
        Workflow(unique("w")).wait_for_event("w", "go", timeout=value)
    with pytest.raises(InvalidOptionError):
        Workflow(unique("st")).step("s", lambda i, p, c: 1, timeout=value)


@pytest.mark.parametrize(
    "value",
    [NAN, INF, -1.0, 1e12, 10**400, datetime(1969, 12, 31, tzinfo=UTC), datetime(2030, 1, 1), "soon"],
)
def test_bad_instants_are_refused(value: Any) -> None:
    with pytest.raises(InvalidOptionError):
        to_instant(value)
    with pytest.raises(InvalidOptionError):
        Workflow(unique("su")).sleep_until("later", value)


def test_instants_up_to_year_9999_are_fine() -> None:
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert to_instant(last) == last.timestamp()
    assert iso(to_instant(last)) == "9999-12-31T23:59:59.000+00:00"


@pytest.mark.parametrize("call", ["sleep", "sleep_until", "wait"])
async def test_a_code_first_sleep_of_30000_years_is_refused_at_call_time(
    env: WorkflowTestEnv, call: str
) -> None:
    @workflow(unique("long-sleep"))
    async def sleepy(ctx: Any, input: Any) -> str:
        if call == "sleep":
            await ctx.sleep("x", 1e12)
        elif call == "sleep_until":
            await ctx.sleep_until("x", 1e12)
        else:
            await ctx.wait_for_event("x", "go", timeout=1e12)
        return "never"

    handle = await env.run(sleepy, {})
    result = await env.result(handle)
    assert result.error is not None and result.error.code == "invalid_option"
    assert "x" in result.error.message
    # Nothing was journaled: the call was refused before any operation began.
    assert await handle.journal() == []
    view = await handle.describe()
    assert view["wake_at"] is None
