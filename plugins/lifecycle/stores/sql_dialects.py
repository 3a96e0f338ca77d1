"""What differs between databases for the SQL store, one small class per database (as
Airflow's common-sql `Dialect`): how a cutoff is bound, which stored values compare as times at
all, and what to do after a mass delete. The store asks its dialect; it never tests a name."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

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
        """After a mass delete (the verification's count should use an index)."""


class PostgreSQLDialect(Dialect):
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
        """Its statistics are stale after a mass delete and the verification's count scans the
        table; ANALYZE makes it an index lookup. Best effort: a least-privilege role may not
        be allowed to."""
        name = engine.dialect.identifier_preparer.format_table(table)
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text(f"ANALYZE {name}"))
        except sa.exc.DBAPIError as exc:
            log.warning("%s: ANALYZE skipped (%s)", label, type(exc.orig).__name__)


class SQLiteDialect(Dialect):
    """SQLite keeps timestamps as text: compare text with text, and only text in the one format
    whose text order is time order."""

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


def dialect_of(engine: sa.Engine) -> Dialect:
    return {"postgresql": PostgreSQLDialect, "sqlite": SQLiteDialect}.get(
        engine.dialect.name, Dialect
    )()
