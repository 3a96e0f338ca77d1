"""The forecast through a whole run: extract's plan counts it, the XCom carries it, the audit
row stores it in `due`, chained."""

from __future__ import annotations

from tests.e2e.test_runs import LOGICAL_DATE, TIMESTAMPS, seeded


def test_a_run_records_the_records_due_within_7_30_and_90_days(deployment):
    seeded(deployment, [*TIMESTAMPS, None], batch_size=2)

    dag_run = deployment.run("retention_events", LOGICAL_DATE)

    assert str(dag_run.state) == "success"
    (row,) = deployment.audit("events")
    # Kept at the cutoff and a microsecond after it: due within 7 days; 30 days after it:
    # exactly at the 30-day horizon's cutoff, so due within 90 days, not 30.
    assert row["due"] == {"7": 2, "30": 2, "90": 3}
    assert row["row_hash"] is not None
