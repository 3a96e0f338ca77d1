"""Cutoff arithmetic: calendar periods in the policy timezone, strictly-before semantics."""

import calendar
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.periods import DURATION_PATTERN, compute_cutoff, parse_period, period_floor_ok

AMS = ZoneInfo("Europe/Amsterdam")


@pytest.mark.parametrize("text", ["P6M", "P90D", "P3Y", "P1Y6M", "P2W", "PT12H", "P1DT1S"])
def test_positive_iso_durations_parse(text):
    assert parse_period(text)


@pytest.mark.parametrize(
    "text",
    ["P0D", "PT0S", "P0Y0M", "-P1M", "six months", "P", "PT", "P1.5M", "6M", "p6m", "", "P10000Y"],
)
def test_non_positive_or_malformed_durations_are_rejected(text):
    with pytest.raises(ValueError, match=repr(text).replace("(", r"\(")):
        parse_period(text)


@pytest.mark.parametrize(
    "text",
    [
        "P\u0663M",  # Arabic-Indic three
        "P\uff16M",  # fullwidth six
        "PT\u096cH",  # Devanagari six
        "P1Y\u0666M",
        "P6M\n",  # Python's $ matches before a final newline; ECMA-262's does not
    ],
)
def test_only_ascii_digits_as_in_the_json_schema(text):
    # The JSON Schema's pattern is ECMA-262 (editors, CI validators), where \d is [0-9] and $
    # is the very end: what it refuses, the model refuses too.
    assert not re.search(DURATION_PATTERN.replace("$", r"\Z"), text, re.ASCII)
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        parse_period(text)


def test_a_number_too_long_for_int_is_a_period_too_long():
    with pytest.raises(ValueError, match="longer than 100 years"):
        parse_period("P" + "9" * 5000 + "D")


@pytest.mark.parametrize(
    ("logical", "period", "expected"),
    [
        # DESIGN §4: 31 August minus P6M is 28 February.
        ("2026-08-31T00:00", "P6M", "2026-02-28T00:00"),
        ("2024-08-31T00:00", "P6M", "2024-02-29T00:00"),  # leap year
        ("2028-02-29T00:00", "P1Y", "2027-02-28T00:00"),  # 29 February minus a year
        ("2029-02-28T00:00", "P1Y", "2028-02-28T00:00"),
        ("2026-11-29T00:00", "P90D", "2026-08-31T00:00"),
        ("2026-03-31T00:00", "P1M", "2026-02-28T00:00"),
        ("2026-11-29T00:00", "P3Y", "2023-11-29T00:00"),
    ],
)
def test_calendar_arithmetic_in_local_time(logical, period, expected):
    logical_date = datetime.fromisoformat(logical).replace(tzinfo=AMS)
    cutoff = compute_cutoff(logical_date, period, "Europe/Amsterdam")
    assert cutoff.tzinfo is UTC
    assert cutoff.astimezone(AMS).replace(tzinfo=None) == datetime.fromisoformat(expected)


def test_spring_forward_gap_resolves_with_the_offset_before_the_transition():
    # 2026-03-29 02:30 does not exist in Amsterdam (02:00 CET -> 03:00 CEST).
    logical_date = datetime(2026, 9, 29, 2, 30, tzinfo=AMS)
    cutoff = compute_cutoff(logical_date, "P6M", "Europe/Amsterdam")
    assert cutoff == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 02:30 read as CET = 03:30 CEST


def test_autumn_overlap_resolves_to_the_first_occurrence():
    # 2026-10-25 02:30 happens twice in Amsterdam (CEST, then CET).
    logical_date = datetime(2027, 4, 25, 2, 30, tzinfo=AMS)
    cutoff = compute_cutoff(logical_date, "P6M", "Europe/Amsterdam")
    assert cutoff == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the CEST one


def test_timezone_matters():
    logical_date = datetime(2026, 11, 29, tzinfo=UTC)
    amsterdam = compute_cutoff(logical_date, "P1D", "Europe/Amsterdam")
    utc = compute_cutoff(logical_date, "P1D", "UTC")
    assert utc == datetime(2026, 11, 28, tzinfo=UTC)
    assert amsterdam == utc  # 01:00 CET minus a day is 01:00 CET = 00:00 UTC
    summer = datetime(2026, 7, 1, tzinfo=UTC)
    assert compute_cutoff(summer, "P1M", "Europe/Amsterdam") == datetime(2026, 6, 1, tzinfo=UTC)


def test_zero_is_allowed_only_as_a_grace_period():
    assert parse_period("P0D", allow_zero=True).days == 0
    cutoff = compute_cutoff(datetime(2026, 1, 1, tzinfo=UTC), "P0D", "UTC", allow_zero=True)
    assert cutoff == datetime(2026, 1, 1, tzinfo=UTC)


def test_naive_logical_date_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_cutoff(datetime(2026, 1, 1), "P1D", "UTC")


instants = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)


@given(instant=instants, months=st.integers(1, 120))
def test_months_clamp_to_the_end_of_the_month(instant, months):
    local = instant.astimezone(AMS)
    cutoff_local = compute_cutoff(instant, f"P{months}M", "Europe/Amsterdam").astimezone(AMS)
    index = local.year * 12 + (local.month - 1) - months
    year, month = divmod(index, 12)
    day = min(local.day, calendar.monthrange(year, month + 1)[1])
    assert (cutoff_local.year, cutoff_local.month, cutoff_local.day) == (year, month + 1, day)


@given(instant=instants, days=st.integers(1, 2000))
def test_cutoff_is_deterministic_and_in_the_past(instant, days):
    first = compute_cutoff(instant, f"P{days}D", "Europe/Amsterdam")
    assert first == compute_cutoff(instant, f"P{days}D", "Europe/Amsterdam")
    assert first < instant
    # Days are wall-clock days: at most an hour of DST away from 24 h each.
    assert abs((instant - first) - timedelta(days=days)) <= timedelta(hours=1)


@given(
    day=st.dates(min_value=datetime(2001, 1, 1).date(), max_value=datetime(2099, 1, 1).date()),
    period=st.sampled_from(["P6M", "P3M", "P1Y", "P3Y", "P90D"]),
)
def test_local_midnight_maps_to_local_midnight(day, period):
    # Midnight exists every day in Amsterdam (DST switches at 02:00/03:00), so a daily run at
    # local midnight always gets a cutoff at local midnight, through both DST transitions.
    logical_date = datetime(day.year, day.month, day.day, tzinfo=AMS)
    cutoff_local = compute_cutoff(logical_date, period, "Europe/Amsterdam").astimezone(AMS)
    assert (cutoff_local.hour, cutoff_local.minute, cutoff_local.second) == (0, 0, 0)


def test_period_floor():
    assert period_floor_ok("P6M", "P1D")
    assert period_floor_ok("P1D", "P1D")
    assert not period_floor_ok("PT12H", "P1D")
    assert not period_floor_ok("P1M", "P30D")  # a month can be 28 days: below a 30-day floor
