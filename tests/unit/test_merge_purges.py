"""One audit row per run: the slices' results summed, and only when every slice of this
attempt finished."""

from datetime import UTC, datetime

from lifecycle.payloads import CheckDecision, Extracted, Purge, RunResults
from lifecycle.steps import Run, merge_purges
from lifecycle.stores import Plan

RUN = Run("retention_cdrs", "r", 1, datetime(2026, 11, 29, tzinfo=UTC), None)
SLICES = [{"index": 0, "expired": 5, "attempt": 1}, {"index": 1, "expired": 7, "attempt": 1}]


def result(index: int, deleted: int, attempt: int = 1, **more) -> dict:
    """A delete task's XCom, as on the wire."""
    return {"slice": index, "deleted": deleted, "batches": 1, "seconds": 0.5 + index,
            "failed": {}, "attempt": attempt} | more  # fmt: skip


def test_every_slice_finished_sums_them():
    merged = merge_purges(RUN, SLICES, [result(0, 5), result(1, 7, earlier_tries=3)])
    assert (merged.deleted, merged.batches, merged.seconds) == (12, 2, 1.5)
    assert (merged.slices, merged.earlier_tries) == (2, 3)


def test_a_missing_or_stale_slice_leaves_the_total_unknown():
    unfinished = Purge(incomplete=[1], deleted_by_finished=5)
    assert merge_purges(RUN, SLICES, [result(0, 5)]) == unfinished
    # The XCom of an earlier attempt (before a clear) is not this attempt's work.
    assert merge_purges(RUN, SLICES, [result(0, 5), result(1, 7, attempt=0)]) == unfinished
    stale_split = [dict(s, attempt=0) for s in SLICES]
    assert merge_purges(RUN, stale_split, [result(0, 5), result(1, 7)]) is None
    assert merge_purges(RUN, None, [result(0, 5)]) is None


def test_one_slice_comes_back_as_a_value_not_a_list():
    merged = merge_purges(RUN, SLICES[:1], result(0, 5, failed={"AccessDenied": 2}))
    assert (merged.deleted, merged.failed) == (5, {"AccessDenied": 2})


def test_an_unfinished_slice_fails_the_run_and_names_what_the_others_deleted(make_policy):
    from lifecycle.audit import audit_row

    row = audit_row(
        make_policy(),
        dag_id="retention_cdrs",
        run_id="r",
        attempt=1,
        logical_date=RUN.logical_date,
        dry_run=False,
        results=RunResults(
            extracted=Extracted(cutoff="2026-05-29T00:00:00+00:00", plan=Plan(12, 12)),
            decision=CheckDecision(
                outcome="approved", approved=True, dry_run=False, approved_records=12
            ),
            purged=merge_purges(RUN, SLICES, [result(0, 5)]),
        ),
        started_at=None,
    )
    assert (row["status"], row["deleted"]) == ("failed", None)
    assert row["reasons"] == [
        "delete of slice 1 did not complete (see its task log); the other slices deleted 5"
    ]
