"""One subject's objects in an S3 bucket, for data-subject requests (`lifecycle.requests`).

A subject's objects are the keys under the request's `prefix` identifier, where that prefix lies
inside the policy's own (strictly: a request never reaches a whole category). The store is the
policy's, narrowed to that prefix and dated by LastModified (every version then has a time, so
nothing of the subject is left for want of a metadata date), its window's cutoff beyond any
time: the purge deletes every version and delete marker of the subject's keys that no prefix
hold covers and no Object Lock retains, in the store's DeleteObjects batches, holds re-read
before each; the verification is the store's Great Expectations inventory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any

from lifecycle.stores import Hold, SubjectStore, SubjectSummary, erasure_window
from lifecycle.stores.s3 import S3PrefixStore, client_from_connection
from lifecycle.subjects import PREFIX_SUBJECT

if TYPE_CHECKING:
    from lifecycle.policy import Policy


def subject_prefix(policy: Policy, identifiers: Mapping[str, str]) -> str | None:
    """The request's key prefix where it lies strictly inside the policy's prefix."""
    prefix = identifiers.get(PREFIX_SUBJECT)
    own = getattr(policy.store, "prefix", "")
    if prefix is None or not prefix.startswith(own) or len(prefix) <= len(own):
        return None
    return prefix


def _narrowed(policy: Policy, prefix: str) -> Policy:
    store = policy.store.model_copy(update={"prefix": prefix, "timestamp": "last_modified"})
    retention = policy.retention.model_copy(update={"per_tenant": None})
    return policy.model_copy(update={"store": store, "retention": retention})


class S3SubjectStore(S3PrefixStore, SubjectStore):
    def __init__(self, policy: Policy, client: Any, prefix: str | None):
        self.original = policy
        self.subject_prefix = prefix
        # With no prefix of the subject's here, a prefix nothing can have: lists nothing.
        super().__init__(_narrowed(policy, prefix or "\x00/"), client)

    @property
    def reaches(self) -> bool:
        return self.subject_prefix is not None

    def _client(self) -> list[str]:
        if self.original.controller != "client" or self.subject_prefix is None:
            return []
        own = getattr(self.original.store, "prefix", "")
        rest = self.subject_prefix[len(own) :]
        return [rest.split("/", 1)[0]] if "/" in rest else []

    def summary(self, holds: tuple[Hold, ...]) -> SubjectSummary:
        if not self.reaches:
            return SubjectSummary(records=0, erasable=0)
        records = erasable = held = 0
        oldest = newest = None
        held_by: dict[str, int] = {}
        for verdict in self._keys(erasure_window(holds)):
            data = verdict.data()
            records += len(data)
            gone = [v for v in verdict.deletable() if not v.is_marker]
            erasable += len(gone)
            kept = len(data) - len(gone)
            held += kept
            if kept:
                reason = str(verdict.held_by) if verdict.held_by is not None else "object_lock"
                held_by[reason] = held_by.get(reason, 0) + kept
            for version in data:
                oldest = min(oldest or version.last_modified, version.last_modified)
                newest = max(newest or version.last_modified, version.last_modified)
        return SubjectSummary(
            records=records,
            erasable=erasable,
            held=held,
            held_by_hold=held_by,
            oldest=oldest.astimezone(UTC).isoformat() if oldest else None,
            newest=newest.astimezone(UTC).isoformat() if newest else None,
            clients=self._client(),
        )

    def removals(self, holds: tuple[Hold, ...]) -> int:
        """What the erasure's purge deletes: data versions and the delete markers that go
        with them (the purge's ceiling)."""
        if not self.reaches:
            return 0
        return sum(len(v.deletable()) for v in self._keys(erasure_window(holds)))

    def fields(self) -> list[str]:
        return ["key", "size", "last_modified", "etag"]

    def _current(self) -> Iterator[dict[str, Any]]:
        if not self.reaches:
            return
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.config.bucket, Prefix=self.config.prefix):
            yield from page.get("Contents", ())

    def records(self) -> Iterator[dict[str, Any]]:
        for entry in self._current():
            yield {
                "key": entry["Key"],
                "size": entry["Size"],
                "last_modified": entry["LastModified"].astimezone(UTC).isoformat(),
                "etag": entry.get("ETag", "").strip('"'),
            }

    def copy_objects(self, write: Callable[[str, bytes], None]) -> int:
        copied = 0
        for entry in self._current():
            body = self.client.get_object(Bucket=self.config.bucket, Key=entry["Key"])["Body"]
            try:
                write(entry["Key"], body.read())
            finally:
                body.close()
            copied += 1
        return copied


def open_subject_store(
    policy: Policy, connection: Any, identifiers: Mapping[str, str]
) -> S3SubjectStore:
    return S3SubjectStore(
        policy, client_from_connection(connection), subject_prefix(policy, identifiers)
    )
