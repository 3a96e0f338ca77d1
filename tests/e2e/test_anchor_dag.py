"""The daily anchor DAG (`retention-chain-anchor`) with `dag.test()`: it writes the verified head
of the audit trail to the evidence bucket under Object Lock, refuses (red, nothing written) when
the chain was rewritten since the last anchor, and says so when no evidence bucket is set."""

from __future__ import annotations

import json
import secrets

import sqlalchemy as sa

from lifecycle.audit import record_run
from lifecycle.chain import ANCHOR_PREFIX
from lifecycle.stores.s3 import client_from_connection
from tests.e2e.conftest import task_states
from tests.e2e.test_runs import LOGICAL_DATE
from tests.stores.test_chain_anchor import _rewrite_from
from tests.unit.test_chain import trail_row


def _trail(deployment) -> sa.Engine:
    engine = sa.create_engine(deployment.audit_url)
    for index in range(1, 6):
        assert record_run(engine, trail_row(index))
    return engine


def _anchors(client, bucket) -> list[dict]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=ANCHOR_PREFIX).get("Contents", [])
    return [
        json.loads(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        for item in sorted(listed, key=lambda item: item["Key"])
    ]


def test_the_dag_anchors_the_head_daily_and_refuses_a_rewritten_chain(
    deployment, s3_connection, monkeypatch
):
    client = client_from_connection(s3_connection)
    bucket = f"evidence-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    extra = json.loads(s3_connection.extra) | {"bucket": bucket}
    monkeypatch.setenv(
        "AIRFLOW_CONN_LIFECYCLE_EVIDENCE",
        json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}),
    )
    trail = _trail(deployment)

    run = deployment.run("retention-chain-anchor", LOGICAL_DATE)

    assert str(run.state) == "success", task_states(run)
    (head,) = _anchors(client, bucket)
    assert (head["seq"], head["row_id"]) == (5, 5)

    _rewrite_from(trail, 3)  # the owner rewrites history, head included
    rerun = deployment.run("retention-chain-anchor", LOGICAL_DATE, run_after=LOGICAL_DATE)

    assert str(rerun.state) == "failed"
    assert len(_anchors(client, bucket)) == 1  # nothing anchored over a rewritten chain
    trail.dispose()


def test_without_an_evidence_bucket_the_task_is_skipped_saying_how(deployment, capfd):
    _trail(deployment).dispose()

    run = deployment.run("retention-chain-anchor", LOGICAL_DATE)

    assert task_states(run) == {"anchor": "skipped"}
    assert "connection 'lifecycle_evidence' is not defined" in capfd.readouterr().out
