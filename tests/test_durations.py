"""Durations and instants on valid input: every unit, compound strings, instants, ISO.

Bad values are only required to raise a ValueError here; their bounds and messages
belong to the validation tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from workkit_workflow.definitions._durations import iso, to_instant, to_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2 milliseconds", 0.002),
        ("1millisecond", 0.001),
        ("7s", 7.0),
        ("7 sec", 7.0),
        ("7 secs", 7.0),
        ("1 second", 1.0),
        ("10 seconds", 10.0),
        ("5m", 300.0),
        ("5 min", 300.0),
        ("5 mins", 300.0),
        ("1 minute", 60.0),
        ("3 minutes", 180.0),
        ("2h", 7200.0),
        ("2 hr", 7200.0),
        ("2 hrs", 7200.0),
        ("1 hour", 3600.0),
        ("3 hours", 10800.0),
        ("7d", 604800.0),
        ("1 day", 86400.0),
        ("2 days", 172800.0),
        ("1w", 604800.0),
        ("1 week", 604800.0),
        ("2 weeks", 1209600.0),
    ],
)
def test_every_unit_has_its_factor(text: str, seconds: float) -> None:
    assert to_seconds(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2d3h4m5s", 2 * 86400.0 + 3 * 3600.0 + 4 * 60.0 + 5.0),
        ("1m500ms", 60.5),
        ("1 hour 30 minutes", 5400.0),
        ("30m1h", 5400.0),
        ("1s1s1s", 3.0),
    ],
)
def test_compound_durations_add_their_parts(text: str, seconds: float) -> None:
    assert to_seconds(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5h", 5400.0), ("0.5s", 0.5), ("  10s  ", 10.0), ("10S", 10.0), ("2H", 7200.0), ("0s", 0.0)],
)
def test_decimals_spaces_and_case(text: str, seconds: float) -> None:
    assert to_seconds(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["10s!", "10s x", "1h30", "10", "", "   ", "s", "ten seconds", "10 parsecs", "5s-1s", "1h,30m", "-5s"],
)
def test_junk_anywhere_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        to_seconds(text)


def test_numbers_and_timedeltas_become_float_seconds() -> None:
    assert to_seconds(3) == 3.0 and type(to_seconds(3)) is float
    assert to_seconds(0.125) == 0.125
    assert to_seconds(0) == 0.0
    assert to_seconds(timedelta(minutes=2, milliseconds=500)) == 120.5


@pytest.mark.parametrize("value", [-1, -0.001, float("nan"), float("inf"), timedelta(seconds=-1), True])
def test_negative_non_finite_and_bool_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        to_seconds(value)  # type: ignore[arg-type]


def test_an_unsupported_type_is_refused() -> None:
    with pytest.raises(ValueError):
        to_seconds([10])  # type: ignore[arg-type]


def test_instants_from_aware_datetimes_and_epoch_seconds() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
    assert to_instant(moment) == moment.timestamp() == 1767323045.25
    plus_two = datetime(2026, 1, 2, 5, 4, 5, 250000, tzinfo=timezone(timedelta(hours=2)))
    assert to_instant(plus_two) == 1767323045.25
    assert to_instant(1767323045) == 1767323045.0 and type(to_instant(1767323045)) is float
    assert to_instant(12.5) == 12.5


@pytest.mark.parametrize("value", [datetime(2026, 1, 2), True, "2026-01-02", None])
def test_naive_datetimes_and_non_numbers_are_not_instants(value: object) -> None:
    with pytest.raises(ValueError):
        to_instant(value)  # type: ignore[arg-type]


def test_iso_renders_utc_with_milliseconds() -> None:
    assert iso(None) is None
    assert iso(0.0) == "1970-01-01T00:00:00.000+00:00"
    assert iso(1767323045.25) == "2026-01-02T03:04:05.250+00:00"


@pytest.mark.parametrize("value", ["10 parsecs", "10s!", "", -1, float("nan"), True, [10]])
def test_a_refusal_names_what_was_being_given(value: object) -> None:
    # Only that the message says which option was bad: its wording may change.
    with pytest.raises(ValueError, match="sleep 'nap'"):
        to_seconds(value, what="sleep 'nap'")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [datetime(2026, 1, 2), "noon"])
def test_an_instant_refusal_names_what_was_being_given(value: object) -> None:
    with pytest.raises(ValueError, match="wake time"):
        to_instant(value, what="wake time")  # type: ignore[arg-type]


def test_without_a_label_the_refusal_says_duration_or_time() -> None:
    with pytest.raises(ValueError, match=r"^duration"):
        to_seconds("soon")
    with pytest.raises(ValueError, match=r"^time"):
        to_instant(datetime(2026, 1, 2))


def test_a_duration_string_of_up_to_100_characters_is_read() -> None:
    assert to_seconds(" " * 98 + "1s") == 1.0
    with pytest.raises(ValueError):
        to_seconds(" " * 99 + "1s")


def test_the_epoch_itself_and_fractions_after_it_are_instants() -> None:
    assert to_instant(0) == 0.0
    assert to_instant(0.5) == 0.5


def test_an_int_too_large_for_a_float_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="wake time"):
        to_instant(10**400, what="wake time")
    with pytest.raises(ValueError, match="sleep 'nap'"):
        to_seconds(10**400, what="sleep 'nap'")


def test_iso_shows_an_instant_no_date_can_hold_as_the_number() -> None:
    shown = iso(1e20)
    assert shown is not None and "1e+20" in shown


def test_an_unknown_unit_is_refused_quoting_the_text() -> None:
    with pytest.raises(ValueError, match="'10 parsecs'"):
        to_seconds("10 parsecs")
