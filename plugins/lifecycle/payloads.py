"""What the tasks hand each other through XCom, as typed classes; plain JSON on the wire.

Each step reads its inputs with `from_json` and returns `to_json()`: the DAG factory and the
audit row agree on names because they share these classes, not because two dicts happen to
use the same keys. Every payload carries the attempt (the run's clear number) it belongs to: a
cleared run keeps the XComs of the steps that have not run again yet, and `of_attempt` tells
them from this attempt's own.

Payloads hold counts, bounds, cutoffs and policy settings: never a record's value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from lifecycle.stores import Plan, Slice

log = logging.getLogger(__name__)

KeyBound = int | str | None  # an integer or UUID key as JSON, or unbounded


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    attempt: int = 0

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | Self) -> Self:
        return data if isinstance(data, cls) else cls.model_validate(dict(data))

    @classmethod
    def of_attempt(cls, data: Mapping[str, Any] | None, attempt: int) -> Self | None:
        """The payload if it is this attempt's; None if missing or another attempt's, or if it
        cannot be read (written by another version mid-run): `record` must write its row
        whatever it finds, as for a step that failed (the ledger still has the counts)."""
        if not data or data.get("attempt") != attempt:
            return None
        try:
            return cls.from_json(data)
        except ValidationError as exc:  # its text can quote the input: not logged
            log.warning(
                "a %s XCom could not be read (%d problems)", cls.__name__, exc.error_count()
            )
            return None


class TenantInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    period: str
    default: bool  # on the policy's own period (no client setting)
    total: int = 0
    expired: int = 0


class Extracted(Payload):
    """extract: the run's window and the plan of what it would delete."""

    cutoff: str  # ISO 8601, computed once from the logical date: every later step reuses it
    tenant_cutoffs: dict[str, str] = Field(default_factory=dict)
    tenants: dict[str, TenantInfo] = Field(default_factory=dict)
    plan: Plan
    warnings: list[str] = Field(default_factory=list)
    started_at: str | None = None  # the run's real start (its first task's)

    @property
    def cutoff_at(self) -> datetime:
        return datetime.fromisoformat(self.cutoff)

    def tenant_cutoffs_at(self) -> dict[str, datetime]:
        return {tenant: datetime.fromisoformat(c) for tenant, c in self.tenant_cutoffs.items()}

    def tenant_periods(self) -> dict[str, str]:
        """The periods clients set themselves (tenants on the default are left out)."""
        return {tenant: info.period for tenant, info in self.tenants.items() if not info.default}


class CheckDecision(Payload):
    """check: whether the purge may go, and how many records it may delete at most."""

    outcome: Literal["approved", "refused", "dry_run"]
    approved: bool
    dry_run: bool
    approved_records: int
    reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class SliceTask(Payload):
    """split: one slice of the purge, the input of one mapped delete task."""

    index: int
    expired: int  # purgeable records in the slice when the run was split
    after: KeyBound = None
    through: KeyBound = None
    past: int | None = None  # records past the window in it then, held or not
    from_block: int | None = None  # or a range of blocks, [from_block, to_block)
    to_block: int | None = None
    slices: int = 1  # of the split: the last block slice to finish sweeps the whole table

    def bounds(self) -> Slice:
        return Slice(
            self.index,
            self.expired,
            self.after,
            self.through,
            self.past,
            from_block=self.from_block,
            to_block=self.to_block,
        )

    @classmethod
    def of(cls, piece: Slice, attempt: int, slices: int = 1) -> SliceTask:
        return cls(**piece.to_dict(), attempt=attempt, slices=slices)


class SliceResult(Payload):
    """delete: what one slice's purge deleted (the ledger's sums, earlier tries included)."""

    slice: int = Field(validation_alias=AliasChoices("slice", "shard"))  # formerly `shard`
    deleted: int
    batches: int
    seconds: float
    failed: dict[str, int] = Field(default_factory=dict)  # error code -> records not deleted
    # Range partitions this try dropped whole and the rows they held (of `deleted`).
    partitions: dict[str, int] = Field(default_factory=dict)
    earlier_tries: int = 0  # of `deleted`, what interrupted tries of the slice deleted
    earlier_uncounted: bool = False  # an interrupted try's batch could not be counted


class Purge(BaseModel):
    """The run's purge, its slices' results summed (not on the wire: `record` merges them).
    With a slice unfinished, `incomplete` names them and only `deleted_by_finished` is known."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deleted: int = 0
    batches: int = 0
    seconds: float = 0.0
    failed: dict[str, int] = Field(default_factory=dict)
    partitions: dict[str, int] = Field(default_factory=dict)  # dropped whole: partitions, rows
    slices: int = 0
    earlier_tries: int = 0
    earlier_uncounted: list[int] = Field(default_factory=list)
    incomplete: list[int] = Field(default_factory=list)
    deleted_by_finished: int = 0


class VerificationResult(Payload):
    """verify: Great Expectations' verdict on what remains."""

    success: bool
    remaining: int  # unheld records still before the cutoff
    seconds: float
    summary: dict[str, Any] = Field(default_factory=dict)


class RunResults(BaseModel):
    """What `record` has of this attempt's steps (None where a step failed or did not run)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    extracted: Extracted | None = None
    decision: CheckDecision | None = None
    purged: Purge | None = None
    verification: VerificationResult | None = None
