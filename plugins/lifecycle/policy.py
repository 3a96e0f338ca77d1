"""The policy model: one YAML file per category of personal data, validated into typed data.

The model is the single source of truth for the format: the JSON Schema in include/policies/ is
generated from it (`python -m lifecycle schema`) and the reference doc is checked against it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# Shared field types live in lifecycle.fields (store kinds' configs use them too); re-exported.
from lifecycle.fields import (  # noqa: F401
    CONN_ID_PATTERN,
    IDENTIFIER_PATTERN,
    MAX_PERIOD_LENGTH,
    MAX_PREFIX_LENGTH,
    MAX_TITLE_LENGTH,
    NAME_PATTERN,
    QUALIFIED_PATTERN,
    ConnId,
    Identifier,
    KeyPatternTimestamp,
    Period,
    PolicyName,
    QualifiedTable,
    Timezone,
    _bounded_period,
    _matching,
    compile_key_pattern,
    period_at_least,
)
from lifecycle.fields import Strict as _Strict

# The model's public names, and the shared ones it re-exports (older imports keep working).
__all__ = [
    "IDENTIFIER_PATTERN",
    "MAX_PERIOD_LENGTH",
    "MAX_PREFIX_LENGTH",
    "MAX_TITLE_LENGTH",
    "NAME_PATTERN",
    "STORE_KINDS",
    "EventSource",
    "Guards",
    "Owners",
    "Policy",
    "Retention",
    "Statement",
    "Store",
    "TenantPeriods",
    "compile_key_pattern",
    "json_schema",
    "period_at_least",
]
from lifecycle.periods import DURATION_PATTERN, parse_period


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
    max_erasure_records: int = Field(
        default=10_000,
        ge=0,
        description="Refuse, for review, an erasure request that would remove more than this "
        "many of one subject's records here (a mistyped identifier reaching a whole client).",
    )


# Owners' addresses go into SMTP headers: a plain address only (no display name, no comma, no
# line break), bounded as RFC 5321 bounds a path.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
MAX_EMAIL_LENGTH = 254
MAX_OWNER_EMAILS = 20
EmailAddress = Annotated[
    str,
    Field(max_length=MAX_EMAIL_LENGTH),
    AfterValidator(_matching(EMAIL_PATTERN, "a plain e-mail address (name@example.com)")),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": EMAIL_PATTERN,
            "maxLength": MAX_EMAIL_LENGTH,
            "description": "A plain e-mail address, no display name: dpo@example.com.",
        }
    ),
]


class Owners(_Strict):
    """Who hears of trouble: a run that is refused, fails or fails verification, and a policy
    with no verified run by its deadline (the schedule's next run after the last verified one,
    plus `grace_hours`: 26 h for a daily run). Alerts carry the policy, the status, the reasons
    (counts and settings) and a link to the evidence page: never a record."""

    email: list[EmailAddress] = Field(
        default_factory=list,
        max_length=MAX_OWNER_EMAILS,
        description=f"E-mail addresses (at most {MAX_OWNER_EMAILS}), sent through the SMTP "
        "connection `smtp_conn_id`.",
    )
    webhook_conn_id: ConnId | None = Field(
        default=None,
        description="Airflow connection of a chat webhook (Slack, Teams, Mattermost...): a JSON "
        "message is posted to its host (a URL, https:// unless the connection says otherwise).",
    )
    smtp_conn_id: ConnId | None = Field(
        default=None,
        description="SMTP connection of the e-mails; default: Airflow's `[email] email_conn_id` "
        "(smtp_default).",
    )
    grace_hours: int = Field(
        default=2,
        ge=0,
        le=168,
        description="Hours after a scheduled run by which it must have completed verified "
        "before the owners hear that the policy is overdue.",
    )

    @field_validator("email")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        seen = {address.lower() for address in value}
        if len(seen) != len(value):
            raise ValueError("an address is listed twice")
        return value

    @model_validator(mode="after")
    def _someone(self) -> Owners:
        if not self.email and self.webhook_conn_id is None:
            raise ValueError("name at least one e-mail address or a webhook_conn_id")
        return self


# The store: one config model per kind, from the registry (lifecycle.stores.kinds); each owns
# what its kind means for the rest of the engine.
from lifecycle.stores.kinds import STORE_KINDS, Store  # noqa: E402


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
    owners: Owners | None = Field(
        default=None,
        description="Who is alerted when a run is refused, fails or fails verification, or when "
        "no verified run completed by the deadline.",
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
    def _store_fits_policy(self) -> Policy:
        self.store.check_policy(self)  # what this kind of store cannot do is refused
        return self

    @property
    def dag_id(self) -> str:
        return f"retention_{self.name}"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file, generated from the model."""
    return Policy.model_json_schema(mode="validation")
