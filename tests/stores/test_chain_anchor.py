"""The head of the audit trail's hash chain written to an evidence bucket (moto's S3 server):
under Object Lock retention in COMPLIANCE mode where the bucket has Object Lock, and checked on
the next `audit-verify --anchor`, which catches a chain its owner rewrote whole, head included."""

from __future__ import annotations

import json
import secrets

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from lifecycle import cli
from lifecycle.audit import ensure_schema, record_run
from lifecycle.chain import ANCHOR_PREFIX, row_hash, verify
from lifecycle.control import chain_head, runs
from lifecycle.stores.s3 import client_from_connection
from tests.unit.test_chain import stored, trail_row


@pytest.fixture
def trail(tmp_path, monkeypatch):
    """Five chained rows in a SQLite control database, the connection lifecycle_audit to it."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", url)
    engine = sa.create_engine(url)
    ensure_schema(engine)
    for index in range(1, 6):
        assert record_run(engine, trail_row(index))
    yield engine
    engine.dispose()


@pytest.fixture
def evidence(s3_connection, monkeypatch):
    """(client, bucket-with-Object-Lock, bucket-without), the connection `evidence` to them."""
    client = client_from_connection(s3_connection)
    locked, plain = f"evidence-{secrets.token_hex(4)}", f"plain-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    client.create_bucket(Bucket=plain)
    extra = json.loads(s3_connection.extra) | {"bucket": locked}
    monkeypatch.setenv(
        "AIRFLOW_CONN_EVIDENCE",
        json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}),
    )
    return client, locked, plain


def _rewrite_from(engine: sa.Engine, first_id: int) -> None:
    """What the database's owner can do: alter a row and rehash it and every row after it,
    and move the head, so that the chain verifies again."""
    prev = stored(engine, first_id - 1)["row_hash"]
    with engine.begin() as conn:
        for row_id in range(first_id, 6):
            row = stored(engine, row_id) | {"prev_hash": prev}
            row["deleted"] = 0 if row_id == first_id else row["deleted"]
            row["row_hash"] = prev = row_hash(row)
            conn.execute(sa.update(runs).where(runs.c.id == row_id).values(row))
        conn.execute(sa.update(chain_head).values(row_hash=prev))


def test_the_head_is_anchored_under_compliance_lock_and_catches_a_rewritten_chain(
    trail, evidence, capsys
):
    client, bucket, _ = evidence
    assert cli.main(["audit-verify", "--anchor", "evidence"]) == 0
    out = capsys.readouterr().out
    assert f"anchored the head in s3://{bucket}/{ANCHOR_PREFIX}" in out
    assert "(Object Lock COMPLIANCE)" in out
    (item,) = client.list_objects_v2(Bucket=bucket, Prefix=ANCHOR_PREFIX)["Contents"]
    head = json.loads(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
    assert head["seq"] == 5 and head["row_id"] == 5
    assert head["row_hash"] == stored(trail, 5)["row_hash"]
    assert set(head) == {"algorithm", "seq", "row_id", "row_hash", "verified_at"}
    # (moto's GetObjectRetention answers 500: the object's head says the same.)
    locked = client.head_object(Bucket=bucket, Key=item["Key"])
    assert locked["ObjectLockMode"] == "COMPLIANCE"
    assert locked["ObjectLockRetainUntilDate"].year >= 2036
    with pytest.raises(ClientError, match="AccessDenied"):  # not even its writer deletes it
        client.delete_object(Bucket=bucket, Key=item["Key"], VersionId=locked["VersionId"])

    _rewrite_from(trail, 3)
    assert verify(trail).intact  # the database alone can no longer tell
    assert cli.main(["audit-verify", "--anchor", "evidence"]) == 1
    err = capsys.readouterr().err
    assert "chain BROKEN: row 5 altered: the chain no longer holds the head anchored at" in err
    assert len(client.list_objects_v2(Bucket=bucket)["Contents"]) == 1  # nothing anchored


def test_a_bucket_without_object_lock_gets_a_plain_object_and_a_broken_chain_none(
    trail, evidence, capsys
):
    client, _, plain = evidence
    assert cli.main(["audit-verify", "--anchor", "evidence", "--bucket", plain]) == 0
    assert "(no Object Lock on this bucket)" in capsys.readouterr().out
    with trail.begin() as conn:
        conn.execute(sa.update(runs).where(runs.c.id == 2).values(deleted=9))
    assert cli.main(["audit-verify", "--anchor", "evidence", "--bucket", plain]) == 1
    assert "a broken chain is not anchored" in capsys.readouterr().err
    assert len(client.list_objects_v2(Bucket=plain)["Contents"]) == 1
