"""The deletion ledger's arithmetic on a SQLite control database: what a retry reconciles."""

from __future__ import annotations

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
    assert run.totals() == {"deleted": 15, "batches": 1, "in_flight": {}}
