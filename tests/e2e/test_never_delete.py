"""Ordinary operator actions that must never delete what must stay: a future run date, a client
period below the floor, two policies on one table, a policy aimed at the control database, a
connection that does not exist. Whole runs through Airflow, exact survivors, audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e.test_runs import LOGICAL_DATE, TIMESTAMPS, seeded
from tests.stores.test_sql import make_table, survivors


def test_a_future_logical_date_deletes_nothing_and_is_refused(deployment):
    """The README's `make demo DATE=2027-01-15`: its cutoff is in the past, but records 4.5
    months old would go under a six-month promise."""
    now = datetime.now(UTC)
    within = [now - timedelta(days=135), now - timedelta(days=170), now - timedelta(days=400)]
    engine, table = seeded(deployment, within)

    run = deployment.run("retention_events", LOGICAL_DATE + timedelta(days=60))

    assert str(run.state) == "failed"
    assert survivors(engine, table) == sorted(within)  # not even the 400-day-old row: refused
    (row,) = deployment.audit("events")
    assert row["status"] == "refused" and row["deleted"] == 0
    assert "later than the wall clock minus the period" in row["reasons"][0]


def test_a_client_period_below_the_floor_is_refused_naming_the_client(deployment):
    engine = sa.create_engine(deployment.store_url)
    now = datetime.now(UTC)
    table = make_table(engine, "events", [now - timedelta(hours=2), now - timedelta(days=400)])
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE events ADD COLUMN tenant VARCHAR(20)"))
        conn.execute(sa.text("UPDATE events SET tenant = 'acme'"))
        conn.execute(sa.text("CREATE TABLE client_retention_settings (tenant, policy, period)"))
        conn.execute(
            sa.text("INSERT INTO client_retention_settings VALUES ('acme', 'events', 'PT1H')")
        )
    deployment.write_policy(
        "events", "events", "seen_at", guards="{max_delete_fraction: 1, min_period: P30D}"
    )
    path = deployment.policy_dir / "events.yaml"
    path.write_text(
        path.read_text().replace(
            "retention: {period: P6M}", "retention: {period: P6M, per_tenant: {column: tenant}}"
        )
    )

    run = deployment.run("retention_events", LOGICAL_DATE)

    assert str(run.state) == "failed"
    assert len(survivors(engine, table)) == 2
    (row,) = deployment.audit("events")
    assert row["status"] == "refused"
    assert (
        "client 'acme': period PT1H is shorter than the floor guards.min_period P30D"
        in row["reasons"]
    )


def test_two_policies_on_one_table_both_refuse_and_both_are_audited(deployment):
    engine, table = seeded(deployment)
    deployment.write_policy("events_short", "events", "seen_at")
    short = deployment.policy_dir / "events_short.yaml"
    short.write_text(short.read_text().replace("period: P6M", "period: P1M"))

    from lifecycle.factory import build_dags, policy_asset
    from lifecycle.loader import load_policies

    result = load_policies(deployment.policy_dir)
    assert result.conflict_for("events") and result.conflict_for("events_short")
    assets = {policy_asset(loaded.policy).uri for loaded in result.policies}
    assert len(assets) == 2  # each its own asset: Airflow deactivates neither
    assert {"retention_events", "retention_events_short"} <= set(build_dags(deployment.policy_dir))

    from lifecycle import cli

    assert cli.main(["validate", str(deployment.policy_dir)]) == 1  # reported as a conflict
    for name in ("events", "events_short"):
        run = deployment.run(f"retention_{name}", LOGICAL_DATE)
        assert str(run.state) == "failed"
        (row,) = deployment.audit(name)
        assert row["status"] == "refused" and row["deleted"] == 0
        assert any("events" in reason and "same table" in reason for reason in row["reasons"])
    assert survivors(engine, table) == sorted(TIMESTAMPS)


def test_an_undefined_connection_fails_at_once_and_the_audit_names_it(deployment):
    seeded(deployment)
    path = deployment.policy_dir / "events.yaml"
    path.write_text(
        path.read_text()
        .replace("conn_id: telecom_db", "conn_id: nowhere_db")
        .replace("retries: 0", "retries: 3")
    )

    run = deployment.run("retention_events", LOGICAL_DATE)

    assert str(run.state) == "failed"
    extract = next(ti for ti in run.get_task_instances() if ti.task_id == "extract")
    assert extract.try_number == 1  # not retried for nine minutes: a configuration error
    (row,) = deployment.audit("events")
    assert row["status"] == "failed"
    assert any("connection 'nowhere_db' is not defined" in reason for reason in row["reasons"])


def test_a_policy_file_on_the_control_tables_is_invalid(deployment):
    for table in ("retention_audit", "retention_holds", "dag_run", "pg_catalog.pg_class"):
        deployment.write_policy("events", table, "seen_at")
        from lifecycle.loader import load_policies

        (error,) = load_policies(deployment.policy_dir).errors
        assert "store.table" in error.message and "never a purge target" in error.message


@pytest.mark.parametrize("table", ["retention_audit", "RETENTION_HOLDS"])
def test_a_store_that_resolves_to_the_control_database_is_refused_at_run_time(
    deployment, monkeypatch, table
):
    """A policy that reached the run without validation (an older file, a model built in code),
    on a connection of another name that points at the control database."""
    from lifecycle import steps
    from lifecycle.loader import parse_policy
    from lifecycle.stores import StoreConfigError

    # The same file, spelled another way, under another connection id.
    audit_file = deployment.audit_url.removeprefix("sqlite:///")
    other_spelling = str(deployment.policy_dir / ".." / Path(audit_file).name)
    monkeypatch.setenv("AIRFLOW_CONN_REPORTING_DB", f"sqlite:///{other_spelling}")
    deployment.write_policy("events", "events", "seen_at")
    valid = parse_policy((deployment.policy_dir / "events.yaml").read_text())
    aimed = valid.model_copy(
        update={"store": valid.store.model_copy(update={"table": table, "conn_id": "reporting_db"})}
    )
    with pytest.raises(StoreConfigError, match="never a purge target"):
        steps.open_policy_store(aimed)


def test_a_run_before_audit_init_added_the_ledger_deletes_nothing_and_names_the_fix(deployment):
    """After an upgrade that adds the deletion ledger, before `lifecycle audit-init`: the jobs'
    role may not create it, so the run deletes nothing (no approval can be written)."""
    from lifecycle.control import ledger

    engine, table = seeded(deployment)
    audit = sa.create_engine(deployment.audit_url)
    ledger.drop(audit)
    audit.dispose()

    run = deployment.run("retention_events", LOGICAL_DATE)

    assert str(run.state) == "failed"
    assert survivors(engine, table) == sorted(TIMESTAMPS)
    (row,) = deployment.audit("events")
    assert row["status"] == "failed" and row["deleted"] == 0
    assert any("audit-init" in reason for reason in row["reasons"])
