"""Range-partitioned tables (issue 13, `store.partitions: drop`): partitions wholly before the
cutoff whose every row may go are dropped whole; the straddling one and any holding a held
record, or a record without a timestamp, are row-purged. Exact survivors, one microsecond
either side of the cutoff, on PostgreSQL and MariaDB; and the jobs' role on PostgreSQL drops
only through the function `lifecycle grants` makes, which refuses anything else."""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lifecycle.grants import apply_grants, required_grants
from lifecycle.stores import Hold, RetentionWindow
from lifecycle.stores.sql import SqlTableStore, StoreError, create_engine
from tests.stores.test_sql import CUTOFF, ONE_US, config

HOLD = Hold(9, "*", "customer", "held", "legal_hold")
WINDOW = RetentionWindow(CUTOFF, holds=(HOLD,))

# Monthly bounds, and one bound exactly at the cutoff (2026-05-28 22:00 UTC): the partition
# before it is wholly expired, its last row one microsecond before the cutoff.
BOUNDS = [
    datetime(2025, 11, 1, tzinfo=UTC),
    datetime(2025, 12, 1, tzinfo=UTC),
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2026, 2, 1, tzinfo=UTC),
    datetime(2026, 3, 1, tzinfo=UTC),
    datetime(2026, 4, 1, tzinfo=UTC),
    datetime(2026, 5, 1, tzinfo=UTC),
    CUTOFF,
    datetime(2026, 6, 1, tzinfo=UTC),
    datetime(2026, 7, 1, tzinfo=UTC),
]


def rows() -> list[tuple[int, datetime, str]]:
    """(id, seen_at, customer): three rows a partition, the first partition's at its lower
    bound; a held row in January; a row one microsecond before the cutoff (in the partition
    that ends at it), one at and one after it (the partition that starts at it)."""
    out = []
    for month, (lower, upper) in enumerate(itertools.pairwise(BOUNDS)):
        for i, moment in enumerate((lower, lower + (upper - lower) / 2, upper - ONE_US)):
            out.append((month * 10 + i + 1, moment, "c"))
    out.append((900, datetime(2026, 1, 15, tzinfo=UTC), "held"))
    out.append((901, CUTOFF, "c"))
    out.append((902, CUTOFF + ONE_US, "c"))
    return out


EXPIRED = {key for key, moment, customer in rows() if moment < CUTOFF and customer != "held"}
KEPT = {key for key, _moment, _customer in rows()} - EXPIRED
# Wholly before the cutoff: Nov..May-partial (7 partitions); January holds the held row.
DROPPED = 6
DROPPED_ROWS = 6 * 3


def partition_names(lower: datetime) -> str:
    return f"p{lower:%Y%m%d%H}"


def survivors(engine: sa.Engine, table: str) -> set[int]:
    with engine.connect() as conn:
        return set(conn.exec_driver_sql(f"SELECT id FROM {table}").scalars())


def purge(store: SqlTableStore) -> tuple[int, dict]:
    plan = store.plan(WINDOW)
    assert plan.expired == len(EXPIRED)
    result = store.purge(WINDOW, approved=plan.expired)
    return result.deleted, {"plan": plan.partitions, "purge": result.partitions}


# -- PostgreSQL -----------------------------------------------------------------------------------


def pg_partitioned(engine: sa.Engine, table: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id bigint NOT NULL, seen_at timestamptz NOT NULL, "
            "customer text, PRIMARY KEY (id, seen_at)) PARTITION BY RANGE (seen_at)"
        )
        for lower, upper in itertools.pairwise(BOUNDS):
            conn.exec_driver_sql(
                f"CREATE TABLE {table}_{partition_names(lower)} PARTITION OF {table} "
                f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
            )
        conn.exec_driver_sql(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES (:id, :ts, :c)"),
            [{"id": k, "ts": ts, "c": c} for k, ts, c in rows()],
        )


def pg_partitions(engine: sa.Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.exec_driver_sql(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                f"WHERE i.inhparent = '{table}'::regclass"
            ).scalars()
        )


def expected_pg_partitions(table: str) -> set[str]:
    kept_lowers = [b for b, u in itertools.pairwise(BOUNDS) if u > CUTOFF]
    kept_lowers.append(datetime(2026, 1, 1, tzinfo=UTC))  # the held row's
    return {f"{table}_{partition_names(b)}" for b in kept_lowers} | {f"{table}_default"}


def test_postgresql_drops_the_partitions_wholly_before_the_cutoff(postgres_url):
    engine = create_engine(postgres_url)
    table = "part_events_pg"
    try:
        pg_partitioned(engine, table)
        policy = config(table, partitions="drop", batch_size=5, subjects={"customer": "customer"})
        deleted, partitions = purge(SqlTableStore(policy, engine))

        assert deleted == len(EXPIRED)
        assert partitions == {
            "plan": {"partitions": DROPPED, "rows": DROPPED_ROWS},
            "purge": {"partitions": DROPPED, "rows": DROPPED_ROWS},
        }
        assert survivors(engine, table) == KEPT
        assert pg_partitions(engine, table) == expected_pg_partitions(table)
        assert SqlTableStore(policy, engine).verify(WINDOW).success
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()


def test_postgresql_deletes_rows_of_a_partitioned_table_unless_the_policy_drops(postgres_url):
    engine = create_engine(postgres_url)
    table = "part_rows_pg"
    try:
        pg_partitioned(engine, table)
        policy = config(table, batch_size=5, subjects={"customer": "customer"})  # delete
        deleted, partitions = purge(SqlTableStore(policy, engine))
        assert (deleted, partitions) == (len(EXPIRED), {"plan": {}, "purge": {}})
        assert survivors(engine, table) == KEPT
        assert len(pg_partitions(engine, table)) == len(BOUNDS)  # every one, default included
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()


def refusal(engine: sa.Engine, statement: str, params: dict | None = None) -> str | None:
    with engine.connect() as conn:
        try:
            conn.execute(sa.text(statement), params or {})
        except sa.exc.DBAPIError as exc:
            return exc.orig.sqlstate
        finally:
            conn.rollback()
    return None


def test_postgresql_role_drops_only_expired_partitions_through_the_function(postgres_url):
    owner = create_engine(postgres_url)
    table = f"part_role_{secrets.token_hex(3)}"
    role = f"part_jobs_{secrets.token_hex(3)}"
    policy = config(table, partitions="drop", batch_size=5, subjects={"customer": "customer"})
    try:
        pg_partitioned(owner, table)
        pg_partitioned(owner, f"{table}_other")
        with owner.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        # What `lifecycle grants --apply` gives: SELECT, DELETE and the policy's function.
        grants = required_grants([policy])["test"]
        assert apply_grants(owner, role, grants, [policy]) == []
        jobs = create_engine(sa.make_url(postgres_url).set(username=role))
        try:
            deleted, partitions = purge(SqlTableStore(policy, jobs))
            assert deleted == len(EXPIRED)
            assert partitions["purge"] == {"partitions": DROPPED, "rows": DROPPED_ROWS}
            assert survivors(owner, table) == KEPT
            assert pg_partitions(owner, table) == expected_pg_partitions(table)

            function = f"public.lifecycle_drop_partition_{policy.name}"
            call = f"SELECT {function}(CAST(:p AS regclass), :cutoff, :n)"
            straddling = f"{table}_{partition_names(CUTOFF)}"
            january = f"{table}_{partition_names(datetime(2026, 1, 1, tzinfo=UTC))}"
            insufficient = "42501"
            # A partition whose bound is after the cutoff; a cutoff later than now minus the
            # period; another table's partition; the default partition: all refused.
            assert refusal(jobs, call, {"p": straddling, "cutoff": CUTOFF, "n": 2}) == (
                insufficient
            )
            future = datetime.now(UTC) + timedelta(days=1)
            assert refusal(jobs, call, {"p": straddling, "cutoff": future, "n": 2}) == (
                insufficient
            )
            other = f"{table}_other_{partition_names(BOUNDS[0])}"
            assert refusal(jobs, call, {"p": other, "cutoff": CUTOFF, "n": 3}) == insufficient
            assert refusal(jobs, call, {"p": f"{table}_default", "cutoff": CUTOFF, "n": 0}) == (
                insufficient
            )
            # Expired, but not the rows counted (the held one is in it): rolled back.
            assert refusal(jobs, call, {"p": january, "cutoff": CUTOFF, "n": 3}) == "40001"
            # Nothing directly.
            for statement in (
                f"DROP TABLE {january}",
                f"ALTER TABLE {table} DETACH PARTITION {january}",
                f"DROP TABLE {table}",
                f"TRUNCATE {table}",
                f"DELETE FROM {january}",
            ):
                assert refusal(jobs, statement) == insufficient, statement
        finally:
            jobs.dispose()
        assert pg_partitions(owner, table) == expected_pg_partitions(table)
        assert survivors(owner, f"{table}_other") == {k for k, _t, _c in rows()}
    finally:
        with owner.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}, {table}_other")
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS lifecycle_drop_partition_{policy.name}")
            conn.exec_driver_sql(
                f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') "
                f"THEN DROP OWNED BY {role}; DROP ROLE {role}; END IF; END $$"
            )
        owner.dispose()


# -- MariaDB --------------------------------------------------------------------------------------


def mariadb_partitioned(engine: sa.Engine, table: str, by: str) -> None:
    """`by`: 'columns' (RANGE COLUMNS(seen_at), with the bound at the cutoff) or 'to_days'
    (RANGE (TO_DAYS(seen_at)), day bounds: the cutoff's partition starts at its day). A NULL
    timestamp row goes to the first partition, which must then stay."""
    if by == "columns":
        method = "RANGE COLUMNS(seen_at)"
        bounds = [f"'{b.replace(tzinfo=None).isoformat(sep=' ')}'" for b in BOUNDS[1:]]
    else:
        method = "RANGE (TO_DAYS(seen_at))"
        bounds = [f"TO_DAYS('{b:%Y-%m-%d}')" for b in BOUNDS[1:]]
    parts = ", ".join(
        f"PARTITION {partition_names(lower)} VALUES LESS THAN ({bound})"
        for lower, bound in zip(BOUNDS[:-1], bounds, strict=True)
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id BIGINT NOT NULL, seen_at DATETIME(6) NULL, "
            f"customer VARCHAR(10), KEY (id)) PARTITION BY {method} "
            f"({parts}, PARTITION pmax VALUES LESS THAN (MAXVALUE))"
        )
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES (:id, :ts, :c)"),
            [{"id": k, "ts": ts.replace(tzinfo=None), "c": c} for k, ts, c in rows()]
            + [{"id": 999, "ts": None, "c": "c"}],
        )


def mariadb_partitions(engine: sa.Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.exec_driver_sql(
                "SELECT PARTITION_NAME FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = "
                f"DATABASE() AND TABLE_NAME = '{table}' ORDER BY PARTITION_ORDINAL_POSITION"
            ).scalars()
        )


@pytest.mark.parametrize(
    ("by", "held", "dropped", "dropped_rows"),
    [
        ("columns", True, 5, 15),
        ("to_days", True, 5, 14),
        # No hold on the policy: January's row 900 goes too, by the locked ALTER path.
        ("columns", False, 6, 19),
        ("to_days", False, 6, 18),
    ],
)
def test_mariadb_drops_the_partitions_wholly_before_the_cutoff(
    mariadb_url, by, held, dropped, dropped_rows
):
    engine = create_engine(mariadb_url)
    table = f"part_events_{by}"
    window = WINDOW if held else RetentionWindow(CUTOFF)
    expired = EXPIRED if held else EXPIRED | {900}
    try:
        mariadb_partitioned(engine, table, by)
        policy = config(table, partitions="drop", batch_size=5, subjects={"customer": "customer"})
        store = SqlTableStore(policy, engine)
        plan = store.plan(window)
        assert plan.expired == len(expired)
        result = store.purge(window, approved=plan.expired)

        # The first partition keeps the NULL-timestamp row: not dropped, its rows deleted.
        # By day bounds the May partition ends on 28 May 00:00: the row one microsecond before
        # the cutoff is in the next one (the straddling one), row-purged.
        assert result.deleted == len(expired)
        assert plan.partitions == result.partitions == {"partitions": dropped, "rows": dropped_rows}
        assert survivors(engine, table) == ({k for k, _t, _c in rows()} - expired) | {999}
        months = BOUNDS[1:7] if not held else [b for b in BOUNDS[1:7] if b.month != 1]
        gone = {partition_names(b) for b in months}
        names = [partition_names(b) for b in BOUNDS[:-1]] + ["pmax"]
        assert mariadb_partitions(engine, table) == [n for n in names if n not in gone]
        with engine.connect() as conn:  # no swap table left behind
            assert not conn.exec_driver_sql("SHOW TABLES LIKE 'lifecycle_swap_%%'").all()
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()


@pytest.mark.parametrize("held", [True, False])
def test_mariadb_a_role_that_may_not_drop_fails_loudly_and_deletes_nothing(mariadb_url, held):
    """A role with SELECT and DELETE only, for a policy that asks to drop partitions: the
    purge fails before its first partition, naming the step, and nothing has gone."""
    admin = create_engine(mariadb_url)
    user = f"part_{secrets.token_hex(4)}"
    table = "part_events_role"
    try:
        mariadb_partitioned(admin, table, "columns")
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE USER '{user}'@'%%'")
            conn.exec_driver_sql(f"GRANT SELECT, DELETE ON {table} TO '{user}'@'%%'")
        jobs = create_engine(sa.make_url(mariadb_url).set(username=user, password=None))
        try:
            policy = config(
                table, partitions="drop", batch_size=5, subjects={"customer": "customer"}
            )
            store = SqlTableStore(policy, jobs)
            window = WINDOW if held else RetentionWindow(CUTOFF)
            with pytest.raises(StoreError, match=r"drop partitions.* failed: OperationalError"):
                store.purge(window, approved=len(EXPIRED) + 1)
        finally:
            jobs.dispose()
        assert survivors(admin, table) == {k for k, _t, _c in rows()} | {999}
        assert len(mariadb_partitions(admin, table)) == len(BOUNDS)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        admin.dispose()


def test_mariadb_rows_left_in_a_swap_table_by_a_crashed_purge_go_back_first(mariadb_url):
    """A purge stopped between a partition's swap and its TRUNCATE leaves the rows in the swap
    table: the next purge puts them back into the table before anything else, so a record in
    its window there is never lost, and an expired one is purged (and counted) again."""
    import hashlib

    engine = create_engine(mariadb_url)
    table = "part_events_crash"
    swap = f"lifecycle_swap_{hashlib.sha256(table.encode()).hexdigest()[:12]}"
    try:
        mariadb_partitioned(engine, table, "columns")
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {swap}")
            conn.exec_driver_sql(f"CREATE TABLE {swap} LIKE {table}")
            conn.exec_driver_sql(f"ALTER TABLE {swap} REMOVE PARTITIONING")
            conn.execute(
                sa.text(f"INSERT INTO {swap} VALUES (777, :kept, 'c'), (778, :gone, 'c')"),
                {
                    "kept": (CUTOFF + timedelta(days=1)).replace(tzinfo=None),
                    "gone": (CUTOFF - timedelta(days=200)).replace(tzinfo=None),
                },
            )
        policy = config(table, partitions="drop", batch_size=5, subjects={"customer": "customer"})
        store = SqlTableStore(policy, engine)
        result = store.purge(WINDOW, approved=len(EXPIRED) + 1)
        assert result.deleted == len(EXPIRED) + 1  # 778 with them
        assert survivors(engine, table) == KEPT | {999, 777}
        with engine.connect() as conn:
            assert conn.exec_driver_sql(f"SHOW TABLES LIKE '{swap}'").first() is None
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}, {swap}")
        engine.dispose()


def test_an_erasure_of_one_subject_never_drops_a_partition(postgres_url):
    """A data-subject erasure runs the table store's purge narrowed to the subject: on a
    policy that drops partitions, it must still delete that subject's rows alone."""
    from lifecycle.stores.sql_requests import SqlSubjectStore

    engine = create_engine(postgres_url)
    table = "part_erasure_pg"
    try:
        pg_partitioned(engine, table)
        policy = config(table, partitions="drop", batch_size=5, subjects={"customer": "customer"})
        store = SqlSubjectStore(policy, engine, {"customer": "held"})
        window = RetentionWindow(CUTOFF)
        assert store.plan(window).partitions == {}
        result = store.purge(window, approved=1)
        assert (result.deleted, result.partitions) == (1, {})
        assert survivors(engine, table) == {k for k, _t, _c in rows()} - {900}
        assert len(pg_partitions(engine, table)) == len(BOUNDS)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()
