"""RetryPolicy on valid input: resolved fields, exact backoff gaps, the cap, jitter.

Only valid knobs are pinned here, precisely; how a bad knob is rejected is the
business of the validation tests (any bad knob is a ValueError, nothing more is
assumed).
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from workkit_workflow import RetryPolicy


def test_defaults_resolve_to_seconds_and_a_thirty_second_cap() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_delay, policy.backoff_multiplier) == (3, 1.0, 2.0)
    assert (policy.max_delay, policy.cap, policy.jitter, policy.non_retryable) == (30.0, 30.0, 0.1, ())


def test_the_default_cap_grows_to_a_longer_initial_delay() -> None:
    policy = RetryPolicy(initial_delay=45.0)
    assert policy.max_delay == 45.0 and policy.cap == 45.0
    assert RetryPolicy(initial_delay=30.0).max_delay == 30.0
    assert RetryPolicy(initial_delay=29.5).max_delay == 30.0


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("2s", 2.0), ("500ms", 0.5), (timedelta(minutes=1), 60.0), (3, 3.0), (0.25, 0.25)],
)
def test_delays_in_any_duration_form_are_stored_as_float_seconds(given: Any, seconds: float) -> None:
    policy = RetryPolicy(initial_delay=given, max_delay=given)
    assert policy.initial_delay == seconds and type(policy.initial_delay) is float
    assert policy.max_delay == seconds and type(policy.max_delay) is float


def test_a_given_max_delay_is_kept_and_converted() -> None:
    assert RetryPolicy(max_delay="1m").max_delay == 60.0
    assert RetryPolicy(initial_delay=5.0, max_delay=5.0).cap == 5.0


def test_non_retryable_names_become_a_tuple() -> None:
    policy = RetryPolicy(non_retryable=["KeyError", "card_declined"])  # type: ignore[arg-type]
    assert policy.non_retryable == ("KeyError", "card_declined")


def test_create_has_the_constructors_defaults() -> None:
    assert RetryPolicy.create() == RetryPolicy()


def test_create_keeps_every_knob() -> None:
    policy = RetryPolicy.create(
        max_attempts=7,
        initial_delay="2s",
        max_delay=timedelta(minutes=2),
        backoff_multiplier=1.5,
        jitter=0.3,
        non_retryable=("KeyError",),
        max_lost_attempts=12,
    )
    assert policy == RetryPolicy(
        max_attempts=7,
        initial_delay=2.0,
        max_delay=120.0,
        backoff_multiplier=1.5,
        jitter=0.3,
        non_retryable=("KeyError",),
        max_lost_attempts=12,
    )


def test_to_dict_round_trips_and_omits_the_default_lost_attempt_cap() -> None:
    # An undo's journaled policy is rebuilt from this dict (engine/_undo.py); a policy
    # with the default cap writes the same record as before the knob existed.
    assert "max_lost_attempts" not in RetryPolicy().to_dict()
    for policy in (RetryPolicy(max_attempts=4), RetryPolicy(max_lost_attempts=9, non_retryable=("E",))):
        data = policy.to_dict()
        rebuilt = RetryPolicy(**{**data, "non_retryable": tuple(data["non_retryable"])})  # type: ignore[arg-type]
        assert rebuilt == policy


def test_gaps_grow_by_the_multiplier_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=20.0, backoff_multiplier=3.0, jitter=0.0)
    gaps = [policy.next_delay(n) for n in range(1, 7)]
    assert gaps == [0.5, 1.5, 4.5, 13.5, 20.0, 20.0]
    assert [policy.base_delay(n) for n in range(1, 7)] == gaps


def test_a_multiplier_of_one_keeps_the_gap_constant() -> None:
    policy = RetryPolicy(initial_delay=2.0, backoff_multiplier=1.0, jitter=0.0)
    assert [policy.next_delay(n) for n in (1, 2, 10, 50)] == [2.0, 2.0, 2.0, 2.0]


def test_attempt_zero_waits_like_the_first_failure() -> None:
    policy = RetryPolicy(initial_delay=3.0, jitter=0.0)
    assert policy.base_delay(0) == 3.0


def test_a_huge_attempt_number_waits_the_cap() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=90.0, jitter=0.0)
    assert policy.next_delay(10_000) == 90.0


def test_sub_second_gaps_are_not_rounded_up() -> None:
    policy = RetryPolicy(initial_delay=0.2, max_delay=0.5, jitter=0.0)
    assert [policy.next_delay(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.5]


def test_no_delay_is_zero_even_with_jitter() -> None:
    policy = RetryPolicy(initial_delay=0.0, max_delay=0.0, jitter=0.5)
    assert policy.next_delay(1, random.Random(1)) == 0.0


def test_jitter_scales_the_capped_wait_by_the_drawn_fraction() -> None:
    policy = RetryPolicy(initial_delay=4.0, max_delay=8.0, jitter=0.25)
    spread = random.Random(42).uniform(-0.25, 0.25)
    # attempt 3 would be 16 s: capped to 8 s first, then spread.
    assert policy.next_delay(3, random.Random(42)) == pytest.approx(8.0 * (1.0 + spread))
    assert spread != 0.0


def test_jitter_stays_within_the_fraction_and_uses_the_given_rng() -> None:
    policy = RetryPolicy(initial_delay=10.0, max_delay=10.0, jitter=0.2)
    rng, twin = random.Random(3), random.Random(3)
    delays = [policy.next_delay(1, rng) for _ in range(300)]
    assert delays == [10.0 * (1.0 + twin.uniform(-0.2, 0.2)) for _ in range(300)]
    assert 8.0 <= min(delays) < 8.2 and 11.8 < max(delays) <= 12.0


def test_full_jitter_is_allowed_and_never_negative() -> None:
    policy = RetryPolicy(initial_delay=1.0, jitter=1.0)
    rng = random.Random(9)
    delays = [policy.next_delay(1, rng) for _ in range(300)]
    assert min(delays) >= 0.0 and max(delays) <= 2.0
    assert min(delays) < 0.1 and max(delays) > 1.9


def test_without_jitter_no_randomness_is_drawn() -> None:
    policy = RetryPolicy(initial_delay=1.0, jitter=0.0)
    rng = random.Random(5)
    policy.next_delay(2, rng)
    assert rng.random() == random.Random(5).random()


def test_without_an_rng_jitter_uses_the_module_random() -> None:
    policy = RetryPolicy(initial_delay=2.0, max_delay=2.0, jitter=0.5)
    random.seed(11)
    expected = 2.0 * (1.0 + random.Random(11).uniform(-0.5, 0.5))
    assert policy.next_delay(1) == pytest.approx(expected)


def test_to_dict_lists_every_knob_as_json_values() -> None:
    policy = RetryPolicy(
        max_attempts=4,
        initial_delay="1s",
        max_delay="10s",
        backoff_multiplier=3.0,
        jitter=0.0,
        non_retryable=("KeyError",),
    )
    assert policy.to_dict() == {
        "max_attempts": 4,
        "initial_delay": 1.0,
        "max_delay": 10.0,
        "backoff_multiplier": 3.0,
        "jitter": 0.0,
        "non_retryable": ["KeyError"],
    }
    assert RetryPolicy().to_dict()["max_delay"] == 30.0


@pytest.mark.parametrize("attempts", [2.5, True, "3"])
def test_max_attempts_must_be_a_whole_int(attempts: Any) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=attempts)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 1},
        {"backoff_multiplier": 1.0},
        {"jitter": 0.0},
        {"jitter": 1.0},
        {"initial_delay": 5.0, "max_delay": 5.0},
    ],
)
def test_knobs_at_their_bounds_are_accepted(kwargs: dict[str, Any]) -> None:
    policy = RetryPolicy(**kwargs)
    assert all(getattr(policy, knob) == value for knob, value in kwargs.items())


@pytest.mark.parametrize(
    ("kwargs", "knob"),
    [
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"backoff_multiplier": 0.5}, "backoff_multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"initial_delay": -1}, "initial_delay"),
        ({"initial_delay": "soon"}, "initial_delay"),
        ({"max_delay": -1}, "max_delay"),
        ({"max_delay": "later"}, "max_delay"),
        ({"initial_delay": 5, "max_delay": 1}, "max_delay"),
    ],
)
def test_a_refused_knob_is_named_in_the_error(kwargs: dict[str, Any], knob: str) -> None:
    # Only the knob's name is pinned: the wording of these errors may change.
    with pytest.raises(ValueError, match=knob):
        RetryPolicy(**kwargs)


def test_a_tiny_initial_delay_grows_through_huge_powers_without_overflow() -> None:
    # 1e-306 * (1e6 ** 51) is 1 s: the growth (about 705 in log space) is past the
    # direct power's comfortable range, yet the wait is well below the cap.
    policy = RetryPolicy(initial_delay=1e-306, max_delay=10.0, backoff_multiplier=1e6, jitter=0.0)
    assert policy.base_delay(52) == pytest.approx(1.0, rel=1e-9)
    assert policy.base_delay(53) == 10.0


@pytest.mark.parametrize(
    ("kwargs", "knob"),
    [
        ({"jitter": "lots"}, "jitter"),
        ({"backoff_multiplier": 10**400}, "backoff_multiplier"),
        ({"backoff_multiplier": "fast"}, "backoff_multiplier"),
    ],
)
def test_a_knob_that_is_not_a_finite_number_is_named_in_the_error(kwargs: dict[str, Any], knob: str) -> None:
    with pytest.raises(ValueError, match=knob):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "knob"), [({"initial_delay": "soon"}, "initial_delay"), ({"max_delay": "later"}, "max_delay")]
)
def test_create_names_a_refused_delay(kwargs: dict[str, Any], knob: str) -> None:
    with pytest.raises(ValueError, match=knob):
        RetryPolicy.create(**kwargs)
