"""The field types every part of the policy model shares (the policy itself and each store
kind's config): identifiers, connection ids, periods, time zones, bounded lengths, key patterns.
Light on purpose: imported when DAG files are parsed."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from lifecycle.periods import DURATION_PATTERN, parse_period, period_floor_ok

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
IDENTIFIER_PATTERN = rf"^{_IDENTIFIER}$"
QUALIFIED_PATTERN = rf"^{_IDENTIFIER}(\.{_IDENTIFIER})?$"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
CONN_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,250}$"


def _matching(pattern: str, what: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return check


def period_at_least(period: str, floor: str) -> bool:
    """True when `period` is at least `floor` (either may be P0D, an event's grace)."""
    if not any(vars(parse_period(floor, allow_zero=True)).get(k) for k in _UNITS):
        return True
    if not any(vars(parse_period(period, allow_zero=True)).get(k) for k in _UNITS):
        return False
    return period_floor_ok(period, floor)


_UNITS = ("years", "months", "days", "hours", "minutes", "seconds")


# Every value that reaches the audit trail fits its column (audit.py): a trail write can no
# longer fail on content after a deletion.
MAX_PERIOD_LENGTH = 40
MAX_TITLE_LENGTH = 250
MAX_PREFIX_LENGTH = 170  # "s3:<conn_id>:s3://<bucket>/<prefix>" fits the 500 of `store`


def _bounded_period(value: str) -> None:
    if isinstance(value, str) and len(value) > MAX_PERIOD_LENGTH:
        raise ValueError(f"longer than {MAX_PERIOD_LENGTH} characters: not a retention period")


def _period(value: str) -> str:
    _bounded_period(value)
    parse_period(value)
    return value


TIMEZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
# Files of the tz database that are no zone of the IANA list: the machine's own setting, a
# placeholder, and POSIX rules. `localtime` would make the cutoff depend on the host.
_NOT_ZONES = frozenset({"Factory", "localtime", "posixrules", "posix", "right"})


@functools.cache
def _iana_zones() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones())


def _timezone(value: str) -> str:
    problem = f"{value!r} is not an IANA timezone (example: Europe/Amsterdam)"
    if (
        not re.fullmatch(TIMEZONE_PATTERN, value, flags=re.ASCII)
        or value.split("/")[0] in _NOT_ZONES
    ):
        raise ValueError(problem)
    # The list first: ZoneInfo opens a file named after the value, and a long one raises
    # OSError (file name too long) rather than a validation error.
    if value not in _iana_zones():
        raise ValueError(problem)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(problem) from None
    return value


# Each alias is spelled out (no helper returning the Annotated form): mypy accepts only a literal
# Annotated[...] as a type. Our own validator gives clear messages; the schema carries the pattern.
_IDENTIFIER_DESCRIPTION = "A plain SQL identifier: letters, digits and _, at most 63 characters."
Identifier = Annotated[
    str,
    AfterValidator(
        _matching(
            IDENTIFIER_PATTERN,
            "a plain SQL identifier (letters, digits and _, not starting with a digit)",
        )
    ),
    WithJsonSchema(
        {"type": "string", "pattern": IDENTIFIER_PATTERN, "description": _IDENTIFIER_DESCRIPTION}
    ),
]
QualifiedTable = Annotated[
    str,
    AfterValidator(
        _matching(
            QUALIFIED_PATTERN, "a plain table name, optionally schema-qualified (schema.table)"
        )
    ),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": QUALIFIED_PATTERN,
            "description": "A plain table name, optionally schema-qualified: "
            "`cdrs` or `billing.usage_records`.",
        }
    ),
]
PolicyName = Annotated[
    str,
    AfterValidator(
        _matching(
            NAME_PATTERN,
            "a policy name (lower case letters, digits and _, starting with a letter)",
        )
    ),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "Lower case letters, digits and _; the DAG id is `retention_<name>`.",
        }
    ),
]
ConnId = Annotated[
    str,
    AfterValidator(_matching(CONN_ID_PATTERN, "an Airflow connection id")),
    WithJsonSchema(
        {"type": "string", "pattern": CONN_ID_PATTERN, "description": "An Airflow connection id."}
    ),
]
Period = Annotated[
    str,
    AfterValidator(_period),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A positive ISO 8601 duration, applied on the calendar: P6M, P90D, P3Y.",
        }
    ),
]
Timezone = Annotated[
    str,
    AfterValidator(_timezone),
    WithJsonSchema(
        {"type": "string", "pattern": TIMEZONE_PATTERN, "description": "An IANA timezone name."}
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


MAX_KEY_PATTERN_LENGTH = 500


def compile_key_pattern(value: str) -> Any:  # re2 is untyped: its compiled pattern
    """A key pattern compiled with RE2, whose matching time is linear in the key's length: a
    crafted key cannot hold a backtracking engine at 100% CPU (`(\\w+)*` and the like)."""
    import re2

    options = re2.Options()
    options.log_errors = False  # the message goes to the policy author, not to stderr
    return re2.compile(value, options=options)


def _key_pattern(value: str) -> str:
    if len(value) > MAX_KEY_PATTERN_LENGTH:
        raise ValueError(f"longer than {MAX_KEY_PATTERN_LENGTH} characters")
    try:
        compiled = compile_key_pattern(value)
    except Exception as exc:  # re2.error: backreferences, lookaround, bad syntax
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"{value!r} is not a regular expression the linear-time engine (RE2) can run: "
            f"{reason} (backreferences and lookaround are not supported)"
        ) from None
    missing = {"year", "month", "day"} - set(compiled.groupindex)
    if missing:
        raise ValueError(
            f"{value!r} lacks the named groups {', '.join(sorted(missing))} "
            "(example: 'date=(?P<year>\\d{4})-(?P<month>\\d{2})-(?P<day>\\d{2})/')"
        )
    unknown = set(compiled.groupindex) - {"year", "month", "day", "hour", "minute", "second"}
    if unknown:
        raise ValueError(f"{value!r} has named groups other than date parts: {sorted(unknown)}")
    return value


class KeyPatternTimestamp(Strict):
    """A date in the object key (or the file's path), read in the policy's timezone. The object
    counts from the end of the period the key names: `date=2026-05-28/` is expired once the whole
    day is before the cutoff, so a date partition that straddles the cutoff waits for the next
    run."""

    key_pattern: Annotated[str, AfterValidator(_key_pattern)] = Field(
        description="A regular expression with named groups year, month, day (and optionally "
        "hour, minute, second), searched in the key."
    )
