"""`store.partition_grace` (issue 13): on PostgreSQL an expired partition is detached (its rows
leave the table then: the purge, counted as such) and kept as a table of its own until a later
run's cutoff reaches the end of its grace, which drops it. Through the policy's SECURITY
DEFINER function for a least-privileged role, which can drop no kept table of another policy
and none before its grace; and as the table's owner. MariaDB refuses the field at run time."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lifecycle.grants import apply_grants, required_grants
from lifecycle.stores import RetentionWindow, StoreConfigError
from lifecycle.stores.sql import SqlTableStore, StoreError, create_engine
from lifecycle.stores.sql_partitions import GRACE_ON_MARIADB
from tests.policies import TEST_STATEMENT, make_policy
from tests.stores.test_sql_partitions import (
    BOUNDS,
    CUTOFF,
    HOLD,
    WINDOW,
    expected_pg_partitions,
    mariadb_partitioned,
    partition_names,
    pg_partitioned,
    pg_partitions,
    refusal,
    rows,
    survivors,
)

# The grace ends a week after the first run's cutoff (29 May 00:00 in Amsterdam): 5 June
# 00:00 there, 4 June 22:00 UTC. A run of 31 May (three days on) keeps the kept tables; a run
# of 1 July drops them, and keeps the two partitions it detaches itself.
UNTIL = datetime(2026, 6, 4, 22, tzinfo=UTC)
EARLY = CUTOFF + timedelta(days=3)
LATER = datetime(2026, 7, 1, tzinfo=UTC)
FIRST_KEPT = [partition_names(b) for b in BOUNDS[:7] if b.month != 1]  # January: the held row


def grace_policy(table: str, name: str):
    # P1M: the later runs' cutoffs are before now minus the period, which the function checks.
    return make_policy(
        name=name,
        title="Events",
        statement=TEST_STATEMENT,
        retention={"period": "P1M"},
        store__conn_id="test",
        store__table=table,
        store__timestamp="seen_at",
        store__partitions="drop",
        store__partition_grace="P7D",
        store__batch_size=5,
        store__subjects={"customer": "customer"},
    )


def kept(engine: sa.Engine, table: str) -> dict[str, tuple[int, dict]]:
    """The kept tables of `table`'s partitions: name -> (rows, their COMMENT's JSON)."""
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
            f"WHERE c.relname LIKE '{table}\\_p%%' AND c.relkind = 'r' AND NOT c.relispartition "
            "AND obj_description(c.oid, 'pg_class') LIKE 'lifecycle-kept %%'"
        ).all()
        return {
            name: (
                conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one(),
                json.loads(note.removeprefix("lifecycle-kept ")),
            )
            for name, note in found
        }


def run(store: SqlTableStore, cutoff: datetime) -> dict:
    window = RetentionWindow(cutoff, holds=(HOLD,))
    plan = store.plan(window)
    result = store.purge(window, approved=plan.expired)
    assert result.deleted == plan.expired
    return result.partitions


def expected_survivors(cutoff: datetime) -> set[int]:
    return {k for k, moment, customer in rows() if moment >= cutoff or customer == "held"}


@pytest.mark.parametrize("who", ["role", "owner"])
def test_postgresql_keeps_expired_partitions_for_the_grace_then_drops_them(postgres_url, who):
    owner = create_engine(postgres_url)
    table = f"part_grace_{secrets.token_hex(3)}"
    other = f"{table}_other"
    role = f"part_jobs_{secrets.token_hex(3)}"
    policy = grace_policy(table, f"grace_{secrets.token_hex(3)}")
    other_policy = grace_policy(other, f"grace_{secrets.token_hex(3)}")
    jobs = None
    try:
        pg_partitioned(owner, table)
        pg_partitioned(owner, other)
        if who == "role":
            with owner.begin() as conn:
                conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            policies = [policy, other_policy]
            grants = required_grants(policies)["test"]
            assert apply_grants(owner, role, grants, policies) == []
            jobs = create_engine(sa.make_url(postgres_url).set(username=role))
        engine = jobs or owner

        # The first run: six partitions wholly before the cutoff leave the table, kept.
        partitions = run(SqlTableStore(policy, engine), CUTOFF)
        assert partitions == {"partitions": 6, "rows": 18, "detached": 6, "kept_dropped": 0}
        assert survivors(owner, table) == expected_survivors(CUTOFF)
        assert pg_partitions(owner, table) == expected_pg_partitions(table)
        first = kept(owner, table)
        assert sorted(first) == sorted(f"{table}_{name}" for name in FIRST_KEPT)
        for count, note in first.values():  # each with its rows, until the grace is over
            assert count == 3
            assert note == {
                "policy": policy.name,
                "parent": f"public.{table}",
                "cutoff": CUTOFF.isoformat(),
                "until": UNTIL.isoformat(),
                "rows": 3,
            }
        assert run(SqlTableStore(other_policy, engine), CUTOFF)["detached"] == 6

        # Three days on: the grace is not over; nothing more is wholly expired.
        assert run(SqlTableStore(policy, engine), EARLY) == {}
        assert kept(owner, table) == first
        assert survivors(owner, table) == expected_survivors(EARLY)

        if jobs is not None:
            function = f"public.lifecycle_drop_partition_{policy.name}"
            call = f"SELECT {function}(CAST(:t AS regclass), :cutoff, NULL, 'drop_kept')"
            mine, theirs = f"{table}_{FIRST_KEPT[0]}", f"{other}_{FIRST_KEPT[0]}"
            denied = "42501"
            # Before its grace; with a cutoff past the grace but later than now minus the
            # period; another policy's kept table; a live partition; nothing directly.
            before = UNTIL - timedelta(microseconds=1)
            assert refusal(jobs, call, {"t": mine, "cutoff": before}) == denied
            now = datetime.now(UTC)
            assert refusal(jobs, call, {"t": mine, "cutoff": now}) == denied
            assert refusal(jobs, call, {"t": theirs, "cutoff": LATER}) == denied
            live = f"{table}_{partition_names(LATER - timedelta(days=30))}"
            assert refusal(jobs, call, {"t": live, "cutoff": LATER}) == denied
            for statement in (f"DROP TABLE {mine}", f"SELECT 1 FROM {mine}", f"TRUNCATE {mine}"):
                assert refusal(jobs, statement) == denied, statement
            assert kept(owner, table) == first

        # A month on: the kept tables' grace is over, they go; the two partitions now wholly
        # expired (the straddling one's last row, June's three) are kept in their turn.
        partitions = run(SqlTableStore(policy, engine), LATER)
        assert partitions == {"partitions": 2, "rows": 4, "detached": 2, "kept_dropped": 6}
        assert survivors(owner, table) == expected_survivors(LATER)
        later = kept(owner, table)
        assert sorted(later) == sorted(
            f"{table}_{partition_names(b)}" for b in (CUTOFF, datetime(2026, 6, 1, tzinfo=UTC))
        )
        assert {count for count, _note in later.values()} == {1, 3}
        # The other policy's kept tables are its own: untouched.
        assert len(kept(owner, other)) == 6

        # Their grace over, a run with nothing newly expired whole still says what went.
        partitions = run(SqlTableStore(policy, engine), LATER + timedelta(days=8))
        assert partitions == {"partitions": 0, "rows": 0, "detached": 0, "kept_dropped": 2}
        assert kept(owner, table) == {}
    finally:
        if jobs is not None:
            jobs.dispose()
        with owner.begin() as conn:
            names = conn.exec_driver_sql(
                f"SELECT relname FROM pg_class WHERE relname LIKE '{table}%%' AND relkind IN "
                "('r', 'p') AND NOT relispartition"
            ).scalars()
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(names) or table}")
            for name in (policy.name, other_policy.name):
                conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS lifecycle_drop_partition_{name}")
            conn.exec_driver_sql(
                f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') "
                f"THEN DROP OWNED BY {role}; DROP ROLE {role}; END IF; END $$"
            )
        owner.dispose()


def test_mariadb_refuses_a_grace_period_at_run_time(mariadb_url):
    engine = create_engine(mariadb_url)
    table = f"part_grace_{secrets.token_hex(3)}"
    try:
        mariadb_partitioned(engine, table, "columns")
        store = SqlTableStore(grace_policy(table, "grace_mariadb"), engine)
        with pytest.raises(StoreConfigError, match=r"store\.partition_grace: MariaDB drops"):
            store.plan(WINDOW)
        with pytest.raises((StoreConfigError, StoreError), match="partition_grace"):
            store.purge(WINDOW, approved=100)
        assert GRACE_ON_MARIADB.startswith("store.partition_grace:")
        assert survivors(engine, table) == {k for k, _t, _c in rows()} | {999}
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()
