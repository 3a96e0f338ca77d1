"""Relational tables through SQLAlchemy 2.x Core (SQLite, PostgreSQL, MariaDB/MySQL, ...).

Deletion walks the primary key in ranges of `batch_size` keys: each batch finds the key that ends
its range (an index-only walk), deletes the expired rows inside the range and commits. Range
predicates keep the database on its primary-key index (PostgreSQL plans `IN (SELECT ... LIMIT)`
as a hash join over the whole table), any orderable key type works, and a crashed purge resumes
simply by being run again: finished batches are gone, the rest is found again. On PostgreSQL a
whole-table purge, and each slice of a split one (ranges of blocks there), first walks the table
in physical order (`lifecycle.stores.sql_walk`): the key ranges then only sweep up what that
walk could not see.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.sql.selectable import NamedFromClause

from lifecycle.stores import (
    NO_JOURNAL,
    Hold,
    Plan,
    PurgeJournal,
    PurgeLimitExceeded,
    PurgeResult,
    RetentionStore,
    RetentionWindow,
    Slice,
    StoreConfigError,
    Verification,
)
from lifecycle.stores.sql_config import SqlStore
from lifecycle.stores.sql_dialects import dialect_of
from lifecycle.stores.sql_forecast import due_columns, due_counts
from lifecycle.stores.sql_partitions import Dropped, count_droppable, drop_expired
from lifecycle.stores.sql_residue import residue
from lifecycle.stores.sql_subjects import SubjectMatcher, hold_value
from lifecycle.stores.sql_subjects import coerce as _coerce
from lifecycle.stores.sql_time import EventTimestamp, OwnTimestamp, TimeSource
from lifecycle.stores.sql_walk import LivePurgeable, Tally, json_keys, walk

if TYPE_CHECKING:
    from lifecycle.policy import Policy

log = logging.getLogger(__name__)

_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "sqlite": "sqlite",
}


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


_UTC_SESSION = {
    "postgresql": "SET TIME ZONE 'UTC'",
    "mysql": "SET time_zone = '+00:00'",
    "mariadb": "SET time_zone = '+00:00'",
}


def gx_engine_kwargs(url: URL) -> dict[str, Any]:
    """Engine options for the engine Great Expectations creates itself. Our verification query
    carries explicit offsets for timestamptz columns; MySQL TIMESTAMP columns still compare in
    the session time zone, so that one is set to UTC (unless the connection sets it)."""
    if url.get_backend_name() in ("mysql", "mariadb") and "init_command" not in url.query:
        return {"connect_args": {"init_command": _UTC_SESSION["mysql"]}}
    return {}


def create_engine(url: URL | str) -> Engine:
    """An engine whose sessions run in UTC (naive timestamps are UTC by contract) and whose
    errors never echo bound values: a failed batch would otherwise log the keys it touched."""
    url = sa.make_url(url)
    engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
    statement = _UTC_SESSION.get(url.get_backend_name())
    if statement is not None:

        @sa.event.listens_for(engine, "connect")
        def _utc_session(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(statement)
            cursor.close()
            dbapi_connection.commit()  # psycopg opens a transaction even for a SET

    return engine


class StoreError(RuntimeError):
    """A database error, told without its message: PostgreSQL's DETAIL and MariaDB's text quote
    the key or value that failed, which is personal data."""


@contextmanager
def _sanitized(label: str, operation: str) -> Iterator[None]:
    try:
        yield
    except sa.exc.DBAPIError as exc:
        orig = exc.orig
        code = getattr(orig, "sqlstate", None) or (
            orig.args[0] if orig is not None and orig.args else None
        )
        raise StoreError(
            f"{label}: {operation} failed: {type(orig).__name__} (code {code}); the database's "
            "own message is withheld from the logs because it can quote record values"
        ) from None


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return cast(str, value.astimezone(UTC).isoformat())


class SqlTableStore(RetentionStore):
    """One policy's table. Every question (plan, purge, verify) is one predicate, `_purgeable`,
    evaluated in the database: past the window (own timestamp, or an event joined with EXISTS),
    with per-tenant cutoffs where clients set their own period, and not under a hold."""

    # A purge of the whole table first walks it in physical order where the database can; a
    # purge of a few rows (one subject's, `sql_requests`) goes straight to its keys.
    walks_whole_table = True

    def __init__(self, policy: Policy, engine: Engine):
        self.policy = policy
        self.config = config = _config(policy)
        self.engine = engine
        self.sql = dialect_of(engine)  # what differs between databases
        self.label = policy.name
        self.table = self._reflect(config.table, "store.table")
        self.key = self._column(self.table, config.key, "store.key")
        # Batches are key ranges: a NULL key would fall outside all of them.
        if self.key.nullable and not self.key.primary_key:
            raise StoreConfigError(
                f"store.key: column {config.key!r} is nullable; use the primary key (or another "
                "NOT NULL column)"
            )
        event = policy.retention.from_event
        self.time: TimeSource
        if event is None:
            self.ts = self._column(self.table, config.timestamp, "store.timestamp")
            self.time = OwnTimestamp(self.ts, config.null_timestamp == "active", self.sql)
        elif event.table is None:  # the event is a column of the record's own row
            self.ts = self._column(self.table, event.timestamp, "retention.from_event.timestamp")
            self.time = OwnTimestamp(self.ts, True, self.sql)
        else:
            events = self._reflect(event.table, "retention.from_event.table").alias("event")
            self.ts = self._column(events, event.timestamp, "retention.from_event.timestamp")
            self.time = EventTimestamp(
                self.ts,
                self._column(events, event.key, "retention.from_event.key"),
                self._column(self.table, event.subject, "retention.from_event.subject"),
                self.sql,
            )
        if not isinstance(self.ts.type, sa.DateTime):
            field = "store.timestamp" if event is None else "retention.from_event.timestamp"
            raise StoreConfigError(
                f"{field}: column {self.ts.name!r} is {self.ts.type}, not a timestamp "
                "(DATETIME, TIMESTAMP or timestamptz): its values cannot be compared with a cutoff"
            )
        tenants = policy.retention.per_tenant
        self.tenant = (
            None
            if tenants is None
            else self._column(self.table, tenants.column, "retention.per_tenant.column")
        )
        self.subjects = SubjectMatcher(
            self.table, config, self._reflect, self._column, self.engine.connect
        )
        # What the keyed sweep's batches step through: the key, or a column in the rows'
        # storage order where the key's order is not (SQLite's rowid).
        with _sanitized(self.label, "reading the table definition"), engine.connect() as conn:
            stored_order = self.sql.storage_order(conn, self.table, self.key)
        self.step: sa.ColumnElement[Any] = self.key if stored_order is None else stored_order

    def _reflect(self, qualified: str, field: str) -> sa.Table:
        schema, _, name = qualified.rpartition(".")
        try:
            with _sanitized(self.label, "reading the table definition"):
                return sa.Table(
                    name, sa.MetaData(), schema=schema or None, autoload_with=self.engine
                )
        except sa.exc.NoSuchTableError:
            raise StoreConfigError(f"{field}: table {qualified!r} does not exist") from None

    @staticmethod
    def _column(table: NamedFromClause, name: str | None, field: str) -> sa.Column[Any]:
        if name is None:  # the policy model requires it here; never trust that silently
            raise StoreConfigError(f"{field}: required field is missing")
        if name not in table.c:
            raise StoreConfigError(f"{field}: column {name!r} not found in table {table.name!r}")
        # A Table's and an alias's columns are all Column objects (the alias's proxies).
        return cast("sa.Column[Any]", table.c[name])

    def close(self) -> None:
        self.engine.dispose()

    # -- the window as SQL --------------------------------------------------------------------

    def _threshold(self, window: RetentionWindow) -> sa.ColumnElement[Any]:
        """The cutoff of each record: one value, or a CASE on its tenant (flat, so a thousand
        client organisations do not nest a thousand ORs)."""
        default = self.sql.cutoff(self.ts, window.cutoff)
        if self.tenant is None or not window.tenant_cutoffs:
            return default
        whens: list[tuple[sa.ColumnElement[bool], sa.ColumnElement[Any]]] = []
        for tenant, cutoff in sorted(window.tenant_cutoffs.items()):
            # Tenant ids come as text; an id that fits not the column's type has no records here.
            with suppress(ValueError, TypeError):
                match = self.tenant == _coerce(tenant, self.tenant)
                whens.append((match, self.sql.cutoff_in_case(self.ts, cutoff)))
        if not whens:
            return default
        return sa.case(*whens, else_=self.sql.cutoff_in_case(self.ts, window.cutoff))

    def _past_window(self, window: RetentionWindow) -> sa.ColumnElement[bool]:
        """Past the window (held or not), by the record's timestamp or its subject's event."""
        return self.time.expired(self._threshold(window))

    def _held(self, holds: tuple[Hold, ...]) -> sa.ColumnElement[bool]:
        """Rows reached by any of the holds, through the policy's subject links."""
        values: dict[str, set[str]] = {}
        for hold in holds:
            values.setdefault(hold.subject, set()).add(hold_value(hold))
        if not values:
            return sa.false()
        return sa.or_(*(self.subjects.matches(subject, vs) for subject, vs in values.items()))

    def _purgeable(self, window: RetentionWindow) -> sa.ColumnElement[bool]:
        """Past the window and not held (a NULL subject column matches no hold)."""
        return sa.and_(self._past_window(window), sa.not_(self._held(window.holds)))

    # -- plan ---------------------------------------------------------------------------------

    def _counted(self, condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.count(sa.case((condition, 1)))

    def _plan_columns(self, window: RetentionWindow) -> list[sa.ColumnElement[Any]]:
        """One row: total, purgeable ("expired" in a Plan), past the window (held or not),
        active, anomalies, the purgeable's oldest and newest moment, and the oldest moment still
        in its window."""
        past, purgeable = self._past_window(window), self._purgeable(window)
        terms = self.time.plan_terms()
        moment, active, anomaly = terms.moment, terms.active, terms.anomaly
        retained = sa.and_(moment.is_not(None), sa.not_(past), sa.not_(active), sa.not_(anomaly))
        return [
            sa.func.count(),
            self._counted(purgeable),
            self._counted(past),
            self._counted(active),
            self._counted(anomaly),
            sa.func.min(sa.case((purgeable, moment))),
            sa.func.max(sa.case((purgeable, moment))),
            sa.func.min(sa.case((retained, moment), else_=None)),
        ]

    def plan(self, window: RetentionWindow) -> Plan:
        past, purgeable = self._past_window(window), self._purgeable(window)
        # The forecast (`lifecycle.stores.sql_forecast`) in the same query: one snapshot.
        counts = self._plan_columns(window)
        columns = [*counts, *due_columns(self._purgeable, window)]
        mapped = [hold for hold in window.holds if hold.subject in self.subjects.subjects]
        per_hold = []
        for hold in mapped:
            reached = self.subjects.matches(hold.subject, [hold_value(hold)])
            per_hold += [self._counted(sa.and_(past, reached)), self._counted(reached)]
        query = sa.select(*columns, *per_hold).select_from(self.table)
        with _sanitized(self.label, "plan"), self.engine.connect() as conn:
            row = conn.execute(query).one()
            total, n_purgeable, n_past, n_active, n_anomalies, *bounds = row[: len(counts)]
            oldest, newest, oldest_retained = bounds
            due, hold_counts = row[len(counts) : len(columns)], row[len(columns) :]
            by_tenant = {}
            if self.tenant is not None:
                rows = conn.execute(
                    sa.select(self.tenant, sa.func.count(), self._counted(purgeable))
                    .select_from(self.table)
                    .group_by(self.tenant)
                )
                by_tenant = {
                    str(tenant): {"total": count, "expired": n}
                    for tenant, count, n in rows
                    if tenant is not None
                }
        held_by_hold = {str(h.id): n for h, n in zip(mapped, hold_counts[::2], strict=True) if n}
        # Holds on a subject this table maps that reach no record at all: a value in another
        # form or of another customer, reported by id (the value is personal data).
        unreached = [str(h.id) for h, n in zip(mapped, hold_counts[1::2], strict=True) if not n]
        return Plan(
            total=total,
            expired=n_purgeable,
            held=n_past - n_purgeable,
            active=n_active,
            anomalies=n_anomalies,
            oldest_expired=_iso(oldest),
            newest_expired=_iso(newest),
            oldest_retained=_iso(oldest_retained),
            held_by_hold=held_by_hold,
            by_tenant=by_tenant,
            inert_holds=unreached,
            due=due_counts(due, n_purgeable),
            partitions=count_droppable(self, window),
        )

    # -- scale-out: slices of the key range, each purged by its own mapped task -----------------

    def _opaque_key(self) -> bool:
        """An integer or UUID key: its values say nothing of a person, so they may travel in
        XCom (slice bounds) and be kept in the ledger (a batch's witnesses). A text key may be
        a phone number or an e-mail address: never."""
        try:
            return self.key.type.python_type in (int, uuid.UUID)
        except NotImplementedError:
            return False

    def _sliceable(self) -> bool:
        """Opaque keys only (`_opaque_key`), and only a unique key: a cut inside a run of equal
        values would put more rows in a slice than it was counted with."""
        if not self._opaque_key():
            return False
        alone = [self.key.name]
        if [c.name for c in self.table.primary_key.columns] == alone:
            return True
        uniques: list[sa.Index | sa.UniqueConstraint] = [
            *(i for i in self.table.indexes if i.unique),
            *(c for c in self.table.constraints if isinstance(c, sa.UniqueConstraint)),
        ]
        return any([c.name for c in unique.columns] == alone for unique in uniques)

    def _bounds(self, in_slice: Slice | None) -> list[sa.ColumnElement[bool]]:
        if in_slice is None:
            return []
        bounds: list[sa.ColumnElement[bool]] = []
        if in_slice.of_blocks:
            upper = None if in_slice.to_block is None else (in_slice.to_block, 0)
            lower = (in_slice.from_block or 0, 0)
            bounds.append(self.sql.tid_between(self.table, lower, upper))
        if in_slice.after is not None:
            bounds.append(self.key > _coerce(str(in_slice.after), self.key))
        if in_slice.through is not None:
            bounds.append(self.key <= _coerce(str(in_slice.through), self.key))
        return bounds

    def slices(self, window: RetentionWindow, *, count: int, expired: int) -> list[Slice]:
        """Cut the purgeable rows into slices of about equal size (at least two batches each):
        where the table is walked in physical order (PostgreSQL), ranges of blocks, whatever
        the key (`_block_slices`); elsewhere ranges of the key, in key order, cut at every
        step-th purgeable key numbered in the database (InnoDB stores rows in key order)."""
        size = max(self.config.batch_size * 2, -(-expired // max(count, 1)))
        if count <= 1 or expired <= size:
            return [Slice(index=0, expired=expired)]
        if self.walks_whole_table:
            with _sanitized(self.label, "split"), self.engine.connect() as conn:
                layout = self.sql.heap_layout(conn, self.table)
                if layout is not None:
                    return _block_slices(
                        self.sql.rows_per_block_group(
                            conn, self.table, self._purgeable(window), _group_width(layout[0])
                        ),
                        _group_width(layout[0]),
                        size,
                        count,
                    )
        if not self._sliceable():
            return [Slice(index=0, expired=expired)]
        numbered = (
            sa.select(
                self.key.label("key"),
                sa.func.row_number().over(order_by=self.key).label("n"),
                sa.func.count().over().label("total"),
            )
            .where(self._purgeable(window))
            .subquery()
        )
        # One statement, one snapshot: the cuts and the total agree.
        query = (
            sa.select(numbered.c.key, numbered.c.n, numbered.c.total)
            .where(sa.or_(numbered.c.n % size == 0, numbered.c.n == numbered.c.total))
            .order_by(numbered.c.n)
        )
        with _sanitized(self.label, "split"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        total = rows[-1].total if rows else 0
        cuts = [_json_key(row.key) for row in rows if row.n < total][: count - 1]
        pieces, after = [], None
        for index, through in enumerate(cuts):
            pieces.append(Slice(index=index, expired=size, after=after, through=through))
            after = through
        pieces.append(Slice(index=len(cuts), expired=total - size * len(cuts), after=after))
        return pieces

    def past_window(self, window: RetentionWindow, in_slice: Slice) -> int | None:
        """None for a slice of blocks: an UPDATE moves a row to another block, so what left
        the range is not what was deleted from it (a retry must not count it as deleted)."""
        if in_slice.of_blocks:
            return None
        query = sa.select(sa.func.count()).where(self._past_window(window), *self._bounds(in_slice))
        with _sanitized(self.label, "count"), self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    # -- purge --------------------------------------------------------------------------------

    def purge(
        self,
        window: RetentionWindow,
        *,
        approved: int,
        in_slice: Slice | None = None,
        journal: PurgeJournal | None = None,
    ) -> PurgeResult:
        tally = Tally(self.label, journal or NO_JOURNAL)
        purgeable = LivePurgeable(
            lambda current: sa.and_(self._purgeable(current), *self._bounds(in_slice)), window
        )
        # Range partitions wholly before the cutoff go first, whole (`store.partitions: drop`;
        # a partitioned table is never sliced: its unique keys include the timestamp).
        whole = in_slice is None or in_slice.whole
        dropped = drop_expired(self, purgeable, tally, approved) if whole else Dropped()
        # The whole table, or a slice of its blocks, walks in physical order where the database
        # can (PostgreSQL); a slice of the key range, and other databases, in key ranges.
        of_blocks = in_slice is not None and in_slice.of_blocks
        walked = (
            self.walks_whole_table
            and (in_slice is None or in_slice.whole or of_blocks)
            and walk(self, purgeable, tally, approved, _blocks_of(in_slice))
        )
        self._sweep(purgeable, tally, approved, after_walk=walked)
        tally.report(final=True)
        # Statistics are refreshed by `verify`, whose count is what needs them.
        return PurgeResult(
            deleted=tally.deleted,
            batches=tally.batches,
            seconds=round(tally.seconds, 3),
            partitions=dropped.to_dict(),
        )

    def sweep_all(
        self, window: RetentionWindow, *, approved: int, journal: PurgeJournal, after_batch: int
    ) -> PurgeResult:
        """The whole table's keyed sweep after its slices of blocks were walked: usually one
        look that finds nothing."""
        tally = Tally(self.label, journal, batches=after_batch)
        self._sweep(LivePurgeable(self._purgeable, window), tally, approved, after_walk=True)
        if tally.deleted:
            log.info("%s: the final sweep deleted %d moved rows", self.label, tally.deleted)
        return PurgeResult(
            deleted=tally.deleted,
            batches=tally.batches - after_batch,
            seconds=round(tally.seconds, 3),
        )

    def _sweep(
        self, purgeable: LivePurgeable, tally: Tally, approved: int, *, after_walk: bool
    ) -> None:
        """Batches of `batch_size` rows from the lowest purgeable key to the highest (or rowid,
        see `step`), until the approval is spent: past it any batch that found a row would be
        rolled back (`PurgeLimitExceeded`), so nothing is read. A purgeable row left then (one
        that appeared after the check) is the verification's residue, reported as such."""
        if tally.deleted >= approved:
            return
        step = self.step
        # The range holding purgeable rows (ORDER BY/LIMIT: min() has no uuid overload).
        first_key = sa.select(step).select_from(self.table).where(purgeable.condition).limit(1)
        with _sanitized(self.label, "purge"), self.engine.connect() as conn:
            # After a walk, usually nothing: asked without an order, which at worst reads the
            # table once (where ANALYZE was not allowed, statistics from before the walk would
            # have the key's index walked from one end to find nothing).
            if after_walk and conn.execute(first_key).first() is None:
                return
            lowest = conn.execute(first_key.order_by(step.asc())).scalar()
            if lowest is None:
                return
            highest = conn.execute(first_key.order_by(step.desc())).scalar()
        lower_bound = step >= lowest
        while True:
            condition = purgeable.now()
            upper, count = self._batch(lower_bound, highest, condition, tally, approved)
            tally.committed(count)
            if upper == highest or tally.deleted >= approved:
                break
            lower_bound = step > upper

    def _batch(
        self,
        lower_bound: sa.ColumnElement[bool],
        highest: Any,
        purgeable: sa.ColumnElement[bool],
        tally: Tally,
        approved: int,
    ) -> tuple[Any, int]:
        """The next batch, one transaction: the next `batch_size` rows from `lower_bound` (in
        `step` order), their purgeable rows deleted, never beyond `approved` with the rows of
        earlier batches. Returns its last step value and its count."""
        number = tally.batches + 1
        step = self.step
        with _sanitized(self.label, f"purge batch {number}"), self.engine.begin() as conn:
            upper = conn.execute(
                sa.select(step)
                .select_from(self.table)
                .where(lower_bound, step <= highest)
                .order_by(step)
                .offset(self.config.batch_size - 1)
                .limit(1)
            ).scalar()
            if upper is None:
                upper = highest
            in_batch = sa.and_(lower_bound, step <= upper, purgeable)
            witnesses = (
                self._witnesses(conn, in_batch)
                if tally.journal.wants_witnesses and self._opaque_key()
                else None
            )
            if self.config.residue == "remove":
                self.sql.overwrite_deleted(conn)
            count = conn.execute(sa.delete(self.table).where(in_batch)).rowcount
            self._before_commit(number, tally.deleted + count, approved, tally, witnesses)
        return upper, count

    def guarded(self, operation: str) -> AbstractContextManager[None]:
        """Database errors of `operation` told without their message (`StoreError`)."""
        return _sanitized(self.label, operation)

    def _before_commit(
        self, number: int, reached: int, approved: int, tally: Tally, witnesses: list[Any] | None
    ) -> None:
        """Inside batch `number`'s transaction, its rows deleted: raising rolls it back."""
        if reached > approved:
            raise PurgeLimitExceeded(
                f"{self.label}: the purge reached {reached} records, more than the "
                f"{approved} approved by the check; batch rolled back, run again"
            )
        # Durable before the commit: the ledger knows the batch in flight and exactly what
        # it deletes if it commits (a failure here rolls the batch back).
        tally.journal.before(number, reached - tally.deleted, witnesses)

    def _witnesses(self, conn: sa.Connection, in_batch: sa.ColumnElement[bool]) -> list[Any]:
        """The lowest and highest key the batch deletes (ORDER BY/LIMIT: min() has no uuid
        overload), read in its transaction: the ledger keeps them so that a later run can tell
        whether a batch whose commit was never heard of committed (`witnesses_left`)."""
        first = sa.select(self.key).where(in_batch).limit(1)
        return json_keys(
            conn.execute(first.order_by(self.key.asc())).scalar(),
            conn.execute(first.order_by(self.key.desc())).scalar(),
        )

    def witnesses_left(self, witnesses: list[Any]) -> int | None:
        if not witnesses:
            return None
        keys = [_coerce(str(key), self.key) for key in witnesses]
        query = sa.select(sa.func.count()).select_from(self.table).where(self.key.in_(keys))
        with _sanitized(self.label, "settle"), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- verify -------------------------------------------------------------------------------

    def verify(self, window: RetentionWindow) -> Verification:
        """Great Expectations counts, in the database, the records past the window; they must
        be exactly the held ones, counted here with the hold values bound as parameters. The
        SQL handed to GX carries cutoffs and client ids, never a hold's value."""
        from lifecycle.verification import verify_sql

        # After a mass delete the planner would still expect half the table past the window
        # and count it with a scan of the whole table; fresh statistics make it an index lookup.
        self.sql.refresh_statistics(self.engine, self.table, self.label)
        held = self._held(window.holds)
        with _sanitized(self.label, "verify"), self.engine.connect() as conn:
            held_count = conn.execute(
                sa.select(sa.func.count())
                .select_from(self.table)
                .where(self._past_window(window), held)
            ).scalar_one()
        query = sa.select(sa.literal(1).label("expired")).select_from(self.table)
        query = query.where(self._past_window(window))
        sql = str(query.compile(self.engine, compile_kwargs={"literal_binds": True}))
        result = verify_sql(
            url=self.engine.url.render_as_string(hide_password=False),
            engine_kwargs=gx_engine_kwargs(self.engine.url),
            expired_query=escape_for_text(sql),
            label=self.label,
            held=len(window.holds),
            expected=held_count,
        )
        return replace(result, summary={**result.summary, "residue": self.residue_after(window)})

    def residue_after(self, window: RetentionWindow) -> dict[str, Any]:
        """What the deleted rows left in the database, reported (and removed where the policy
        asks), never a reason to fail: `lifecycle.stores.sql_residue`."""
        return residue(
            self.engine,
            self.table,
            self.sql,
            self.label,
            remove=self.config.residue == "remove",
            purgeable=self._purgeable(window),
        )


def escape_for_text(sql: str) -> str:
    """SQL for Great Expectations, which wraps a query asset in SQLAlchemy's text() twice (the
    asset, then the batch's subquery): a colon before a word (a client id ':acme' in a literal)
    would become a bind parameter there. Each text() turns a backslash-escaped colon into a
    plain one, so it is escaped for both (tests/stores/test_sql_holds.py proves it per
    database)."""
    return _TEXT_BIND.sub(lambda _: "\\\\:", sql)


_TEXT_BIND = re.compile(r"(?<![:\w\\]):(?=\w)")


def _group_width(blocks: int) -> int:
    """Blocks counted together when a split cuts the table: at most about 4,000 groups."""
    return max(1, -(-blocks // 4096))


def _block_slices(groups: list[tuple[int, int]], width: int, size: int, count: int) -> list[Slice]:
    """Slices of contiguous blocks holding about `size` purgeable rows each, at most `count`,
    from (group, purgeable rows) in block order: a slice ends after the group that brings it
    to `size`. The first starts at block 0, the last runs to the end of the table (rows
    stored past its end meanwhile are in it)."""
    pieces: list[Slice] = []
    start: int | None = None
    held = 0
    for group, rows in groups:
        held += rows
        if held >= size and len(pieces) < count - 1:
            end = (group + 1) * width
            pieces.append(Slice(index=len(pieces), expired=held, from_block=start, to_block=end))
            start, held = end, 0
    if not pieces:
        return [Slice(index=0, expired=held)]
    if held:
        pieces.append(Slice(index=len(pieces), expired=held, from_block=start))
    else:  # the last cut fell on the last rows: its slice runs to the end
        last = pieces.pop()
        pieces.append(replace(last, to_block=None))
    return pieces


def _blocks_of(in_slice: Slice | None) -> tuple[int | None, int | None]:
    return (None, None) if in_slice is None else (in_slice.from_block, in_slice.to_block)


def _json_key(value: Any) -> int | str:
    return json_keys(value)[0]


def _config(policy: Policy) -> SqlStore:
    if not isinstance(policy.store, SqlStore):
        raise TypeError(f"{policy.name}: store.kind {policy.store.kind!r} is not a SQL table")
    return policy.store


def open_store(policy: Policy, connection: Any) -> SqlTableStore:
    url = url_from_connection(connection)
    _refuse_protected_target(policy, url)  # before the store reads anything of the table
    return SqlTableStore(policy, create_engine(url))


def _refuse_protected_target(policy: Policy, store_url: sa.URL) -> None:
    """The control database's tables and Airflow's metadata are never a purge target, whatever
    the connection is called: compared as resolved databases and tables."""
    from lifecycle.connections import AUDIT_CONN_ID, sql_url
    from lifecycle.protected import ProtectedTableError, airflow_metadata_url, check_purge_target

    try:
        control = sql_url(AUDIT_CONN_ID, "the audit connection")
    except StoreConfigError:
        control = None
    try:
        check_purge_target(
            store_url,
            _config(policy).table,
            control_url=control,
            airflow_url=airflow_metadata_url(),
        )
    except ProtectedTableError as exc:
        raise StoreConfigError(f"store.table: {exc}") from None
