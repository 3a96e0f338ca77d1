"""The deletion ledger's arithmetic on a SQLite control database: what a retry reconciles."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from lifecycle.control import ensure_schema
from lifecycle.ledger import Ledger, RunKey


def ledger(tmp_path) -> Ledger:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'control.db'}")
    ensure_schema(engine)
    return Ledger(engine, RunKey("events", "retention_events", "r1", 0))


def test_a_retry_settles_every_batch_left_in_flight_once(tmp_path):
    """Try 1 committed batch 1 (recorded) and had batch 2 (5 records) in flight; try 2 had its
    batch 1 (4 records) in flight. 15 went: try 1's batch committed, try 2's rolled back."""
    run = ledger(tmp_path)
    first, second = run.journal(0, 1), run.journal(0, 2)
    first.before(1, 10)
    first.after(1, 10)
    first.before(2, 5)
    second.before(1, 4)

    assert run.reconcile(0, 3, gone=15) == 5
    totals = run.slice_totals(0)
    assert (totals.deleted, totals.in_flight) == (15, [])  # none left open for a later retry
    assert run.reconcile(0, 4, gone=15) == 0  # a later retry counts nothing twice
    # Two committed batches: the one written as it committed, the one reconciled.
    assert run.totals() == {"deleted": 15, "batches": 2, "in_flight": {}}


def test_batches_left_in_flight_by_other_runs_are_settled_once_against_their_own_run(tmp_path):
    """Run r1 left batch 2 (5 records) in flight and wrote its row; run r0 left batch 1
    (3 records) in flight and never wrote its row. Run r2's check settles both against their own
    run: `settled` for r1 (its row is written: readers add it), `unrecorded` for r0 (its late
    row will count it); a second check finds nothing left to settle."""
    r1 = ledger(tmp_path)
    journal = r1.journal(0, 1)
    journal.before(1, 10, ["k01", "k10"])
    journal.after(1, 10)
    journal.before(2, 5, ["k11", "k15"])
    r1.mark_recorded()
    r0 = Ledger(r1.engine, RunKey("events", "retention_events", "r0", 0))
    r0.journal(0, 1).before(1, 3, ["k20", "k22"])
    r2 = Ledger(r1.engine, RunKey("events", "retention_events", "r2", 0))
    assert [(b.run_id, b.batch) for b in r2.in_flight_elsewhere()] == [("r1", 2), ("r0", 1)]

    left = {("k11", "k15"): 0, ("k20", "k22"): 2}  # r1's batch committed, r0's rolled back
    assert r2.settle_in_flight(lambda witnesses: left[tuple(witnesses)]) == []

    assert r1.totals() == {"deleted": 15, "batches": 2, "in_flight": {}}
    assert r0.totals() == {"deleted": 0, "batches": 0, "in_flight": {}}
    with r1.engine.connect() as conn:
        events = conn.execute(
            sa.text("SELECT run_id, event, batch, deleted FROM retention_ledger WHERE id > 5")
        ).all()
    assert events == [("r1", "settled", 2, 5), ("r0", "unrecorded", 1, 0)]
    assert r2.in_flight_elsewhere() == []
    # A run never settles its own attempt's batches (a retry of its slice reconciles them).
    assert Ledger(r1.engine, r0.key).in_flight_elsewhere() == []


def test_a_ledger_from_before_the_witnesses_column_still_takes_rows(tmp_path):
    """After an upgrade, before `audit-init` adds the column: batches are still written (their
    witnesses left out) and nothing is settled from witnesses it never kept."""
    run = ledger(tmp_path)
    with run.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE retention_ledger DROP COLUMN witnesses")
    old = Ledger(run.engine, run.key)
    old.journal(0, 1).before(1, 4, ["k1", "k4"])
    assert old.totals() == {"deleted": 0, "batches": 0, "in_flight": {0: [(1, 1, 4)]}}
    other = Ledger(run.engine, RunKey("events", "retention_events", "r9", 0))
    assert other.in_flight_elsewhere() == []


def test_exactly_one_slice_claims_the_final_sweep_however_they_finish(sql_url):
    """Four slices of blocks finish at once, each in its own thread and connection: one of them
    finds all four finished and claims the final sweep, on every control database (the
    approval row locked on PostgreSQL and MariaDB, SQLite's write lock taken first). A retry of
    that slice claims it again; a retry of another does not."""
    import threading
    import uuid

    engine = sa.create_engine(sql_url, connect_args={"timeout": 30} if "sqlite" in sql_url else {})
    ensure_schema(engine)
    run = Ledger(engine, RunKey("events", "retention_events", f"r-{uuid.uuid4().hex}", 0))
    run.approve(datetime(2026, 5, 1, tzinfo=UTC), 100, datetime(2026, 11, 1, tzinfo=UTC))
    assert not run.finish_slice(3, 4)  # a first try of slice 3 finished early
    claims: dict[int, bool] = {}
    start = threading.Barrier(4)

    def finish(index: int) -> None:
        start.wait()
        claims[index] = run.finish_slice(index, 4)

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    (claimer,) = [index for index, claimed in claims.items() if claimed]
    assert run.finish_slice(claimer, 4)
    assert not run.finish_slice((claimer + 1) % 4, 4)
    assert run.totals() == {"deleted": 0, "batches": 0, "in_flight": {}}  # marks count nothing
    engine.dispose()
