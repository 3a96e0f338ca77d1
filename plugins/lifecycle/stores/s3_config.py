"""The config of the `s3` store kind: objects under a prefix of an S3-compatible bucket
(boto3), and what the engine needs to know about the kind. The store is `lifecycle.stores.s3`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)

from lifecycle.fields import (
    MAX_PREFIX_LENGTH,
    ConnId,
    KeyPatternTimestamp,
    Strict,
    _matching,
)
from lifecycle.stores.config import HeldByPrefix, StoreConfig, time_source_text
from lifecycle.subjects import PREFIX_SUBJECT

if TYPE_CHECKING:
    from lifecycle.policy import Policy, Retention


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


class MetadataTimestamp(Strict):
    """An ISO 8601 timestamp in the object's user metadata (x-amz-meta-<name>)."""

    metadata: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,127}$")] = Field(
        description="The user metadata key, lower case, e.g. `recorded-at`."
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


class S3Store(HeldByPrefix, StoreConfig):
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
    head_in_flight: int = Field(
        default=16,
        ge=1,
        le=64,
        description="HeadObject requests in flight at once: a date in the metadata, a "
        "version's Object Lock status (asked only when the bucket has Object Lock).",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_subjects(cls, data: Any) -> Any:
        # Holds on objects match key prefixes; an empty `subjects: {}`, which older versions
        # accepted, is still read.
        if isinstance(data, dict) and "subjects" in data:
            if data["subjects"]:
                raise ValueError(
                    "store.subjects: s3 holds match key prefixes (subject prefix), not subjects"
                )
            data = {key: value for key, value in data.items() if key != "subjects"}
        return data

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    # -- what the engine asks of the kind (lifecycle.stores.config) ---------------------------

    implementation: ClassVar[str] = "lifecycle.stores.s3"
    reference_sections: ClassVar[tuple[tuple[str, type[BaseModel]], ...]] = (
        ("`store.timestamp` of an s3 store: `{metadata: ...}`", MetadataTimestamp),
        ("`store.timestamp` of an s3 store: `{key_pattern: ...}`", KeyPatternTimestamp),
    )

    def subjects_doc(self) -> str:
        return f"{PREFIX_SUBJECT} → the object key"

    def time_doc(self, retention: Retention) -> str:
        return "from the object's time (see below)"

    def doc_rows(self) -> list[tuple[str, str]]:
        source = time_source_text(self.timestamp)
        return [
            ("Object time", source),
            ("Deletion", f"DeleteObjects, {self.batch_size} versions a call, "
             f"{self.max_in_flight} in flight; every version and delete marker of an expired "
             "key; Object Lock respected"),
        ]  # fmt: skip

    def asset_path(self) -> str:
        return f"{self.bucket}/{self.prefix}"

    def scope(self) -> tuple[str, ...]:
        return ("s3", self.conn_id.lower(), self.bucket, self.prefix)

    def overlap(self, other: StoreConfig) -> tuple[str, str, str] | None:
        if not isinstance(other, S3Store) or self.scope()[:3] != other.scope()[:3]:
            return None
        if not (self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)):
            return None
        what = f"{self.location} on connection {self.conn_id}"
        return (what, f"overlaps {other.location} of", "prefix")

    def check_policy(self, policy: Policy) -> None:
        retention = policy.retention
        if retention.from_event is not None:
            raise ValueError("retention.from_event: not available for s3 stores")
        tenants = retention.per_tenant
        if tenants is not None and (tenants.column is not None or tenants.conn_id is None):
            raise ValueError(
                "retention.per_tenant: for s3 stores the tenant is the key segment after "
                "store.prefix (prefix/<tenant>/...): give conn_id (the settings table's "
                "database) and no column"
            )


CONFIG = S3Store
