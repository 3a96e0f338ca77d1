"""Through Airflow: until end of service, holds placed and released, per-client periods."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from lifecycle import cli
from lifecycle.demo.seed import HELD_CUSTOMER, seed_telecom
from lifecycle.holds import list_holds
from lifecycle.loader import DEFAULT_POLICY_DIR
from tests.stores.test_sql import make_table

AMS = ZoneInfo("Europe/Amsterdam")
LOGICAL_DATE = datetime(2026, 11, 29, tzinfo=AMS)


def contacts_of(engine, customer) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM org_contacts WHERE customer_id = :c"), {"c": customer}
        ).scalar()


def test_a_held_client_survives_until_the_hold_is_released(deployment, monkeypatch, capsys):
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(DEFAULT_POLICY_DIR))
    deployment.policy_dir = DEFAULT_POLICY_DIR
    store = sa.create_engine(deployment.store_url)
    seed_telecom(store, datetime(2026, 11, 29, 9, tzinfo=AMS), scale=0.5)
    assert contacts_of(store, HELD_CUSTOMER) > 0

    # A privacy officer places a legal hold with the CLI; a typo in the scope is refused.
    assert cli.main(["holds", "place", "--scope", "org_contact", "--subject", "customer",
                     "--value", "1", "--reason", "legal_hold", "--by", "po"]) == 1  # fmt: skip
    assert "no policy named 'org_contact'" in capsys.readouterr().err
    assert cli.main(["holds", "place", "--scope", "*", "--subject", "customer",
                     "--value", str(HELD_CUSTOMER), "--reason", "legal_hold", "--by", "po",
                     "--note", "LH-1"]) == 0  # fmt: skip
    (hold,) = list_holds(sa.create_engine(deployment.audit_url))

    run = deployment.run("retention_org_contacts", LOGICAL_DATE, {"max_delete_fraction": 1})

    assert str(run.state) == "success"
    assert contacts_of(store, HELD_CUSTOMER) > 0  # past its window, but held
    with store.connect() as conn:
        # Every other contact left belongs to a client with a running or no contract.
        orphans = conn.execute(
            sa.text(
                "SELECT count(*) FROM org_contacts o WHERE o.customer_id != :held AND EXISTS "
                "(SELECT 1 FROM contracts c WHERE c.customer_id = o.customer_id) AND NOT EXISTS "
                "(SELECT 1 FROM contracts c WHERE c.customer_id = o.customer_id "
                "AND c.ended_at IS NULL)"
            ),
            {"held": HELD_CUSTOMER},
        ).scalar()
    assert orphans == 0
    (row,) = deployment.audit("org_contacts")
    assert row["held"] == contacts_of(store, HELD_CUSTOMER)
    assert row["holds"] == {str(hold["id"]): row["held"]}
    assert row["verified"] is True

    assert cli.main(["holds", "release", str(hold["id"]), "--by", "po"]) == 0
    again = deployment.run("retention_org_contacts", LOGICAL_DATE)

    assert str(again.state) == "success"
    assert contacts_of(store, HELD_CUSTOMER) == 0
    assert [r["deleted"] for r in deployment.audit("org_contacts")] == [row["deleted"], row["held"]]


def test_per_client_periods_come_from_the_settings_table(deployment):
    engine = sa.create_engine(deployment.store_url)
    make_table(engine, "events", [])
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE events ADD COLUMN tenant VARCHAR(20)"))
        conn.execute(sa.text("CREATE TABLE client_retention_settings (tenant, policy, period)"))
        conn.execute(
            sa.text("INSERT INTO client_retention_settings VALUES (:t, 'events', :p)"),
            [{"t": "acme", "p": "P1M"}, {"t": "globex", "p": "zes maanden"}],
        )
        conn.execute(
            sa.text(
                "INSERT INTO events (id, seen_at, payload, tenant) VALUES "
                "(1, '2026-10-01 00:00:00.000000', 'a', 'acme'),"
                "(2, '2026-11-20 00:00:00.000000', 'b', 'acme'),"
                "(3, '2026-10-01 00:00:00.000000', 'c', 'initech'),"
                "(4, '2026-01-01 00:00:00.000000', 'd', 'initech')"
            )
        )
    deployment.write_policy("events", "events", "seen_at")
    policy_file = deployment.policy_dir / "events.yaml"
    policy_file.write_text(
        policy_file.read_text().replace(
            "retention: {period: P6M}", "retention: {period: P6M, per_tenant: {column: tenant}}"
        )
    )

    failed = deployment.run("retention_events", LOGICAL_DATE)
    assert str(failed.state) == "failed"  # a client's unreadable period stops the run
    assert deployment.audit("events")[0]["status"] == "failed"

    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE client_retention_settings SET period = 'P6M' WHERE tenant = 'globex'")
        )
    run = deployment.run("retention_events", LOGICAL_DATE)

    assert str(run.state) == "success"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM events ORDER BY id")).scalars().all() == [2, 3]
    row = deployment.audit("events")[-1]
    assert row["tenants"] == {
        "acme": {"period": "P1M", "default": False, "total": 2, "expired": 1},
        "globex": {"period": "P6M", "default": False, "total": 0, "expired": 0},
        "initech": {"period": "P6M", "default": True, "total": 2, "expired": 1},
    }
