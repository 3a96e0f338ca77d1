"""Objects under a prefix of an S3-compatible bucket, through boto3.

The listing is `ListObjectVersions`, paginated and streamed: versions are grouped per key as
they arrive, so memory holds one key's versions and one delete batch at a time, whatever the
bucket's size. A key is the unit of retention: an expired key is purged whole, every version
and delete marker, so no version of expired data remains. Versions under an Object Lock legal
hold or an unexpired retention are left alone and counted as held (governance retention is never
bypassed). Deletion is `DeleteObjects`, up to 1000 versions a call and a bounded number of calls
in flight; the per-key `Errors` of a 200 response are retried when transient and otherwise
reported, never counted as deleted. The HeadObject questions (a date in the metadata, a
version's Object Lock status, asked only of a bucket with Object Lock) go out in a bounded pool
over a window of the listing, answered in listing order (`lifecycle.stores.s3_heads`).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from lifecycle.fields import KeyPatternTimestamp, compile_key_pattern
from lifecycle.stores import (
    HORIZON_DAYS,
    NO_JOURNAL,
    Plan,
    PurgeJournal,
    PurgeLimitExceeded,
    PurgeResult,
    RetentionStore,
    RetentionWindow,
    Slice,
    StoreConfigError,
    Verification,
)
from lifecycle.stores.key_dates import end_of_named_period
from lifecycle.stores.s3_config import MetadataTimestamp, S3Store
from lifecycle.stores.s3_heads import Head, head, in_order
from lifecycle.subjects import PREFIX_SUBJECT

if TYPE_CHECKING:
    from lifecycle.policy import Policy

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"}
RETRIES = 4
INVENTORY_CHUNK = 5_000
PROGRESS_EVERY_SECONDS = 5.0


def client_from_connection(connection: Any, connections: int = 32) -> Any:  # boto3 is untyped
    """A boto3 S3 client from an Airflow AWS connection: login/password are the key pair, the
    extra may give `endpoint_url` (MinIO, a local server) and `region_name`. `connections`:
    the HTTP connections it keeps, at least the requests a store has in flight at once."""
    import boto3
    from botocore.config import Config

    extra = connection.extra_dejson or {}
    return boto3.client(
        "s3",
        aws_access_key_id=connection.login or extra.get("aws_access_key_id"),
        aws_secret_access_key=connection.password or extra.get("aws_secret_access_key"),
        endpoint_url=extra.get("endpoint_url"),
        region_name=extra.get("region_name", "us-east-1"),
        config=Config(
            retries={"mode": "adaptive", "max_attempts": 8}, max_pool_connections=connections
        ),
    )


@dataclass(frozen=True)
class Version:
    key: str
    version_id: str
    last_modified: datetime
    is_marker: bool


@dataclass
class KeyVerdict:
    """One key's versions and what the window says of them.

    With `last_modified` every data version is dated by its own LastModified: an old version
    expires on its own even when a newer one (an overwrite) is still in its window, and a delete
    marker does not make old data look new. With a date in the key or in the metadata the whole
    key shares one time. Delete markers go only when no data version of the key stays: removing
    the marker over a version that stays would bring it back."""

    key: str
    versions: list[Version]
    cutoff: datetime
    tenant: str | None
    key_moment: datetime | None = None  # the key's time, for key-level sources
    per_version: bool = False  # last_modified: each version has its own time
    held_by: int | None = None  # the id of a prefix hold covering it
    locked: frozenset[str] = frozenset()  # version ids under Object Lock

    def moment(self, version: Version) -> datetime | None:
        return version.last_modified if self.per_version else self.key_moment

    def data(self) -> list[Version]:
        return [v for v in self.versions if not v.is_marker]

    def expired(self) -> list[Version]:
        """Data versions past the window, held or not."""
        return [v for v in self.data() if (m := self.moment(v)) is not None and m < self.cutoff]

    def deletable(self) -> list[Version]:
        if self.held_by is not None:
            return []
        data = self.data()
        gone = [v for v in self.expired() if v.version_id not in self.locked]
        if len(gone) == len(data):
            return gone + [v for v in self.versions if v.is_marker]
        return gone

    def retained(self) -> list[datetime]:
        """Times of the data versions still in their window."""
        moments = (self.moment(v) for v in self.data())
        return [m for m in moments if m is not None and m >= self.cutoff]

    def held(self) -> int:
        if self.held_by is not None:
            return len(self.expired())
        return sum(1 for v in self.expired() if v.version_id in self.locked)

    def unreadable(self) -> int:
        return 0 if self.per_version or self.key_moment is not None else len(self.data())


_Call = Future[tuple[int, Counter[str]]]


class _Calls:
    """DeleteObjects calls in flight, at most `limit` at once, each written to the ledger as it
    finishes (`journal.before` when sent: at most its size, a key may fail; `journal.after`
    with what it deleted). A call that raised (the endpoint gone) stops the purge once the
    others that finished are recorded."""

    def __init__(self, pool: ThreadPoolExecutor, journal: PurgeJournal, limit: int):
        self.pool, self.journal, self.limit = pool, journal, limit
        self.in_flight: set[_Call] = set()
        self.numbers: dict[_Call, int] = {}
        self.deleted = 0
        self.errors: Counter[str] = Counter()

    def submit(
        self,
        number: int,
        delete: Callable[[list[Version]], tuple[int, Counter[str]]],
        batch: list[Version],
    ) -> None:
        while len(self.in_flight) >= self.limit:
            done, self.in_flight = wait(self.in_flight, return_when=FIRST_COMPLETED)
            self._collect(done)
        self.journal.before(number, len(batch))
        future = self.pool.submit(delete, batch)
        self.numbers[future] = number
        self.in_flight.add(future)

    def drain(self) -> None:
        done, self.in_flight = wait(self.in_flight).done, set()
        self._collect(done)

    def _collect(self, done: set[_Call]) -> None:
        raised = None
        for future in sorted(done, key=self.numbers.__getitem__):
            if future.exception() is not None:
                raised = raised or future.exception()
                continue
            gone, failed = future.result()
            self.journal.after(self.numbers.pop(future), gone)
            self.deleted += gone
            self.errors += failed
        if raised is not None:
            raise raised


class S3PrefixStore(RetentionStore):
    def __init__(self, policy: Policy, client: Any):
        if not isinstance(policy.store, S3Store):
            raise TypeError(f"{policy.name}: store.kind {policy.store.kind!r} is not s3")
        self.policy = policy
        self.config = config = policy.store
        self.client = client
        self.label = policy.name
        self.zone = ZoneInfo(policy.timezone)
        # The timestamp source, one member of the model's union.
        source = config.timestamp
        self.pattern: Any = None  # a compiled re2 pattern (re2 is untyped)
        if isinstance(source, KeyPatternTimestamp):
            self.pattern = compile_key_pattern(source.key_pattern)
        self.metadata_key = source.metadata if isinstance(source, MetadataTimestamp) else None
        self.per_tenant = policy.retention.per_tenant is not None
        try:
            lock = client.get_object_lock_configuration(Bucket=config.bucket)
            self.object_lock = lock["ObjectLockConfiguration"].get("ObjectLockEnabled") == "Enabled"
        except client.exceptions.ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "NoSuchBucket":
                raise StoreConfigError(
                    f"store.bucket: bucket {config.bucket!r} does not exist"
                ) from None
            if "ObjectLockConfiguration" not in code:
                raise
            self.object_lock = False  # the bucket has no Object Lock configuration
        # Enabled or Suspended: versions may exist. Never enabled: no Status at all.
        status = client.get_bucket_versioning(Bucket=config.bucket).get("Status")
        self.versioned = status is not None or self.object_lock

    # -- listing ------------------------------------------------------------------------------

    def _versions(self) -> Iterator[Version]:
        """Every version and delete marker under the prefix, in key order, newest first. A
        bucket that never had versioning has one version per key: ListObjectsV2 lists it
        more cheaply than ListObjectVersions."""
        if not self.versioned:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.config.bucket, Prefix=self.config.prefix):
                for entry in page.get("Contents", ()):
                    yield Version(entry["Key"], "null", entry["LastModified"], False)
            return
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.config.bucket, Prefix=self.config.prefix):
            entries = [
                Version(v["Key"], v["VersionId"], v["LastModified"], False)
                for v in page.get("Versions", ())
            ]
            markers = [
                Version(m["Key"], m["VersionId"], m["LastModified"], True)
                for m in page.get("DeleteMarkers", ())
            ]
            yield from heapq.merge(entries, markers, key=lambda v: v.key)

    def _keys(self, window: RetentionWindow, *, held_dates: bool = True) -> Iterator[KeyVerdict]:
        """The keys under the prefix in listing order, each with what the window says of it.
        The HeadObject questions (metadata dates, Object Lock) go out in a bounded pool, see
        `s3_heads`; a store that needs none (dates in the key or LastModified, no Object Lock on
        the bucket) asks nothing. `held_dates=False`: a key under a prefix hold is not dated
        (only the plan counts a held key's expired versions; a purge and a verification need
        nothing of it)."""
        listed = self._listed(window)
        if self.metadata_key is None and not self.object_lock:
            return listed
        return in_order(
            listed,
            functools.partial(self._ask, held_dates=held_dates),
            in_flight=self.config.head_in_flight,
        )

    def _listed(self, window: RetentionWindow) -> Iterator[KeyVerdict]:
        """The keys as listed, grouped, dated by their name or LastModified, matched to the
        prefix holds: everything but what a HeadObject says."""
        per_version = self.pattern is None and self.metadata_key is None
        for key, group in itertools.groupby(self._versions(), key=lambda v: v.key):
            tenant = self._tenant(key) if self.per_tenant else None
            verdict = KeyVerdict(
                key=key,
                versions=list(group),
                cutoff=window.cutoff_for(tenant),
                tenant=tenant,
                per_version=per_version,
                key_moment=self._moment_from_key(key) if self.pattern is not None else None,
            )
            for hold in window.holds:
                if hold.subject == PREFIX_SUBJECT and key.startswith(hold.value):
                    verdict.held_by = hold.id
                    break
            yield verdict

    def _ask(self, verdict: KeyVerdict, *, held_dates: bool) -> KeyVerdict:
        """What HeadObject says of a key (in the pool): its time from the metadata of its
        current version (a key of only delete markers has no data to date: the markers go, see
        `deletable`), then which of its expired versions are locked. The current version's
        HeadObject carries its lock status too: it is not asked twice."""
        if verdict.held_by is not None and not held_dates:
            return verdict
        current = next((v for v in verdict.versions if not v.is_marker), None)
        answers: dict[str, Head] = {}
        if self.metadata_key is not None and current is not None:
            answers[current.version_id] = self._head(current)
            verdict.key_moment = self._metadata_moment(answers[current.version_id].metadata)
        if verdict.held_by is None and self.object_lock:
            now = datetime.now(UTC)
            verdict.locked = frozenset(
                version.version_id
                for version in verdict.expired()
                if (answers.get(version.version_id) or self._head(version)).locked(now)
            )
        return verdict

    def _head(self, version: Version) -> Head:
        return head(self.client, self.config.bucket, self._address(version))

    def _address(self, version: Version) -> dict[str, str]:
        """Key and VersionId. A versioned bucket needs the id even for the "null" version
        written before versioning was enabled: without it a delete only adds a marker."""
        if not self.versioned:
            return {"Key": version.key}
        return {"Key": version.key, "VersionId": version.version_id}

    def _tenant(self, key: str) -> str | None:
        rest = key[len(self.config.prefix) :]
        return rest.split("/", 1)[0] if "/" in rest else None

    def _metadata_moment(self, metadata: dict[str, str]) -> datetime | None:
        """The key's time from its metadata; None if it cannot be read (then its versions are
        reported and never deleted)."""
        try:
            moment = datetime.fromisoformat(metadata.get(self.metadata_key or "", ""))
        except (TypeError, ValueError):
            return None
        # Without an offset the value is wall-clock time in the policy's timezone.
        return moment if moment.tzinfo else moment.replace(tzinfo=self.zone)

    def _moment_from_key(self, key: str) -> datetime | None:
        """The end of the period the key names (its last microsecond), so that a key is expired
        only when the whole day (or hour...) it names is before the cutoff."""
        return end_of_named_period(self.pattern, key, self.zone)

    # -- plan ---------------------------------------------------------------------------------

    def plan(self, window: RetentionWindow) -> Plan:
        total = expired = held = anomalies = 0
        oldest = newest = oldest_retained = None
        held_by_hold: Counter[str] = Counter()
        by_tenant: dict[str, dict[str, int]] = {}
        due: Counter[str] = Counter()  # the forecast: horizon -> data versions due by then
        prefixes = {h.id: h.value for h in window.holds if h.subject == PREFIX_SUBJECT}
        reached: set[int] = set()
        for verdict in self._keys(window):
            reached |= {i for i, prefix in prefixes.items() if verdict.key.startswith(prefix)}
            total += len(verdict.versions)
            deletable = verdict.deletable()
            expired += len(deletable)
            held += verdict.held()
            anomalies += verdict.unreadable()
            if verdict.held_by is not None and verdict.held():
                held_by_hold[str(verdict.held_by)] += verdict.held()
            # Deletable data versions are expired, so dated: the None filter only narrows the type.
            dated = (verdict.moment(v) for v in deletable if not v.is_marker)
            for moment in (m for m in dated if m is not None):
                oldest = min(oldest or moment, moment)
                newest = max(newest or moment, moment)
            for moment in verdict.retained():
                oldest_retained = min(oldest_retained or moment, moment)
                if verdict.held_by is None:  # past the window once the cutoff moved past it
                    due.update(
                        str(d) for d in HORIZON_DAYS if moment < verdict.cutoff + timedelta(d)
                    )
            if verdict.tenant is not None:
                counts = by_tenant.setdefault(verdict.tenant, {"total": 0, "expired": 0})
                counts["total"] += len(verdict.versions)
                counts["expired"] += len(deletable)
        return Plan(
            total=total,
            expired=expired,
            held=held,
            anomalies=anomalies,
            oldest_expired=oldest.astimezone(UTC).isoformat() if oldest else None,
            newest_expired=newest.astimezone(UTC).isoformat() if newest else None,
            oldest_retained=oldest_retained.astimezone(UTC).isoformat()
            if oldest_retained
            else None,
            held_by_hold=dict(held_by_hold),
            by_tenant=by_tenant,
            inert_holds=[str(i) for i in sorted(set(prefixes) - reached)],
            due={str(days): due[str(days)] for days in HORIZON_DAYS},
        )

    # -- purge --------------------------------------------------------------------------------

    def _batches(self, window: RetentionWindow) -> Iterator[list[Version]]:
        batch: list[Version] = []
        for verdict in self._keys(window, held_dates=False):
            for version in verdict.deletable():
                batch.append(version)
                if len(batch) == self.config.batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _delete(self, batch: list[Version]) -> tuple[int, Counter[str]]:
        """One DeleteObjects call, and retries of its transient per-key errors: how many
        versions are gone, and the error codes of those that are not. A 200 response can carry
        per-key errors (a locked version, a throttled key): they are never counted as deleted."""
        pending, deleted = batch, 0
        errors: Counter[str] = Counter()
        for attempt in range(RETRIES + 1):
            objects = [self._address(v) for v in pending]
            response = self.client.delete_objects(
                Bucket=self.config.bucket, Delete={"Objects": objects, "Quiet": True}
            )
            failed = {
                (error["Key"], error.get("VersionId", "null")): error["Code"]
                for error in response.get("Errors", ())
            }
            deleted += len(pending) - len(failed)
            retry = [v for v in pending if failed.get((v.key, v.version_id)) in TRANSIENT_ERRORS]
            errors += Counter(code for code in failed.values() if code not in TRANSIENT_ERRORS)
            if not retry:
                break
            if attempt == RETRIES:
                errors += Counter(failed[(v.key, v.version_id)] for v in retry)
                break
            time.sleep(0.2 * 2**attempt)
            pending = retry
        return deleted, errors

    @staticmethod
    def _still_unheld(window: RetentionWindow, batch: list[Version]) -> list[Version]:
        """The batch less the keys a hold placed since the listing covers: the holds are read
        again before every DeleteObjects call, so a hold placed mid-run protects at once."""
        if window.reload_holds is None:
            return batch
        prefixes = tuple(h.value for h in window.reload_holds() if h.subject == PREFIX_SUBJECT)
        return [v for v in batch if not v.key.startswith(prefixes)] if prefixes else batch

    def purge(
        self,
        window: RetentionWindow,
        *,
        approved: int,
        in_slice: Slice | None = None,
        journal: PurgeJournal | None = None,
    ) -> PurgeResult:
        if in_slice is not None and not in_slice.whole:
            raise ValueError(f"{self.label}: an object store purges as one slice")
        started = last_report = time.perf_counter()
        submitted = batches = 0
        with ThreadPoolExecutor(max_workers=self.config.max_in_flight) as pool:
            calls = _Calls(pool, journal or NO_JOURNAL, self.config.max_in_flight)
            for listed in self._batches(window):
                batch = self._still_unheld(window, listed)
                if not batch:
                    continue
                if submitted + len(batch) > approved:
                    calls.drain()
                    raise PurgeLimitExceeded(
                        f"{self.label}: the purge found {submitted + len(batch)} versions to "
                        f"delete, more than the {approved} approved by the check; stopped before "
                        "sending them, run again"
                    )
                batches += 1
                calls.submit(batches, self._delete, batch)
                submitted += len(batch)
                now = time.perf_counter()
                if now - last_report >= PROGRESS_EVERY_SECONDS:
                    last_report = now
                    self._log_progress(batches, submitted, now - started)
            calls.drain()
        seconds = time.perf_counter() - started
        self._log_progress(batches, calls.deleted, seconds, final=True)
        if calls.errors:
            log.warning(
                "%s: %d versions not deleted: %s",
                self.label,
                sum(calls.errors.values()),
                ", ".join(f"{code} x{n}" for code, n in calls.errors.most_common()),
            )
        return PurgeResult(
            deleted=calls.deleted,
            batches=batches,
            seconds=round(seconds, 3),
            failed=dict(calls.errors),
        )

    def _log_progress(
        self, batches: int, versions: int, seconds: float, final: bool = False
    ) -> None:
        log.info(
            "%s %s: %d DeleteObjects calls, %d versions, %.0f versions/s",
            self.label,
            "purge done" if final else "purging",
            batches,
            versions,
            versions / seconds if seconds > 0 else 0.0,
        )

    # -- verify -------------------------------------------------------------------------------

    def verify(self, window: RetentionWindow) -> Verification:
        """Great Expectations on an inventory of what remains under the prefix, chunk by chunk:
        per version, the seconds from the cutoff to its key's time (NaN for held versions and
        unreadable times). A negative value is an unheld expired version left behind."""
        from lifecycle.verification import verify_inventory

        def chunks() -> Iterator[list[float | None]]:
            chunk: list[float | None] = []
            for verdict in self._keys(window, held_dates=False):
                for version in verdict.data():
                    held = verdict.held_by is not None or version.version_id in verdict.locked
                    moment = verdict.moment(version)
                    if held or moment is None:
                        chunk.append(None)
                    else:
                        chunk.append((moment - verdict.cutoff).total_seconds())
                    if len(chunk) == INVENTORY_CHUNK:
                        yield chunk
                        chunk = []
            if chunk:
                yield chunk

        return verify_inventory(chunks(), label=self.label, held=len(window.holds))


def open_store(policy: Policy, connection: Any) -> S3PrefixStore:
    store = policy.store
    # A purge has its HeadObject and DeleteObjects requests in flight at once.
    wanted = store.head_in_flight + store.max_in_flight if isinstance(store, S3Store) else 0
    return S3PrefixStore(policy, client_from_connection(connection, max(32, wanted)))
