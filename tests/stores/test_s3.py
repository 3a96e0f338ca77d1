"""The S3 store against a real S3 HTTP endpoint (moto's server): exact surviving versions."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.policy import Policy
from lifecycle.stores import Hold, PurgeLimitExceeded, RetentionWindow, StoreConfigError
from lifecycle.stores.s3 import S3PrefixStore
from tests.policies import make_policy

CUTOFF = datetime(2026, 8, 31, 22, 0, tzinfo=UTC)  # 1 September 00:00 in Amsterdam
SECOND = timedelta(seconds=1)
_names = itertools.count()


def s3_policy(prefix="support/", timestamp="last_modified", **retention) -> Policy:
    """The S3 base policy on `prefix` (P90D plus `retention`'s fields), two keys a batch."""
    return make_policy(
        "s3",
        name="recordings",
        title="Recordings",
        **{f"retention__{name}": value for name, value in retention.items()},
        store__bucket="placeholder",  # store_for() points the store at a real bucket
        store__prefix=prefix,
        store__timestamp=timestamp,
        store__batch_size=2,
        store__max_in_flight=2,
    )


def new_bucket(s3, *, versioned=True, locked=False) -> str:
    name = f"recordings-{next(_names)}"
    if locked:
        s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    else:
        s3.create_bucket(Bucket=name)
    if versioned and not locked:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def backdate(bucket: str, key: str, *moments: datetime) -> None:
    """Set LastModified of a key's versions and markers, oldest first (moto stamps 'now')."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    versions = backend.get_bucket(bucket).keys.getlist(key)
    assert len(versions) == len(moments), (key, len(versions))
    for version, moment in zip(versions, moments, strict=True):
        version.last_modified = moment.astimezone(UTC).replace(tzinfo=None)


def put(s3, bucket, key, *moments, delete_marker_at=None, **extra):
    for _ in moments:
        s3.put_object(Bucket=bucket, Key=key, Body=b"audio", **extra)
    if delete_marker_at is not None:
        s3.delete_object(Bucket=bucket, Key=key)
        moments = (*moments, delete_marker_at)
    backdate(bucket, key, *moments)


def put_retained(s3, bucket, key, at):
    """An object under governance retention for a year, written at `at`."""
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=b"x",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=365),
    )
    backdate(bucket, key, at)


def inventory(s3, bucket) -> dict[str, int]:
    """key -> number of versions and delete markers left."""
    listing = s3.list_object_versions(Bucket=bucket)
    counts: dict[str, int] = {}
    for entry in [*listing.get("Versions", ()), *listing.get("DeleteMarkers", ())]:
        counts[entry["Key"]] = counts.get(entry["Key"], 0) + 1
    return counts


def store_for(s3, bucket, policy) -> S3PrefixStore:
    store_config = policy.store.model_copy(update={"bucket": bucket})
    return S3PrefixStore(policy.model_copy(update={"store": store_config}), s3)


def test_expired_keys_lose_every_version_and_marker(s3):
    bucket = new_bucket(s3)
    old = CUTOFF - timedelta(days=30)
    put(s3, bucket, "support/a.wav", old - SECOND, old, CUTOFF - SECOND)  # newest expired: gone
    put(s3, bucket, "support/b.wav", old, CUTOFF + SECOND)  # overwritten: the old version goes
    put(s3, bucket, "support/c.wav", old, delete_marker_at=CUTOFF - SECOND)  # deleted: purged
    put(s3, bucket, "support/d.wav", CUTOFF)  # exactly the cutoff: kept
    put(s3, bucket, "tenants/x/e.wav", old)  # another prefix: not this policy's
    store = store_for(s3, bucket, s3_policy())
    window = RetentionWindow(CUTOFF)

    plan = store.plan(window)
    assert (plan.total, plan.expired, plan.held, plan.anomalies) == (8, 6, 0, 0)
    assert not store.verify(window).success

    result = store.purge(window, approved=plan.expired)

    assert (result.deleted, result.failed) == (6, {})
    assert inventory(s3, bucket) == {"support/b.wav": 1, "support/d.wav": 1, "tenants/x/e.wav": 1}
    (kept,) = s3.list_object_versions(Bucket=bucket, Prefix="support/b.wav")["Versions"]
    assert kept["LastModified"] == CUTOFF + SECOND
    verification = store.verify(window)
    assert (verification.success, verification.remaining) == (True, 0)
    assert verification.summary["versions_checked"] == 2
    again = store.purge(window, approved=0)  # idempotent
    assert (again.deleted, again.batches) == (0, 0)


def test_a_recent_delete_marker_does_not_keep_old_data(s3):
    bucket = new_bucket(s3)
    put(s3, bucket, "support/a.wav", CUTOFF - timedelta(days=400), delete_marker_at=CUTOFF + SECOND)
    store = store_for(s3, bucket, s3_policy())
    assert store.plan(RetentionWindow(CUTOFF)).expired == 2  # the data, then its marker
    store.purge(RetentionWindow(CUTOFF), approved=2)
    assert inventory(s3, bucket) == {}


def test_a_version_from_before_versioning_is_deleted_not_hidden(s3):
    bucket = new_bucket(s3, versioned=False)
    s3.put_object(Bucket=bucket, Key="support/a.wav", Body=b"pre-versioning audio")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    backdate(bucket, "support/a.wav", CUTOFF - timedelta(days=400))
    store = store_for(s3, bucket, s3_policy())
    result = store.purge(RetentionWindow(CUTOFF), approved=1)
    assert result.deleted == 1
    assert inventory(s3, bucket) == {}  # no delete marker over a surviving "null" version
    assert store.verify(RetentionWindow(CUTOFF)).success


def test_unversioned_bucket(s3):
    bucket = new_bucket(s3, versioned=False)
    put(s3, bucket, "support/a.wav", CUTOFF - SECOND)
    put(s3, bucket, "support/b.wav", CUTOFF)
    store = store_for(s3, bucket, s3_policy())
    store.purge(RetentionWindow(CUTOFF), approved=1)
    assert inventory(s3, bucket) == {"support/b.wav": 1}


def test_metadata_timestamps_and_unreadable_ones(s3):
    bucket = new_bucket(s3)
    for key, value in [
        ("support/a.wav", "2026-08-31T23:59:59+02:00"),  # 21:59:59Z: expired
        ("support/b.wav", "2026-09-01T00:00:00+02:00"),  # the cutoff: kept
        ("support/c.wav", "2026-08-31T23:59:59"),  # no offset: Amsterdam time, expired
        ("support/d.wav", "gisteren"),  # unreadable: reported, kept
    ]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x", Metadata={"recorded-at": value})
    s3.put_object(Bucket=bucket, Key="support/e.wav", Body=b"x")  # no metadata: kept
    store = store_for(s3, bucket, s3_policy(timestamp={"metadata": "recorded-at"}))
    plan = store.plan(RetentionWindow(CUTOFF))
    assert (plan.expired, plan.anomalies) == (2, 2)
    store.purge(RetentionWindow(CUTOFF), approved=2)
    assert sorted(inventory(s3, bucket)) == ["support/b.wav", "support/d.wav", "support/e.wav"]


def test_date_partitions_go_whole_days_at_a_time(s3):
    bucket = new_bucket(s3, versioned=False)
    days = ["2026-08-30", "2026-08-31", "2026-09-01"]
    for day in days:
        for part in range(3):
            s3.put_object(Bucket=bucket, Key=f"events/date={day}/part-{part}.json", Body=b"{}")
    policy = s3_policy(
        prefix="events/",
        timestamp={"key_pattern": r"date=(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})/"},
    )
    store = store_for(s3, bucket, policy)
    # Cutoff at 06:00 in Amsterdam on 1 September: 31 August is wholly before it, 1 September
    # straddles it and waits for the next run.
    window = RetentionWindow(datetime(2026, 9, 1, 4, tzinfo=UTC))
    plan = store.plan(window)
    assert plan.expired == 6
    store.purge(window, approved=6)
    assert sorted(inventory(s3, bucket)) == [
        f"events/date=2026-09-01/part-{p}.json" for p in range(3)
    ]
    # At local midnight on 1 September, 31 August is exactly whole: expired too (already gone).
    assert store.plan(RetentionWindow(CUTOFF)).expired == 0


def test_object_lock_legal_hold_and_retention_are_respected(s3):
    bucket = new_bucket(s3, locked=True)
    old = CUTOFF - timedelta(days=10)
    put(s3, bucket, "support/held.wav", old, old)
    held_version = s3.list_object_versions(Bucket=bucket, Prefix="support/held.wav")["Versions"][0]
    s3.put_object_legal_hold(
        Bucket=bucket,
        Key="support/held.wav",
        VersionId=held_version["VersionId"],
        LegalHold={"Status": "ON"},
    )
    put_retained(s3, bucket, "support/retained.wav", old)
    put(s3, bucket, "support/free.wav", old)
    store = store_for(s3, bucket, s3_policy())
    window = RetentionWindow(CUTOFF)

    plan = store.plan(window)
    assert (plan.expired, plan.held) == (2, 2)  # free.wav, and held.wav's unlocked version
    result = store.purge(window, approved=plan.expired)

    assert (result.deleted, result.failed) == (2, {})
    assert inventory(s3, bucket) == {"support/held.wav": 1, "support/retained.wav": 1}
    assert store.verify(window).success  # locked versions are held, not a failure


def test_per_key_errors_are_reported_and_never_counted_as_deleted(s3):
    # A store that cannot see the lock (no permission to read the lock configuration) sends
    # locked versions to DeleteObjects: S3 answers 200 with a per-key error for each.
    bucket = new_bucket(s3, locked=True)
    put_retained(s3, bucket, "support/retained.wav", CUTOFF - timedelta(days=1))
    put(s3, bucket, "support/free.wav", CUTOFF - timedelta(days=1))
    store = store_for(s3, bucket, s3_policy())
    store.object_lock = False

    result = store.purge(RetentionWindow(CUTOFF), approved=2)

    assert result.deleted == 1
    assert sum(result.failed.values()) == 1 and set(result.failed) <= {"AccessDenied"}
    assert inventory(s3, bucket) == {"support/retained.wav": 1}
    verification = store.verify(RetentionWindow(CUTOFF))
    assert (verification.success, verification.remaining) == (False, 1)


def test_client_periods_and_prefix_holds(s3):
    bucket = new_bucket(s3, versioned=False)
    ages = [10, 40, 100, 200]
    for tenant in ("acme", "globex", "initech"):
        for age in ages:
            put(s3, bucket, f"tenants/{tenant}/{age}.wav", CUTOFF - timedelta(days=age))
    policy = s3_policy(prefix="tenants/", per_tenant={"conn_id": "telecom_db"})
    window = RetentionWindow(
        CUTOFF - timedelta(days=90),  # the default, for initech
        tenant_cutoffs={
            "acme": CUTOFF - timedelta(days=30),
            "globex": CUTOFF - timedelta(days=365),
        },
        holds=(
            Hold(5, "*", "prefix", "tenants/acme/40", "legal_hold"),
            Hold(6, "*", "prefix", "tenants/acme/41", "dispute"),  # reaches no key
        ),
    )
    store = store_for(s3, bucket, policy)

    plan = store.plan(window)

    assert plan.by_tenant == {
        "acme": {"total": 4, "expired": 2},
        "globex": {"total": 4, "expired": 0},
        "initech": {"total": 4, "expired": 2},
    }
    assert (plan.held, plan.held_by_hold, plan.inert_holds) == (1, {"5": 1}, ["6"])
    store.purge(window, approved=plan.expired)
    assert sorted(inventory(s3, bucket)) == sorted(
        [
            "tenants/acme/10.wav",
            "tenants/acme/40.wav",
            *(f"tenants/globex/{age}.wav" for age in ages),
            "tenants/initech/10.wav",
            "tenants/initech/40.wav",
        ]
    )
    assert store.verify(window).success


def test_purge_stops_before_sending_more_than_approved(s3):
    bucket = new_bucket(s3, versioned=False)
    for i in range(5):
        put(s3, bucket, f"support/{i}.wav", CUTOFF - timedelta(days=1))
    store = store_for(s3, bucket, s3_policy())
    with pytest.raises(PurgeLimitExceeded, match="more than the 3 approved"):
        store.purge(RetentionWindow(CUTOFF), approved=3)
    assert len(inventory(s3, bucket)) == 3  # one batch of two went; the second would exceed


def test_missing_bucket_names_the_field(s3):
    with pytest.raises(StoreConfigError, match=r"store\.bucket: bucket 'nope-nope' does not exist"):
        store_for(s3, "nope-nope", s3_policy())


def test_the_inventory_verification_holds_no_keys(s3):
    bucket = new_bucket(s3, versioned=False)
    put(s3, bucket, "support/+31612345678.wav", CUTOFF - timedelta(days=1))
    verification = store_for(s3, bucket, s3_policy()).verify(RetentionWindow(CUTOFF))
    assert verification.remaining == 1
    assert "+3161" not in json.dumps(verification.summary)


def test_a_prefix_hold_placed_during_a_purge_protects_from_the_next_call(s3):
    bucket = new_bucket(s3)
    old = CUTOFF - timedelta(days=30)
    keys = [f"support/2026/0{month}/{name}.wav" for month in (3, 4) for name in "abc"]
    for key in keys:
        put(s3, bucket, key, old)
    hold = Hold(5, "recordings", "prefix", "support/2026/04/", "dispute")
    calls = []

    def reload_holds():
        calls.append(1)
        return () if len(calls) < 2 else (hold,)  # placed after the first DeleteObjects call

    store = store_for(s3, bucket, s3_policy())  # two versions a call
    result = store.purge(RetentionWindow(CUTOFF, reload_holds=reload_holds), approved=6)

    assert sorted(inventory(s3, bucket)) == keys[3:]  # every key of the held month survives
    assert result.deleted == 3


def test_a_crafted_key_cannot_hang_a_key_pattern(s3, s3_endpoint, tmp_path):
    """`(\\w+)*` backtracks exponentially in Python's re on a key that almost matches; the store
    matches with RE2 (linear time). Run in a child process, so that a hang fails the test."""
    import subprocess
    import sys
    import textwrap

    bucket = new_bucket(s3, versioned=False)
    s3.put_object(Bucket=bucket, Key="events/2026-01-01/" + "a" * 40 + "!", Body=b"{}")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = ["plugins", "."]
        from datetime import UTC, datetime
        import boto3
        from lifecycle.stores import RetentionWindow
        from tests.stores.test_s3 import s3_policy, store_for
        client = boto3.client("s3", endpoint_url={s3_endpoint!r}, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        pattern = r"(?P<year>\\d{{4}})-(?P<month>\\d{{2}})-(?P<day>\\d{{2}})/(\\w+)*\\.json$"
        store = store_for(client, {bucket!r}, s3_policy(prefix="events/",
                          timestamp={{"key_pattern": pattern}}))
        plan = store.plan(RetentionWindow(datetime(2026, 6, 1, tzinfo=UTC)))
        print(plan.total, plan.expired, plan.anomalies)
        """
    )
    from tests.conftest import PROJECT

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "0", "1"]  # no date in the key: reported, not deleted


@pytest.mark.parametrize(
    "pattern", [r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})/(a)\5", r"(?=x)(?P<year>\d{4})"]
)
def test_key_patterns_the_linear_time_engine_cannot_run_are_refused(pattern):
    with pytest.raises(ValueError, match="RE2"):
        s3_policy(prefix="events/", timestamp={"key_pattern": pattern})


def test_the_forecast_counts_the_versions_due_within_each_horizon(s3):
    bucket = new_bucket(s3)
    for name, days in (("a", 3), ("b", 20), ("c", 60), ("d", 100)):
        put(s3, bucket, f"support/{name}.wav", CUTOFF + timedelta(days=days))
    put(s3, bucket, "support/held/e.wav", CUTOFF + timedelta(days=3))  # held: not due
    put(s3, bucket, "support/f.wav", CUTOFF - SECOND)  # expired now: not "due"
    hold = Hold(5, "*", "prefix", "support/held/", "legal_hold")
    plan = store_for(s3, bucket, s3_policy()).plan(RetentionWindow(CUTOFF, holds=(hold,)))
    assert plan.expired == 1
    assert plan.due == {"7": 1, "30": 2, "90": 3}
