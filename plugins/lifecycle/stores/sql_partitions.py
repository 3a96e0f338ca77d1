"""Range-partitioned tables: drop whole expired partitions instead of deleting their rows
(issue 13, `store.partitions: drop`).

A partition goes whole when its upper bound is at or before the cutoff (every row in it is
past the window: the bound is exclusive) and every row in it is purgeable: counted, total
against purgeable, in the purge's own predicate with the holds read again just before, while
the table is locked against writes. A held record, a NULL or malformed timestamp (MariaDB keeps
NULLs in its first partition), anything the predicate would not delete keeps the partition;
the row purge that follows deletes what it may in it, as in the straddling partition and the
partitions after the cutoff. The drops are batches of the purge: the deletion ledger's
`begin` row before they commit with the rows they held, the approval's ceiling checked as for
any batch.

PostgreSQL (declarative partitioning, `PARTITION BY RANGE (ts)`): DETACH and DROP of all of
them in one transaction, one batch, through `lifecycle_drop_partition_<policy>`, a SECURITY
DEFINER function the table's owner creates from `lifecycle grants`, where it exists: the jobs'
role may call it and nothing else, and it refuses a partition of another table, a bound after
the cutoff it is given, and a cutoff later than the wall clock minus the policy's period.
Without the function the store's own role must own the table. MariaDB (`PARTITION BY RANGE`
on `TO_DAYS(ts)`, `UNIX_TIMESTAMP(ts)`, or `RANGE COLUMNS(ts)`): one batch a partition,
through the policy's stored procedure where its owner created it, else with the store's own
rights (`lifecycle.stores.sql_partitions_mariadb`).

With `store.partition_grace` the partitions leave the table all the same (their purge, counted
and journaled as a drop is) but are kept as tables of their own for the grace, then dropped by
the first run whose cutoff reaches its end: PostgreSQL detaches them and says so in their
COMMENT, MariaDB converts them and says so in their name (each module tells how).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from lifecycle.stores import RetentionWindow

if TYPE_CHECKING:
    from lifecycle.policy import Policy
    from lifecycle.stores.sql import SqlTableStore
    from lifecycle.stores.sql_walk import LivePurgeable, Tally

log = logging.getLogger("lifecycle.stores.sql")

FUNCTION_PREFIX = "lifecycle_drop_partition_"
ROUTINE_NAME_LIMIT = 63  # PostgreSQL's identifiers (MariaDB's: 64)
# Around a MariaDB procedure's CREATE, for the mysql client (the body has `;`).
DELIMITED = ("DELIMITER $$\n", "$$\nDELIMITER ")


@dataclass(frozen=True)
class RangePartition:
    """One partition: its name (PostgreSQL: the partition's table, schema-qualified; MariaDB:
    the partition's name) and its bounds in UTC (None: MINVALUE / MAXVALUE)."""

    name: str
    lower: datetime | None
    upper: datetime | None


@dataclass(frozen=True)
class Dropped:
    # The partitions that left the table (dropped, or kept as tables) and their rows.
    partitions: int = 0
    rows: int = 0
    # Of `partitions`, those kept as tables for `store.partition_grace`; and the kept ones of
    # earlier runs dropped by this one, their grace over (their rows counted back then).
    detached: int = 0
    kept_dropped: int = 0

    def to_dict(self) -> dict[str, int]:
        """PurgeResult.partitions: {} when no partition went; `detached` and `kept_dropped`
        where the policy keeps partitions."""
        if not (self.partitions or self.kept_dropped):
            return {}
        counts = {"partitions": self.partitions, "rows": self.rows}
        if self.detached or self.kept_dropped:
            counts |= {"detached": self.detached, "kept_dropped": self.kept_dropped}
        return counts


def droppable_policy(store: SqlTableStore, window: RetentionWindow) -> bool:
    """Only where the policy asks for it, on the record's own timestamp, with one cutoff, and
    only for the retention purge of the whole table: a store narrowed to one subject
    (`sql_requests`, which walks no whole table either) deletes that subject's rows alone, and
    a partition before the cutoff holds everyone's."""
    from lifecycle.stores.sql_time import OwnTimestamp

    return (
        store.config.partitions == "drop"
        and store.walks_whole_table
        and isinstance(store.time, OwnTimestamp)
        and store.policy.retention.from_event is None
        and not (store.tenant is not None and window.tenant_cutoffs)
    )


def partitions_of(store: SqlTableStore) -> list[RangePartition] | None:
    """The table's range partitions on the policy's timestamp, in order; None when it is not
    partitioned that way (or in a way this module does not read: sub-partitions, several
    columns, another expression)."""
    kind = store.engine.dialect.name
    with store.guarded("reading the partitions"), store.engine.connect() as conn:
        if kind == "postgresql":
            from lifecycle.stores.sql_partitions_postgresql import postgresql_partitions

            return postgresql_partitions(conn, store.table, store.ts.name)
        if kind in ("mysql", "mariadb"):
            from lifecycle.stores.sql_partitions_mariadb import mariadb_partitions

            return mariadb_partitions(conn, store.table, store.ts.name)
    return None


def routine_name(policy: Policy) -> str:
    """The policy's drop routine (PostgreSQL's function, MariaDB's procedure):
    `lifecycle_drop_partition_<policy>`; a name too long for an identifier keeps its start and
    ends with a digest of the whole, so two policies that share their first characters never
    share a routine (a routine refuses every table but its policy's)."""
    import hashlib

    full = f"{FUNCTION_PREFIX}{policy.name}"
    if len(full) <= ROUTINE_NAME_LIMIT:
        return full
    digest = hashlib.sha256(policy.name.encode()).hexdigest()[:10]
    return f"{full[: ROUTINE_NAME_LIMIT - len(digest) - 1]}_{digest}"


def candidates(parts: list[RangePartition] | None, cutoff: datetime) -> list[RangePartition]:
    """Partitions wholly before the cutoff: the upper bound (exclusive) at or before it."""
    return [p for p in parts or () if p.upper is not None and p.upper <= cutoff]


def count_droppable(store: SqlTableStore, window: RetentionWindow) -> dict[str, int]:
    """For the plan (extract): how many partitions the purge would drop and the rows they
    hold, counted as the purge counts them (every row purgeable); {} when none could go."""
    if not droppable_policy(store, window):
        return {}
    parts = candidates(partitions_of(store), window.cutoff)
    if store.config.partition_grace is not None and store.engine.dialect.name != "postgresql":
        from lifecycle.stores import sql_partitions_mariadb as mariadb

        # Refused at the plan already, where the partitions could not be kept.
        with store.guarded("counting the partitions"), store.engine.connect() as conn:
            procedure = mariadb.procedure_of(conn, store)
        mariadb.refuse_unkeepable(store, procedure, parts)
    if not parts:
        return {}
    purgeable = store._purgeable(window)
    n = rows = 0
    with store.guarded("counting the partitions"), store.engine.connect() as conn:
        for part in parts:
            total, ok = _count(store, conn, part, purgeable)
            if total == ok:
                n, rows = n + 1, rows + total
    return {"partitions": n, "rows": rows}


def drop_expired(
    store: SqlTableStore, purgeable: LivePurgeable, tally: Tally, approved: int
) -> Dropped:
    """Drop every partition wholly before the cutoff whose rows are all purgeable (PostgreSQL:
    all in one transaction, one batch; MariaDB: one batch each), or keep it as a table with a
    grace, after the kept tables whose grace is over; the others are left to the row purge."""
    if not droppable_policy(store, purgeable.window):
        return Dropped()
    if store.engine.dialect.name == "postgresql":
        dropped = _drop_postgresql(store, purgeable, tally, approved)
    else:
        dropped = _drop_mariadb(store, purgeable, tally, approved)
    if dropped.partitions:
        log.info(
            "%s: %d partitions before the cutoff %s, %d rows",
            store.label,
            dropped.partitions,
            "kept as tables for the grace period" if dropped.detached else "dropped whole",
            dropped.rows,
        )
    return dropped


def _drop_postgresql(
    store: SqlTableStore, purgeable: LivePurgeable, tally: Tally, approved: int
) -> Dropped:
    from lifecycle.stores.sql_partitions_postgresql import drop_kept, drop_postgresql

    with store.guarded("drop kept partitions"):  # those whose grace the cutoff has reached
        kept_dropped = drop_kept(store, purgeable.window)
    parts = candidates(partitions_of(store), purgeable.window.cutoff)
    if not parts:
        return Dropped(kept_dropped=kept_dropped)
    purgeable.now()  # holds read again just before; all of them in one transaction, one batch
    with store.guarded(f"drop partitions, batch {tally.batches + 1}"):
        went = drop_postgresql(store, parts, purgeable.window, tally, approved)
    rows = sum(n for _p, n in went)
    if went:
        tally.committed(rows)
    kept = len(went) if store.config.partition_grace else 0
    return Dropped(len(went), rows, kept, kept_dropped)


def _drop_mariadb(
    store: SqlTableStore, purgeable: LivePurgeable, tally: Tally, approved: int
) -> Dropped:
    from lifecycle.stores import sql_partitions_mariadb as mariadb

    window = purgeable.window
    with store.guarded("drop partitions"), store.engine.connect() as conn:
        procedure = mariadb.procedure_of(conn, store)
    with store.guarded("drop kept partitions"):  # those whose grace is over, whatever follows
        kept_dropped = mariadb.drop_kept(store, procedure)
    parts = candidates(partitions_of(store), window.cutoff)
    mariadb.refuse_unkeepable(store, procedure, parts)  # before any partition changes
    went: list[tuple[RangePartition, int]] = []
    if procedure is not None and parts:  # the least-privilege way: one batch a partition
        with store.guarded(f"drop partitions, batch {tally.batches + 1}"):
            went = mariadb.drop_through_procedure(
                store, parts, purgeable, tally, approved, procedure
            )
    elif not window.holds and parts:  # without a hold: with the table locked
        with store.guarded(f"drop partitions, batch {tally.batches + 1}"):
            went = mariadb.drop_locked(store, parts, tally, approved)
    elif parts:  # with holds, the store's own rights: each partition through a swap table
        with store.guarded("drop partitions"), mariadb.MariaDBSwap(store) as swap:
            for part in parts:
                purgeable.now()  # holds read again before each partition
                with store.guarded(f"drop partition batch {tally.batches + 1}"):
                    rows = swap.drop(part, purgeable.window, tally, approved)
                if rows is not None:
                    tally.committed(rows)
                    went.append((part, rows))
    rows = sum(n for _p, n in went)
    kept = len(went) if store.config.partition_grace else 0
    return Dropped(len(went), rows, kept, kept_dropped)


def _range(store: SqlTableStore, part: RangePartition) -> list[sa.ColumnElement[bool]]:
    bounds: list[sa.ColumnElement[bool]] = []
    if part.lower is not None:
        bounds.append(store.ts >= store.sql.cutoff(store.ts, part.lower))
    if part.upper is not None:
        bounds.append(store.ts < store.sql.cutoff(store.ts, part.upper))
    return bounds


def _count(
    store: SqlTableStore,
    conn: sa.Connection,
    part: RangePartition,
    purgeable: sa.ColumnElement[bool],
) -> tuple[int, int]:
    """(rows, purgeable rows) in the partition."""
    query = sa.select(sa.func.count(), sa.func.count(sa.case((purgeable, 1)))).select_from(
        store.table
    )
    if conn.dialect.name == "postgresql":
        # Through the parent, pruned to the partition: the role needs no right on it.
        query = query.where(*_range(store, part))
    else:  # every row stored in it, a NULL timestamp included (MariaDB keeps those there)
        query = query.with_hint(store.table, f"PARTITION ({_quote(conn, part.name)})")
    total, ok = conn.execute(query).one()
    return int(total), int(ok)


def _quote(conn: sa.Connection, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))


def drop_function_sql(policy: Policy, role: str) -> list[str]:
    """PostgreSQL's function (`lifecycle.stores.sql_partitions_postgresql`)."""
    from lifecycle.stores.sql_partitions_postgresql import drop_function_sql as sql

    return sql(policy, role)


def run_ddl(conn: sa.Connection, statement: str) -> None:
    """A statement of `drop_function_sql` or `procedure_sql` through the driver: its `%` are
    PL/pgSQL's, not placeholders (psycopg's paramstyle reads them as such); the DELIMITER lines
    around a MariaDB procedure are the mysql client's, not the server's."""
    if statement.startswith(DELIMITED[0]) and statement.endswith(DELIMITED[1]):
        statement = statement[len(DELIMITED[0]) : -len(DELIMITED[1])]
    if conn.dialect.paramstyle in ("format", "pyformat"):
        statement = statement.replace("%", "%%")
    conn.exec_driver_sql(statement)
