"""HeadObject lookups of the S3 store, asked in a bounded pool.

A metadata-dated key needs one HeadObject (its current version's metadata); in a bucket with
Object Lock an expired version needs its lock status. S3 answers both in the same HeadObject, so
a key whose current version is expired is asked once, not twice. The questions go out
`in_flight` at a time from a window of keys taken from the listing as it streams: memory holds
the window, never the whole listing, and the answers come back in the listing's order, so the
decisions of a run are made key by key in the same order as if asked one at a time. An error
(a version gone since the listing, a denied HeadObject) is raised at its key, after every key
before it: as when the keys were asked one at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Keys taken from the listing per request in flight: enough that a slow answer does not idle
# the pool while the ones after it wait their turn to be yielded.
WINDOW_PER_REQUEST = 4


@dataclass(frozen=True)
class Head:
    """What one HeadObject says of one version."""

    metadata: dict[str, str]
    legal_hold: bool
    retain_until: datetime | None

    def locked(self, now: datetime) -> bool:
        """Under a legal hold or an unexpired retention (governance or compliance)."""
        return self.legal_hold or (self.retain_until is not None and self.retain_until > now)


def head(client: Any, bucket: str, address: dict[str, str]) -> Head:
    """HeadObject of one version (`address`: Key, and VersionId in a versioned bucket)."""
    answer = client.head_object(Bucket=bucket, **address)
    return Head(
        metadata=answer.get("Metadata", {}),
        legal_hold=answer.get("ObjectLockLegalHoldStatus") == "ON",
        retain_until=answer.get("ObjectLockRetainUntilDate"),
    )


def in_order(
    items: Iterator[T], resolve: Callable[[T], R], *, in_flight: int, window: int | None = None
) -> Iterator[R]:
    """`resolve(item)` for every item, `in_flight` at once, yielded in the order of `items`.

    At most `window` items (default `WINDOW_PER_REQUEST * in_flight`) are taken from `items` and
    not yet yielded. An item whose `resolve` raised raises here, in its turn; the calls not yet
    started are cancelled and the running ones awaited before the error leaves (and when the
    caller stops iterating early)."""
    limit = window or WINDOW_PER_REQUEST * in_flight
    pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="s3-head")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(resolve, item))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
