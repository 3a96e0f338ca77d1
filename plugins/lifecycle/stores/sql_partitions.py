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
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from lifecycle.stores import RetentionWindow

if TYPE_CHECKING:
    from lifecycle.policy import Policy
    from lifecycle.stores.sql import SqlTableStore
    from lifecycle.stores.sql_walk import LivePurgeable, Tally

log = logging.getLogger("lifecycle.stores.sql")

FUNCTION_PREFIX = "lifecycle_drop_partition_"
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
    partitions: int = 0
    rows: int = 0
    # The partitions before the cutoff that stayed (held records, the straddling one): the
    # row purge deletes in them, and their statistics are refreshed after it.
    kept: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, int]:
        return {"partitions": self.partitions, "rows": self.rows}


def refresh_statistics(store: SqlTableStore, dropped: Dropped) -> bool:
    """After partitions were dropped, ANALYZE only the partitions before the cutoff that stayed
    (where the row purge deleted): the others did not change, and an ANALYZE of the whole
    partitioned table reads every partition. PostgreSQL; False: not done here (use the table's
    own refresh)."""
    if not dropped.partitions or store.engine.dialect.name != "postgresql":
        return False
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name in dropped.kept:
            try:
                conn.exec_driver_sql(f"ANALYZE {name}")
            except sa.exc.DBAPIError as exc:  # best effort, as the table's own
                log.warning("%s: ANALYZE skipped (%s)", store.label, type(exc.orig).__name__)
    return True


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
            return _postgresql_partitions(conn, store.table, store.ts.name)
        if kind in ("mysql", "mariadb"):
            from lifecycle.stores.sql_partitions_mariadb import mariadb_partitions

            return mariadb_partitions(conn, store.table, store.ts.name)
    return None


def candidates(parts: list[RangePartition] | None, cutoff: datetime) -> list[RangePartition]:
    """Partitions wholly before the cutoff: the upper bound (exclusive) at or before it."""
    return [p for p in parts or () if p.upper is not None and p.upper <= cutoff]


def count_droppable(store: SqlTableStore, window: RetentionWindow) -> dict[str, int]:
    """For the plan (extract): how many partitions the purge would drop and the rows they
    hold, counted as the purge counts them (every row purgeable); {} when none could go."""
    if not droppable_policy(store, window):
        return {}
    parts = candidates(partitions_of(store), window.cutoff)
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
    all in one transaction, one batch; MariaDB: one batch each); the others are left to the row
    purge."""
    window = purgeable.window
    if not droppable_policy(store, window):
        return Dropped()
    every = partitions_of(store) or []
    parts = candidates(every, window.cutoff)
    dropped, gone = Dropped(), set()
    if not parts:
        return Dropped(
            kept=tuple(p.name for p in every if p.lower is None or p.lower < window.cutoff)
        )
    postgresql = store.engine.dialect.name == "postgresql"
    if postgresql:  # all of them in one transaction, one batch
        purgeable.now()  # holds read again just before
        with store.guarded(f"drop partitions, batch {tally.batches + 1}"):
            went = _drop_postgresql(store, parts, purgeable.window, tally, approved)
        if went:
            tally.committed(sum(n for _p, n in went))
        gone = {p.name for p, _n in went}
        dropped = Dropped(len(went), sum(n for _p, n in went))
    else:
        from lifecycle.stores import sql_partitions_mariadb as mariadb

        with store.guarded("drop partitions"), store.engine.connect() as conn:
            procedure = mariadb.procedure_of(conn, store)
        if procedure is not None:  # the least-privilege way: one batch a partition
            with store.guarded(f"drop partitions, batch {tally.batches + 1}"):
                went = mariadb.drop_through_procedure(
                    store, parts, purgeable, tally, approved, procedure
                )
            parts = []
        elif not window.holds:  # without a hold: one ALTER with the table locked
            with store.guarded(f"drop partitions, batch {tally.batches + 1}"):
                went = mariadb.drop_locked(store, parts, tally, approved)
            if went:
                tally.committed(sum(n for _p, n in went))
            parts = []
        else:
            went = []
        gone = {p.name for p, _n in went}
        dropped = Dropped(len(went), sum(n for _p, n in went))
        with store.guarded("drop partitions"), contextlib.ExitStack() as stack:
            swap = stack.enter_context(mariadb.MariaDBSwap(store)) if parts else None
            for part in parts:
                purgeable.now()  # holds read again before each partition
                current = purgeable.window
                assert swap is not None
                with store.guarded(f"drop partition batch {tally.batches + 1}"):
                    rows = swap.drop(part, current, tally, approved)
                if rows is None:
                    continue
                tally.committed(rows)
                gone.add(part.name)
                dropped = Dropped(dropped.partitions + 1, dropped.rows + rows)
    before_cutoff = (p for p in every if p.lower is None or p.lower < window.cutoff)
    kept = tuple(p.name for p in before_cutoff if p.name not in gone)
    dropped = Dropped(dropped.partitions, dropped.rows, kept)
    if dropped.partitions:
        log.info(
            "%s: %d partitions before the cutoff dropped whole, %d rows",
            store.label,
            dropped.partitions,
            dropped.rows,
        )
    return dropped


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


# -- PostgreSQL ---------------------------------------------------------------------------------

_BOUND = re.compile(r"^FOR VALUES FROM \((?P<lower>.*)\) TO \((?P<upper>.*)\)$")


def _postgresql_partitions(
    conn: sa.Connection, table: sa.Table, column: str
) -> list[RangePartition] | None:
    name = conn.dialect.identifier_preparer.format_table(table)
    ranged = conn.execute(
        sa.text(
            "SELECT p.partstrat = 'r' AND p.partnatts = 1 AND p.partattrs[0] = a.attnum "
            "FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid "
            "AND a.attname = :column WHERE p.partrelid = CAST(:name AS regclass)"
        ),
        {"name": name, "column": column},
    ).scalar()
    if not ranged:
        return None
    rows = conn.execute(
        sa.text(
            "SELECT CAST(c.oid AS regclass)::text, pg_get_expr(c.relpartbound, c.oid), c.relkind "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:name AS regclass)"
        ),
        {"name": name},
    ).all()
    parts = []
    for part, bound, kind in rows:
        match = _BOUND.match(bound or "")
        if kind != "r" or match is None:  # the DEFAULT partition, a sub-partitioned one
            parts.append(RangePartition(part, None, None))
            continue
        lower, upper = (_pg_bound(conn, match[side]) for side in ("lower", "upper"))
        parts.append(RangePartition(part, lower, upper))
    return sorted(
        parts, key=lambda p: (p.upper is None, p.upper or datetime.min.replace(tzinfo=UTC))
    )


def _pg_bound(conn: sa.Connection, text: str) -> datetime | None:
    """A bound as pg_get_expr writes it: a quoted literal, or MINVALUE / MAXVALUE."""
    if not text.startswith("'"):
        return None
    literal = text[1:-1].replace("''", "'")
    try:  # pg_get_expr writes the session's format (ISO, UTC): read here, no round trip
        parsed = datetime.fromisoformat(literal)
    except ValueError:
        parsed = None
    if parsed is not None:  # a timestamp without time zone is UTC (the session's zone)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    value = conn.execute(sa.text("SELECT CAST(:v AS timestamptz)"), {"v": literal}).scalar_one()
    return value if isinstance(value, datetime) else None


def function_name(policy: Policy) -> str:
    return f"{FUNCTION_PREFIX}{policy.name}"[:63]


def _function(conn: sa.Connection, store: SqlTableStore) -> str | None:
    """The policy's drop function, schema-qualified, if its owner created it."""
    schema = store.table.schema or "public"
    found = conn.execute(
        sa.text(
            "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = :schema AND p.proname = :name"
        ),
        {"schema": schema, "name": function_name(store.policy)},
    ).first()
    if found is None:
        return None
    quote = conn.dialect.identifier_preparer.quote
    return f"{quote(schema)}.{quote(function_name(store.policy))}"


def _drop_postgresql(
    store: SqlTableStore,
    parts: list[RangePartition],
    window: RetentionWindow,
    tally: Tally,
    approved: int,
) -> list[tuple[RangePartition, int]]:
    """One transaction, one batch: the table locked against writes, each partition checked
    (with holds: every row of it purgeable, or it stays for the row purge), then each detached
    and dropped (by the policy's function where it exists), counted as it goes. Returns the
    partitions dropped and the rows each held."""
    parent = store.engine.dialect.identifier_preparer.format_table(store.table)
    number = tally.batches + 1
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"LOCK TABLE {parent} IN SHARE MODE")
        # Without a hold every row of a range partition whose bound is at or before the cutoff
        # is past the window (PostgreSQL keeps a NULL key in the DEFAULT partition only): the
        # partition's own count, under the lock, is what the drop deletes.
        chosen: list[tuple[RangePartition, int | None]] = []
        for part in parts:
            if not window.holds:
                chosen.append((part, None))
                continue
            total, ok = _count(store, conn, part, store._purgeable(window))
            if total == ok:
                chosen.append((part, total))
            else:
                log.info(
                    "%s: a partition before the cutoff keeps %d held records: row-purged instead",
                    store.label,
                    total - ok,
                )
        if not chosen:
            return []
        witnesses = (
            store._witnesses(conn, sa.or_(*(sa.and_(*_range(store, p)) for p, _n in chosen)))
            if tally.journal.wants_witnesses and store._opaque_key()
            else None
        )
        function = _function(conn, store)
        dropped: list[tuple[RangePartition, int]] = []
        for part, expected in chosen:
            if function is not None:
                rows = conn.execute(
                    sa.text(f"SELECT {function}(CAST(:part AS regclass), :cutoff, :expected)"),
                    {"part": part.name, "cutoff": window.cutoff, "expected": expected},
                ).scalar_one()
            else:  # the table's owner
                rows = conn.exec_driver_sql(f"SELECT count(*) FROM {part.name}").scalar_one()
                conn.exec_driver_sql(f"ALTER TABLE {parent} DETACH PARTITION {part.name}")
                conn.exec_driver_sql(f"DROP TABLE {part.name}")
            dropped.append((part, int(rows)))
        reached = tally.deleted + sum(n for _p, n in dropped)
        store._before_commit(number, reached, approved, tally, witnesses)
    return dropped


def drop_function_sql(policy: Policy, role: str) -> list[str]:
    """The PostgreSQL function the table's owner creates for a policy with `store.partitions:
    drop` (`lifecycle grants`), and the right of `role` to call it. It detaches and drops one
    partition of the policy's table, only a leaf range partition of it whose upper bound is at
    or before the `cutoff` it is given, only when that cutoff is not later than now minus the
    policy's period (wall clock, in the policy's timezone), and only when the partition holds
    exactly the `expected` rows (when given: the caller counted them with the holds); it
    returns the rows it dropped."""
    from lifecycle.stores.sql_config import SqlStore

    store = policy.store
    assert isinstance(store, SqlStore)
    schema, _, table = store.table.rpartition(".")
    schema = schema or "public"
    fn = f'"{schema}"."{function_name(policy)}"'
    parent = f'"{schema}"."{table}"'
    column = store.timestamp or ""
    period = policy.retention.period
    tz = policy.timezone
    body = f"""
DECLARE
  parent constant regclass := '{parent}'::regclass;
  latest timestamptz := ((now() AT TIME ZONE '{tz}') - interval '{period}') AT TIME ZONE '{tz}';
  bound text;
  upper_bound timestamptz;
  n bigint;
BEGIN
  IF cutoff IS NULL OR cutoff > latest THEN
    RAISE EXCEPTION 'cutoff after now minus the period {period}' USING ERRCODE = '42501';
  END IF;
  IF NOT EXISTS (
    SELECT 1 FROM pg_partitioned_table p JOIN pg_attribute a
      ON a.attrelid = p.partrelid AND a.attname = '{column}'
    WHERE p.partrelid = parent AND p.partstrat = 'r' AND p.partnatts = 1
      AND p.partattrs[0] = a.attnum
  ) THEN
    RAISE EXCEPTION 'not range-partitioned on {column}' USING ERRCODE = '42501';
  END IF;
  SELECT pg_get_expr(c.relpartbound, c.oid) INTO bound
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent AND i.inhrelid = part AND c.relkind = 'r';
  IF bound IS NULL THEN
    RAISE EXCEPTION 'not a partition of %', parent USING ERRCODE = '42501';
  END IF;
  upper_bound := CAST(substring(bound FROM ' TO \\(''(.*)''\\)$') AS timestamptz);
  IF upper_bound IS NULL OR upper_bound > cutoff THEN
    RAISE EXCEPTION 'partition bound after the cutoff' USING ERRCODE = '42501';
  END IF;
  EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, part);
  EXECUTE format('SELECT count(*) FROM %s', part) INTO n;
  IF expected IS NOT NULL AND n <> expected THEN
    RAISE EXCEPTION 'partition holds % rows, % counted', n, expected USING ERRCODE = '40001';
  END IF;
  EXECUTE format('DROP TABLE %s', part);
  RETURN n;
END"""
    return [
        f"CREATE OR REPLACE FUNCTION {fn}(part regclass, cutoff timestamptz, expected bigint) "
        "RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' "
        f"AS $lifecycle${body}$lifecycle$",
        f"REVOKE ALL ON FUNCTION {fn}(regclass, timestamptz, bigint) FROM PUBLIC",
        f'GRANT EXECUTE ON FUNCTION {fn}(regclass, timestamptz, bigint) TO "{role}"',
    ]


def run_ddl(conn: sa.Connection, statement: str) -> None:
    """A statement of `drop_function_sql` or `procedure_sql` through the driver: its `%` are
    PL/pgSQL's, not placeholders (psycopg's paramstyle reads them as such); the DELIMITER lines
    around a MariaDB procedure are the mysql client's, not the server's."""
    if statement.startswith(DELIMITED[0]) and statement.endswith(DELIMITED[1]):
        statement = statement[len(DELIMITED[0]) : -len(DELIMITED[1])]
    if conn.dialect.paramstyle in ("format", "pyformat"):
        statement = statement.replace("%", "%%")
    conn.exec_driver_sql(statement)
