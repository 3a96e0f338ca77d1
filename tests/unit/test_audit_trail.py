"""The audit trail on SQLite: append-only writes, and reads that never create or alter."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from lifecycle.audit import ensure_schema, latest_runs, read_run, read_runs, record_run, runs

DAY = datetime(2026, 11, 29, tzinfo=UTC)


def row(run_id: str, logical_date: datetime, attempt: int = 0, **fields) -> dict:
    return {
        "dag_id": "retention_cdrs",
        "run_id": run_id,
        "attempt": attempt,
        "policy": "cdrs",
        "title": "Call detail records",
        "controller": "provider",
        "legal_basis": "contract",
        "store": "sql:telecom_db:cdrs",
        "period": "P6M",
        "logical_date": logical_date,
        "status": "purged",
        "dry_run": False,
        "deleted": 5,
    } | fields


@pytest.fixture
def initialised(tmp_path) -> sa.Engine:
    """A control database after the owner's `lifecycle audit-init`."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    ensure_schema(engine)
    return engine


def test_a_run_never_creates_the_trail_and_names_the_fix(tmp_path):
    from lifecycle.control import ControlSchemaMissing

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    with pytest.raises(ControlSchemaMissing, match="audit-init"):
        record_run(engine, row("r1", DAY))
    assert not sa.inspect(engine).has_table(runs.name)


def test_a_retry_never_rewrites_the_row_of_its_attempt(initialised):
    engine = initialised
    assert record_run(engine, row("r1", DAY)) is True
    assert record_run(engine, row("r1", DAY, deleted=99)) is False  # a retry: kept as written
    assert record_run(engine, row("r1", DAY, attempt=1, deleted=0)) is True  # a cleared run
    assert [(r["attempt"], r["deleted"]) for r in read_runs(engine)] == [(0, 5), (1, 0)]
    assert latest_runs(engine)["cdrs"]["attempt"] == 1


def test_reading_creates_nothing_and_reads_a_trail_of_an_older_version(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    assert read_runs(engine) == [] and latest_runs(engine) == {} and read_run(engine, 1) is None
    assert not sa.inspect(engine).has_table(runs.name)  # a reader never creates the table

    ensure_schema(engine)
    record_run(engine, row("r1", DAY, shards=3))
    with engine.begin() as conn:  # the table as an older version left it
        conn.exec_driver_sql("ALTER TABLE retention_audit DROP COLUMN shards")

    (old,) = read_runs(engine)
    assert old["shards"] is None and old["deleted"] == 5
    assert read_run(engine, old["id"])["shards"] is None
    assert latest_runs(engine)["cdrs"]["run_id"] == "r1"


def test_only_a_duplicate_run_counts_as_already_written(initialised):
    engine = initialised
    record_run(engine, row("r1", DAY))
    with pytest.raises(sa.exc.IntegrityError):  # a NOT NULL violation is a bug, not a retry
        record_run(engine, row("r2", DAY, title=None))
    assert [r["run_id"] for r in read_runs(engine)] == ["r1"]
