"""No personal data leaves the store: not in the audit trail, XCom or task logs (a demo run)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import boto3
import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import ParamValidationError

from lifecycle.demo import objects
from lifecycle.demo.environment import s3_connection_uri
from lifecycle.demo.seed import seed_telecom
from lifecycle.holds import place_hold
from lifecycle.loader import DEFAULT_POLICY_DIR
from lifecycle.requests import KINDS
from lifecycle.requests.register import register_request
from lifecycle.stores.sql import create_engine

AMS = ZoneInfo("Europe/Amsterdam")
PERSONAL_COLUMNS = {
    "subscribers": ["full_name", "phone", "email"],
    "cdrs": ["caller", "callee"],
    "lawful_intercept_traffic": ["source", "destination"],
    "voip_ip_log": ["ip_address"],
    "support_tickets": ["contact_name", "contact_email"],
    "contact_forms": ["name", "email", "phone"],
    "org_contacts": ["name", "phone", "email"],
    "service_addresses": ["street", "postcode"],
    "internet_lines": ["public_ip"],
    "voip_accounts": ["name", "phone", "email"],
    "mobile_subscriptions": ["msisdn", "sim_iccid", "imei"],
}


def personal_values(engine: sa.Engine) -> set[str]:
    values: set[str] = set()
    with engine.connect() as conn:
        for table, columns in PERSONAL_COLUMNS.items():
            for column in columns:
                values |= set(conn.execute(sa.text(f"SELECT {column} FROM {table}")).scalars())
    return {value for value in values if value and len(value) >= 7}


class Collector(logging.Handler):
    """Every log record of the run, formatted with its arguments, whatever the handlers are."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_demo_run_leaks_no_personal_data(
    deployment, airflow_home, monkeypatch, capfd, s3_endpoint, tmp_path
):
    """Every policy's run, then a data-subject request of each kind on a customer whose
    identifiers are personal data: nothing of a person in the trail, XCom, the runs' conf or
    the task logs (the requests' archives are personal data by design, and only there)."""
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(DEFAULT_POLICY_DIR))
    exports = tmp_path / "exports"
    (exports / "requests").mkdir(parents=True)  # the share, set up as the README says
    monkeypatch.setenv(
        "AIRFLOW_CONN_LIFECYCLE_EXPORTS",
        json.dumps({"conn_type": "fs", "extra": {"path": str(exports)}}),
    )
    now = datetime(2026, 11, 29, 9, tzinfo=AMS)
    engine = create_engine(deployment.store_url)
    seed_telecom(engine, now, scale=0.25)
    connection = s3_connection_uri(s3_endpoint)
    monkeypatch.setenv("AIRFLOW_CONN_RECORDINGS", connection)
    monkeypatch.setenv("AIRFLOW_CONN_ANALYTICS", connection)
    objects.seed(boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1"), engine, now)
    secrets = personal_values(engine)
    assert len(secrets) > 1000  # names, phone numbers, e-mail addresses and IPs
    # Holds carry personal data too (a phone number under restriction): they must not leak.
    audit = sa.create_engine(deployment.audit_url)
    with engine.connect() as conn:
        caller = conn.execute(sa.text("SELECT caller FROM cdrs ORDER BY started_at")).first()[0]
        email = conn.execute(sa.text("SELECT email FROM org_contacts LIMIT 1")).scalar()
    for scope, subject, value in (("cdrs", "phone", caller), ("*", "email", email)):
        place_hold(
            audit, scope=scope, subject=subject, value=value, reason="restriction", placed_by="po"
        )

    from lifecycle.factory import build_dags

    built = build_dags(DEFAULT_POLICY_DIR)
    dags = {dag_id: dag for dag_id, dag in built.items() if dag_id.startswith("retention_")}
    collector = Collector()
    logging.getLogger().addHandler(collector)
    monkeypatch.setattr(logging.getLogger(), "level", logging.DEBUG)
    logical_date = datetime(2026, 11, 29, tzinfo=AMS)
    for dag in dags.values():
        run = dag.test(logical_date=logical_date, run_conf={"max_delete_fraction": 1.0})
        assert str(run.state) == "success", dag.dag_id
    with engine.connect() as conn:
        customer, address = conn.execute(
            sa.text("SELECT customer_id, email FROM org_contacts ORDER BY id LIMIT 1")
        ).one()
    confs = []
    for kind in KINDS:
        request_id = register_request(
            audit,
            kind=kind,
            identifiers={"customer": str(customer), "email": address, "phone": caller},
            registered_by="po",
        )
        run = built[f"dsr_{kind}"].test(
            logical_date=logical_date, run_conf={"request_id": request_id}
        )
        assert str(run.state) == "success", kind
        confs.append(json.dumps(run.conf))
    output = capfd.readouterr()
    logging.getLogger().removeHandler(collector)

    rows = deployment.audit()
    assert sum(row["held"] or 0 for row in rows) > 0  # the holds kept records, and said so
    policies = {dag_id.removeprefix("retention_") for dag_id in dags}
    assert {row["policy"] for row in rows} == policies | {"*"}  # "*": each request's own row
    assert {row["request_id"] for row in rows} == {None, 1, 2, 3, 4}
    assert address in secrets and caller in secrets  # the identifiers are among the searched
    assert sum(row["deleted"] or 0 for row in rows) > 1000
    audit_text = json.dumps(rows, default=str)
    metadata = sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db")
    xcom_text = "\n".join(str(value) for (value,) in metadata.execute("SELECT value FROM xcom"))
    assert '"plan"' in xcom_text  # the XComs of these runs are there to be searched
    log_files = [p for p in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log") if p.is_file()]
    log_text = "\n".join(
        [
            output.out,
            output.err,
            *collector.lines,
            *(p.read_text(errors="replace") for p in log_files),
        ]
    )
    assert "rows deleted" in log_text  # the task logs are there to be searched

    for where, text in {
        "audit trail": audit_text,
        "XCom": xcom_text,
        "task logs": log_text,
        "the request runs' conf": "\n".join(confs),
    }.items():
        leaked = sorted(value for value in secrets if value in text)
        assert leaked == [], f"personal data in the {where}: {len(leaked)} values"


def test_param_validation_rejects_a_fraction_outside_0_to_1(deployment):
    deployment.write_policy("events", "events", "seen_at")
    from lifecycle.factory import build_dags

    dag = build_dags(deployment.policy_dir)["retention_events"]
    with pytest.raises(ParamValidationError, match="max_delete_fraction"):
        dag.test(
            logical_date=datetime(2026, 11, 29, tzinfo=AMS), run_conf={"max_delete_fraction": 2}
        )


def test_an_invalid_policy_dag_fails_with_the_message(deployment):
    (deployment.policy_dir / "broken.yaml").write_text("name: broken\nretention: {period: P0D}\n")
    from lifecycle.factory import build_dags

    dag = build_dags(deployment.policy_dir)["retention-invalid-broken"]
    run = dag.test(logical_date=datetime(2026, 11, 29, tzinfo=AMS))
    assert str(run.state) == "failed"
    assert "retention.period: 'P0D' is not a positive duration" in dag.doc_md
