"""Relational tables through SQLAlchemy 2.x Core (SQLite, PostgreSQL, MariaDB/MySQL, ...).

Deletion walks the primary key in ranges of `batch_size` keys: each batch finds the key that ends
its range (an index-only walk), deletes the expired rows inside the range and commits. Range
predicates keep the database on its primary-key index (PostgreSQL plans `IN (SELECT ... LIMIT)`
as a hash join over the whole table), any orderable key type works, and a crashed purge resumes
simply by being run again: finished batches are gone, the rest is found again.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from lifecycle.stores import (
    Plan,
    PurgeLimitExceeded,
    PurgeResult,
    RetentionStore,
    StoreConfigError,
    Verification,
)

log = logging.getLogger(__name__)

_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "sqlite": "sqlite",
}
PROGRESS_EVERY_SECONDS = 5.0


def url_from_connection(connection: Any) -> URL:
    """SQLAlchemy URL of an Airflow connection (its extra may set `sqlalchemy_scheme` and
    `sqlalchemy_query`)."""
    extra = connection.extra_dejson or {}
    conn_type = (connection.conn_type or "").lower()
    if conn_type == "sqlite":
        # sqlite:////abs/path.db parses to host '' and schema '/abs/path.db'; the JSON form
        # puts the path in host.
        return URL.create("sqlite", database=connection.host or connection.schema)
    driver = extra.get("sqlalchemy_scheme") or _DRIVERS.get(conn_type)
    if driver is None:
        raise StoreConfigError(
            f"connection {connection.conn_id!r}: type {conn_type!r} is not a supported SQL "
            f"database (supported: {', '.join(sorted(_DRIVERS))}; or set sqlalchemy_scheme)"
        )
    return URL.create(
        driver,
        username=connection.login or None,
        password=connection.password or None,
        host=connection.host or None,
        port=connection.port or None,
        database=connection.schema or None,
        query=extra.get("sqlalchemy_query") or {},
    )


def _session_utc_kwargs(url: URL) -> dict[str, Any]:
    """Engine options that make the session time zone UTC, so naive timestamps compare as UTC."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        return {"connect_args": {"options": "-c TimeZone=UTC"}}
    if backend in ("mysql", "mariadb"):
        return {"connect_args": {"init_command": "SET time_zone = '+00:00'"}}
    return {}


def create_engine(url: URL | str) -> Engine:
    url = sa.make_url(url)
    return sa.create_engine(url, pool_pre_ping=True, **_session_utc_kwargs(url))


def sqlite_timestamp_text(instant: datetime) -> str:
    """An instant as SQLite stores timestamps (UTC text; SQLAlchemy's and datetime()'s format).

    Without fraction when it has none: '... 23:00:00' sorts before '... 23:00:00.000000', so a
    whole-second cutoff keeps a row stored at exactly that second in either format.
    """
    naive = instant.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(sep=" ", timespec="microseconds" if naive.microsecond else "seconds")


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


class SqlTableStore(RetentionStore):
    def __init__(self, config: Any, engine: Engine, *, label: str | None = None):
        self.config = config
        self.engine = engine
        self.label = label or config.table
        schema, _, name = config.table.rpartition(".")
        try:
            self.table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=engine)
        except sa.exc.NoSuchTableError:
            raise StoreConfigError(f"store.table: table {config.table!r} does not exist") from None
        for field in ("key", "timestamp"):
            column = getattr(config, field)
            if column not in self.table.c:
                raise StoreConfigError(
                    f"store.{field}: column {column!r} not found in table {config.table!r}"
                )
        self.key = self.table.c[config.key]
        self.ts = self.table.c[config.timestamp]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # -- the cutoff as the database compares it -------------------------------------------

    def _cutoff_literal(self, cutoff: datetime) -> str:
        """The cutoff as a SQL literal of the timestamp column's kind (a computed instant, never
        user input). The bind parameter and the literal must compare identically."""
        if self.dialect == "sqlite":
            return sqlite_timestamp_text(cutoff)
        utc = cutoff.astimezone(UTC)
        if getattr(self.ts.type, "timezone", False):
            return utc.isoformat(sep=" ")
        return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

    def _expired(self, cutoff: datetime):
        if self.dialect == "sqlite":
            # SQLite keeps timestamps as text: compare text with text, not through DATETIME.
            value = sa.bindparam("cutoff", sqlite_timestamp_text(cutoff), type_=sa.String)
        elif getattr(self.ts.type, "timezone", False):
            value = sa.bindparam("cutoff", cutoff.astimezone(UTC), type_=self.ts.type)
        else:  # naive column: UTC by contract; the session time zone is UTC too
            value = sa.bindparam(
                "cutoff", cutoff.astimezone(UTC).replace(tzinfo=None), type_=self.ts.type
            )
        return self.ts < value

    # -- plan ---------------------------------------------------------------------------------

    def plan(self, cutoff: datetime) -> Plan:
        expired = self._expired(cutoff)
        query = sa.select(
            sa.func.count(),
            sa.func.count(sa.case((expired, 1))),
            sa.func.count(sa.case((self.ts.is_(None), 1))),
            sa.func.min(sa.case((expired, self.ts))),
            sa.func.max(sa.case((expired, self.ts))),
        ).select_from(self.table)
        with self.engine.connect() as conn:
            total, n_expired, nulls, oldest, newest = conn.execute(query).one()
        active = nulls if self.config.null_timestamp == "active" else 0
        return Plan(
            total=total,
            expired=n_expired,
            active=active,
            anomalies=nulls - active,
            oldest_expired=_iso(oldest),
            newest_expired=_iso(newest),
        )

    # -- purge --------------------------------------------------------------------------------

    def purge(self, cutoff: datetime, *, approved: int) -> PurgeResult:
        expired = self._expired(cutoff)
        batch_size = self.config.batch_size
        started = time.perf_counter()
        # The key range holding expired rows (ORDER BY/LIMIT: min() has no uuid overload).
        first_key = sa.select(self.key).where(expired).limit(1)
        with self.engine.connect() as conn:
            lowest = conn.execute(first_key.order_by(self.key.asc())).scalar()
            highest = conn.execute(first_key.order_by(self.key.desc())).scalar()
        deleted = batches = 0
        last_report = started
        lower = lowest
        lower_bound = self.key >= lowest if lowest is not None else None
        while lower_bound is not None:
            with self.engine.begin() as conn:
                upper = conn.execute(
                    sa.select(self.key)
                    .where(lower_bound, self.key <= highest)
                    .order_by(self.key)
                    .offset(batch_size - 1)
                    .limit(1)
                ).scalar()
                if upper is None:
                    upper = highest
                count = conn.execute(
                    sa.delete(self.table).where(lower_bound, self.key <= upper, expired)
                ).rowcount
                if deleted + count > approved:
                    # Raising inside begin() rolls this batch back.
                    raise PurgeLimitExceeded(
                        f"{self.label}: the purge reached {deleted + count} records, more than the "
                        f"{approved} approved by the check; batch rolled back, run again"
                    )
            deleted += count
            batches += 1
            now = time.perf_counter()
            if now - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = now
                self._log_progress(batches, deleted, now - started)
            if upper == highest:
                break
            lower = upper
            lower_bound = self.key > lower
        seconds = time.perf_counter() - started
        self._log_progress(batches, deleted, seconds, final=True)
        self._refresh_statistics()
        return PurgeResult(deleted=deleted, batches=batches, seconds=round(seconds, 3))

    def _log_progress(self, batches: int, deleted: int, seconds: float, final: bool = False):
        rate = deleted / seconds if seconds > 0 else 0.0
        log.info(
            "%s %s: %d batches, %d rows deleted, %.0f rows/s",
            self.label,
            "purge done" if final else "purging",
            batches,
            deleted,
            rate,
        )

    def _refresh_statistics(self) -> None:
        """After a mass delete PostgreSQL's statistics are stale and the verification count
        scans the table; ANALYZE makes it an index lookup. Best effort: a least-privilege
        role may not be allowed to."""
        if self.dialect != "postgresql":
            return
        name = self.engine.dialect.identifier_preparer.format_table(self.table)
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text(f"ANALYZE {name}"))
        except sa.exc.DBAPIError as exc:
            log.warning("%s: ANALYZE skipped (%s)", self.label, type(exc.orig).__name__)

    # -- verify -------------------------------------------------------------------------------

    def verify(self, cutoff: datetime) -> Verification:
        from lifecycle.verification import verify_sql

        preparer = self.engine.dialect.identifier_preparer
        query = (
            f"SELECT 1 AS expired FROM {preparer.format_table(self.table)} "
            f"WHERE {preparer.quote(self.ts.name)} < '{self._cutoff_literal(cutoff)}'"
        )
        return verify_sql(
            url=self.engine.url.render_as_string(hide_password=False),
            engine_kwargs=_session_utc_kwargs(self.engine.url),
            expired_query=query,
            label=self.label,
        )


def open_store(config: Any, connection: Any, *, label: str | None = None) -> SqlTableStore:
    return SqlTableStore(config, create_engine(url_from_connection(connection)), label=label)
