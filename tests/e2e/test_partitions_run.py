"""A whole run (`dag.test()`) on a PostgreSQL table range-partitioned by month, with
`store.partitions: drop` (issue 13): the partitions wholly before the cutoff go whole, the
straddling one is row-purged, and the audit row names the partitions and the rows they held."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from lifecycle.stores.sql import create_engine
from tests.e2e.conftest import task_states
from tests.stores.test_sql_partitions import (
    CUTOFF,
    pg_partitioned,
    pg_partitions,
    rows,
    survivors,
)

LOGICAL_DATE = datetime(2026, 11, 29, tzinfo=ZoneInfo("Europe/Amsterdam"))  # cutoff: CUTOFF


def test_a_run_drops_the_expired_partitions_and_audits_them(deployment, postgres_url, monkeypatch):
    url = sa.make_url(postgres_url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_TELECOM_DB", f"postgres://{url.username}@{url.host}:{url.port}/{url.database}"
    )
    engine = create_engine(postgres_url)
    # The name of the other runs' `events` table: one asset URI under the asset's name for the
    # session's Airflow (a second URI is inactive, and its run fails at `record`, whichever test
    # ran first).
    table = "events"
    try:
        pg_partitioned(engine, table)
        deployment.write_policy("events", table, "seen_at", partitions="drop")

        dag_run = deployment.run("retention_events", LOGICAL_DATE)

        assert str(dag_run.state) == "success", task_states(dag_run)
        expired = {k for k, moment, _c in rows() if moment < CUTOFF}  # no hold placed here
        assert survivors(engine, table) == {k for k, _m, _c in rows()} - expired
        # November to the partition that ends at the cutoff: seven, three rows each and the
        # January row no hold keeps; the straddling partition and later ones stay.
        assert len(pg_partitions(engine, table)) == 10 - 7
        (row,) = deployment.audit("events")
        assert (row["status"], row["expired"], row["deleted"]) == ("purged", 22, len(expired))
        assert row["verified"] is True
        assert (
            "7 partitions before the cutoff dropped whole, holding 22 of the deleted records"
            in (row["reasons"])
        )
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()
