"""Times as the policy's owner reads them: in the policy's timezone, the zone named, UTC kept.

The trail stores UTC. A run of an Amsterdam policy on 29 November has the logical date
2026-11-28 23:00 UTC; read in UTC it is "the run of the 28th", which no one scheduled. Pages show
local times with the zone's abbreviation (UTC on hover); exports add local columns beside the UTC
ones and filter on local calendar days.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from lifecycle.policy import Policy

DEFAULT_ZONE = "Europe/Amsterdam"  # the policy model's default: a retired policy's best guess


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@cache
def _known() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones()) - {"localtime", "Factory"}


def known_zone(value: object) -> object:
    """A query's `tz`: one of the system's IANA names, else a ValueError (a 422), checked
    against the list before ZoneInfo opens any file (a 500-character name is an OSError)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in _known():
        raise ValueError("not an IANA timezone")
    return value


def zones_of(policies: Iterable[Policy]) -> Callable[[str], str]:
    """Policy name -> its timezone; a policy without a file (retired) gets the default."""
    known = {policy.name: policy.timezone for policy in policies}
    return lambda name: known.get(name, DEFAULT_ZONE)


def local(value: datetime | None, zone_name: str) -> datetime | None:
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(zone(zone_name))


def local_text(value: datetime | None, zone_name: str) -> str:
    """`2026-11-29 00:00 CET`: minutes, and the abbreviation that tells winter from summer."""
    moment = local(value, zone_name)
    return moment.strftime("%Y-%m-%d %H:%M %Z") if moment else "–"


def utc_text(value: datetime | None) -> str:
    moment = local(value, "UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def local_day(value: datetime | None, zone_name: str) -> str:
    moment = local(value, zone_name)
    return moment.strftime("%Y-%m-%d") if moment else "–"


def day_bounds(
    start: date | None, end: date | None, zone_name: str
) -> tuple[datetime | None, datetime | None]:
    """[start, end] as local calendar days -> [first instant, instant after the last) in UTC.
    Local midnight may not exist (a zone that springs forward at 00:00): fold=0 takes the wall
    clock as it would have read, which zoneinfo maps to the first instant of that day."""
    place = zone(zone_name)

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(), place).astimezone(UTC)

    return (
        midnight(start) if start else None,
        midnight(end + timedelta(days=1)) if end else None,
    )
