"""One subject's objects in a bucket (data-subject requests) against moto's S3 server: the keys
under the request's prefix, inside the policy's own prefix only; erased with every version and
delete marker, except what a prefix hold covers or Object Lock retains; verified."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lifecycle.stores import Hold, erasure_window
from lifecycle.stores.s3_requests import S3SubjectStore, subject_prefix
from tests.stores.test_s3 import inventory, new_bucket, put, put_retained, s3_policy

OLD = datetime(2026, 1, 5, tzinfo=UTC)
RECENT = datetime.now(UTC) - timedelta(days=1)


def subject_store(s3, bucket, prefix, policy=None) -> S3SubjectStore:
    policy = policy or s3_policy("support/")
    store = policy.store.model_copy(update={"bucket": bucket})
    return S3SubjectStore(policy.model_copy(update={"store": store}), s3, prefix)


def test_a_request_prefix_reaches_only_inside_the_policy_prefix():
    policy = s3_policy("support/")
    assert subject_prefix(policy, {"prefix": "support/cust-7/"}) == "support/cust-7/"
    assert subject_prefix(policy, {"prefix": "support/"}) is None  # the whole category: never
    assert subject_prefix(policy, {"prefix": "tenants/cust-7/"}) is None
    assert subject_prefix(policy, {"customer": "7"}) is None


def test_the_subjects_objects_are_listed_and_copied(s3):
    bucket = new_bucket(s3)
    put(s3, bucket, "support/cust-7/a.wav", OLD)
    put(s3, bucket, "support/cust-7/b.wav", OLD, RECENT)  # two versions: the current one listed
    put(s3, bucket, "support/cust-70/c.wav", OLD)  # another subject's (a longer prefix)
    put(s3, bucket, "support/cust-8/d.wav", OLD)
    with subject_store(s3, bucket, "support/cust-7/") as store:
        assert [r["key"] for r in store.records()] == [
            "support/cust-7/a.wav",
            "support/cust-7/b.wav",
        ]
        copies: dict[str, bytes] = {}
        assert store.copy_objects(copies.__setitem__) == 2
        assert copies == {"support/cust-7/a.wav": b"audio", "support/cust-7/b.wav": b"audio"}
        summary = store.summary(())
        assert (summary.records, summary.erasable, summary.held) == (3, 3, 0)


def test_erasure_removes_every_version_and_marker_but_held_and_locked_ones(s3):
    bucket = new_bucket(s3)
    put(s3, bucket, "support/cust-7/a.wav", OLD, RECENT)  # two versions: both go
    put(s3, bucket, "support/cust-7/b.wav", OLD, delete_marker_at=RECENT)  # marker goes too
    put(s3, bucket, "support/cust-7/held/c.wav", OLD)  # under a prefix hold: stays
    put(s3, bucket, "support/cust-70/d.wav", OLD)  # another subject: untouched
    holds = (Hold(4, "*", "prefix", "support/cust-7/held/", "legal_hold"),)
    with subject_store(s3, bucket, "support/cust-7/") as store:
        summary = store.summary(holds)
        assert (summary.records, summary.erasable, summary.held) == (4, 3, 1)
        assert summary.held_by_hold == {"4": 1}
        window = erasure_window(holds)
        result = store.purge(window, approved=store.removals(holds))
        assert (result.deleted, result.failed) == (4, {})
        assert store.verify(window).success
    assert inventory(s3, bucket) == {"support/cust-7/held/c.wav": 1, "support/cust-70/d.wav": 1}


def test_object_lock_keeps_a_version_and_says_so(s3):
    bucket = new_bucket(s3, locked=True)
    put_retained(s3, bucket, "support/cust-7/locked.wav", OLD)
    put(s3, bucket, "support/cust-7/free.wav", OLD)
    with subject_store(s3, bucket, "support/cust-7/") as store:
        summary = store.summary(())
        assert (summary.records, summary.erasable, summary.held_by_hold) == (
            2,
            1,
            {"object_lock": 1},
        )
        store.purge(erasure_window(()), approved=store.removals(()))
        assert store.verify(erasure_window(())).success
    assert inventory(s3, bucket) == {"support/cust-7/locked.wav": 1}


def test_a_client_controlled_category_names_the_client_to_forward_to(s3):
    bucket = new_bucket(s3)
    policy = s3_policy("tenants/").model_copy(update={"controller": "client"})
    with subject_store(s3, bucket, "tenants/acme/cust-7/", policy) as store:
        assert store.summary(()).clients == ["acme"]
