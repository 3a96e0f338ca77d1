"""Stores: where the data of a policy lives. One module per store kind, one small interface.

Words, one per concept: a record is *past the window* when its period is over, held or not;
*expired* when it is past the window and not held (what a purge deletes); *held* when it is past
the window under a hold. A *slice* is the part of a purge one mapped delete task does.

A store answers three questions for a cutoff: what is expired (`plan`), delete it (`purge`), and
prove nothing expired remains (`verify`). It returns counts and bounds only, never records, so
nothing it reports can carry personal data. A new store kind is two new modules here: its
config model (`<kind>_config.py`, see `lifecycle.stores.config`) and its store, exposing
`open_store(policy, connection)`; the registry (`lifecycle.stores.kinds`) finds it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

from lifecycle.errors import PermanentError

if TYPE_CHECKING:
    from lifecycle.policy import Policy


@dataclass(frozen=True)
class Hold:
    """A hold protecting the records of one subject value (a customer id, a phone number, an
    object key prefix) from deletion. Its value is personal data: it stays in the task's memory
    and never reaches XCom, logs or the audit trail (only `id` does)."""

    id: int
    scope: str  # a policy name, or * for all
    subject: str
    value: str
    reason: str


@dataclass(frozen=True)
class RetentionWindow:
    """Everything that decides whether a record is expired in this run."""

    cutoff: datetime  # the policy's (default) cutoff
    tenant_cutoffs: Mapping[str, datetime] = field(default_factory=dict)  # per client organisation
    holds: tuple[Hold, ...] = ()
    # Reads the active holds again (the control database): a purge calls it before every batch,
    # so a hold placed mid-run protects at once. Not part of the window's identity.
    reload_holds: Callable[[], tuple[Hold, ...]] | None = field(
        default=None, compare=False, repr=False
    )

    def cutoff_for(self, tenant: str | None) -> datetime:
        return self.tenant_cutoffs.get(tenant, self.cutoff) if tenant is not None else self.cutoff

    def moved(self, days: int) -> RetentionWindow:
        """The window `days` later: every cutoff (the policy's and each client's) moved forward,
        the same holds. What it finds expired and this one does not is due within `days`."""
        ahead = timedelta(days=days)
        return replace(
            self,
            cutoff=self.cutoff + ahead,
            tenant_cutoffs={tenant: c + ahead for tenant, c in self.tenant_cutoffs.items()},
        )


# The forecast's horizons, in days: how many records reach the end of their window within each
# (`Plan.due`), so that a wave of deletions is seen coming.
HORIZON_DAYS = (7, 30, 90)


@dataclass(frozen=True)
class Plan:
    """What a run would delete: counts and timestamp bounds, nothing else."""

    total: int
    expired: int  # past the window and not held: what the purge deletes
    held: int = 0  # past the window but under a hold
    active: int = 0  # the period has not started (an open ticket, a running contract)
    anomalies: int = 0  # no timestamp or no subject: reported, never deleted
    oldest_expired: str | None = None
    newest_expired: str | None = None
    # The oldest record the window keeps (its period started, not yet over): how close what
    # remains comes to the limit, shown against the period in the audit overview.
    oldest_retained: str | None = None
    held_by_hold: dict[str, int] = field(default_factory=dict)  # hold id -> records it protects
    by_tenant: dict[str, dict[str, int]] = field(default_factory=dict)  # tenant -> total, expired
    # Ids of the holds on a subject this store maps that reach no record at all (a value in
    # another form, or a subject with no records here): reported as a warning.
    inert_holds: list[str] = field(default_factory=list)
    # The forecast: horizon in days (as text, a JSON key) -> records not expired now that will
    # be within that many days (past the window and not held, every cutoff moved forward by
    # it; the holds as they are now). Empty where the store does not count it (object stores).
    due: dict[str, int] = field(default_factory=dict)
    # Range partitions the purge would drop whole (`store.partitions: drop`) and the rows they
    # hold, of `expired`: {"partitions": n, "rows": m}; empty where none would.
    partitions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Slice:
    """A slice of a purge, run as one mapped delete task: the keys `after < key <= through`,
    or where the table is walked in physical order (PostgreSQL) the rows stored in blocks
    `from_block <= block < to_block` (None: unbounded), so the slices of a run never overlap
    and together miss nothing (slices of blocks with the final sweep of the last to finish:
    an UPDATE moves a row to another block)."""

    index: int
    expired: int  # purgeable records in the slice when the run was split
    after: Any = None  # JSON-safe key bounds: integers or UUID text, never other key values
    through: Any = None
    past: int | None = None  # records past the window in it then, held or not (None: uncounted)
    from_block: int | None = None  # block numbers: say nothing of a record, whatever the key
    to_block: int | None = None

    @property
    def whole(self) -> bool:
        return not self.of_keys and not self.of_blocks

    @property
    def of_keys(self) -> bool:
        return self.after is not None or self.through is not None

    @property
    def of_blocks(self) -> bool:
        return self.from_block is not None or self.to_block is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PurgeResult:
    deleted: int
    batches: int
    seconds: float
    failed: dict[str, int] = field(default_factory=dict)  # error code -> records not deleted
    # Range partitions dropped whole, and the rows they held (of `deleted`, in `batches`):
    # {"partitions", "rows"}, with a grace also "detached" (of partitions, kept as tables) and
    # "kept_dropped" (kept by earlier runs, dropped by this one); {} when none went.
    partitions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verification:
    success: bool
    remaining: int  # unheld records still before the cutoff
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)  # the Great Expectations result

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PurgeJournal(Protocol):
    """Where a purge records each batch as it goes (`lifecycle.ledger.Journal`): `before` once
    the batch is ready to commit (with what it will delete and, where the store can tell later
    whether it committed, its witnesses: the lowest and highest key it deletes), `after` once it
    has. `wants_witnesses` is False where nothing is kept (no extra query per batch then)."""

    wants_witnesses: bool

    def before(self, batch: int, expected: int, witnesses: list[Any] | None = None) -> None: ...

    def after(self, batch: int, deleted: int) -> None: ...


class _NoJournal:
    wants_witnesses = False

    def before(self, batch: int, expected: int, witnesses: list[Any] | None = None) -> None:
        pass

    def after(self, batch: int, deleted: int) -> None:
        pass


NO_JOURNAL = _NoJournal()


class PurgeLimitExceeded(PermanentError, RuntimeError):
    """A purge found more to delete than the check approved; the batch was rolled back."""


class StoreConfigError(PermanentError, ValueError):
    """The policy's store section does not match the real store (missing table or column)."""


class RetentionStore(ABC):
    @abstractmethod
    def plan(self, window: RetentionWindow) -> Plan: ...

    def slices(self, window: RetentionWindow, *, count: int, expired: int) -> list[Slice]:
        """Split the purge into at most `count` slices; by default one: the whole store."""
        return [Slice(index=0, expired=expired)]

    def sweep_all(
        self, window: RetentionWindow, *, approved: int, journal: PurgeJournal, after_batch: int
    ) -> PurgeResult:
        """After every slice of ranges of blocks finished (`Slice.of_blocks`): delete what is
        still purgeable anywhere, at most `approved`, batches numbered after `after_batch`.
        Only stores that cut such slices are asked."""
        raise NotImplementedError(f"{type(self).__name__} cuts no slices of blocks")

    def past_window(self, window: RetentionWindow, in_slice: Slice) -> int | None:
        """Records past the window in a slice, held or not, or None where counting would cost a
        whole listing. A retried delete compares it with the count at the split: what is gone
        meanwhile was deleted by an interrupted try, whatever holds were placed since."""
        return None

    @abstractmethod
    def purge(
        self,
        window: RetentionWindow,
        *,
        approved: int,
        in_slice: Slice | None = None,
        journal: PurgeJournal | None = None,
    ) -> PurgeResult:
        """Delete what is expired and not held in the slice (default: everything), in bounded
        batches; never more than `approved`. `journal.before(n, expected)` is called when batch
        n is about to commit (SQL: inside its transaction, so a failure rolls it back) and
        `journal.after(n, deleted)` right after it has (the deletion ledger): an error of the
        journal stops the purge."""

    def witnesses_left(self, witnesses: list[Any]) -> int | None:
        """How many of a batch's witness keys (see `PurgeJournal.before`) are still in the
        store, or None where the store keeps none. A batch is one transaction: all gone, it
        committed; all there, it rolled back (`lifecycle.ledger.settle_in_flight`)."""
        return None

    @abstractmethod
    def verify(self, window: RetentionWindow) -> Verification:
        """Prove that no record past the window remains, held records excepted."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_store(policy: Policy, connection: Any) -> RetentionStore:
    """The store of a policy, reached through an Airflow connection (its kind's module)."""
    module = importlib.import_module(policy.store.implementation)
    return cast(RetentionStore, module.open_store(policy, connection))


# -- data-subject requests (lifecycle.requests): one subject's records in a store ---------------


@dataclass(frozen=True)
class SubjectSummary:
    """One subject's records in a store, as counts and bounds: `records` in all, of which
    `active` (a contract still running, an open ticket: never erased), `held` (under a hold, by
    id in `held_by_hold`) and `erasable` (the rest). `clients`: the client organisations the
    records belong to (the register's, to forward a request to; never the trail's)."""

    records: int
    erasable: int
    held: int = 0
    active: int = 0
    held_by_hold: dict[str, int] = field(default_factory=dict)
    oldest: str | None = None
    newest: str | None = None
    clients: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SubjectStore(RetentionStore):
    """A policy's store narrowed to one subject's records (`store.subjects`, resolved as the
    holds resolve it). Its window's "past the window" is "the subject's, not active": so
    `purge` erases what is neither active nor held, in the store's own batches, never more
    than approved, each batch in the deletion ledger, and `verify` proves with Great
    Expectations that nothing of the subject remains but the held and active records."""

    @property
    @abstractmethod
    def reaches(self) -> bool:
        """Whether one of the request's identifiers applies to this store at all."""

    @abstractmethod
    def summary(self, holds: tuple[Hold, ...]) -> SubjectSummary: ...

    def removals(self, holds: tuple[Hold, ...]) -> int:
        """What an erasure's purge deletes (its ceiling): the erasable records, by default."""
        return self.summary(holds).erasable

    @abstractmethod
    def fields(self) -> list[str]:
        """The names of a record's fields, in order, for the export."""

    @abstractmethod
    def records(self) -> Iterator[dict[str, Any]]:
        """The subject's records, JSON-safe (personal data: for the archive only)."""

    def copy_objects(self, write: Callable[[str, bytes], None]) -> int:
        """Write each record's content (an object's bytes) with `write(name, data)`; returns
        how many. Only stores whose records have a content of their own do."""
        return 0


# Beyond any record's time: a subject's records are erased whatever their age.
ERASURE_CUTOFF = datetime(9000, 1, 1, tzinfo=UTC)


def erasure_window(
    holds: tuple[Hold, ...], reload: Callable[[], tuple[Hold, ...]] | None = None
) -> RetentionWindow:
    """The window a `SubjectStore` purges and verifies with: the cutoff is not used (the
    subject's records are erased whatever their age), the holds are."""
    return RetentionWindow(cutoff=ERASURE_CUTOFF, holds=holds, reload_holds=reload)


def open_subject_store(
    policy: Policy, connection: Any, identifiers: Mapping[str, str]
) -> SubjectStore:
    """The policy's store narrowed to the subject of `identifiers` (its kind's
    `<kind>_requests` module)."""
    module = importlib.import_module(f"lifecycle.stores.{policy.store.kind}_requests")
    return cast(SubjectStore, module.open_subject_store(policy, connection, identifiers))
