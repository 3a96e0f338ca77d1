"""The forecast in the audit trail: the plan's `due` counts travel through XCom into a nullable
JSON column `due`, hashed in the chain as a JSON column; NULL where the store did not count it
(never hashed then); a trail written before the column still reads, and `audit-init` adds it."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import sqlalchemy as sa

from lifecycle.audit import audit_row, ensure_schema, iter_runs, latest_runs, record_run
from lifecycle.chain import canonical, verify
from lifecycle.payloads import CheckDecision, Extracted, RunResults
from lifecycle.stores import Plan
from tests.unit.test_audit_trail import row
from tests.unit.test_chain import _from_cell, recomputed

DAY = datetime(2026, 11, 29, tzinfo=UTC)
DUE = {"7": 3, "30": 40, "90": 500}


def run_row(make_policy, plan: Plan) -> dict:
    extracted = Extracted.from_json(
        Extracted(cutoff="2026-05-29T00:00:00+00:00", plan=plan).to_json()  # as on the wire
    )
    return audit_row(
        make_policy(),
        dag_id="retention_cdrs",
        run_id="r",
        attempt=1,
        logical_date=DAY,
        dry_run=True,
        results=RunResults(
            extracted=extracted,
            decision=CheckDecision(
                outcome="dry_run", approved=False, dry_run=True, approved_records=0
            ),
        ),
        started_at=None,
    )


def test_the_plans_forecast_is_the_rows_due_and_none_where_not_counted(make_policy):
    assert run_row(make_policy, Plan(10, 2, due=DUE))["due"] == DUE
    assert run_row(make_policy, Plan(10, 2))["due"] is None  # a plan that counted none
    # An XCom written before the forecast existed still reads.
    old = Extracted(cutoff="2026-05-29T00:00:00+00:00", plan=Plan(10, 2)).to_json()
    del old["plan"]["due"]
    assert Extracted.from_json(old).plan.due == {}


def test_due_is_hashed_as_json_and_a_third_party_rechecks_it(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    ensure_schema(engine)
    assert record_run(engine, row("counted", DAY, due=DUE))
    assert record_run(engine, row("not-counted", DAY, attempt=1, due=None))
    counted, uncounted = list(iter_runs(engine, as_stored=True))
    assert counted["due"] == DUE and uncounted["due"] is None
    assert b'"due":{"30":40,"7":3,"90":500}' in canonical(counted)
    assert b'"due"' not in canonical(uncounted)
    assert verify(engine).intact

    from lifecycle.ui.export import as_csv_lines

    text = "".join(as_csv_lines(iter_runs(engine, as_stored=True)))
    for record in csv.DictReader(io.StringIO(text, newline="")):
        assert recomputed(record, _from_cell) == record["row_hash"]


def test_a_trail_without_the_column_reads_and_audit_init_adds_it(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    ensure_schema(engine)
    assert record_run(engine, row("before", DAY, due=DUE))
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE retention_audit DROP COLUMN due")
    assert latest_runs(engine)["cdrs"]["due"] is None
    ensure_schema(engine)
    assert "due" in {c["name"] for c in sa.inspect(engine).get_columns("retention_audit")}
    assert record_run(engine, row("after", DAY, attempt=1, due=DUE))
    assert latest_runs(engine)["cdrs"]["due"] == DUE
