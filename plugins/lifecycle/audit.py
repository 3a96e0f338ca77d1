"""The audit trail: one row per run attempt in our own database (connection `lifecycle_audit`).

Airflow 3 tasks may not use the metadata database, and evidence must outlive Airflow's own
cleanup, so the trail lives in a database of ours. A row holds counts, bounds, settings and the
verification summary: never a key, a phone number, an address, an e-mail address or an IP.

A row is keyed on (dag_id, run_id, attempt), where attempt is the run's clear number. The trail
is append-only: a row, once written, is never changed (the jobs' database role may INSERT here,
nothing else). A retried `record` task finds its attempt's row already written from the same
inputs and keeps it; a run cleared and run again gets a row of its own, so the evidence of what
the first attempt deleted is never overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

AUDIT_CONN_ID = "lifecycle_audit"
log = logging.getLogger(__name__)

# Microseconds everywhere (MariaDB's plain DATETIME would drop them).
Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
metadata = sa.MetaData()
runs = sa.Table(
    "retention_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("policy", sa.String(100), nullable=False),
    sa.Column("title", sa.String(250), nullable=False),
    sa.Column("controller", sa.String(20), nullable=False),
    sa.Column("legal_basis", sa.String(40), nullable=False),
    sa.Column("store", sa.String(500), nullable=False),  # kind, connection id and table/prefix
    sa.Column("period", sa.String(40), nullable=False),
    sa.Column("logical_date", Timestamp),
    sa.Column("cutoff", Timestamp),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("total", sa.BigInteger),
    sa.Column("expired", sa.BigInteger),
    sa.Column("held", sa.BigInteger),
    sa.Column("active", sa.BigInteger),
    sa.Column("anomalies", sa.BigInteger),
    sa.Column("deleted", sa.BigInteger),
    sa.Column("batches", sa.Integer),
    sa.Column("shards", sa.Integer),  # parallel delete tasks (mapped) the purge was split into
    sa.Column("oldest_expired", Timestamp),
    sa.Column("newest_expired", Timestamp),
    sa.Column("oldest_retained", Timestamp),  # the oldest record still in its window
    sa.Column("verified", sa.Boolean),
    sa.Column("remaining", sa.BigInteger),
    sa.Column("holds", sa.JSON),  # hold id -> records it kept: listed by hold, never by content
    sa.Column("tenants", sa.JSON),  # tenant -> period, on the default or not, total, expired
    sa.Column("reasons", sa.JSON),
    sa.Column("verification", sa.JSON),  # the Great Expectations result summary
    sa.Column("timings", sa.JSON),
    sa.Column("started_at", Timestamp),
    sa.Column("finished_at", Timestamp),
    sa.UniqueConstraint("dag_id", "run_id", "attempt", name="uq_retention_audit_run"),
    sa.Index("ix_retention_audit_policy_time", "policy", "logical_date"),
    # No INSERT ... RETURNING id: RETURNING needs SELECT, and the jobs' role may only INSERT.
    implicit_returning=False,
)

STATUSES = ("purged", "dry_run", "refused", "failed", "verification_failed")


def ensure_schema(engine: sa.Engine) -> None:
    """Create the tables, and add the nullable columns a newer version introduced."""
    metadata.create_all(engine, checkfirst=True)
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column for column in table.columns if column.name not in present]
        if not missing:
            continue
        preparer = engine.dialect.identifier_preparer
        with engine.begin() as conn:
            for column in missing:
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(
                    sa.text(
                        f"ALTER TABLE {preparer.format_table(table)} "
                        f"ADD COLUMN {preparer.format_column(column)} {kind}"
                    )
                )


def _as_utc(value: Any, naive: bool) -> datetime | None:
    """Timestamps are stored in UTC; as naive UTC where the column type has no zone (MySQL)."""
    if value is None:
        return None
    instant = (value if isinstance(value, datetime) else datetime.fromisoformat(value)).astimezone(
        UTC
    )
    return instant.replace(tzinfo=None) if naive else instant


def record_run(engine: sa.Engine, row: dict[str, Any]) -> bool:
    """Append the row of this run attempt; False when a retry finds it already written."""
    unknown = set(row) - set(runs.c.keys())
    if unknown:
        raise ValueError(f"unknown audit fields: {sorted(unknown)}")
    if row["status"] not in STATUSES:
        raise ValueError(f"unknown audit status {row['status']!r}")
    naive = engine.dialect.name in ("mysql", "mariadb")
    values = {
        name: _as_utc(value, naive) if isinstance(runs.c[name].type, sa.DateTime) else value
        for name, value in row.items()
    }
    with engine.connect() as conn:
        present = (
            {c["name"] for c in sa.inspect(conn).get_columns(runs.name)}
            if sa.inspect(conn).has_table(runs.name)
            else None
        )
    if present is None or not set(values) <= present:
        try:
            ensure_schema(engine)  # the demo's and the owner's case: create, add the columns
            present = set(values)
        except sa.exc.DBAPIError as exc:
            if present is None:
                raise  # no trail at all: `lifecycle audit-init` has not run
            # The jobs' role may not ALTER: write what the table holds, say what it lacks, so
            # a run after an upgrade (before `audit-init`) still leaves its evidence.
            lacking = sorted(set(values) - present)
            log.warning(
                "audit table lacks %s (%s): run `lifecycle audit-init`",
                lacking,
                type(exc.orig).__name__,
            )
            values = {k: v for k, v in values.items() if k in present}
            if "reasons" in values:
                values["reasons"] = [
                    *(values["reasons"] or []),
                    f"audit schema outdated, not recorded: {', '.join(lacking)} "
                    "(run `lifecycle audit-init`)",
                ]
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(runs).values(values))
    except sa.exc.IntegrityError as exc:
        if _is_duplicate(exc.orig):
            return False  # an earlier try of this attempt wrote it
        raise
    return True


def _is_duplicate(error: BaseException) -> bool:
    """A unique-key violation (the run's row exists), told apart from other integrity errors
    by the driver's code: PostgreSQL 23505, MySQL/MariaDB 1062, SQLite's CONSTRAINT_UNIQUE."""
    if getattr(error, "sqlstate", None) == "23505":
        return True
    if getattr(error, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_UNIQUE":
        return True
    return bool(error.args) and error.args[0] == 1062


# -- reading: never creates or alters anything (the audit UI's role may only SELECT) -------------


def _filtered(query, engine: sa.Engine, policy: str | None, start: Any, end: Any):
    naive = engine.dialect.name in ("mysql", "mariadb")
    if policy is not None:
        query = query.where(runs.c.policy == policy)
    if start is not None:
        query = query.where(runs.c.logical_date >= _as_utc(start, naive))
    if end is not None:
        query = query.where(runs.c.logical_date < _as_utc(end, naive))
    return query


def _present(conn: sa.Connection) -> list[sa.Column] | None:
    """The model's columns the table has: a trail written by an older version (before the next
    `audit-init` or run adds the new columns) still reads, its new fields as None."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(runs.name):
        return None
    present = {column["name"] for column in inspector.get_columns(runs.name)}
    return [column for column in runs.columns if column.name in present]


def _complete(row: sa.Row) -> dict[str, Any]:
    return _utc(dict.fromkeys(runs.c.keys()) | dict(row._mapping))


def iter_runs(
    engine: sa.Engine,
    policy: str | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    chunk: int = 1000,
) -> Iterator[dict[str, Any]]:
    """Audit rows, oldest first, streamed: optionally one policy, logical dates in [start, end)."""
    with engine.connect() as conn:
        columns = _present(conn)
        if columns is None:
            return
        query = sa.select(*columns).order_by(runs.c.logical_date, runs.c.id)
        query = _filtered(query, engine, policy, start, end)
        for row in conn.execution_options(yield_per=chunk).execute(query):
            yield _complete(row)


def read_runs(engine: sa.Engine, policy: str | None = None, **bounds: Any) -> list[dict[str, Any]]:
    return list(iter_runs(engine, policy, **bounds))


def read_run(engine: sa.Engine, row_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        columns = _present(conn)
        if columns is None:
            return None
        row = conn.execute(sa.select(*columns).where(runs.c.id == row_id)).one_or_none()
    return None if row is None else _complete(row)


def latest_runs(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """Each policy's last run: the latest logical date, and of that the latest attempt."""
    with engine.connect() as conn:
        columns = _present(conn)
        if columns is None:
            return {}
        rank = (
            sa.func.row_number()
            .over(
                partition_by=runs.c.policy,
                order_by=(runs.c.logical_date.desc(), runs.c.attempt.desc(), runs.c.id.desc()),
            )
            .label("rank")
        )
        ranked = sa.select(*columns, rank).subquery()
        query = sa.select(*(ranked.c[c.name] for c in columns)).where(ranked.c.rank == 1)
        return {row.policy: _complete(row) for row in conn.execute(query)}


def _utc(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite and MySQL return naive datetimes; the trail is in UTC."""
    for name, value in row.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            row[name] = value.replace(tzinfo=UTC)
    return row


def audit_row(
    policy: Any,
    *,
    dag_id: str,
    run_id: str,
    attempt: int,
    logical_date: datetime,
    dry_run: bool,
    extracted: dict[str, Any] | None,
    decision: dict[str, Any] | None,
    purged: dict[str, Any] | None,
    verification: dict[str, Any] | None,
    started_at: datetime | None,
    failures: list[str] | None = None,
) -> dict[str, Any]:
    """The audit row of a run from what its tasks left in XCom (None where a task failed).

    Failures are named by step, never by exception text: a database error message can quote
    the very record it failed on.
    """
    plan = (extracted or {}).get("plan") or {}
    reasons: list[str] = []
    if extracted is None:
        status, reasons = "failed", ["extract did not complete (see its task log)"]
    elif decision is None:
        status, reasons = "failed", ["check did not complete (see its task log)"]
    elif decision["outcome"] == "refused":
        status, reasons = "refused", list(decision["reasons"])
    elif decision["outcome"] == "dry_run":
        status = "dry_run"
    elif purged is None:
        status, reasons = "failed", ["delete did not complete (see its task log)"]
    elif purged.get("incomplete"):
        status = "failed"
        slices = ", ".join(map(str, purged["incomplete"]))
        reasons = [
            f"delete of slice {slices} did not complete (see its task log); the other slices "
            f"deleted {purged['deleted_by_finished']}"
        ]
        purged = None  # the run's total is unknown
    elif verification is None:
        status, reasons = "failed", ["verify did not complete (see its task log)"]
    elif not verification["success"]:
        status = "verification_failed"
        reasons = [f"{verification['remaining']} unheld records before the cutoff remain"]
    else:
        status = "purged"
    if purged and purged.get("failed"):
        reasons += [f"{n} not deleted: {code}" for code, n in sorted(purged["failed"].items())]
    if purged and purged.get("earlier_tries"):
        reasons.append(
            f"{purged['earlier_tries']} of the deleted records went in an interrupted try, "
            "counted from what was left of its slice past the window"
        )
    if purged and purged.get("earlier_uncounted"):
        reasons.append(
            "an interrupted try may have deleted more than counted here (slice "
            f"{', '.join(map(str, purged['earlier_uncounted']))}: the store is not recounted)"
        )
    # Configuration errors that failed a step at once (a missing connection, a protected
    # table): their messages name settings, never records.
    reasons += [f for f in failures or () if f not in reasons]
    if decision:
        reasons += list(decision.get("warnings", ()))
    elif extracted:
        reasons += list(extracted.get("warnings", ()))
    store = policy.store
    timings = {
        step: result.get("seconds")
        for step, result in (("delete", purged), ("verify", verification))
        if result
    }
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "attempt": attempt,
        "policy": policy.name,
        "title": policy.title,
        "controller": policy.controller,
        "legal_basis": policy.legal_basis,
        "store": f"{store.kind}:{store.conn_id}:{store.location}",
        "period": policy.retention.period,
        "logical_date": logical_date,
        "cutoff": (extracted or {}).get("cutoff"),
        "status": status,
        "dry_run": dry_run,
        "total": plan.get("total"),
        "expired": plan.get("expired"),
        "held": plan.get("held"),
        "active": plan.get("active"),
        "anomalies": plan.get("anomalies"),
        # Unknown (None) when the delete failed: committed batches may have deleted some.
        "deleted": purged["deleted"] if purged else (0 if status != "failed" else None),
        "batches": purged["batches"] if purged else (0 if status != "failed" else None),
        "shards": purged.get("shards") if purged else None,
        "oldest_expired": plan.get("oldest_expired"),
        "holds": plan.get("held_by_hold") or {},
        "tenants": (extracted or {}).get("tenants") or {},
        "newest_expired": plan.get("newest_expired"),
        "oldest_retained": plan.get("oldest_retained"),
        "verified": None if verification is None else bool(verification["success"]),
        "remaining": None if verification is None else verification["remaining"],
        "reasons": reasons,
        "verification": None if verification is None else verification.get("summary"),
        "timings": timings,
        "started_at": started_at,
        "finished_at": datetime.now(UTC),
    }
