"""What differs between databases for the SQL store, one small class per database (as
Airflow's common-sql `Dialect`): how a cutoff is bound, which stored values compare as times at
all, and what to do after a mass delete. The store asks its dialect; it never tests a name."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

log = logging.getLogger(__name__)

_SQLITE_SECONDS = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"


def sqlite_timestamp_text(instant: datetime) -> str:
    """An instant as SQLite stores timestamps (UTC text; SQLAlchemy's and datetime()'s format).

    Without fraction when it has none: '... 23:00:00' sorts before '... 23:00:00.000000', so a
    whole-second cutoff keeps a row stored at exactly that second in either format.
    """
    naive = instant.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(sep=" ", timespec="microseconds" if naive.microsecond else "seconds")


class Dialect:
    """PostgreSQL, MariaDB/MySQL and others: typed timestamp columns, bound as such."""

    def cutoff(self, column: sa.ColumnElement[Any], cutoff: datetime) -> sa.ColumnElement[Any]:
        """A cutoff as a bind parameter compared like with like with `column`."""
        if getattr(column.type, "timezone", False):
            return sa.bindparam(None, cutoff.astimezone(UTC), type_=column.type)
        # A naive column is UTC by contract; the session time zone is UTC too.
        return sa.bindparam(None, cutoff.astimezone(UTC).replace(tzinfo=None), type_=column.type)

    def cutoff_in_case(
        self, column: sa.ColumnElement[Any], cutoff: datetime
    ) -> sa.ColumnElement[Any]:
        """A cutoff as one branch of the per-tenant CASE."""
        return self.cutoff(column, cutoff)

    def malformed(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool] | None:
        """Stored values that are no time (never expired, reported); None: the type sees to it."""
        return None

    def before(
        self, column: sa.ColumnElement[Any], threshold: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[bool]:
        return column < threshold

    def refresh_statistics(self, engine: sa.Engine, table: sa.Table, label: str) -> None:
        """Before the verification's count, where a mass delete left the table's statistics
        stale (the count should use an index)."""

    def heap_layout(self, conn: sa.Connection, table: sa.Table) -> tuple[int, float] | None:
        """The table's pages now and its live rows per page, where a purge can walk it in
        physical order (`lifecycle.stores.sql_walk`); None: key ranges only."""
        return None

    def storage_order(
        self, conn: sa.Connection, table: sa.Table, key: sa.Column[Any]
    ) -> sa.ColumnElement[Any] | None:
        """A column whose order is the rows' storage order, for the keyed sweep's batches to
        step through where the key's order is not (SQLite's rowid); None: step through the key
        (PostgreSQL walks its heap instead; InnoDB stores rows in primary-key order)."""
        return None

    def residue(self, conn: sa.Connection, table: sa.Table) -> dict[str, Any]:
        """What deleted rows leave in the database beside the live ones (dead tuples, history
        rows, free pages), as counts for the audit row; {} where nothing is known."""
        return {}

    def overwrite_deleted(self, conn: sa.Connection) -> None:
        """Inside a purge batch's transaction, before its DELETE, where the policy removes its
        residue: have the database overwrite what it deletes, where it can be asked to."""

    def remove_residue(
        self,
        engine: sa.Engine,
        table: sa.Table,
        found: dict[str, Any],
        purgeable: sa.ColumnElement[bool],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Remove the residue `found` (`store.residue: remove`), never a version of a record
        that is not `purgeable`; returns (what was removed, the residue after), as counts.
        Raises ResidueNotRemoved, or a DBAPIError, when it cannot."""
        raise ResidueNotRemoved(
            "NotSupported", f"no residue removal for {engine.dialect.name} tables"
        )

    def tid_between(
        self, table: sa.Table, lower: tuple[int, int], upper: tuple[int, int] | None
    ) -> sa.ColumnElement[bool]:
        """The rows stored from (block, offset) `lower` up to, not including, `upper` (None:
        to the end of the table)."""
        raise NotImplementedError

    def rows_per_block_group(
        self, conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool], width: int
    ) -> list[tuple[int, int]]:
        """(group, rows of `where` in it), the blocks in groups of `width` (group g: blocks
        g*width up to (g+1)*width), in block order; groups without such rows left out."""
        raise NotImplementedError

    def last_offset(self, conn: sa.Connection, table: sa.Table, block: int) -> int:
        """The highest line pointer of `block` that holds a row (0: none)."""
        raise NotImplementedError

    def key_bounds(
        self, conn: sa.Connection, where: sa.ColumnElement[bool], key: sa.Column[Any]
    ) -> tuple[Any, Any]:
        """The lowest and highest key of the rows of `where` in a walked range."""
        raise NotImplementedError


class PostgreSQLDialect(Dialect):
    def residue(self, conn: sa.Connection, table: sa.Table) -> dict[str, Any]:
        """Dead tuples: a deleted row stays in its page until VACUUM (autovacuum, or the table's
        owner: before PostgreSQL 17 nobody else may), as the statistics say."""
        dead = conn.execute(
            sa.text(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = CAST(:name AS regclass)"
            ),
            {"name": _POSTGRESQL.identifier_preparer.format_table(table)},
        ).scalar()
        return {"dead_tuples": int(dead or 0), "removed_by": "VACUUM (autovacuum or the owner)"}

    def remove_residue(
        self,
        engine: sa.Engine,
        table: sa.Table,
        found: dict[str, Any],
        purgeable: sa.ColumnElement[bool],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """VACUUM the table (outside a transaction, as it must run), with INDEX_CLEANUP ON: by
        default VACUUM may leave the index entries of a few dead rows, and an index entry holds
        the indexed values. A role that may not VACUUM gets a warning from PostgreSQL, not an
        error, and nothing is removed: asked first, and told as an error here. Dead tuples
        are the garbage of deleted and updated rows, which no query can read: none is a record
        in its window."""
        name = _POSTGRESQL.identifier_preparer.format_table(table)
        version = engine.dialect.server_version_info or (0,)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            version = conn.dialect.server_version_info or version
            check = _MAY_MAINTAIN if version >= (17,) else _MAY_VACUUM_BEFORE_17
            if not conn.execute(sa.text(check), {"name": name}).scalar():
                raise ResidueNotRemoved(
                    "InsufficientPrivilege",
                    f"VACUUM of {table.name} needs "
                    + (
                        "the MAINTAIN privilege on it (lifecycle grants)"
                        if version >= (17,)
                        else "its owner before PostgreSQL 17 (no grant gives it alone)"
                    )
                    + "; its dead tuples stay until autovacuum",
                )
            options = " (INDEX_CLEANUP ON)" if version >= (12,) else ""
            conn.exec_driver_sql(f"VACUUM{options} {name}")
        with engine.connect() as conn:  # a new snapshot of the statistics VACUUM wrote
            after = self.residue(conn, table)
        removed = max(int(found.get("dead_tuples", 0)) - after["dead_tuples"], 0)
        return {"dead_tuples": removed, "by": f"VACUUM{options}"}, after

    def cutoff_in_case(
        self, column: sa.ColumnElement[Any], cutoff: datetime
    ) -> sa.ColumnElement[Any]:
        # Rendered with literal values for the verification, a CASE of quoted strings reads as
        # text in PostgreSQL: cast them to the column's type.
        utc = cutoff.astimezone(UTC)
        if not getattr(column.type, "timezone", False):
            utc = utc.replace(tzinfo=None)
        text = sa.bindparam(None, utc.isoformat(sep=" "), type_=sa.String)
        return sa.cast(text, column.type)

    def refresh_statistics(self, engine: sa.Engine, table: sa.Table, label: str) -> None:
        """ANALYZE where autovacuum would (more rows changed since the last one than 50 and a
        tenth of the table), without waiting for it: after a mass delete the verification's
        count would otherwise scan the table. Not on a quiet day's table (an ANALYZE reads up
        to 30,000 pages); of a partitioned table, the partitions whose statistics are stale
        (those the purge deleted in), never the whole tree. Best effort: a least-privilege role
        may not be allowed to."""
        name = engine.dialect.identifier_preparer.format_table(table)
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                stale = conn.execute(
                    sa.text(
                        "SELECT CAST(t.relid AS regclass)::text FROM pg_partition_tree("
                        "CAST(:name AS regclass)) t JOIN pg_class c ON c.oid = t.relid "
                        "LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid "
                        "WHERE t.isleaf AND c.relkind = 'r' AND (s.n_mod_since_analyze IS NULL "
                        "OR s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0))"
                    ),
                    {"name": name},
                ).scalars()
                for relation in list(stale):  # never analyzed, or stale
                    conn.exec_driver_sql(f"ANALYZE {relation}")
        except sa.exc.DBAPIError as exc:
            log.warning("%s: ANALYZE skipped (%s)", label, type(exc.orig).__name__)

    def heap_layout(self, conn: sa.Connection, table: sa.Table) -> tuple[int, float] | None:
        """An ordinary table on PostgreSQL 14+ (TID range scans): its size in blocks from
        pg_relation_size, its rows per page from pg_class (reltuples/relpages), or counted in
        its first blocks when it was never analyzed. Partitioned tables, views and foreign
        tables: None (the ctid of a partitioned table's rows is per partition)."""
        if (conn.dialect.server_version_info or (0,)) < (14,):
            return None
        name = conn.dialect.identifier_preparer.format_table(table)
        row = conn.execute(
            sa.text(
                "SELECT c.relkind, c.reltuples, c.relpages, pg_relation_size(c.oid) "
                "/ current_setting('block_size')::bigint FROM pg_class c "
                "WHERE c.oid = CAST(:name AS regclass)"
            ),
            {"name": name},
        ).one()
        kind, tuples, pages, blocks = row
        if kind != "r" or not blocks:
            return None
        if tuples > 0 and pages > 0:
            return int(blocks), float(tuples) / pages
        sample = min(int(blocks), 16)
        counted = conn.execute(
            sa.select(sa.func.count())
            .select_from(table)
            .where(self.tid_between(table, (0, 0), (sample, 0)))
        ).scalar_one()
        return int(blocks), max(float(counted), 1.0) / sample

    def tid_between(
        self, table: sa.Table, lower: tuple[int, int], upper: tuple[int, int] | None
    ) -> sa.ColumnElement[bool]:
        # Literal TIDs (integers of ours): every batch gets a plan for its own range, never a
        # generic plan of a prepared statement that cannot know the range is a few pages.
        ctid = _ctid(table)
        low = ctid >= sa.literal_column(f"'({int(lower[0])},{int(lower[1])})'::tid")
        if upper is None:
            return low
        return sa.and_(low, ctid < sa.literal_column(f"'({int(upper[0])},{int(upper[1])})'::tid"))

    def rows_per_block_group(
        self, conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool], width: int
    ) -> list[tuple[int, int]]:
        # A tid has no block accessor before PostgreSQL 17: through its text, as a point.
        group: sa.ColumnElement[Any] = sa.literal_column(
            f"(({_ctid(table)})::text::point)[0]::bigint / {int(width)}"
        )
        query = (
            sa.select(group, sa.func.count())
            .select_from(table)
            .where(where)
            .group_by(group)
            .order_by(group)
        )
        return [(int(g), int(n)) for g, n in conn.execute(query)]

    def last_offset(self, conn: sa.Connection, table: sa.Table, block: int) -> int:
        in_block = self.tid_between(table, (block, 0), (block + 1, 0))
        query = sa.select(sa.func.max(_ctid(table))).where(in_block)
        last = conn.execute(query.select_from(table)).scalar()  # '(block,offset)', a text
        return 0 if last is None else int(str(last).strip("()").split(",")[1])

    def key_bounds(
        self, conn: sa.Connection, where: sa.ColumnElement[bool], key: sa.Column[Any]
    ) -> tuple[Any, Any]:
        """The lowest and highest key of the rows of `where` (None, None: no rows), in one
        read of the range as it is stored: min() and max() of an expression, so that the
        planner cannot turn them into a walk of the key's index from one end (a bigint key that
        follows time would walk every earlier key first). A uuid compares as its text in byte
        order, which is its own order (PostgreSQL has no min(uuid))."""
        as_text = sa.cast(key, sa.Text).collate("C")
        value: sa.ColumnElement[Any] = key + 0 if key.type.python_type is int else as_text
        query = sa.select(sa.func.min(value), sa.func.max(value)).where(where)
        lowest, highest = conn.execute(query).one()
        return lowest, highest


_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]

# Who may VACUUM a table: before PostgreSQL 17 its owner (or a member of the owning role), a
# superuser, or the database's owner (not for shared catalogs); from 17 the MAINTAIN privilege.
_MAY_VACUUM_BEFORE_17 = (
    "SELECT pg_has_role(c.relowner, 'USAGE') OR (NOT c.relisshared AND pg_has_role(d.datdba, "
    "'USAGE')) FROM pg_class c JOIN pg_database d ON d.datname = current_database() "
    "WHERE c.oid = CAST(:name AS regclass)"
)
_MAY_MAINTAIN = "SELECT has_table_privilege(CAST(:name AS regclass), 'MAINTAIN')"


class ResidueNotRemoved(RuntimeError):
    """The residue could not be removed: `kind` is a class of error (InsufficientPrivilege),
    the message names the table and what it needs, never a value."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _ctid(table: sa.Table) -> sa.ColumnElement[Any]:
    return sa.literal_column(f"{_POSTGRESQL.identifier_preparer.format_table(table)}.ctid")


class SQLiteDialect(Dialect):
    """SQLite keeps timestamps as text: compare text with text, and only text in the one format
    whose text order is time order."""

    def storage_order(
        self, conn: sa.Connection, table: sa.Table, key: sa.Column[Any]
    ) -> sa.ColumnElement[Any] | None:
        """A rowid table is a B-tree on its rowid: batches of rowid ranges read contiguous
        pages whatever the key (a UUID, a phone number as text). Not where the key is the
        rowid itself (INTEGER PRIMARY KEY), nor in a WITHOUT ROWID table (stored by its key)."""
        if [c.name for c in table.primary_key.columns] == [key.name] and isinstance(
            key.type, sa.Integer
        ):
            return None  # INTEGER PRIMARY KEY: the rowid under another name
        definition = conn.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
            {"name": table.name},
        ).scalar()
        if definition is None or "WITHOUT ROWID" in " ".join(str(definition).upper().split()):
            return None
        quoted = conn.dialect.identifier_preparer.format_table(table)
        return sa.literal_column(f"{quoted}.rowid", type_=sa.Integer)

    def residue(self, conn: sa.Connection, table: sa.Table) -> dict[str, Any]:
        """Free pages of the database file keep deleted rows' bytes unless `secure_delete`
        overwrites them (or a VACUUM rewrites the file)."""
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar()
        secure = conn.exec_driver_sql("PRAGMA secure_delete").scalar()
        return {"free_pages": int(free or 0), "secure_delete": bool(secure)}

    def overwrite_deleted(self, conn: sa.Connection) -> None:
        """The deleted rows' bytes overwritten with zeros in their pages as they are deleted,
        whatever the build's default (a per-connection setting)."""
        conn.exec_driver_sql("PRAGMA secure_delete = ON")

    def remove_residue(
        self,
        engine: sa.Engine,
        table: sa.Table,
        found: dict[str, Any],
        purgeable: sa.ColumnElement[bool],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """VACUUM rebuilds the database file without its free pages (which may hold the bytes
        of rows deleted before secure_delete was on). It rewrites the whole file, every table,
        and needs no other connection to be writing."""
        if not found.get("free_pages"):
            return {"free_pages": 0}, found
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
            conn.exec_driver_sql("VACUUM")
            if str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal":
                # The WAL keeps the old pages until a checkpoint.
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            after = self.residue(conn, table)
        return {"free_pages": int(found["free_pages"]) - after["free_pages"], "by": "VACUUM"}, after

    def cutoff(self, column: sa.ColumnElement[Any], cutoff: datetime) -> sa.ColumnElement[Any]:
        return sa.bindparam(None, sqlite_timestamp_text(cutoff), type_=sa.String)

    @staticmethod
    def well_formed(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        """UTC text as 'YYYY-MM-DD HH:MM:SS' or with six fraction digits (SQLite's datetime()
        and SQLAlchemy's formats). An offset, a 'T' or a number would compare wrongly, so such
        values are never deleted and are reported."""
        return sa.or_(
            column.op("GLOB")(_SQLITE_SECONDS),
            column.op("GLOB")(_SQLITE_SECONDS + "." + "[0-9]" * 6),
        )

    def malformed(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool] | None:
        return sa.and_(column.is_not(None), sa.not_(self.well_formed(column)))

    def before(
        self, column: sa.ColumnElement[Any], threshold: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[bool]:
        return sa.and_(self.well_formed(column), column < threshold)


class MariaDBDialect(Dialect):
    def residue(self, conn: sa.Connection, table: sa.Table) -> dict[str, Any]:
        """A system-versioned table keeps every deleted row as history until `DELETE HISTORY`;
        other tables leave nothing a reader can count."""
        kind = conn.execute(
            sa.text(
                "SELECT TABLE_TYPE FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name"
            ),
            {"schema": table.schema, "name": table.name},
        ).scalar()
        if kind != "SYSTEM VERSIONED":
            return {}
        name = conn.dialect.identifier_preparer.format_table(table)
        every = conn.execute(sa.text(f"SELECT COUNT(*) FROM {name} FOR SYSTEM_TIME ALL")).scalar()
        live = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
        return {
            "history_rows": int(every or 0) - int(live or 0),
            "removed_by": "DELETE HISTORY (needs the DELETE HISTORY privilege)",
        }

    def remove_residue(
        self,
        engine: sa.Engine,
        table: sa.Table,
        found: dict[str, Any],
        purgeable: sa.ColumnElement[bool],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """`DELETE HISTORY ... BEFORE SYSTEM_TIME t` removes every version that ended before t,
        whatever it holds: the deleted rows' last versions, but also earlier versions of
        records still live, in their window or under a hold, which must stay. So t is now, or
        the end of the first version that is not `purgeable` (read on the version itself),
        whichever comes first: that version and all history after it are kept. One
        transaction: the versions are read with a locking read (a writer in flight is waited
        for, a new one waits), then deleted."""
        if "history_rows" not in found:  # not system-versioned: InnoDB purges by itself
            return {}, found
        if not found["history_rows"]:
            return {"history_rows": 0}, found
        name = engine.dialect.identifier_preparer.format_table(table)
        with engine.begin() as conn:
            row_end = self._row_end(conn, table, name)
            now = conn.execute(sa.text("SELECT NOW(6)")).scalar_one()
            versions = (
                sa.select(sa.func.count(), sa.func.min(sa.case((sa.not_(purgeable), row_end))))
                .select_from(table)
                .where(row_end < now)
                .with_hint(table, "FOR SYSTEM_TIME ALL")
                .with_for_update(read=True)
            )
            ended, first_kept = conn.execute(versions).one()
            before = now if first_kept is None else first_kept
            removed = conn.execute(
                sa.text(f"DELETE HISTORY FROM {name} BEFORE SYSTEM_TIME :before"),
                {"before": before},
            ).rowcount
        with engine.connect() as conn:
            after = self.residue(conn, table)
        done: dict[str, Any] = {"history_rows": int(removed), "by": "DELETE HISTORY"}
        if first_kept is not None:
            done["kept_history_rows"] = int(ended) - int(removed)
            done["kept_because"] = (
                "DELETE HISTORY cannot spare one version: kept from the first version of a "
                "record inside its window or under a hold on"
            )
        return done, after

    @staticmethod
    def _row_end(conn: sa.Connection, table: sa.Table, name: str) -> sa.ColumnElement[Any]:
        """The column that ends a version: declared (`GENERATED ALWAYS AS ROW END`), or the
        implicit ROW_END."""
        declared = conn.execute(
            sa.text(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name "
                "AND GENERATION_EXPRESSION = 'ROW END'"
            ),
            {"schema": table.schema, "name": table.name},
        ).scalar()
        column = "ROW_END" if declared is None else conn.dialect.identifier_preparer.quote(declared)
        return sa.literal_column(f"{name}.{column}")


def dialect_of(engine: sa.Engine) -> Dialect:
    kinds: dict[str, type[Dialect]] = {
        "postgresql": PostgreSQLDialect,
        "sqlite": SQLiteDialect,
        "mysql": MariaDBDialect,
        "mariadb": MariaDBDialect,
    }
    return kinds.get(engine.dialect.name, Dialect)()
