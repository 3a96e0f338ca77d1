"""The SQL store on real SQLite, PostgreSQL and MariaDB: exact survivors around the cutoff."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from airflow.sdk import Connection
from sqlalchemy.dialects import mysql

from lifecycle.policy import Policy
from lifecycle.stores import PurgeLimitExceeded, RetentionWindow, StoreConfigError
from lifecycle.stores.sql import SqlTableStore, StoreError, create_engine, url_from_connection
from tests.policies import TEST_STATEMENT, make_policy

CUTOFF = datetime(2026, 5, 28, 22, 0, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
WINDOW = RetentionWindow(CUTOFF)

KEY_TYPES = {
    "integer": (sa.BigInteger().with_variant(sa.Integer, "sqlite"), lambda i: i),
    "uuid": (sa.Uuid(), lambda i: uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % (1 << 128))),
    "text": (sa.String(40), lambda i: f"k-{(i * 7919) % 100_003:06d}"),
}


def make_table(
    engine: sa.Engine,
    name: str,
    timestamps: list[datetime | None],
    *,
    key_type: str = "integer",
    timezone: bool = True,
    schema: str | None = None,
) -> sa.Table:
    column_type, make_key = KEY_TYPES[key_type]
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", column_type, primary_key=True, autoincrement=False),
        # DATETIME(6) on MariaDB: its default DATETIME drops the microseconds.
        sa.Column(
            "seen_at",
            sa.DateTime(timezone=timezone).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
            nullable=True,
        ),
        sa.Column("payload", sa.String(50)),
        schema=schema,
    )
    table.drop(engine, checkfirst=True)
    table.create(engine)
    naive = engine.dialect.name != "postgresql" or not timezone
    rows = [
        {
            "id": make_key(i),
            "seen_at": None if ts is None else (ts.replace(tzinfo=None) if naive else ts),
            "payload": f"row {i}",
        }
        for i, ts in enumerate(timestamps, start=1)
    ]
    if rows:
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    return table


def config(table: str = "events", retention: dict | None = None, **store) -> Policy:
    """A policy on `table` (P6M from seen_at unless `retention` says otherwise); `store` holds
    the store's other fields."""
    store = {"conn_id": "test", "table": table, "timestamp": "seen_at"} | store
    return make_policy(
        name="events",
        title="Events",
        statement=TEST_STATEMENT,
        retention=retention or {"period": "P6M"},
        **{f"store__{name}": value for name, value in store.items()},
    )


def survivors(engine: sa.Engine, table: sa.Table) -> list[datetime | None]:
    with engine.connect() as conn:
        values = conn.execute(sa.select(table.c.seen_at)).scalars().all()
    normalized = [None if v is None else (v if v.tzinfo else v.replace(tzinfo=UTC)) for v in values]
    return sorted(normalized, key=lambda v: (v is None, v))


AROUND_CUTOFF = [
    CUTOFF - timedelta(days=400),
    CUTOFF - timedelta(days=1),
    CUTOFF - ONE_US,  # expired by one microsecond
    CUTOFF,  # exactly the cutoff: kept (strictly before means expired)
    CUTOFF + ONE_US,
    CUTOFF + timedelta(days=10),
]


@pytest.mark.parametrize("key_type", list(KEY_TYPES))
def test_purge_deletes_exactly_the_expired_rows(engine, key_type):
    # Many rows per microsecond-distinct timestamp, keys in an order unrelated to time.
    timestamps = [ts for ts in AROUND_CUTOFF for _ in range(7)] + [None, None]
    table = make_table(engine, "events", timestamps, key_type=key_type)
    store = SqlTableStore(config(batch_size=4), engine)

    plan = store.plan(WINDOW)
    assert (plan.total, plan.expired, plan.anomalies, plan.active) == (44, 21, 2, 0)
    assert plan.oldest_expired == (CUTOFF - timedelta(days=400)).isoformat()
    assert plan.newest_expired == (CUTOFF - ONE_US).isoformat()
    assert not store.verify(WINDOW).success

    result = store.purge(WINDOW, approved=plan.expired)

    assert result.deleted == 21
    assert result.batches >= 21 // 4
    expected = [*sorted([ts for ts in AROUND_CUTOFF[3:] for _ in range(7)]), None, None]
    assert survivors(engine, table) == expected
    verification = store.verify(WINDOW)
    assert (verification.success, verification.remaining) == (True, 0)


def test_rerun_is_idempotent(engine):
    table = make_table(engine, "events", AROUND_CUTOFF * 3)
    store = SqlTableStore(config(batch_size=2), engine)
    assert store.purge(WINDOW, approved=9).deleted == 9
    before = survivors(engine, table)
    again = store.purge(WINDOW, approved=0)
    assert (again.deleted, again.batches) == (0, 0)
    assert survivors(engine, table) == before


def test_naive_timestamp_column_is_read_as_utc(engine):
    table = make_table(engine, "events", AROUND_CUTOFF, timezone=False)
    store = SqlTableStore(config(), engine)
    assert store.plan(WINDOW).expired == 3
    store.purge(WINDOW, approved=3)
    assert survivors(engine, table) == AROUND_CUTOFF[3:]
    assert store.verify(WINDOW).success


def test_null_timestamps_active_are_kept_and_counted(engine):
    table = make_table(engine, "events", [CUTOFF - ONE_US, None, None, CUTOFF])
    store = SqlTableStore(config(null_timestamp="active"), engine)
    plan = store.plan(WINDOW)
    assert (plan.expired, plan.active, plan.anomalies) == (1, 2, 0)
    store.purge(WINDOW, approved=1)
    assert survivors(engine, table) == [CUTOFF, None, None]


def test_a_crash_midway_resumes_without_touching_unexpired_rows(engine):
    timestamps = [CUTOFF - timedelta(hours=i) for i in range(1, 41)] + [CUTOFF + ONE_US] * 5
    table = make_table(engine, "events", timestamps)
    store = SqlTableStore(config(batch_size=5), engine)
    deletes = 0

    def crash_on_third_delete(conn, cursor, statement, parameters, context, executemany):
        nonlocal deletes
        if statement.lstrip().upper().startswith("DELETE"):
            deletes += 1
            if deletes == 3:
                raise ConnectionError("store went away")

    sa.event.listen(engine, "before_cursor_execute", crash_on_third_delete)
    with pytest.raises(ConnectionError):
        store.purge(WINDOW, approved=40)
    sa.event.remove(engine, "before_cursor_execute", crash_on_third_delete)

    # Two committed batches are gone; the third rolled back; nothing unexpired touched.
    assert len(survivors(engine, table)) == 45 - 10
    assert store.plan(WINDOW).expired == 30
    resumed = store.purge(WINDOW, approved=30)
    assert resumed.deleted == 30
    assert survivors(engine, table) == [CUTOFF + ONE_US] * 5


def test_purge_never_deletes_more_than_approved(engine):
    table = make_table(engine, "events", [CUTOFF - timedelta(hours=i) for i in range(1, 11)])
    store = SqlTableStore(config(batch_size=4), engine)
    with pytest.raises(PurgeLimitExceeded, match="more than the 6 approved"):
        store.purge(WINDOW, approved=6)
    # The first batch (4) committed; the second would have reached 8 > 6 and was rolled back.
    assert len(survivors(engine, table)) == 6


def test_schema_qualified_table(engine, sql_url):
    schema = {"sqlite": "main", "postgresql": "retention_test", "mysql": "retention_test"}[
        engine.dialect.name
    ]
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
    table = make_table(engine, "usage_records", AROUND_CUTOFF, schema=schema)
    store = SqlTableStore(config(table=f"{schema}.usage_records"), engine)
    assert store.purge(WINDOW, approved=3).deleted == 3
    assert survivors(engine, table) == AROUND_CUTOFF[3:]
    assert store.verify(WINDOW).success


def test_verification_reports_a_count_never_rows(engine):
    make_table(engine, "events", AROUND_CUTOFF)
    verification = SqlTableStore(config(), engine).verify(WINDOW)
    assert (verification.success, verification.remaining) == (False, 3)
    text = json.dumps(verification.summary, default=str)
    assert "row 1" not in text  # the payload column never leaves the database
    assert verification.summary["statistics"]["unsuccessful_expectations"] == 1
    assert verification.summary["expectations"][0]["result"]["observed_value"] == 3


def test_missing_table_or_column_names_the_field(engine):
    make_table(engine, "events", AROUND_CUTOFF)
    with pytest.raises(StoreConfigError, match=r"store\.table: table 'nope' does not exist"):
        SqlTableStore(config(table="nope"), engine)
    with pytest.raises(StoreConfigError, match=r"store\.timestamp: column 'ts' not found"):
        SqlTableStore(config(timestamp="ts"), engine)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:////var/lib/telecom.db", "sqlite:////var/lib/telecom.db"),
        (
            "postgres://app:s3cr%40t@db:5432/telecom",
            "postgresql+psycopg://app:s3cr%40t@db:5432/telecom",
        ),
        ("mysql://root@127.0.0.1:3306/test", "mysql+pymysql://root@127.0.0.1:3306/test"),
    ],
)
def test_url_from_airflow_connection(uri, expected):
    url = url_from_connection(Connection.from_uri(uri, conn_id="telecom_db"))
    assert url.render_as_string(hide_password=False) == expected


def test_unsupported_connection_type_is_named():
    with pytest.raises(StoreConfigError, match="type 'http' is not a supported SQL database"):
        url_from_connection(Connection(conn_id="web", conn_type="http", host="x"))


def test_a_timestamp_column_that_is_not_a_timestamp_is_refused(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS epochs"))
        conn.execute(sa.text("CREATE TABLE epochs (id INTEGER PRIMARY KEY, seen_at BIGINT)"))
    with pytest.raises(StoreConfigError, match=r"store\.timestamp: column 'seen_at' is BIGINT"):
        SqlTableStore(config(table="epochs"), engine)


def test_a_nullable_key_is_refused(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS loose"))
        conn.execute(sa.text("CREATE TABLE loose (ref INTEGER NULL, seen_at TIMESTAMP NULL)"))
    with pytest.raises(StoreConfigError, match=r"store\.key: column 'ref' is nullable"):
        SqlTableStore(config(table="loose", key="ref"), engine)


def test_sqlite_text_that_is_not_utc_timestamp_text_is_never_deleted(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'text.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE events (id INTEGER PRIMARY KEY, seen_at DATETIME)"))
        conn.execute(
            sa.text("INSERT INTO events VALUES (:id, :ts)"),
            [
                {"id": 1, "ts": "2026-05-28 21:59:59.999999"},  # expired, SQLAlchemy's format
                {"id": 2, "ts": "2026-05-28 21:59:59"},  # expired, SQLite's datetime() format
                {"id": 3, "ts": "2026-05-28 22:00:00"},  # the cutoff: kept
                {"id": 4, "ts": "2026-05-28 23:30:00-02:00"},  # an offset: 01:30Z, not expired
                {"id": 5, "ts": "2026-05-28T21:00:00"},  # a T: text order is not time order
                {"id": 6, "ts": 1_700_000_000},  # a number
            ],
        )
    store = SqlTableStore(config(), engine)
    plan = store.plan(WINDOW)
    assert (plan.expired, plan.anomalies) == (2, 3)
    store.purge(WINDOW, approved=2)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM events ORDER BY id")).scalars().all() == [
            3,
            4,
            5,
            6,
        ]
    assert store.verify(WINDOW).success


def test_database_errors_do_not_quote_record_values(postgres_url):
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS calls_ref, people"))
        conn.execute(sa.text("CREATE TABLE people (id text PRIMARY KEY, seen_at timestamptz)"))
        conn.execute(sa.text("CREATE TABLE calls_ref (person text REFERENCES people (id))"))
        conn.execute(
            sa.text("INSERT INTO people VALUES ('jan.jansen@example.nl', '2020-01-01')"),
        )
        conn.execute(sa.text("INSERT INTO calls_ref VALUES ('jan.jansen@example.nl')"))
    store = SqlTableStore(config(table="people"), engine)
    with pytest.raises(StoreError) as raised:
        store.purge(WINDOW, approved=1)
    assert "ForeignKeyViolation" in str(raised.value)
    assert "jan.jansen" not in str(raised.value)
    assert raised.value.__suppress_context__  # the original message is not chained into logs
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE calls_ref, people"))


class RecordingJournal:
    """What the deletion ledger is told around each batch (lifecycle.ledger.Journal)."""

    wants_witnesses = True

    def __init__(self) -> None:
        self.begun: list[tuple[int, int, list]] = []

    def before(self, batch, expected, witnesses=None):
        self.begun.append((batch, expected, witnesses))

    def after(self, batch, deleted):
        pass


@pytest.mark.parametrize("key_type", list(KEY_TYPES))
def test_each_batch_names_its_lowest_and_highest_deleted_key(engine, key_type):
    """The witnesses the ledger keeps are exactly the bounds of what each batch deleted (never a
    kept row's key): gone after the commit, which is how a later run tells it committed. Only
    integer and UUID keys: a text key may be personal data."""
    timestamps = [CUTOFF - timedelta(days=1), CUTOFF + timedelta(days=1)] * 6
    table = make_table(engine, "events", timestamps, key_type=key_type)
    _, make_key = KEY_TYPES[key_type]
    expired_keys = [make_key(i) for i, ts in enumerate(timestamps, start=1) if ts < CUTOFF]
    store = SqlTableStore(config(batch_size=4), engine)
    journal = RecordingJournal()

    store.purge(WINDOW, approved=6, journal=journal)

    deleted_per_batch = [expected for _, expected, _ in journal.begun]
    assert sum(deleted_per_batch) == 6
    # A text key may be personal data: never kept in the ledger (SQLite keeps a uuid as text).
    if key_type == "text" or (key_type == "uuid" and engine.dialect.name == "sqlite"):
        assert [witnesses for _, _, witnesses in journal.begun] == [None] * len(journal.begun)
        return
    witnessed = [key for _, _, witnesses in journal.begun for key in witnesses]
    same = (lambda k: uuid.UUID(str(k))) if key_type == "uuid" else str
    assert {same(key) for key in witnessed} <= {same(key) for key in expired_keys}
    # Keys as the store reads them (its reflected column: SQLite keeps a uuid as 32 hex digits).
    with engine.connect() as conn:
        kept = [str(key) for key in conn.scalars(sa.select(store.key).order_by(store.key))]
    assert len(kept) == 6
    assert store.witnesses_left(witnessed) == 0  # all of them went
    assert store.witnesses_left([*witnessed[:1], *kept[:2]]) == 2
    assert survivors(engine, table) == [CUTOFF + timedelta(days=1)] * 6
    # A batch of one record has one witness; every other batch its two ends.
    assert all(len(w) == min(2, n) for _, n, w in journal.begun if n)
