"""The control database (connection `lifecycle_audit`): its schema, owned by this module alone.

The audit trail (`retention_audit`, one row per run attempt), the head of its hash chain
(`retention_chain`, one row: see `lifecycle.chain`), the holds (`retention_holds`), the
deletion ledger (`retention_ledger`) and the register of data-subject requests
(`retention_requests`, with the subject's identifiers apart in `retention_request_subjects`:
see `lifecycle.requests`). Only `lifecycle audit-init`
(run as the tables' owner) and the demo create or alter them (`ensure_schema`); every reader and
writer of a run inspects what is there and copes: the jobs' least-privileged role may not run
DDL, so a run after an upgrade never fails on an ALTER it may not make.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from lifecycle.errors import PermanentError

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
    # The forecast: horizon in days -> records that reach the end of their window within it
    # (`Plan.due`). NULL where the store does not count it (object stores) and in older rows.
    sa.Column("due", sa.JSON),
    sa.Column("reasons", sa.JSON),
    sa.Column("verification", sa.JSON),  # the Great Expectations result summary
    sa.Column("timings", sa.JSON),
    sa.Column("started_at", Timestamp),
    sa.Column("finished_at", Timestamp),
    # The hash chain (lifecycle.chain): the row's place in it, the hash of the row before it and
    # its own. NULL in rows written before the chain existed.
    sa.Column("chain_seq", sa.BigInteger),
    sa.Column("prev_hash", sa.String(64)),
    sa.Column("row_hash", sa.String(64)),
    # The data-subject request a row answers (lifecycle.requests); NULL for a retention run.
    sa.Column("request_id", sa.Integer),
    sa.UniqueConstraint("dag_id", "run_id", "attempt", name="uq_retention_audit_run"),
    sa.Index("ix_retention_audit_policy_time", "policy", "logical_date"),
    sa.Index("ux_retention_audit_chain_seq", "chain_seq", unique=True),
    # No INSERT ... RETURNING id: RETURNING needs SELECT, and the jobs' role may only INSERT.
    implicit_returning=False,
)

# The deletion ledger: what each run was approved to delete, and every committed batch, written
# to the control database as it happens (the audit row above sums it). Append-only; counts only.
ledger = sa.Table(
    "retention_ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("policy", sa.String(100), nullable=False),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    # approved | begin | batch | unrecorded | settled | recorded | finished | sweep
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("slice", sa.Integer),
    sa.Column("try_number", sa.Integer),
    sa.Column("batch", sa.Integer),
    sa.Column("deleted", sa.BigInteger),  # batch: records it deleted; approved: the ceiling
    sa.Column("cutoff", Timestamp),
    sa.Column("logical_date", Timestamp),
    sa.Column("at", Timestamp, nullable=False),
    # begin: the lowest and highest key the batch deletes (its bounds), so that a later run can
    # tell whether a batch whose commit was never heard of committed (ledger.settle_in_flight)
    sa.Column("witnesses", sa.JSON),
    sa.Index("ix_retention_ledger_run", "dag_id", "run_id", "attempt"),
    sa.Index("ix_retention_ledger_policy", "policy", "event"),
    implicit_returning=False,
)

# The head of the audit trail's hash chain: one row (id 1), the last chained row's place and hash.
# A writer locks it, chains its row onto it and moves it in one transaction (lifecycle.chain), so
# concurrent runs never fork the chain; the jobs' role may SELECT and UPDATE it, nothing else.
HEAD_ID = 1
chain_head = sa.Table(
    "retention_chain",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),  # 0: no row chained yet
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Column("moved_at", Timestamp),
    implicit_returning=False,
)

holds = sa.Table(
    "retention_holds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scope", sa.String(100), nullable=False),  # a policy name, or * for all
    sa.Column("subject", sa.String(63), nullable=False),
    sa.Column("value", sa.String(500), nullable=False),
    sa.Column("reason", sa.String(20), nullable=False),
    sa.Column("note", sa.String(500)),  # a case reference; not the subject's data
    sa.Column("placed_at", Timestamp, nullable=False),
    sa.Column("placed_by", sa.String(200), nullable=False),
    sa.Column("expires_at", Timestamp),
    sa.Column("released_at", Timestamp),
    sa.Column("released_by", sa.String(200)),
    # A restriction placed by a data-subject request: deciding the request releases it.
    sa.Column("request_id", sa.Integer),
    sa.Index("ix_retention_holds_scope", "scope"),
)

# The register of data-subject requests (lifecycle.requests): what was asked, by when, and what
# came of it. No identifier of the subject here: those are in `retention_request_subjects`,
# which the audit UI's role may not read; `outcome` holds counts per category, and for a
# category the client organisation controls, the client ids to forward the request to.
requests = sa.Table(
    "retention_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(20), nullable=False),  # access|portability|erasure|restriction
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Column("due_at", Timestamp, nullable=False),  # one month after receipt (GDPR art. 12)
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("registered_by", sa.String(200), nullable=False),
    sa.Column("reference", sa.String(200)),  # the privacy officer's case reference
    sa.Column("client_instructed", sa.Boolean, nullable=False, default=False),
    sa.Column("copy_objects", sa.Boolean, nullable=False, default=False),
    sa.Column("runs", sa.Integer, nullable=False, default=0),  # request DAG runs finished
    sa.Column("last_run_id", sa.String(250)),
    sa.Column("outcome", sa.JSON),  # policy -> counts, exceptions, archive path
    sa.Column("completed_at", Timestamp),
    sa.Column("decided_at", Timestamp),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decision", sa.String(20)),  # granted | rejected
    sa.Column("note", sa.String(500)),
    sa.Index("ix_retention_requests_status", "status", "due_at"),
)

# What each run of a request found and did per category (policy): counts, exceptions with their
# ground, verification, the archive's path; for a category the client organisation controls,
# the client ids to forward the request to (`clients`). Written by each category's own task.
request_results = sa.Table(
    "retention_request_results",
    metadata,
    sa.Column("request_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("policy", sa.String(100), primary_key=True),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("clients", sa.JSON),
    sa.Column("at", Timestamp, nullable=False),
)

# The subject's identifiers of a request, as `store.subjects` names them (customer, phone,
# email, prefix, ...), in canonical form. Personal data: read only by the request tasks and the
# privacy officer's CLI, never copied into XCom, logs, the DAG run's conf or the trail.
request_subjects = sa.Table(
    "retention_request_subjects",
    metadata,
    sa.Column("request_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("subject", sa.String(63), primary_key=True),
    sa.Column("value", sa.String(500), nullable=False),
)


def stored_time(engine: sa.Engine, instant: datetime | None) -> datetime | None:
    """A time as the control tables store it: UTC, and naive where the column type has no
    zone (MySQL/MariaDB DATETIME)."""
    if instant is None:
        return None
    utc = instant.astimezone(UTC)
    return utc.replace(tzinfo=None) if engine.dialect.name in ("mysql", "mariadb") else utc


def read_time(value: datetime | None) -> datetime | None:
    """A time read back from a control table, aware: SQLite and MariaDB hand back naive UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class ControlSchemaMissing(PermanentError, RuntimeError):
    """A control table does not exist: `lifecycle audit-init` has not run on this database."""


def require(engine: sa.Engine, table: sa.Table) -> None:
    """Fail, naming the fix, when `table` is missing (never create it: readers may not)."""
    if not sa.inspect(engine).has_table(table.name):
        raise ControlSchemaMissing(
            f"the control database has no table {table.name}: run `python -m lifecycle "
            "audit-init` (as the tables' owner) on the lifecycle_audit connection"
        )


def present(engine: sa.Engine, table: sa.Table) -> bool:
    return sa.inspect(engine).has_table(table.name)


def ensure_schema(engine: sa.Engine) -> None:
    """Create the tables, add the nullable columns and indexes a newer version introduced, and
    the chain's head row (the chain starts after the rows already there)."""
    metadata.create_all(engine, checkfirst=True)
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        _add_columns(engine, inspector, table)
        indexes = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(engine)
    with engine.begin() as conn:
        if conn.execute(sa.select(chain_head.c.id)).first() is None:
            # A fresh chain, or one whose head row went missing: it continues after the last
            # chained row (`audit-verify` still checks every row up to it).
            last = conn.execute(
                sa.select(runs.c.chain_seq, runs.c.row_hash)
                .where(runs.c.row_hash.is_not(None))
                .order_by(runs.c.chain_seq.desc())
                .limit(1)
            ).first()
            seq, row_hash = (int(last[0]), last[1]) if last else (0, "0" * 64)
            conn.execute(sa.insert(chain_head).values(id=HEAD_ID, seq=seq, row_hash=row_hash))


def _add_columns(engine: sa.Engine, inspector: sa.Inspector, table: sa.Table) -> None:
    present = {column["name"] for column in inspector.get_columns(table.name)}
    missing = [column for column in table.columns if column.name not in present]
    if missing:
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
