"""MariaDB's range-partitioned tables (`store.partitions: drop`, `lifecycle.stores.sql_partitions`):
reading the partitions' bounds, and dropping them three ways.

- Through `lifecycle_drop_partition_<policy>`, a stored procedure with SQL SECURITY DEFINER
  that `lifecycle grants` has the table's owner create (`procedure_sql`), where it exists: the
  jobs' role locks the table against writes (LOCK TABLES: the role's own right, which reads
  nothing it may not read already), counts each partition with the purge's predicate (the
  holds read again just before; the link tables are locked for reading under their aliases),
  and calls the procedure for each partition whose every row may go. The procedure refuses a
  partition that is not a RANGE partition of the policy's table on its timestamp, one whose
  upper bound (computed from `information_schema.PARTITIONS` as `mariadb_partitions` reads
  it) is after the cutoff it is given, a cutoff later than the wall clock minus the policy's
  period, a call without the table locked, and a partition that does not hold exactly the
  rows the caller counted; it returns the rows it dropped. The role needs no ALTER or DROP.
- Without the procedure and without a hold: the table locked, counted, dropped in one ALTER
  (`drop_locked`).
- Without the procedure, with holds: each partition swapped out into an empty table and
  counted there (`MariaDBSwap`). Both of these need ALTER and DROP (and CREATE, INSERT) in the
  database: the table's owner, or a role given them by hand.

With `store.partition_grace` each of the three keeps the partition instead: it becomes a
table of its own (the procedure and `drop_locked`: CONVERT PARTITION; `MariaDBSwap`: the swap
table renamed), its rows out of the policy's table, which is their purge (counted, journaled
and checked against the approval as a drop is). A kept table says what it is in its name
(`kept_name`): `lck_<digest>_<until>_<partition>`: under the role's LOCK TABLES the new table
cannot be altered (a COMMENT fails: not locked), so its name carries what later runs need.
`until` (UTC, rounded up to the second) comes from the database's clock, never from the
caller: the clock plus the grace plus the zone's offset range (`grace_until`); each run first
drops this policy's kept tables whose `until` that clock has passed (`drop_kept`), so the
grace is never shorter than the policy's and may be an hour longer (none in UTC).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from lifecycle.periods import parse_period
from lifecycle.stores import StoreConfigError
from lifecycle.stores.sql_partitions import RangePartition, _count, _quote, routine_name
from lifecycle.stores.sql_walk import json_keys

if TYPE_CHECKING:
    from lifecycle.policy import Policy
    from lifecycle.stores import RetentionWindow
    from lifecycle.stores.sql import SqlTableStore
    from lifecycle.stores.sql_walk import LivePurgeable, Tally

log = logging.getLogger("lifecycle.stores.sql")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TO_DAYS_OFFSET = 365  # TO_DAYS('0001-01-01') is 366, Python's ordinal of that day 1


def mariadb_partitions(
    conn: sa.Connection, table: sa.Table, column: str
) -> list[RangePartition] | None:
    rows = conn.execute(
        sa.text(
            "SELECT p.PARTITION_NAME, p.SUBPARTITION_NAME, p.PARTITION_METHOD, "
            "p.PARTITION_EXPRESSION, p.PARTITION_DESCRIPTION, t.TABLE_TYPE "
            "FROM information_schema.PARTITIONS p JOIN information_schema.TABLES t "
            "ON t.TABLE_SCHEMA = p.TABLE_SCHEMA AND t.TABLE_NAME = p.TABLE_NAME "
            "WHERE p.TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND p.TABLE_NAME = :name "
            "ORDER BY p.PARTITION_ORDINAL_POSITION"
        ),
        {"schema": table.schema, "name": table.name},
    ).all()
    if not rows or rows[0][0] is None or any(r[1] is not None for r in rows):
        return None  # not partitioned, or sub-partitioned
    if rows[0][5] != "BASE TABLE":  # a system-versioned table keeps history: not dropped whole
        return None
    method, expression = rows[0][2], (rows[0][3] or "").replace("`", "").lower().strip()
    col = column.lower()
    if method == "RANGE COLUMNS" and expression == col:
        convert = _column_literal
    elif method == "RANGE" and expression == f"to_days({col})":
        convert = _to_days
    elif method == "RANGE" and expression == f"unix_timestamp({col})":
        convert = _unix_seconds
    else:
        return None
    parts, lower = [], None
    for name, _sub, _method, _expr, description, _type in rows:
        upper = None if description in (None, "MAXVALUE") else convert(description)
        parts.append(RangePartition(name, lower, upper))
        lower = upper
    return parts


def _to_days(description: str) -> datetime:
    day = datetime.fromordinal(int(description) - _TO_DAYS_OFFSET)
    return day.replace(tzinfo=UTC)


def _unix_seconds(description: str) -> datetime:
    return _EPOCH + timedelta(seconds=int(description))


def _column_literal(description: str) -> datetime:
    value = datetime.fromisoformat(description.strip("'"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- kept partitions (`store.partition_grace`) ---------------------------------------------------

KEPT = "lck_"  # a kept table's name: lck_<digest>_<until>_<partition>
NAME_LIMIT = 64  # MariaDB's identifiers
_UNTIL = "%Y%m%d%H%M%S"  # `until` in the name, UTC (MariaDB's DATE_FORMAT: %i for minutes)
_UNTIL_SQL = "%Y%m%d%H%i%s"


def kept_prefix(policy: str, table: str) -> str:
    """`lck_<digest>_`: how every kept table of this policy's table begins. The digest (8 hex
    digits of sha256) is of the policy's name and its `store.table` as written there: a run,
    and the procedure that embeds it, drop no kept table of another policy or table."""
    digest = hashlib.sha256(f"{policy}\0{table}".encode()).hexdigest()[:8]
    return f"{KEPT}{digest}_"


def longest_keepable(prefix: str) -> int:
    """The longest partition name whose kept table's name fits an identifier: no name is ever
    cut (two cut names could be one table)."""
    return NAME_LIMIT - len(prefix) - len("YYYYMMDDHHMMSS_")


def kept_name(prefix: str, until: datetime, partition: str) -> str:
    return f"{prefix}{until.astimezone(UTC):{_UNTIL}}_{partition}"


def kept_until(prefix: str, name: str) -> datetime | None:
    """When the grace of the kept table `name` ends, from its name; None where it is no kept
    table of `prefix`."""
    match = re.fullmatch(re.escape(prefix) + r"(\d{14})_.+", name)
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], _UNTIL).replace(tzinfo=UTC)
    except ValueError:
        return None


def grace_until(store: SqlTableStore, now: datetime) -> datetime:
    """The end of the grace of a partition kept at `now` (the database's clock), as the
    procedure computes it: `now` plus the grace (UTC calendar) plus the policy's zone's offset
    range (a day of the zone's calendar may be an hour longer), rounded up to the second. A
    kept table goes once the database's clock has passed it: its grace counts from when its
    rows left the table, never from the run's cutoff, whose distance to the clock varies with
    month lengths (a P1M period and a P3D grace would otherwise give a single day)."""
    grace = store.config.partition_grace
    assert grace is not None
    low, high = offset_range(store.policy.timezone)
    until = now.astimezone(UTC) + parse_period(grace) + timedelta(seconds=high - low)
    return until + timedelta(microseconds=-until.microsecond % 1_000_000)


def _kept_table(store: SqlTableStore, conn: sa.Connection, name: str) -> str:
    """A kept table, quoted, in the database of the policy's table."""
    return ".".join(_quote(conn, p) for p in (store.table.schema, name) if p)


def _exists(store: SqlTableStore, conn: sa.Connection, name: str) -> bool:
    return (
        conn.execute(
            sa.text(
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_NAME = :name "
                "AND TABLE_SCHEMA = COALESCE(:schema, DATABASE())"
            ),
            {"schema": store.table.schema, "name": name},
        ).first()
        is not None
    )


def _keeping_as(store: SqlTableStore, conn: sa.Connection, part: RangePartition) -> str:
    """The name the partition is kept under now; refused (nothing changed) where a table has it."""
    from lifecycle.stores.sql import StoreError

    prefix = kept_prefix(store.policy.name, store.config.table)
    now = conn.exec_driver_sql("SELECT UTC_TIMESTAMP(6)").scalar_one()
    name = kept_name(prefix, grace_until(store, now.replace(tzinfo=UTC)), part.name)
    if _exists(store, conn, name):
        raise StoreError(
            f"{store.label}: store.partition_grace: partition {part.name} cannot be kept as "
            f"{name}: a table has that name already; nothing changed, run again"
        )
    return name


def refuse_unkeepable(
    store: SqlTableStore, procedure: Procedure | None, parts: list[RangePartition]
) -> None:
    """Before any partition changes: the policy's procedure must keep partitions for the
    policy's grace, or for none where it has none (a procedure made for a grace refuses to
    drop at once); with a grace every partition to keep needs a name short enough for its
    kept table."""
    grace = store.config.partition_grace
    if procedure is not None and procedure.grace != grace:
        made = (
            "before partitions could be kept"
            if procedure.parameters < 4
            else f"for partition_grace {procedure.grace or 'unset'}"
        )
        raise StoreConfigError(
            f"{store.label}: store.partition_grace: {grace or 'unset'}, but the procedure "
            f"{procedure.name} was made {made}: run `lifecycle grants` again as the table's owner"
        )
    if grace is None:
        return
    longest = longest_keepable(kept_prefix(store.policy.name, store.config.table))
    for part in parts:
        if len(part.name) > longest:
            raise StoreConfigError(
                f"{store.label}: store.partition_grace: partition {part.name} cannot be kept: "
                f"its table would be named lck_<digest>_<until>_{part.name}, longer than "
                f"{NAME_LIMIT} characters (partition names of {longest} at most); rename the "
                "partition, or remove partition_grace"
            )


def _kept_names(
    conn: sa.Connection, store: SqlTableStore, procedure: Procedure | None
) -> list[str]:
    """This policy's kept tables of this table: through the procedure (the role cannot see
    them), else from the catalog."""
    if procedure is not None and procedure.parameters >= 4:
        call = f"CALL {procedure.name}(NULL, NULL, NULL, 'kept')"
        return list(conn.exec_driver_sql(call).scalars())
    prefix = kept_prefix(store.policy.name, store.config.table)
    found = conn.execute(
        sa.text(
            "SELECT t.TABLE_NAME FROM information_schema.TABLES t "
            "WHERE t.TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND t.TABLE_TYPE = 'BASE TABLE' "
            "AND LEFT(t.TABLE_NAME, :length) = BINARY :prefix AND NOT EXISTS (SELECT 1 FROM "
            "information_schema.PARTITIONS p WHERE p.TABLE_SCHEMA = t.TABLE_SCHEMA "
            "AND p.TABLE_NAME = t.TABLE_NAME AND p.PARTITION_NAME IS NOT NULL)"
        ),
        {"schema": store.table.schema, "length": len(prefix), "prefix": prefix},
    )
    return list(found.scalars())


def drop_kept(store: SqlTableStore, procedure: Procedure | None) -> int:
    """Drop this policy's kept tables whose `until` the database's clock has passed (through
    the procedure where it exists); how many went. Their rows were purged, counted and
    journaled when they left the table: this deletes no row of it."""
    prefix = kept_prefix(store.policy.name, store.config.table)
    dropped = 0
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        now = conn.exec_driver_sql("SELECT UTC_TIMESTAMP(6)").scalar_one().replace(tzinfo=UTC)
        kept = ((kept_until(prefix, name), name) for name in _kept_names(conn, store, procedure))
        for until, name in sorted((u, n) for u, n in kept if u is not None and u <= now):
            if procedure is not None and procedure.parameters >= 4:
                if not _drop_kept_through(store, conn, procedure, name, until):
                    continue
            else:  # the table's owner
                conn.exec_driver_sql(f"DROP TABLE {_kept_table(store, conn, name)}")
            dropped += 1
    if dropped:
        log.info("%s: %d kept partitions dropped, their grace over", store.label, dropped)
    return dropped


def _drop_kept_through(
    store: SqlTableStore, conn: sa.Connection, procedure: Procedure, name: str, until: datetime
) -> bool:
    """Through the procedure, which reads the clock itself: a table it finds still in its
    grace stays for a later run."""
    try:
        conn.execute(
            sa.text(f"CALL {procedure.name}(:name, NULL, NULL, 'drop_kept')"), {"name": name}
        ).all()
    except sa.exc.DBAPIError as exc:
        if not _refused(exc, f"{REFUSED}: kept partition still in its grace"):
            raise
        log.info(
            "%s: kept table %s stays: its grace ends at %s, not yet by the database's clock",
            store.label,
            name,
            until.isoformat(),
        )
        return False
    return True


def _refused(exc: sa.exc.DBAPIError, message: str) -> bool:
    """The procedure's own refusal (SIGNAL, 1644) that starts with `message`."""
    args: tuple[object, ...] = tuple(getattr(exc.orig, "args", ()))
    return len(args) > 1 and args[0] == 1644 and str(args[1]).startswith(message)


def _witnesses(
    store: SqlTableStore, conn: sa.Connection, partitions: str, tally: Tally
) -> list[int | str] | None:
    """The lowest and highest key in the quoted `partitions` (a drop's witnesses for the
    ledger), for integer and UUID keys where the journal asks for them."""
    if not (tally.journal.wants_witnesses and store._opaque_key()):
        return None
    first = sa.select(store.key).select_from(store.table).limit(1)
    first = first.with_hint(store.table, f"PARTITION ({partitions})")
    return json_keys(
        conn.execute(first.order_by(store.key.asc())).scalar(),
        conn.execute(first.order_by(store.key.desc())).scalar(),
    )


def drop_locked(
    store: SqlTableStore, parts: list[RangePartition], tally: Tally, approved: int
) -> list[tuple[RangePartition, int]]:
    """MariaDB, no hold on the policy: with the table locked against every other session
    (LOCK TABLES ... WRITE), each partition counted (all its rows and those with a timestamp:
    a NULL one, kept in the first partition, keeps it), the ledger told, then the partitions
    dropped in one ALTER, one batch; with a grace each kept (CONVERT PARTITION), one batch
    each. Without a hold the predicate reads no other table, so the lock on this one is
    enough; with holds, `MariaDBSwap`. Tells the tally of each batch it commits."""
    table = store.engine.dialect.identifier_preparer.format_table(store.table)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"LOCK TABLES {table} WRITE")
        try:
            chosen: list[tuple[RangePartition, int]] = []
            for part in parts:
                hint = f"PARTITION ({_quote(conn, part.name)})"
                query = sa.select(sa.func.count(), sa.func.count(store.ts)).select_from(store.table)
                total, timed = conn.execute(query.with_hint(store.table, hint)).one()
                if total == timed:
                    chosen.append((part, int(total)))
            if store.config.partition_grace is not None:
                for part, rows in chosen:
                    _keep_locked(store, conn, part, rows, tally, approved)
                return chosen
            if not chosen:
                return []
            names = ", ".join(_quote(conn, p.name) for p, _n in chosen)
            witnesses = _witnesses(store, conn, names, tally)
            rows = sum(n for _p, n in chosen)
            # The ledger's begin row before the drop (the ALTER commits by itself).
            store._before_commit(
                tally.batches + 1, tally.deleted + rows, approved, tally, witnesses
            )
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP PARTITION {names}")
            tally.committed(rows)
            return chosen
        finally:
            conn.exec_driver_sql("UNLOCK TABLES")


def _keep_locked(
    store: SqlTableStore,
    conn: sa.Connection,
    part: RangePartition,
    rows: int,
    tally: Tally,
    approved: int,
) -> None:
    """One partition, counted under the caller's lock, kept as a table of its own: one batch."""
    table = store.engine.dialect.identifier_preparer.format_table(store.table)
    name = _keeping_as(store, conn, part)
    witnesses = _witnesses(store, conn, _quote(conn, part.name), tally)
    # The ledger's begin row before the move (the ALTER commits by itself).
    store._before_commit(tally.batches + 1, tally.deleted + rows, approved, tally, witnesses)
    conn.exec_driver_sql(
        f"ALTER TABLE {table} CONVERT PARTITION {_quote(conn, part.name)} "
        f"TO TABLE {_kept_table(store, conn, name)}"
    )
    tally.committed(rows)
    log.info("%s: partition %s kept as %s (%d rows)", store.label, part.name, name, rows)


class MariaDBSwap:
    """The purge's swap table on MariaDB: one empty, unpartitioned table of the same columns,
    made once per purge (its name derives from the table's, so a purge that crashed leaves it
    where the next one finds it: rows still in it go back into the table first). For each
    partition: its rows swapped out (EXCHANGE PARTITION, atomic), counted there, all purgeable
    by the same predicate, the ledger told, then TRUNCATE deletes them (or they are swapped
    back); with a grace the swap table is renamed to the kept table's name instead, and a new
    one made. At the end the emptied partitions are dropped in one ALTER, with the table locked
    and each checked empty (a row written into one since keeps it, for the row purge)."""

    def __init__(self, store: SqlTableStore):
        self.store = store
        self.keep = store.config.partition_grace is not None
        prep = store.engine.dialect.identifier_preparer
        self.table = prep.format_table(store.table)
        digest = hashlib.sha256(store.table.fullname.encode()).hexdigest()[:12]
        self.swap_name = f"lifecycle_swap_{digest}"
        schema = store.table.schema
        self.swap = ".".join(prep.quote(p) for p in (schema, self.swap_name) if p)
        self.swap_table = f"{schema}.{self.swap_name}" if schema else self.swap_name
        self.emptied: list[str] = []
        self.conn = store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.swapped: SqlTableStore | None = None

    def __enter__(self) -> MariaDBSwap:
        from lifecycle.stores.sql import SqlTableStore

        conn = self.conn
        if self._exists():
            # An earlier purge stopped between a swap and its TRUNCATE: those rows are back
            # in the table before anything else (the row purge finds them again).
            conn.exec_driver_sql(f"INSERT INTO {self.table} SELECT * FROM {self.swap}")
            conn.exec_driver_sql(f"DROP TABLE {self.swap}")
        self._create()
        self.swapped = SqlTableStore(
            _with_table(self.store.policy, self.swap_table), self.store.engine
        )
        return self

    def _create(self) -> None:
        self.conn.exec_driver_sql(f"CREATE TABLE {self.swap} LIKE {self.table}")
        self.conn.exec_driver_sql(f"ALTER TABLE {self.swap} REMOVE PARTITIONING")

    def _exists(self) -> bool:
        # In the table's database, which need not be the connection's (SHOW TABLES's).
        return _exists(self.store, self.conn, self.swap_name)

    def drop(
        self, part: RangePartition, window: RetentionWindow, tally: Tally, approved: int
    ) -> int | None:
        store, conn, swapped = self.store, self.conn, self.swapped
        assert swapped is not None
        partition = _quote(conn, part.name)
        if window.holds:  # a partition with a held record is not even swapped out
            total, ok = _count(store, conn, part, store._purgeable(window))
            if total != ok:
                return None
        kept = _keeping_as(store, conn, part) if self.keep else None
        exchange = f"ALTER TABLE {self.table} EXCHANGE PARTITION {partition} WITH TABLE {self.swap}"
        conn.exec_driver_sql(exchange)
        try:
            moved: int | None = None
            with store.engine.begin() as tx:
                purgeable = swapped._purgeable(window)
                query = sa.select(sa.func.count(), sa.func.count(sa.case((purgeable, 1))))
                rows, ok = tx.execute(query.select_from(swapped.table)).one()
                if rows == ok:  # the ledger's begin row, the approval's ceiling: as any batch
                    witnesses = (
                        swapped._witnesses(tx, sa.true())
                        if tally.journal.wants_witnesses and store._opaque_key()
                        else None
                    )
                    moved = int(rows)
                    store._before_commit(
                        tally.batches + 1, tally.deleted + moved, approved, tally, witnesses
                    )
        except BaseException:
            conn.exec_driver_sql(exchange)  # the rows go back where they came from
            raise
        if moved is None:  # a NULL timestamp (kept in the first partition), a malformed one
            conn.exec_driver_sql(exchange)
            return None
        if kept is None:
            conn.exec_driver_sql(f"TRUNCATE TABLE {self.swap}")
            self.emptied.append(part.name)
            return moved
        # The swap table, the partition's rows in it, becomes the kept table; then a new one.
        # Named now: the grace counts from here (the name checked free before the swap).
        try:
            kept = _keeping_as(store, conn, part)
            conn.exec_driver_sql(f"RENAME TABLE {self.swap} TO {_kept_table(store, conn, kept)}")
        except BaseException:
            conn.exec_driver_sql(exchange)  # the rows go back where they came from
            raise
        self.emptied.append(part.name)
        log.info("%s: partition %s kept as %s (%d rows)", store.label, part.name, kept, moved)
        self._create()
        return moved

    def __exit__(self, *exc: object) -> None:
        conn = self.conn
        try:
            if self.emptied:
                self._drop_emptied()
        finally:
            try:
                # Never drop rows that are still in it (a swap back or a rename that failed):
                # they go back. (No swap table: it became a kept table, no new one made.)
                if self._exists():
                    if conn.exec_driver_sql(f"SELECT 1 FROM {self.swap} LIMIT 1").first():
                        conn.exec_driver_sql(f"INSERT INTO {self.table} SELECT * FROM {self.swap}")
                    conn.exec_driver_sql(f"DROP TABLE {self.swap}")
            finally:
                conn.close()

    def _drop_emptied(self) -> None:
        """The emptied partitions themselves, in one ALTER, those still empty (checked with
        the table locked: a late row keeps its partition, for the row purge)."""
        conn = self.conn
        conn.exec_driver_sql(f"LOCK TABLES {self.table} WRITE")
        try:
            empty = [
                name
                for name in self.emptied
                if conn.exec_driver_sql(
                    f"SELECT 1 FROM {self.table} PARTITION ({_quote(conn, name)}) LIMIT 1"
                ).first()
                is None
            ]
            if empty:
                names = ", ".join(_quote(conn, name) for name in empty)
                conn.exec_driver_sql(f"ALTER TABLE {self.table} DROP PARTITION {names}")
        finally:
            conn.exec_driver_sql("UNLOCK TABLES")


def _with_table(policy: Policy, table: str) -> Policy:
    return policy.model_copy(update={"store": policy.store.model_copy(update={"table": table})})


# -- the least-privilege procedure ---------------------------------------------------------------

REFUSED = "lifecycle refused"  # the procedure's messages (SIGNAL): a refusal ...
CHANGED = "lifecycle changed"  # ... or a partition that no longer holds the rows counted


def procedure_name(policy: Policy) -> str:
    return routine_name(policy)


def _period_parts(period: str) -> tuple[int, int, int]:
    """(months, days, seconds) of a calendar period, subtracted in that order as
    relativedelta subtracts them (`lifecycle.periods.compute_cutoff`)."""
    delta = parse_period(period)
    return (
        delta.years * 12 + delta.months,
        delta.days,
        delta.hours * 3600 + delta.minutes * 60 + delta.seconds,
    )


@lru_cache(maxsize=64)
def offset_range(zone: str) -> tuple[int, int]:
    """The lowest and highest UTC offset of `zone` (seconds) from 2000 to 2100: where MariaDB
    has no time zone tables, the procedure bounds the policy's wall clock with them."""
    tz = ZoneInfo(zone)
    moment, end, seen = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC), set()
    while moment < end:
        offset = moment.astimezone(tz).utcoffset()
        seen.add(int(offset.total_seconds()) if offset is not None else 0)
        moment += timedelta(days=7)  # no zone changes its offset for less than a week
    return min(seen), max(seen)


def procedure_sql(policy: Policy, role: str) -> list[str]:
    """What the table's owner runs (`lifecycle grants`, MariaDB) for a policy with
    `store.partitions: drop`: the procedure (SQL SECURITY DEFINER: it runs with its creator's
    rights), the role's right to call it, and LOCK TABLES in the databases of the table and
    of its link tables (the role locks them to count; it may lock only what it may read).

    `mode` 'drop' drops one partition, 'keep' (only if the policy has a `partition_grace` now:
    it is embedded, and named in the COMMENT that `procedure_of` reads) makes it a kept table;
    both under the caller's LOCK TABLES, for exactly the rows counted. 'kept' lists this
    policy's kept tables of the table (the role cannot see them); 'drop_kept' drops one of
    them, no other table, once the cutoff given has reached its `until` (`kept_until`).

    The latest cutoff it accepts is the wall clock in the policy's timezone minus the period,
    where MariaDB's time zone tables are loaded (CONVERT_TZ); else the UTC clock shifted by the
    zone's lowest offset, minus the period, minus its highest offset: never later than the
    policy's own (one hour earlier at most in Europe/Amsterdam, exact in UTC). A kept table's
    `until` is the clock plus the grace plus the zone's offset range (`grace_until`), and
    `drop_kept` wants the clock past it. The clock is the server's own: the procedure first
    resets the session's `timestamp`, which any caller may set (to the future: a later cutoff
    would pass). The CREATE is wrapped in DELIMITER lines, for the mysql client (`run_ddl` removes
    them)."""
    from lifecycle.stores.sql_config import SqlStore

    store = policy.store
    assert isinstance(store, SqlStore)
    schema, _, table = store.table.rpartition(".")

    def name(*parts: str) -> str:
        return ".".join(f"`{p}`" for p in parts if p)

    def quoted(variable: str) -> str:
        """CONCAT's arguments that quote the table named in `variable`, in the table's database."""
        database = f"'`{schema}`.`'" if schema else "'`'"
        return f"{database}, REPLACE({variable}, '`', '``'), '`'"

    proc, target = name(schema, procedure_name(policy)), name(schema, table)
    database = f"'{schema}'" if schema else "DATABASE()"
    column = (store.timestamp or "").lower()
    period, tz, grace = policy.retention.period, policy.timezone, store.partition_grace
    months, days, seconds = _period_parts(period)
    low, high = offset_range(tz)
    shift = f"- INTERVAL {months} MONTH - INTERVAL {days} DAY - INTERVAL {seconds} SECOND"
    months, days, seconds = _period_parts(grace) if grace else (0, 0, 0)
    lengthen = f"+ INTERVAL {months} MONTH + INTERVAL {days} DAY + INTERVAL {seconds} SECOND"
    prefix = kept_prefix(policy.name, store.table)
    run = "PREPARE lifecycle_stmt FROM @lifecycle_sql; EXECUTE lifecycle_stmt; " + (
        "DEALLOCATE PREPARE lifecycle_stmt;"
    )
    ours = f"""t.TABLE_SCHEMA = {database} AND t.TABLE_TYPE = 'BASE TABLE'
       AND LEFT(t.TABLE_NAME, {len(prefix)}) = BINARY '{prefix}' AND NOT EXISTS (
         SELECT 1 FROM information_schema.PARTITIONS p WHERE p.TABLE_SCHEMA = t.TABLE_SCHEMA
            AND p.TABLE_NAME = t.TABLE_NAME AND p.PARTITION_NAME IS NOT NULL)"""
    body = f"""
BEGIN
  DECLARE latest DATETIME(6);
  DECLARE kept_until DATETIME(6);
  DECLARE upper_bound DATETIME(6);
  DECLARE found VARCHAR(64);
  DECLARE method VARCHAR(64);
  DECLARE expr VARCHAR(1024);
  DECLARE bound VARCHAR(1024);
  DECLARE sub VARCHAR(64);
  DECLARE kind VARCHAR(64);
  DECLARE kept VARCHAR(255);
  DECLARE locked INT DEFAULT 0;
  DECLARE message VARCHAR(255);
  DECLARE grace VARCHAR(64) DEFAULT {f"'{grace}'" if grace else "NULL"};
  -- The real clock: a caller may have set its session's (SET timestamp needs no privilege).
  SET @@session.timestamp = DEFAULT;
  SET latest = CONVERT_TZ(CONVERT_TZ(UTC_TIMESTAMP(6), '+00:00', '{tz}') {shift}, '{tz}', '+00:00');
  IF latest IS NULL THEN  -- no time zone tables: the zone's offsets bound its wall clock
    SET latest = UTC_TIMESTAMP(6) + INTERVAL {low} SECOND {shift} - INTERVAL {high} SECOND;
  END IF;
  IF mode IS NULL OR mode NOT IN ('drop', 'keep', 'kept', 'drop_kept') THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{REFUSED}: mode is drop, keep, kept or drop_kept';
  END IF;
  IF mode = 'keep' AND grace IS NULL THEN
    SIGNAL SQLSTATE '45000'
      SET MESSAGE_TEXT = '{REFUSED}: keep: the policy had no partition_grace at lifecycle grants';
  END IF;
  IF mode = 'kept' THEN  -- the names of this policy's kept tables of {table}
    SELECT t.TABLE_NAME AS kept FROM information_schema.TABLES t WHERE {ours}
     ORDER BY t.TABLE_NAME;
  ELSEIF mode = 'drop_kept' THEN
    -- Only a table kept for this policy and table (its name's prefix: the role can create and
    -- rename no table), unpartitioned, once the clock has passed the `until` in its name.
    SELECT t.TABLE_NAME INTO found FROM information_schema.TABLES t
     WHERE t.TABLE_NAME = part AND {ours}
     LIMIT 1;
    IF found IS NULL OR SUBSTRING(found, {len(prefix) + 1}, 15) NOT REGEXP '^[0-9]{{14}}_$' THEN
      SIGNAL SQLSTATE '45000'
        SET MESSAGE_TEXT = '{REFUSED}: not a partition of {table} kept for this policy';
    END IF;
    SET kept_until = STR_TO_DATE(SUBSTRING(found, {len(prefix) + 1}, 14), '{_UNTIL_SQL}');
    IF kept_until IS NULL OR kept_until > UTC_TIMESTAMP(6) THEN
      SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{REFUSED}: kept partition still in its grace';
    END IF;
    SET @lifecycle_rows = NULL;
    SET @lifecycle_sql = CONCAT('SELECT COUNT(*) INTO @lifecycle_rows FROM ', {quoted("found")});
    {run}
    SET @lifecycle_sql = CONCAT('DROP TABLE ', {quoted("found")});
    {run}
    SELECT @lifecycle_rows AS dropped;
  ELSE  -- drop, keep: a partition of the table, with a cutoff no later than the clock allows
  IF cutoff IS NULL OR cutoff > latest THEN
    SIGNAL SQLSTATE '45000'
      SET MESSAGE_TEXT = '{REFUSED}: cutoff after now minus the period {period}';
  END IF;
  IF mode = 'drop' AND grace IS NOT NULL THEN  -- the grace the owner built in is not skipped
    SIGNAL SQLSTATE '45000'
      SET MESSAGE_TEXT = '{REFUSED}: drop: this policy keeps partitions for {grace or ""}';
  END IF;
  SELECT p.PARTITION_NAME, p.PARTITION_METHOD, LOWER(REPLACE(p.PARTITION_EXPRESSION, '`', '')),
         p.PARTITION_DESCRIPTION, p.SUBPARTITION_NAME, t.TABLE_TYPE
    INTO found, method, expr, bound, sub, kind
    FROM information_schema.PARTITIONS p JOIN information_schema.TABLES t
      ON t.TABLE_SCHEMA = p.TABLE_SCHEMA AND t.TABLE_NAME = p.TABLE_NAME
   WHERE p.TABLE_SCHEMA = {database} AND p.TABLE_NAME = '{table}' AND p.PARTITION_NAME = part
   LIMIT 1;
  IF found IS NULL OR sub IS NOT NULL OR kind <> 'BASE TABLE' THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{REFUSED}: not a partition of {table}';
  END IF;
  -- The bound as lifecycle.stores.sql_partitions_mariadb reads it (naive UTC).
  IF bound <> 'MAXVALUE' THEN
    IF method = 'RANGE COLUMNS' AND expr = '{column}' THEN
      SET upper_bound = CAST(TRIM(BOTH '''' FROM bound) AS DATETIME(6));
    ELSEIF method = 'RANGE' AND expr = 'to_days({column})' THEN
      SET upper_bound = CAST(FROM_DAYS(CAST(bound AS SIGNED)) AS DATETIME(6));
    ELSEIF method = 'RANGE' AND expr = 'unix_timestamp({column})' THEN
      SET upper_bound = CAST('1970-01-01' AS DATETIME(6)) + INTERVAL CAST(bound AS SIGNED) SECOND;
    END IF;
  END IF;
  IF upper_bound IS NULL OR upper_bound > cutoff THEN
    SIGNAL SQLSTATE '45000'
      SET MESSAGE_TEXT = '{REFUSED}: not a range partition on {column} ending by the cutoff';
  END IF;
  -- Only under the caller's LOCK TABLES (an alias it did not lock fails with 1100), the
  -- table write-locked (the ALTER needs it): nothing changes between the count and the drop.
  BEGIN
    DECLARE CONTINUE HANDLER FOR 1100 SET locked = 1;
    DO (SELECT 1 FROM {target} AS lifecycle_lock_probe LIMIT 1);
  END;
  IF locked = 0 THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{REFUSED}: call it with LOCK TABLES {table} WRITE';
  END IF;
  SET @lifecycle_rows = NULL;
  SET @lifecycle_sql = CONCAT('SELECT COUNT(*) INTO @lifecycle_rows FROM {target} PARTITION (`',
                              REPLACE(found, '`', '``'), '`)');
  {run}
  IF expected IS NULL OR @lifecycle_rows <> expected THEN
    SET message = CONCAT('{CHANGED}: the partition holds ', @lifecycle_rows, ' rows, ',
                         COALESCE(expected, 'none'), ' counted');
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = message;
  END IF;
  IF mode = 'keep' THEN
    -- Until when: from the clock, never from the caller; the grace from now at least,
    -- whatever the zone's offsets (as grace_until computes it).
    SET kept_until = UTC_TIMESTAMP(6) {lengthen} + INTERVAL {high - low} SECOND;
    IF MICROSECOND(kept_until) > 0 THEN  -- up to the second, as the name holds it
      SET kept_until = kept_until - INTERVAL MICROSECOND(kept_until) MICROSECOND
                       + INTERVAL 1 SECOND;
    END IF;
    SET kept = CONCAT('{prefix}', DATE_FORMAT(kept_until, '{_UNTIL_SQL}'), '_', found);
    IF CHAR_LENGTH(kept) > {NAME_LIMIT} THEN  -- never cut: two cut names could be one
      SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{REFUSED}: partition name too long to keep';
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.TABLES t
                WHERE t.TABLE_SCHEMA = {database} AND t.TABLE_NAME = kept) THEN
      SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{REFUSED}: the kept table exists already';
    END IF;
    SET @lifecycle_sql = CONCAT('ALTER TABLE {target} CONVERT PARTITION `',
                                REPLACE(found, '`', '``'), '` TO TABLE ', {quoted("kept")});
  ELSE
    SET @lifecycle_sql = CONCAT('ALTER TABLE {target} DROP PARTITION `',
                                REPLACE(found, '`', '``'), '`');
  END IF;
  {run}
  SELECT @lifecycle_rows AS dropped;
  END IF;  -- drop, keep
END"""
    create = (
        f"CREATE PROCEDURE {proc}(IN part VARCHAR(64), IN cutoff DATETIME(6), IN expected BIGINT, "
        f"IN mode VARCHAR(16)) MODIFIES SQL DATA SQL SECURITY DEFINER COMMENT 'lifecycle: "
        f"drops or keeps expired partitions of {table} (policy {policy.name}, partition_grace "
        f"{grace or 'unset'})'{body}"
    )
    databases = sorted({schema} | {t.rpartition(".")[0] for t in store.link_tables()})
    return [
        f"DROP PROCEDURE IF EXISTS {proc}",
        f"DELIMITER $$\n{create}$$\nDELIMITER ",
        f"GRANT EXECUTE ON PROCEDURE {proc} TO '{role}'",
        *(f"GRANT LOCK TABLES ON {f'{name(db)}.*' if db else '*'} TO '{role}'" for db in databases),
    ]


@dataclass(frozen=True)
class Procedure:
    """The policy's procedure: its quoted name (schema-qualified where the table is), its
    number of parameters (3: made before partitions could be kept) and the `partition_grace`
    it keeps partitions for (None: it keeps none)."""

    name: str
    parameters: int
    grace: str | None


_MADE_FOR = re.compile(r"\(policy \S+, partition_grace (\S+)\)$")


def procedure_of(conn: sa.Connection, store: SqlTableStore) -> Procedure | None:
    """The policy's procedure, if its owner created it and the role may call it."""
    found = conn.execute(
        sa.text(
            "SELECT r.ROUTINE_COMMENT, (SELECT COUNT(*) FROM information_schema.PARAMETERS p "
            "WHERE p.SPECIFIC_SCHEMA = r.ROUTINE_SCHEMA AND p.SPECIFIC_NAME = r.ROUTINE_NAME "
            "AND p.ROUTINE_TYPE = 'PROCEDURE' AND p.ORDINAL_POSITION > 0) "
            "FROM information_schema.ROUTINES r WHERE r.ROUTINE_TYPE = 'PROCEDURE' "
            "AND r.ROUTINE_SCHEMA = COALESCE(:schema, DATABASE()) AND r.ROUTINE_NAME = :name"
        ),
        {"schema": store.table.schema, "name": procedure_name(store.policy)},
    ).first()
    if found is None:
        return None
    comment, parameters = found[0] or "", int(found[1])
    made_for = _MADE_FOR.search(comment) if parameters >= 4 else None
    grace = made_for[1] if made_for is not None and made_for[1] != "unset" else None
    parts = (store.table.schema, procedure_name(store.policy))
    return Procedure(".".join(_quote(conn, p) for p in parts if p), parameters, grace)


def _locks(store: SqlTableStore) -> str:
    """LOCK TABLES' list: the table for writing, each link table for reading under the alias
    the purge's predicate gives it (`SubjectMatcher`: LOCK TABLES locks names, not tables)."""
    prep = store.engine.dialect.identifier_preparer
    locks = [f"{prep.format_table(store.table)} WRITE"]
    for links in store.subjects.links.values():
        for link in links:
            for hop in link.hops:
                table = prep.format_table(hop.table.element)
                locks.append(f"{table} AS {prep.quote(hop.table.name)} READ")
    return ", ".join(dict.fromkeys(locks))


def _drop_one(
    store: SqlTableStore,
    conn: sa.Connection,
    part: RangePartition,
    condition: sa.ColumnElement[bool],
    tally: Tally,
    approved: int,
    procedure: Procedure,
) -> int | None:
    """One partition under the caller's lock: the rows it dropped (or kept, with a grace), or
    None where a record in it may not go (held, a NULL or malformed timestamp): then the row
    purge takes it."""
    total, ok = _count(store, conn, part, condition)
    if total != ok:
        log.info(
            "%s: a partition before the cutoff keeps %d records that may not go: row-purged "
            "instead",
            store.label,
            total - ok,
        )
        return None
    witnesses = _witnesses(store, conn, _quote(conn, part.name), tally)
    # The ledger's begin row before the drop (the ALTER commits by itself).
    store._before_commit(tally.batches + 1, tally.deleted + total, approved, tally, witnesses)
    assert part.upper is not None  # a candidate: its bound is at or before the cutoff
    keep = store.config.partition_grace is not None
    # A procedure of an earlier `lifecycle grants` has no mode: it drops (never with a grace:
    # `refuse_unkeepable`).
    mode = ", :mode" if procedure.parameters >= 4 else ""
    rows = conn.execute(
        sa.text(f"CALL {procedure.name}(:part, :cutoff, :expected{mode})"),
        {
            "part": part.name,
            # Its own bound as the cutoff: what the procedure checks against the clock is when
            # the partition's last possible row expired.
            "cutoff": part.upper.astimezone(UTC).replace(tzinfo=None),
            "expected": total,
            "mode": "keep" if keep else "drop",
        },
    ).scalar_one()
    if keep:
        log.info("%s: partition %s kept (%d rows)", store.label, part.name, rows)
    return int(rows)


def drop_through_procedure(
    store: SqlTableStore,
    parts: list[RangePartition],
    purgeable: LivePurgeable,
    tally: Tally,
    approved: int,
    procedure: Procedure,
) -> list[tuple[RangePartition, int]]:
    """Each partition one batch: the holds read again (the predicate is built before the lock:
    it reads the holds' stored phone spellings on another connection), then with the table
    locked against writes (and its link tables against changes), counted with the purge's
    predicate, every row purgeable or it stays; the ledger told; then the procedure drops it
    (or keeps it, with a grace), checking the count."""
    dropped: list[tuple[RangePartition, int]] = []
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for part in parts:
            condition = purgeable.now()  # a hold placed meanwhile protects from this batch on
            conn.exec_driver_sql(f"LOCK TABLES {_locks(store)}")
            try:
                rows = _drop_one(store, conn, part, condition, tally, approved, procedure)
            finally:
                conn.exec_driver_sql("UNLOCK TABLES")
            if rows is not None:
                tally.committed(rows)
                dropped.append((part, rows))
    return dropped
