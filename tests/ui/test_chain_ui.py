"""The hash chain in the audit pages (in process): the overview says the chain is intact and up
to which row, or names the first broken row; the CSV and JSON exports carry the hashes, which a
third party rechecks with hashlib and the documented canonical form alone."""

from __future__ import annotations

import csv
import io
import os
import threading
from datetime import timedelta

import sqlalchemy as sa

from lifecycle.control import runs
from lifecycle.ui import integrity
from tests.ui.conftest import audit_row, policy
from tests.ui.test_local_time import AMSTERDAM_29, CUTOFF
from tests.unit.test_chain import TIMESTAMPS, _from_cell, _utc, recomputed


def _trail() -> list[dict]:
    cdrs = policy("cdrs")
    return [
        audit_row(
            cdrs,
            AMSTERDAM_29 - timedelta(days=day),
            cutoff=CUTOFF - timedelta(days=day),
            run_id=f"scheduled__{day}",
        )
        for day in range(4)
    ]


def test_the_overview_says_the_chain_is_intact_then_names_the_altered_row(app_client):
    integrity.forget()
    client = app_client(_trail())
    page = client.get("/").text
    assert 'data-chain="intact"' in page
    assert "4 rows checked, up to row" in page and '<a href="/runs/4">4</a>' in page

    engine = sa.create_engine(os.environ["AIRFLOW_CONN_LIFECYCLE_AUDIT"])
    with engine.begin() as conn:  # the owner rewrites a cell of a middle row
        conn.execute(sa.update(runs).where(runs.c.id == 2).values(deleted=0))
    engine.dispose()
    integrity.forget()
    page = client.get("/").text
    assert 'data-chain="broken"' in page
    assert "row 2 altered: its content no longer matches its hash" in page
    assert 'Intact up to row <a href="/runs/1">1</a> (1 row)' in page


def test_the_exports_carry_the_hashes_and_a_third_party_rechecks_them(app_client):
    client = app_client(_trail())
    text = client.get("/export.csv").text
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(records) == 4 and all(len(r["row_hash"]) == 64 for r in records)
    for record in records:
        assert recomputed(record, _from_cell) == record["row_hash"]
    for record in client.get("/export.json").json():
        canonical = {
            name: _utc(value) if name in TIMESTAMPS and value else value
            for name, value in record.items()
        }
        assert recomputed(canonical) == record["row_hash"]


def test_a_page_never_waits_for_a_walk_after_the_first(app_client):
    """Three years of runs take a second or more to walk: after the first page, a stale answer
    is given at once and the next walk goes in the background; the page after it has the new
    verdict."""
    from datetime import UTC, datetime

    integrity.forget()
    client = app_client(_trail())
    engine = sa.create_engine(os.environ["AIRFLOW_CONN_LIFECYCLE_AUDIT"])
    try:
        now = datetime(2026, 11, 29, 12, tzinfo=UTC)
        assert integrity.chain_status(engine, now).intact  # the first page walks once
        with engine.begin() as conn:
            conn.execute(sa.update(runs).where(runs.c.id == 3).values(deleted=0))
        later = now + integrity.CHECK_EVERY
        assert integrity.chain_status(engine, later).intact  # the last walk, at once
        for thread in [t for t in threading.enumerate() if t.name == "chain-walk"]:
            thread.join(timeout=30)
        verdict = integrity.chain_status(engine, later)
        assert not verdict.intact and "row 3 altered" in verdict.summary()
    finally:
        engine.dispose()
        integrity.forget()
    assert client.get("/").status_code == 200
