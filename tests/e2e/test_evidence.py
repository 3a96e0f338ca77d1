"""Evidence that stands on its own: the run's real start, and links to Airflow only while the
run exists there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.e2e.test_runs import LOGICAL_DATE, seeded


def test_the_row_says_when_the_run_really_started_and_whether_airflow_still_has_it(deployment):
    from lifecycle.ui.app import airflow_run_exists

    seeded(deployment)
    before = datetime.now(UTC)
    run = deployment.run("retention_events", LOGICAL_DATE)
    (row,) = deployment.audit("events")

    # `dags test` and the demo start runs with the logical date as their start: an 18 h "run".
    assert before - timedelta(seconds=1) <= row["started_at"] <= row["finished_at"]
    assert row["finished_at"] - row["started_at"] < timedelta(minutes=5)
    assert airflow_run_exists("retention_events", run.run_id) is True
    assert airflow_run_exists("retention_events", "manual__1999-01-01T00:00:00+00:00") is False
