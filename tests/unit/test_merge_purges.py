"""One audit row per run: the slices' results summed, and only when every slice of this
attempt finished."""

from datetime import UTC, datetime

from lifecycle.steps import Run, merge_purges

RUN = Run("retention_cdrs", "r", 1, datetime(2026, 11, 29, tzinfo=UTC), None)
SLICES = [{"index": 0, "expired": 5, "attempt": 1}, {"index": 1, "expired": 7, "attempt": 1}]


def result(shard: int, deleted: int, attempt: int = 1, **more) -> dict:
    return {"shard": shard, "deleted": deleted, "batches": 1, "seconds": 0.5 + shard,
            "failed": {}, "attempt": attempt} | more  # fmt: skip


def test_every_slice_finished_sums_them():
    merged = merge_purges(RUN, SLICES, [result(0, 5), result(1, 7, earlier_tries=3)])
    assert (merged["deleted"], merged["batches"], merged["seconds"]) == (12, 2, 1.5)
    assert (merged["shards"], merged["earlier_tries"]) == (2, 3)


def test_a_missing_or_stale_slice_leaves_the_total_unknown():
    assert merge_purges(RUN, SLICES, [result(0, 5)]) is None
    # The XCom of an earlier attempt (before a clear) is not this attempt's work.
    assert merge_purges(RUN, SLICES, [result(0, 5), result(1, 7, attempt=0)]) is None
    stale_split = [dict(s, attempt=0) for s in SLICES]
    assert merge_purges(RUN, stale_split, [result(0, 5), result(1, 7)]) is None
    assert merge_purges(RUN, None, [result(0, 5)]) is None


def test_one_slice_comes_back_as_a_value_not_a_list():
    merged = merge_purges(RUN, SLICES[:1], result(0, 5, failed={"AccessDenied": 2}))
    assert (merged["deleted"], merged["failed"]) == (5, {"AccessDenied": 2})
