"""ISO 8601 durations as calendar periods, and the cutoff arithmetic built on them.

A retention period is a calendar period (P6M is six months on the calendar, not 180 days). The
cutoff of a run is its logical date, read as wall-clock time in the policy's timezone, minus the
period; a record is expired if and only if its timestamp is strictly before the cutoff.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

# Designators in ISO 8601 order; integers only (a fractional month has no calendar meaning).
# ASCII digits only, as the JSON Schema's pattern (ECMA-262 \d): Python's \d would also take
# other scripts' digits (P٣M), a period the schema and every other tool refuse. \Z, not $: $
# would accept a trailing newline.
_DURATION = re.compile(
    r"^P(?!\Z)(?:(?P<years>[0-9]+)Y)?(?:(?P<months>[0-9]+)M)?(?:(?P<weeks>[0-9]+)W)?"
    r"(?:(?P<days>[0-9]+)D)?"
    r"(?:T(?=[0-9])(?:(?P<hours>[0-9]+)H)?(?:(?P<minutes>[0-9]+)M)?(?:(?P<seconds>[0-9]+)S)?)?\Z"
)
# The same grammar without Python's named groups, for the JSON Schema (ECMA-262 regex).
DURATION_PATTERN = r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$"


MAX_YEARS = 100
# 100 years is 3 155 760 000 seconds: a number of more digits is too long in any unit, and is
# refused before int() (which would refuse beyond 4300 digits with a message about Python).
_MAX_DIGITS = 10


def local_instant(text: str, zone: str = "Europe/Amsterdam") -> datetime:
    """An ISO 8601 time a person typed (a hold's expiry, a request's receipt): in `zone`'s
    wall-clock time when it has no offset."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(zone))


def parse_period(text: str, *, allow_zero: bool = False) -> relativedelta:
    """Parse a positive ISO 8601 duration (P6M, P90D, P3Y, P1Y6M, PT12H) into a calendar delta.

    `allow_zero` admits P0D (a grace period: delete at the event). Raises ValueError with a
    message fit for a policy author.
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not an ISO 8601 duration with whole numbers (examples: P6M, P90D, P3Y)"
        )
    if any(len(value.lstrip("0")) > _MAX_DIGITS for value in match.groupdict().values() if value):
        raise ValueError(f"{text!r} is longer than {MAX_YEARS} years: not a retention period")
    parts = {unit: int(value) for unit, value in match.groupdict().items() if value is not None}
    if not allow_zero and not any(parts.values()):
        raise ValueError(f"{text!r} is not a positive duration: a retention period must be > 0")
    days: float = (
        parts.get("years", 0) * 366 + parts.get("months", 0) * 31 + parts.get("weeks", 0) * 7
    )
    days += parts.get("days", 0) + (parts.get("hours", 0) + parts.get("minutes", 0) / 60) / 24
    if days + parts.get("seconds", 0) / 86400 > MAX_YEARS * 366:
        raise ValueError(f"{text!r} is longer than {MAX_YEARS} years: not a retention period")
    # The units are relativedelta's keywords (the pattern's group names): never its dt1, dt2.
    return relativedelta(**cast(dict[str, Any], parts))


def period_floor_ok(period: str, floor: str) -> bool:
    """True when `period` is at least `floor`, compared from a fixed reference date.

    Calendar periods have no total order (P1M vs P30D depends on the month), so both are applied
    to the same reference instant; the shortest month is used to be conservative.
    """
    reference = datetime(2001, 3, 1)  # going back from 1 March crosses a 28-day February
    return reference - parse_period(period) <= reference - parse_period(floor)


def compute_cutoff(
    logical_date: datetime, period: str, timezone: str, *, allow_zero: bool = False
) -> datetime:
    """The instant before which records are expired, as an aware UTC datetime.

    The logical date is read as wall-clock time in `timezone`; the period is subtracted on the
    calendar (31 August - P6M = 28 February); the resulting wall-clock time is mapped back to an
    instant. A wall-clock time that does not exist (the spring-forward gap) or exists twice (the
    autumn overlap) is resolved with fold=0, the offset in force before the transition: a
    deterministic choice, so a rerun of the same logical date computes the same cutoff.
    """
    if logical_date.tzinfo is None:
        raise ValueError("logical_date must be timezone-aware")
    zone = ZoneInfo(timezone)
    wall_clock = logical_date.astimezone(zone).replace(tzinfo=None)
    shifted = wall_clock - parse_period(period, allow_zero=allow_zero)
    return shifted.replace(tzinfo=zone, fold=0).astimezone(UTC)
