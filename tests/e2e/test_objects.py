"""Object-storage policies through Airflow, against moto's S3 server over HTTP."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from lifecycle.demo.environment import s3_connection_uri
from lifecycle.stores.s3 import client_from_connection
from tests.e2e.test_runs import LOGICAL_DATE
from tests.policies import policy_yaml
from tests.stores.test_s3 import SECOND, inventory, new_bucket, put


def write(deployment, name, bucket, prefix, retention="{period: P90D}", timestamp="last_modified"):
    """`<name>.yaml`: the S3 base policy on `bucket`/`prefix`, the guard lifted, no retries
    (`retention` and `timestamp` are YAML fragments)."""
    (deployment.policy_dir / f"{name}.yaml").write_text(
        policy_yaml(
            "s3",
            name=name,
            title="Recordings",
            retention=retention,
            store__bucket=bucket,
            store__prefix=prefix,
            store__timestamp=timestamp,
            guards={"max_delete_fraction": 1},
            retries=0,
        )
    )


def test_support_recordings_are_purged_verified_and_audited(deployment, s3_connection, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_RECORDINGS", s3_connection_uri(s3_connection.extra_dejson["endpoint_url"])
    )
    s3 = client_from_connection(s3_connection)
    bucket = new_bucket(s3)
    cutoff = LOGICAL_DATE - timedelta(days=90)
    put(s3, bucket, "support/old.wav", cutoff - timedelta(days=5), cutoff - SECOND)
    put(s3, bucket, "support/new.wav", cutoff)
    put(
        s3,
        bucket,
        "support/gone.wav",
        cutoff - timedelta(days=9),
        delete_marker_at=cutoff - timedelta(days=8),
    )
    write(deployment, "recordings", bucket, "support/")

    run = deployment.run("retention_recordings", LOGICAL_DATE)

    assert str(run.state) == "success"
    assert inventory(s3, bucket) == {"support/new.wav": 1}
    (row,) = deployment.audit("recordings")
    assert (row["status"], row["total"], row["expired"], row["deleted"], row["verified"]) == (
        "purged", 5, 4, 4, True,
    )  # fmt: skip
    assert row["store"] == f"s3:recordings:s3://{bucket}/support/"
    assert row["verification"]["versions_checked"] == 1


def test_client_periods_for_recordings(deployment, s3_connection, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_RECORDINGS", s3_connection_uri(s3_connection.extra_dejson["endpoint_url"])
    )
    s3 = client_from_connection(s3_connection)
    bucket = new_bucket(s3, versioned=False)
    for tenant in ("acme", "umbrella"):
        for age in (20, 60, 400):
            at = (LOGICAL_DATE - timedelta(days=age)).isoformat()
            s3.put_object(
                Bucket=bucket,
                Key=f"tenants/{tenant}/{age}.wav",
                Body=b"x",
                Metadata={"recorded-at": at},
            )
    telecom = sa.create_engine(deployment.store_url)
    with telecom.begin() as conn:
        conn.execute(sa.text("CREATE TABLE client_retention_settings (tenant, policy, period)"))
        conn.execute(
            sa.text("INSERT INTO client_retention_settings VALUES ('acme', 'clients', 'P30D')")
        )
    write(
        deployment,
        "clients",
        bucket,
        "tenants/",
        retention="{period: P1Y, per_tenant: {conn_id: telecom_db}}",
        timestamp="{metadata: recorded-at}",
    )

    run = deployment.run("retention_clients", LOGICAL_DATE)

    assert str(run.state) == "success"
    assert sorted(inventory(s3, bucket)) == [
        "tenants/acme/20.wav",
        "tenants/umbrella/20.wav",
        "tenants/umbrella/60.wav",
    ]
    (row,) = deployment.audit("clients")
    assert row["tenants"] == {
        "acme": {"period": "P30D", "default": False, "total": 3, "expired": 2},
        "umbrella": {"period": "P1Y", "default": True, "total": 3, "expired": 1},
    }
