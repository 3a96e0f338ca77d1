"""The policy model: one YAML file per category of personal data, validated into typed data.

The model is the single source of truth for the format: the JSON Schema in include/policies/ is
generated from it (`python -m lifecycle schema`) and the reference doc is checked against it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

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
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(problem) from None
    if value not in _iana_zones():
        raise ValueError(problem)
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Statement(_Strict):
    """The row of the privacy statement this policy enforces, quoted as published."""

    service: str = Field(min_length=1, description="Type dienst: the service column.")
    data: str = Field(min_length=1, description="Type gegevens: the data column.")
    retention: str = Field(min_length=1, description="Bewaartermijn: the promise, verbatim.")


class EventSource(_Strict):
    """The period runs from an event instead of the record's own timestamp: "until end of
    service" is `period: P0D` from the contract's end. The event is a column of the record's own
    row (`timestamp` only), or of another table joined in the database: the record's `subject`
    column equals the event table's `key` column. A subject with no event yet (no event row, or
    a NULL event timestamp on any of its rows: a contract still running) is never expired; with
    several event rows the latest event counts."""

    timestamp: Identifier = Field(description="Event column; NULL means it has not happened.")
    table: QualifiedTable | None = Field(
        default=None, description="Event table; omitted: the event is in the record's own row."
    )
    subject: Identifier | None = Field(
        default=None, description="Record column linking to the event table (e.g. customer_id)."
    )
    key: Identifier | None = Field(
        default=None, description="Event table column matched by `subject` (e.g. customer_id)."
    )

    @model_validator(mode="after")
    def _joined_or_own_row(self) -> EventSource:
        joined = (self.table, self.subject, self.key)
        if any(joined) and not all(joined):
            raise ValueError("table, subject and key go together: give all three or none")
        return self


class TenantPeriods(_Strict):
    """Periods set per client organisation, read from a settings table at every run. Its
    columns are `tenant`, `policy` and `period` (ISO 8601); tenants with no row for this policy
    keep `retention.period`, the default."""

    column: Identifier | None = Field(
        default=None,
        description="SQL: the record column holding the tenant (client) id. Object stores: "
        "omitted, the tenant is the key segment after the prefix.",
    )
    table: QualifiedTable = Field(
        default="client_retention_settings", description="The settings table."
    )
    conn_id: ConnId | None = Field(
        default=None, description="Connection of the settings table; default: the store's."
    )


class Retention(_Strict):
    """How long records are kept, and from when."""

    # Before `period`: its validator needs to know whether the period runs from an event.
    from_event: EventSource | None = Field(
        default=None, description="Run the period from an event (end of contract) instead."
    )
    per_tenant: TenantPeriods | None = Field(
        default=None, description="Let each client organisation set its own period."
    )
    period: Annotated[
        str,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": DURATION_PATTERN,
                "description": "ISO 8601 duration on the calendar: P6M, P90D, P3Y. Positive; "
                "P0D is allowed only with `from_event` (delete at the event).",
            }
        ),
    ] = Field(description="Keep for this calendar period (the default with `per_tenant`).")

    @field_validator("period")
    @classmethod
    def _period(cls, value: str, info: ValidationInfo) -> str:
        _bounded_period(value)
        parse_period(value, allow_zero=info.data.get("from_event") is not None)
        return value


class Guards(_Strict):
    """Safety limits checked before anything is deleted; a breach refuses the run."""

    max_delete_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Refuse when more than this fraction of the store's records would go.",
    )
    max_delete_rows: int | None = Field(
        default=None, ge=0, description="Refuse when more than this many records would go."
    )
    min_period: Period = Field(
        default="P1D", description="Refuse a retention period shorter than this floor."
    )


class LinkHop(_Strict):
    """One step of a subject link: the previous column's value is this table's `key`; the
    subject (or the next step) is in this table's `column`."""

    table: QualifiedTable = Field(description="The linked table, e.g. `subscribers`.")
    key: Identifier = Field(description="Its column the previous column refers to (e.g. `id`).")
    column: Identifier = Field(description="Its column that leads on (e.g. `customer_id`).")


class SubjectLink(_Strict):
    """How a record reaches a subject: its own `column`, followed `through` linked tables,
    resolved in the database (`cdrs.subscriber_id -> subscribers.id`, `subscribers.customer_id`
    is the customer)."""

    column: Identifier = Field(description="The record's column the link starts from.")
    through: list[LinkHop] = Field(
        default_factory=list,
        max_length=4,
        description="Linked tables, in order; empty: the column holds the subject itself.",
    )


class SqlStore(_Strict):
    """A table in a relational database reached through an Airflow connection."""

    kind: Literal["sql"] = Field(description="A relational database table.")
    conn_id: ConnId = Field(description="Airflow connection to the database.")
    table: QualifiedTable = Field(description="Table, optionally schema-qualified.")
    key: Identifier = Field(description="Primary key column (integer, uuid or text).")
    timestamp: Identifier | None = Field(
        default=None,
        description="Column the period runs from: timestamptz, or a naive timestamp in UTC. "
        "Required unless `retention.from_event` is set.",
    )
    null_timestamp: Literal["anomaly", "active"] = Field(
        default="anomaly",
        description=(
            "What a NULL timestamp means. `anomaly`: reported, never deleted. `active`: the "
            "period has not started yet (an open ticket), kept and counted as active."
        ),
    )
    batch_size: int = Field(
        default=50_000, gt=0, le=1_000_000, description="Rows deleted per transaction."
    )
    shards: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Most parallel delete tasks a purge is split into (mapped tasks that spread "
        "over the workers): contiguous, non-overlapping ranges of an integer or UUID `key`, of "
        "about equal expired rows, two batches at least (the last may be smaller); fewer when "
        "less is expired. Tables with other key types purge in one task (their key values could be "
        "personal data, and range bounds travel through XCom).",
    )
    subjects: dict[
        Annotated[str, Field(pattern=NAME_PATTERN)],
        Identifier | SubjectLink | list[Identifier | SubjectLink],
    ] = Field(
        default_factory=dict,
        description="How the records reach each subject (hold subjects, data-subject requests): "
        "a column, a list of columns, or a link through other tables, e.g. `{phone: [caller, "
        "callee], customer: {column: subscriber_id, through: [{table: subscribers, key: id, "
        "column: customer_id}]}}`: a hold on subject `customer` with value V keeps every row "
        "whose subscriber belongs to customer V. Values compare in canonical form: `phone` as "
        "E.164, `email` case-insensitively, other subjects as keys.",
    )

    @field_validator("table")
    @classmethod
    def _not_protected(cls, value: str) -> str:
        # The audit trail, the holds, Airflow's metadata and system catalogs are never a purge
        # target (checked again at run time on the resolved database).
        from lifecycle.protected import protected_table_problem

        problem = protected_table_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def subject_links(self) -> dict[str, list[SubjectLink]]:
        """Every subject as links (a plain column is a link with no hops)."""
        links: dict[str, list[SubjectLink]] = {}
        for subject, spec in self.subjects.items():
            items = spec if isinstance(spec, list) else [spec]
            links[subject] = [
                SubjectLink(column=item) if isinstance(item, str) else item for item in items
            ]
        return links

    def subject_columns(self) -> dict[str, list[str]]:
        """The record's own columns each subject starts from."""
        return {s: [link.column for link in ls] for s, ls in self.subject_links().items()}

    def link_tables(self) -> list[str]:
        """The tables the subject links read through (the jobs' role needs SELECT on them)."""
        links = [link for links in self.subject_links().values() for link in links]
        return sorted({hop.table for link in links for hop in link.through})

    @property
    def location(self) -> str:
        return self.table


def _bucket(value: str) -> str:
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value) or ".." in value:
        raise ValueError(
            f"{value!r} is not an S3 bucket name (3-63 lower case letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit)"
        )
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value):
        raise ValueError(f"{value!r} is not an S3 bucket name (it looks like an IP address)")
    return value


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


class MetadataTimestamp(_Strict):
    """An ISO 8601 timestamp in the object's user metadata (x-amz-meta-<name>)."""

    metadata: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,127}$")] = Field(
        description="The user metadata key, lower case, e.g. `recorded-at`."
    )


class KeyPatternTimestamp(_Strict):
    """A date in the object key, read in the policy's timezone. The object counts from the end of
    the period the key names: `date=2026-05-28/` is expired once the whole day is before the
    cutoff, so a date partition that straddles the cutoff waits for the next run."""

    key_pattern: Annotated[str, AfterValidator(_key_pattern)] = Field(
        description="A regular expression with named groups year, month, day (and optionally "
        "hour, minute, second), searched in the key."
    )


def _timestamp_source(value: object) -> str | None:
    if isinstance(value, str):
        return "last_modified" if value == "last_modified" else None
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value)) if next(iter(value)) in ("metadata", "key_pattern") else None
    if isinstance(value, MetadataTimestamp | KeyPatternTimestamp):
        return "metadata" if isinstance(value, MetadataTimestamp) else "key_pattern"
    return None


ObjectTimestamp = Annotated[
    Annotated[Literal["last_modified"], Tag("last_modified")]
    | Annotated[MetadataTimestamp, Tag("metadata")]
    | Annotated[KeyPatternTimestamp, Tag("key_pattern")],
    Discriminator(
        _timestamp_source,
        custom_error_type="timestamp_source",
        custom_error_message="unknown timestamp source (expected last_modified, "
        "{metadata: <key>} or {key_pattern: <regex>})",
    ),
]


class S3Store(_Strict):
    """Objects under a prefix of an S3-compatible bucket, reached through an Airflow AWS
    connection (`endpoint_url` in its extra for MinIO or another S3 server)."""

    kind: Literal["s3"] = Field(description="An S3-compatible object store.")
    conn_id: ConnId = Field(description="Airflow AWS connection (login/password = key pair).")
    bucket: Annotated[str, AfterValidator(_bucket)] = Field(description="The bucket.")
    prefix: Annotated[
        str,
        Field(max_length=MAX_PREFIX_LENGTH),
        AfterValidator(_matching(r"^([^/].*/)?$", "a key prefix (no leading /, ending in /)")),
        WithJsonSchema(
            {"type": "string", "pattern": r"^([^/].*/)?$", "maxLength": MAX_PREFIX_LENGTH}
        ),
    ] = Field(
        default="", description="Key prefix ending in `/` (`support/`); empty: the whole bucket."
    )
    timestamp: ObjectTimestamp = Field(
        default="last_modified",
        description="Where an object's time comes from: `last_modified`, `{metadata: <key>}` or "
        "`{key_pattern: <regex>}`. An object whose time cannot be read is reported, not deleted.",
    )
    batch_size: int = Field(
        default=1000, gt=0, le=1000, description="Keys per DeleteObjects call (S3 allows 1000)."
    )
    max_in_flight: int = Field(
        default=4, gt=0, le=32, description="DeleteObjects calls in flight at once."
    )
    subjects: dict[str, str] = Field(
        default_factory=dict,
        description="Not used by object stores: holds match key prefixes (subject `prefix`).",
        json_schema_extra={"maxProperties": 0},
    )

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def subject_columns(self) -> dict[str, list[str]]:
        return {}


# One member per store kind; a new store kind adds its model here and a module in stores/.
Store = Annotated[SqlStore | S3Store, Field(discriminator="kind")]
STORE_KINDS = ("sql", "s3")


class Policy(_Strict):
    """A retention policy: one category of personal data, one DAG `retention_<name>`."""

    model_config = ConfigDict(
        title="Retention policy",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    name: PolicyName = Field(description="Unique policy name; the DAG id is `retention_<name>`.")
    title: str = Field(
        min_length=1,
        max_length=MAX_TITLE_LENGTH,
        description="Human-readable name of the category.",
    )
    description: str | None = Field(default=None, description="Free text shown in the DAG doc.")
    statement: Statement = Field(description="The statement row this policy enforces.")
    controller: Literal["provider", "client"] = Field(
        description="Who is responsible: the provider itself, or the client organisation."
    )
    legal_basis: Literal["contract", "legal_obligation", "legitimate_interest", "consent"] = Field(
        description="Grond voor verwerking: the GDPR ground of the processing."
    )
    retention: Retention = Field(description="How long records are kept.")
    store: Store = Field(description="Where the records live; `kind` selects the store type.")
    guards: Guards = Field(default_factory=Guards, description="Safety limits of the check.")
    timezone: Timezone = Field(
        default="Europe/Amsterdam", description="Timezone of the schedule and the cutoff."
    )
    schedule: str = Field(
        default="0 0 * * *",
        description="Cron expression of the daily run, in the policy's timezone.",
    )
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, description="Extra DAG tags (at most 100 characters each)."
    )
    retries: int = Field(
        default=3, ge=0, le=10, description="Task retries (exponential backoff) on store errors."
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (example: '0 0 * * *')")
        return value

    @property
    def period_floor(self) -> str:
        """The shortest period this policy accepts, from the policy, a client or an event grace
        (a typo such as PT6M for P6M would empty the table). An event's grace may be P0D ("until
        end of service") unless the policy sets `guards.min_period` itself."""
        if (
            self.retention.from_event is not None
            and "min_period" not in self.guards.model_fields_set
        ):
            return "P0D"
        return self.guards.min_period

    @model_validator(mode="after")
    def _period_floor(self) -> Policy:
        if not period_at_least(self.retention.period, self.period_floor):
            raise ValueError(
                f"retention.period: {self.retention.period} is shorter than guards.min_period "
                f"{self.period_floor}"
            )
        return self

    @model_validator(mode="after")
    def _store_fits_retention(self) -> Policy:
        tenants = self.retention.per_tenant
        if self.store.kind == "s3":
            if self.retention.from_event is not None:
                raise ValueError("retention.from_event: not available for s3 stores")
            if tenants is not None and (tenants.column is not None or tenants.conn_id is None):
                raise ValueError(
                    "retention.per_tenant: for s3 stores the tenant is the key segment after "
                    "store.prefix (prefix/<tenant>/...): give conn_id (the settings table's "
                    "database) and no column"
                )
            if self.store.subjects:
                raise ValueError("store.subjects: s3 holds match key prefixes (subject prefix)")
        elif tenants is not None and tenants.column is None:
            raise ValueError("retention.per_tenant.column: required for sql stores")
        return self

    @model_validator(mode="after")
    def _timestamp_source(self) -> Policy:
        if self.store.kind != "sql":
            return self
        if self.store.timestamp is None and self.retention.from_event is None:
            raise ValueError("store.timestamp: required unless retention.from_event is set")
        if self.store.timestamp is not None and self.retention.from_event is not None:
            raise ValueError(
                "store.timestamp: not used with retention.from_event (the event column is the "
                "timestamp): remove one of them"
            )
        return self

    @property
    def dag_id(self) -> str:
        return f"retention_{self.name}"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file, generated from the model."""
    return Policy.model_json_schema(mode="validation")
