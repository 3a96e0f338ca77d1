"""Dates named in a key or a path (`date=2026-05-28/`, `2026/05/28/14/`), shared by the store
kinds whose records are dated by their name (an S3 key, a file's path).

A name dates a period (a day, an hour...), not an instant. The record counts from the period's
last microsecond, in the policy's timezone: it is expired only when the whole period it names is
before the cutoff, so a date partition that straddles the cutoff waits for the next run instead
of being deleted while part of it is still in its window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

_UNITS = (  # the precision a key pattern names -> how long that period lasts
    ("second", timedelta(seconds=1)),
    ("minute", timedelta(minutes=1)),
    ("hour", timedelta(hours=1)),
)


def end_of_named_period(pattern: Any, name: str, zone: ZoneInfo) -> datetime | None:
    """The last microsecond (UTC) of the period that `pattern` (a compiled RE2 pattern with
    named groups year, month, day and optionally hour, minute, second) finds in `name`; None
    when it finds none or names no real date (then the record is reported, never deleted)."""
    try:
        match = pattern.search(name)
    except UnicodeError:  # a file name that is not UTF-8 (RE2 matches UTF-8 text)
        return None
    if match is None:
        return None
    try:
        parts = {group: int(value) for group, value in match.groupdict().items() if value}
        start = datetime(
            parts["year"],
            parts["month"],
            parts["day"],
            parts.get("hour", 0),
            parts.get("minute", 0),
            parts.get("second", 0),
        )
        length = next((span for unit, span in _UNITS if unit in parts), timedelta(days=1))
        end = (start + length).replace(tzinfo=zone).astimezone(UTC)
    except (KeyError, ValueError, OverflowError):  # no such date, or past year 9999
        return None
    return end - timedelta(microseconds=1)
