"""The S3 store's HeadObject questions in a bounded pool (`lifecycle.stores.s3_heads`): exact
survivors with metadata dates in an Object-Locked bucket, the same decisions in the same order
whatever the pool's size, errors raised at their key, and a window of keys, never the listing."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from lifecycle.stores import Hold, RetentionWindow
from lifecycle.stores.s3 import S3PrefixStore, client_from_connection
from lifecycle.stores.s3_heads import in_order
from tests.stores.test_s3 import CUTOFF, inventory, new_bucket, put, s3_policy

MICROSECOND = timedelta(microseconds=1)
RECORDED = {"metadata": "recorded-at"}


@pytest.fixture
def s3(s3_connection):
    return client_from_connection(s3_connection)


class Recording:
    """A boto3 client that records its HeadObject calls and how many were in flight at once,
    and can fail the HeadObject of one key or hold the first `meet` calls until all arrived."""

    def __init__(self, client: Any, *, fail_key: str | None = None, meet: int = 0):
        self._client = client
        self.fail_key = fail_key
        self.heads: Counter[tuple[str, str | None]] = Counter()
        self.active = self.peak = 0
        self._lock = threading.Lock()
        self._meet = threading.Barrier(meet, timeout=60) if meet else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def head_object(self, **request: Any) -> Any:
        with self._lock:
            first = sum(self.heads.values()) < (self._meet.parties if self._meet else 0)
            self.heads[(request["Key"], request.get("VersionId"))] += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if first and self._meet is not None:
                self._meet.wait()  # raises if the others never come: asked one at a time
            if request["Key"] == self.fail_key:
                error = {"Error": {"Code": "AccessDenied", "Message": "denied"}}
                raise ClientError(error, "HeadObject")
            return self._client.head_object(**request)
        finally:
            with self._lock:
                self.active -= 1


def store_with(client: Any, bucket: str, heads: int, **policy: Any) -> S3PrefixStore:
    base = s3_policy(**policy)
    config = base.store.model_copy(update={"bucket": bucket, "head_in_flight": heads})
    return S3PrefixStore(base.model_copy(update={"store": config}), client)


def recorded(s3, bucket, key, at: datetime, versions: int = 1, **extra) -> None:
    for _ in range(versions):
        s3.put_object(
            Bucket=bucket, Key=key, Body=b"audio", Metadata={"recorded-at": at.isoformat()}, **extra
        )


def locked_recordings(s3) -> tuple[str, list[str]]:
    """A locked bucket of metadata-dated recordings around the cutoff; the expected survivors."""
    bucket = new_bucket(s3, locked=True)
    survivors = []
    for i in range(12):
        expired = i % 2 == 0
        at = CUTOFF - MICROSECOND if expired else CUTOFF  # a microsecond either side
        key = f"support/{i:03d}.wav"
        if i % 4 == 0:  # expired, under a legal hold: kept, counted as held
            recorded(s3, bucket, key, at, ObjectLockLegalHoldStatus="ON")
        else:
            recorded(s3, bucket, key, at)
        if not expired or i % 4 == 0:
            survivors.append(key)
    # Expired, two versions, the older under a legal hold: only the current version goes.
    recorded(s3, bucket, "support/two.wav", CUTOFF - timedelta(days=3), versions=2)
    older = s3.list_object_versions(Bucket=bucket, Prefix="support/two.wav")["Versions"][1]
    s3.put_object_legal_hold(
        Bucket=bucket,
        Key="support/two.wav",
        VersionId=older["VersionId"],
        LegalHold={"Status": "ON"},
    )
    # Expired, under a year's governance retention: kept, counted as held.
    recorded(
        s3,
        bucket,
        "support/retained.wav",
        CUTOFF - timedelta(days=3),
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=365),
    )
    s3.put_object(Bucket=bucket, Key="support/undated.wav", Body=b"x")  # reported, kept
    return bucket, [*survivors, "support/retained.wav", "support/two.wav", "support/undated.wav"]


@pytest.mark.parametrize("heads", [1, 16])
def test_metadata_dates_in_a_locked_bucket_exact_survivors(s3, heads):
    bucket, survivors = locked_recordings(s3)
    client = Recording(s3)
    store = store_with(client, bucket, heads, timestamp=RECORDED)
    window = RetentionWindow(CUTOFF)

    plan = store.plan(window)
    # 3 unheld expired single versions (2, 6, 10) and two.wav's current version; held: 0, 4, 8,
    # two.wav's older version, retained.wav. undated.wav: unreadable.
    assert (plan.total, plan.expired, plan.held, plan.anomalies) == (16, 4, 5, 1)
    # One HeadObject per version that needs one: each key's current version once (its lock
    # comes with its metadata), and two.wav's older, expired version for its lock.
    assert set(client.heads.values()) == {1}
    assert len(client.heads) == 16

    result = store.purge(window, approved=plan.expired)

    assert (result.deleted, result.failed) == (4, {})
    assert sorted(inventory(s3, bucket)) == sorted(survivors)
    assert inventory(s3, bucket)["support/two.wav"] == 1
    verification = store.verify(window)
    assert (verification.success, verification.remaining) == (True, 0)


def test_the_pool_decides_as_one_at_a_time_in_the_same_order(s3):
    buckets = [locked_recordings(s3)[0] for _ in range(2)]
    window = RetentionWindow(CUTOFF, holds=(Hold(7, "*", "prefix", "support/01", "dispute"),))
    verdicts = []
    for bucket, heads in zip(buckets, (1, 16), strict=True):
        store = store_with(s3, bucket, heads, timestamp=RECORDED)
        verdicts.append(
            [
                (v.key, v.key_moment, v.held_by, sorted(v.locked), [d.key for d in v.deletable()])
                for v in store._keys(window)
            ]
        )
    one, pooled = verdicts
    assert [v[0] for v in pooled] == sorted(v[0] for v in pooled)  # listing order
    strip = [(key, moment, held, len(locked), gone) for key, moment, held, locked, gone in one]
    assert strip == [(k, m, h, len(lk), g) for k, m, h, lk, g in pooled]
    assert store_with(s3, buckets[1], 16, timestamp=RECORDED).plan(window) == store_with(
        s3, buckets[0], 1, timestamp=RECORDED
    ).plan(window)


def test_head_objects_are_asked_in_parallel_within_the_bound(s3):
    bucket = new_bucket(s3)
    for i in range(40):
        recorded(s3, bucket, f"support/{i:03d}.wav", CUTOFF - timedelta(days=i % 3))
    client = Recording(s3, meet=4)  # the first four calls wait for one another
    store = store_with(client, bucket, 4, timestamp=RECORDED)
    plan = store.plan(RetentionWindow(CUTOFF))
    assert (plan.total, plan.expired) == (40, 26)
    assert client.peak == 4  # four at once, never more


def test_a_failed_head_object_raises_at_its_key_as_one_at_a_time(s3):
    bucket = new_bucket(s3)
    keys = [f"support/{i:03d}.wav" for i in range(20)]
    for key in keys:
        recorded(s3, bucket, key, CUTOFF - timedelta(days=1))
    client = Recording(s3, fail_key=keys[7])
    store = store_with(client, bucket, 16, timestamp=RECORDED)
    window = RetentionWindow(CUTOFF)

    seen = []
    with pytest.raises(ClientError, match="AccessDenied"):
        for verdict in store._keys(window):
            seen.append(verdict.key)
    assert seen == keys[:7]  # every key before it, in order, and none after
    with pytest.raises(ClientError, match="AccessDenied"):
        store.plan(window)
    with pytest.raises(ClientError, match="AccessDenied"):
        store.purge(window, approved=20)
    # Two keys a call: the three calls before the failed key went, its own batch did not.
    assert sorted(inventory(s3, bucket)) == keys[6:]
    with pytest.raises(ClientError, match="AccessDenied"):
        store.verify(window)


def test_no_head_object_without_metadata_dates_or_object_lock(s3):
    bucket = new_bucket(s3)
    put(s3, bucket, "support/old.wav", CUTOFF - timedelta(days=9))
    put(s3, bucket, "support/new.wav", CUTOFF)
    client = Recording(s3)
    store = store_with(client, bucket, 16)
    window = RetentionWindow(CUTOFF)
    store.plan(window)
    store.purge(window, approved=1)
    assert store.verify(window).success
    assert not client.heads
    assert store.object_lock is False


def test_locks_are_asked_only_of_expired_versions_in_a_locked_bucket(s3):
    bucket = new_bucket(s3, locked=True)
    put(s3, bucket, "support/old.wav", CUTOFF - timedelta(days=9))
    put(s3, bucket, "support/new.wav", CUTOFF)
    client = Recording(s3)
    store = store_with(client, bucket, 16)
    store.plan(RetentionWindow(CUTOFF))
    assert [key for key, _ in client.heads] == ["support/old.wav"]


def test_a_purge_and_a_verification_do_not_date_held_keys(s3):
    bucket = new_bucket(s3)
    recorded(s3, bucket, "support/held/a.wav", CUTOFF - timedelta(days=1))
    recorded(s3, bucket, "support/free.wav", CUTOFF - timedelta(days=1))
    window = RetentionWindow(CUTOFF, holds=(Hold(3, "*", "prefix", "support/held/", "claim"),))
    client = Recording(s3)
    store = store_with(client, bucket, 16, timestamp=RECORDED)
    assert store.plan(window).held == 1  # the plan dates it, to count it
    client.heads.clear()
    store.purge(window, approved=1)
    verification = store.verify(window)
    assert (verification.success, verification.remaining) == (True, 0)
    assert [key for key, _ in client.heads] == ["support/free.wav"]  # by the purge, once


def test_the_window_bounds_the_keys_taken_from_the_listing(s3):
    bucket = new_bucket(s3)
    for i in range(30):
        recorded(s3, bucket, f"support/{i:03d}.wav", CUTOFF - timedelta(days=i % 2))
    store = store_with(s3, bucket, 2, timestamp=RECORDED)  # a window of 8 keys
    listed = store._versions
    taken: list[str] = []

    def counting():
        for version in listed():
            taken.append(version.key)
            yield version

    store._versions = counting
    ahead = []
    for number, verdict in enumerate(store._keys(RetentionWindow(CUTOFF)), start=1):
        ahead.append(len(set(taken)) - number)
        assert verdict.key == f"support/{number - 1:03d}.wav"
    # Eight keys in the window, and the first version of the next key (the group's end).
    assert max(ahead) == 8 and len(taken) == 30


def test_in_order_keeps_order_and_a_bounded_window():
    taken = itertools.count(1)
    last_taken = 0

    def items():
        nonlocal last_taken
        for i in range(200):
            last_taken = next(taken)
            yield i

    def resolve(i: int) -> int:
        time.sleep(random.random() / 1000)  # answers come back out of order
        return i * i

    results = []
    for value in in_order(items(), resolve, in_flight=3, window=5):
        results.append(value)
        assert last_taken - len(results) <= 5
    assert results == [i * i for i in range(200)]


def test_in_order_raises_in_turn_and_cancels_the_rest():
    started: list[int] = []

    def resolve(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ValueError("three")
        return i

    got = []
    with pytest.raises(ValueError, match="three"):
        for value in in_order(iter(range(1000)), resolve, in_flight=2, window=4):
            got.append(value)
    assert got == [0, 1, 2]
    assert max(started) < 3 + 4 + 1  # nothing taken beyond the window
