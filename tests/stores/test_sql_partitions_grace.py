"""`store.partition_grace` (issue 13): an expired partition leaves the table (its rows' purge,
counted as such) but is kept as a table of its own until its grace ends, then a later run
drops it. PostgreSQL detaches it and notes the end (the run's cutoff plus the grace, which a
later run's cutoff must reach) in its COMMENT; MariaDB converts it into a table whose name
holds the end (the database's clock plus the grace, which that clock must pass). Through
the policy's SECURITY DEFINER function or procedure for a least-privileged role, which can
drop no kept table of another policy or table and none before its grace; and as the table's
owner."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dateutil.relativedelta import relativedelta

from lifecycle.grants import apply_grants, required_grants
from lifecycle.periods import compute_cutoff
from lifecycle.stores import RetentionWindow, StoreConfigError
from lifecycle.stores.sql import SqlTableStore, create_engine
from lifecycle.stores.sql_partitions import run_ddl
from lifecycle.stores.sql_partitions_mariadb import (
    REFUSED,
    grace_until,
    kept_name,
    kept_prefix,
    kept_until,
    longest_keepable,
    procedure_sql,
)
from tests.policies import TEST_STATEMENT, make_policy
from tests.stores.test_sql_partitions import (
    BOUNDS,
    CUTOFF,
    HOLD,
    WINDOW,
    expected_pg_partitions,
    mariadb_partitioned,
    mariadb_partitions,
    partition_names,
    pg_partitioned,
    pg_partitions,
    refusal,
    rows,
    survivors,
)
from tests.stores.test_sql_partitions_mariadb import least_privileged
from tests.stores.test_sql_partitions_mariadb import refusal as mariadb_refusal

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
        if jobs is not None:  # 'drop' of an expired partition would skip the grace: refused
            function = f"public.lifecycle_drop_partition_{policy.name}"
            drop = f"SELECT {function}(CAST(:t AS regclass), :cutoff, NULL, 'drop')"
            expired = f"{table}_{FIRST_KEPT[0]}"
            assert refusal(jobs, drop, {"t": expired, "cutoff": CUTOFF}) == "42501"
            # A policy whose grace was removed since `lifecycle grants`: told before any change.
            without = policy.model_copy(
                update={"store": policy.store.model_copy(update={"partition_grace": None})}
            )
            parts = pg_partitions(owner, table)
            with pytest.raises(StoreConfigError, match="was made for a grace"):
                run(SqlTableStore(without, jobs), CUTOFF)
            assert pg_partitions(owner, table) == parts

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


# -- MariaDB --------------------------------------------------------------------------------------
# A kept partition is a table named lck_<digest>_<until>_<partition>. `until` comes from the
# database's clock (now plus the grace), and a kept table goes once that clock has passed it,
# so these tests read the clock around a run and bound it; "the grace passes" is a rename of
# the kept tables to an `until` in the past, as the owner could do (the procedure drops
# nothing before its own clock agrees).

MARIADB_KEPT = [b for b in BOUNDS[1:7] if b.month != 1]  # Dec..May, not January (the held row)


def db_now(engine: sa.Engine) -> datetime:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT UTC_TIMESTAMP(6)").scalar_one().replace(tzinfo=UTC)


def ids_in(lower: datetime, upper: datetime) -> set[int]:
    return {k for k, moment, _c in rows() if lower <= moment < upper}


def mariadb_kept(engine: sa.Engine, policy) -> dict[str, set[int]]:
    """`policy`'s kept tables (unpartitioned, named with its prefix): name -> the ids in it."""
    prefix = kept_prefix(policy.name, policy.store.table)
    with engine.connect() as conn:
        names = conn.exec_driver_sql(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            f"AND TABLE_NAME LIKE '{prefix.replace('_', chr(92) + '_')}%%' "
            "AND CREATE_OPTIONS NOT LIKE '%%partitioned%%'"
        ).scalars()
        return {n: set(conn.exec_driver_sql(f"SELECT id FROM `{n}`").scalars()) for n in names}


def assert_kept(
    kept: dict, policy, lowers: list[datetime], untils: tuple, alive: set[int] | None = None
) -> None:
    """Exactly the partitions of `lowers`, each with its rows (those still `alive` before),
    their `until` in `untils`."""
    prefix = kept_prefix(policy.name, policy.store.table)
    by_partition = {name[len(prefix) + 15 :]: name for name in kept}
    assert sorted(by_partition) == sorted(partition_names(b) for b in lowers)
    for lower in lowers:
        name = by_partition[partition_names(lower)]
        upper = BOUNDS[BOUNDS.index(lower) + 1]
        assert kept[name] == ids_in(lower, upper) & (alive or ids_in(lower, upper)), name
        until = kept_until(prefix, name)
        assert until is not None and untils[0] <= until <= untils[1], (name, untils)
        assert until.microsecond == 0


def run_mariadb(store: SqlTableStore, cutoff: datetime, held: bool) -> dict:
    window = RetentionWindow(cutoff, holds=(HOLD,) if held else ())
    plan = store.plan(window)
    result = store.purge(window, approved=plan.expired)
    assert result.deleted == plan.expired
    return result.partitions


def mariadb_survivors(cutoff: datetime, held: bool) -> set[int]:
    gone = {k for k, moment, c in rows() if moment < cutoff and (c != "held" or not held)}
    return {k for k, _m, _c in rows()} - gone | {999}


def drop_kept_tables(engine: sa.Engine, *policies) -> None:
    for policy in policies:
        with engine.begin() as conn:
            for name in mariadb_kept(engine, policy):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{name}`")


# At the first run's cutoff neither the straddling partition nor June's is wholly expired; by
# the grace's end both are: the straddling one holds one row then (the run of three days on
# row-purged the others), June's three.
LATER_LOWERS = [CUTOFF, datetime(2026, 6, 1, tzinfo=UTC)]


def age(engine: sa.Engine, policy) -> None:
    """The grace over: `policy`'s kept tables renamed to an `until` sixty days earlier (their
    grace is a week), as the database's clock would find them then."""
    prefix = kept_prefix(policy.name, policy.store.table)
    with engine.begin() as conn:
        for name in mariadb_kept(engine, policy):
            earlier = kept_until(prefix, name) - timedelta(days=60)
            new = kept_name(prefix, earlier, name[len(prefix) + 15 :])
            conn.exec_driver_sql(f"RENAME TABLE `{name}` TO `{new}`")


@pytest.mark.parametrize("held", [True, False])
def test_mariadb_owner_keeps_expired_partitions_as_named_tables_then_drops_them(mariadb_url, held):
    """The table's owner, no procedure: with holds each partition through the swap table
    (renamed to the kept name), without, CONVERT PARTITION with the table locked."""
    engine = create_engine(mariadb_url)
    table = f"part_grace_{secrets.token_hex(3)}"
    policy = grace_policy(table, f"grace_{secrets.token_hex(3)}")
    lowers = MARIADB_KEPT if held else BOUNDS[1:7]
    try:
        mariadb_partitioned(engine, table, "columns")
        store = SqlTableStore(policy, engine)
        before = db_now(engine)
        partitions = run_mariadb(store, CUTOFF, held)
        after = db_now(engine)

        rows_kept = sum(len(ids_in(b, BOUNDS[BOUNDS.index(b) + 1])) for b in lowers)
        assert (rows_kept, len(lowers)) == ((15, 5) if held else (19, 6))
        assert partitions == {
            "partitions": len(lowers),
            "rows": rows_kept,
            "detached": len(lowers),
            "kept_dropped": 0,
        }
        kept = mariadb_kept(engine, policy)
        untils = (grace_until(store, before), grace_until(store, after))
        assert_kept(kept, policy, lowers, untils)
        assert survivors(engine, table) == mariadb_survivors(CUTOFF, held)
        names = [partition_names(b) for b in BOUNDS[:-1]] + ["pmax"]
        gone = {partition_names(b) for b in lowers}
        assert mariadb_partitions(engine, table) == [n for n in names if n not in gone]
        with engine.connect() as conn:  # no swap table left behind
            assert not conn.exec_driver_sql("SHOW TABLES LIKE 'lifecycle_swap_%%'").all()

        # Three days on: nothing newly expired whole, the kept tables stay.
        assert run_mariadb(store, EARLY, held) == {}
        assert mariadb_kept(engine, policy) == kept

        # The straddling partition and June's wholly expired: kept in their turn; the kept
        # tables stay, in their grace by the database's clock whatever the run's cutoff.
        before = db_now(engine)
        partitions = run_mariadb(store, LATER, held)
        after = db_now(engine)
        assert partitions == {"partitions": 2, "rows": 4, "detached": 2, "kept_dropped": 0}
        now_kept = mariadb_kept(engine, policy)
        assert {n: now_kept[n] for n in kept} == kept
        assert_kept(
            {n: ids for n, ids in now_kept.items() if n not in kept},
            policy,
            LATER_LOWERS,
            (grace_until(store, before), grace_until(store, after)),
            mariadb_survivors(EARLY, held),
        )

        # The grace passes: the next run drops every kept table, and only they.
        age(engine, policy)
        partitions = run_mariadb(store, LATER, held)
        assert partitions == {
            "partitions": 0,
            "rows": 0,
            "detached": 0,
            "kept_dropped": len(lowers) + 2,
        }
        assert mariadb_kept(engine, policy) == {}
        assert survivors(engine, table) == mariadb_survivors(LATER, held)
    finally:
        drop_kept_tables(engine, policy)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()


def test_mariadb_role_keeps_through_the_procedure_and_drops_no_other_table(mariadb_url):
    table = f"part_grace_{secrets.token_hex(3)}"
    other = f"{table}_other"
    policy = grace_policy(table, f"grace_{secrets.token_hex(3)}")
    other_policy = grace_policy(other, f"grace_{secrets.token_hex(3)}")
    # A policy on the same table made without a grace: its procedure keeps nothing.
    no_grace = policy.model_copy(
        update={
            "name": f"nograce_{secrets.token_hex(3)}",
            "store": policy.store.model_copy(update={"partition_grace": None}),
        }
    )
    admin = create_engine(mariadb_url)
    mariadb_partitioned(admin, table, "columns")
    mariadb_partitioned(admin, other, "columns")
    prefix = kept_prefix(policy.name, table)
    # Decoys the procedure must refuse: another policy's kept table of another table whose
    # grace is long over, an ordinary table, and a partitioned table with this policy's prefix.
    theirs = f"{kept_prefix(other_policy.name, other)}20200101000000_p1"
    ordinary = f"{table}_plain"
    partitioned = f"{prefix}20200101000000_px"
    decoys = (theirs, ordinary, partitioned)
    with admin.begin() as conn:
        for name in (theirs, ordinary):
            conn.exec_driver_sql(f"CREATE TABLE `{name}` (id INT)")
        conn.exec_driver_sql(
            f"CREATE TABLE `{partitioned}` (id INT) PARTITION BY RANGE (id) "
            "(PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN MAXVALUE)"
        )
    admin.dispose()
    with least_privileged(mariadb_url, policy, table, other, *decoys, also=[no_grace]) as (
        admin,
        jobs,
    ):
        try:
            store = SqlTableStore(policy, jobs)
            before = db_now(admin)
            partitions = run_mariadb(store, CUTOFF, held=True)
            after = db_now(admin)

            assert partitions == {"partitions": 5, "rows": 15, "detached": 5, "kept_dropped": 0}
            kept = mariadb_kept(admin, policy)
            # From the server's clock, as the owner's runs compute it (never shorter than the
            # grace after the latest cutoff: Amsterdam's offsets make it an hour longer here).
            untils = (grace_until(store, before), grace_until(store, after))
            assert_kept(kept, policy, MARIADB_KEPT, untils)
            latest_plus_grace = compute_cutoff(before, "P1M", policy.timezone) + timedelta(days=7)
            assert min(kept_until(prefix, n) for n in kept) >= latest_plus_grace
            assert survivors(admin, table) == mariadb_survivors(CUTOFF, held=True)
            gone = {partition_names(b) for b in MARIADB_KEPT}
            names = [partition_names(b) for b in BOUNDS[:-1]] + ["pmax"]
            assert mariadb_partitions(admin, table) == [n for n in names if n not in gone]
            mine = sorted(kept)[0]
            errno, message = mariadb_refusal(jobs, f"SELECT id FROM `{mine}`", {}) or (0, "")
            assert (errno, message.startswith("SELECT command denied")) == (1142, True)

            # Three days on: nothing newly expired whole, the kept tables stay.
            assert run_mariadb(store, EARLY, held=True) == {}
            assert mariadb_kept(admin, policy) == kept

            procedure = f"lifecycle_drop_partition_{policy.name}"
            call = f"CALL {procedure}(:part, :cutoff, NULL, 'drop_kept')"
            latest = (datetime.now(UTC) - relativedelta(months=1, hours=2)).replace(tzinfo=None)
            until = kept_until(prefix, mine).replace(tzinfo=None)
            in_grace = f"{REFUSED}: kept partition still in its grace"
            assert mariadb_refusal(jobs, call, {"part": mine, "cutoff": latest}) == (1644, in_grace)
            # Its `until` as the cutoff, the session's clock set a year ahead: the server's
            # clock says the grace goes on.
            faked = "SET timestamp = UNIX_TIMESTAMP() + 366 * 86400"
            assert mariadb_refusal(jobs, call, {"part": mine, "cutoff": until}, before=faked) == (
                1644,
                in_grace,
            )
            not_ours = (1644, f"{REFUSED}: not a partition of {table} kept for this policy")
            for name in (*decoys, table, other, f"{prefix}x"):
                assert mariadb_refusal(jobs, call, {"part": name, "cutoff": latest}) == not_ours, (
                    name
                )
            # 'keep' through the procedure of a policy made without a grace; another mode.
            first = partition_names(BOUNDS[0])
            keep = f"CALL lifecycle_drop_partition_{no_grace.name}(:part, :cutoff, 4, :mode)"
            params = {"part": first, "cutoff": CUTOFF.replace(tzinfo=None), "mode": "keep"}
            assert mariadb_refusal(jobs, keep, params, f"{table} WRITE") == (
                1644,
                f"{REFUSED}: keep: the policy had no partition_grace at lifecycle grants",
            )
            assert mariadb_refusal(jobs, keep, params | {"mode": "delete"}, f"{table} WRITE") == (
                1644,
                f"{REFUSED}: mode is drop, keep, kept or drop_kept",
            )
            # 'drop' through the procedure made for the grace: the grace is not skipped.
            drop = f"CALL {procedure}(:part, :cutoff, 4, 'drop')"
            assert mariadb_refusal(jobs, drop, params, f"{table} WRITE") == (
                1644,
                f"{REFUSED}: drop: this policy keeps partitions for P7D",
            )
            assert mariadb_kept(admin, policy) == kept
            assert survivors(admin, other) == {k for k, _t, _c in rows()} | {999}
            assert len(mariadb_partitions(admin, table)) == len(BOUNDS) - 5

            # The grace passes (the kept tables renamed to an `until` sixty days earlier): a
            # run whose cutoff reaches them drops them, and keeps the two partitions now
            # wholly expired; the decoys stay.
            age(admin, policy)
            aged = mariadb_kept(admin, policy)
            cutoff = max(kept_until(prefix, n) for n in aged)
            assert run_mariadb(store, cutoff, held=True) == {
                "partitions": 2,
                "rows": 4,
                "detached": 2,
                "kept_dropped": 5,
            }
            later = mariadb_kept(admin, policy)
            assert not set(aged) & set(later)
            assert_kept(
                later,
                policy,
                LATER_LOWERS,
                (grace_until(store, before), grace_until(store, db_now(admin))),
                mariadb_survivors(EARLY, held=True),
            )
            assert survivors(admin, table) == mariadb_survivors(cutoff, held=True)
            with admin.connect() as conn:
                for name in decoys:
                    assert conn.exec_driver_sql(f"SHOW TABLES LIKE '{name}'").first(), name
        finally:
            drop_kept_tables(admin, policy, other_policy)


def test_mariadb_a_procedure_that_cannot_keep_refuses_the_grace_before_anything_changes(
    mariadb_url,
):
    """A procedure from an earlier `lifecycle grants` (three parameters, no mode) still drops
    for a policy without a grace; with a grace the plan and the purge fail, naming the field
    and what to do, and nothing changed. So does a procedure made for another grace."""
    engine = create_engine(mariadb_url)
    table = f"part_grace_{secrets.token_hex(3)}"
    policy = grace_policy(table, f"grace_{secrets.token_hex(3)}")
    without = policy.model_copy(
        update={"store": policy.store.model_copy(update={"partition_grace": None})}
    )
    old, current = (f"lifecycle_drop_partition_{policy.name}{s}" for s in ("", "_current"))
    everything = {k for k, _t, _c in rows()} | {999}
    try:
        mariadb_partitioned(engine, table, "columns")
        # The old procedure: three parameters, dropping through today's (made for a policy
        # of another name, so under another name).
        renamed = without.model_copy(update={"name": f"{policy.name}_current"})
        with engine.begin() as conn:
            run_ddl(conn, procedure_sql(renamed, "nobody")[1])
            conn.exec_driver_sql(
                f"CREATE PROCEDURE {old}(IN part VARCHAR(64), IN cutoff DATETIME(6), "
                f"IN expected BIGINT) SQL SECURITY DEFINER CALL {current}(part, cutoff, "
                "expected, 'drop')"
            )
        store = SqlTableStore(policy, engine)
        message = (
            rf"store\.partition_grace: P7D, but the procedure {old} was made before "
            r"partitions could be kept: run `lifecycle grants` again as the table's owner"
        )
        with pytest.raises(StoreConfigError, match=message):
            store.plan(WINDOW)
        with pytest.raises(StoreConfigError, match=message):
            store.purge(WINDOW, approved=100)
        assert survivors(engine, table) == everything
        assert len(mariadb_partitions(engine, table)) == len(BOUNDS)

        # Made by today's `lifecycle grants`, but for the policy without its grace.
        with engine.begin() as conn:
            for statement in procedure_sql(without, "nobody")[:2]:
                run_ddl(conn, statement)
        with pytest.raises(StoreConfigError, match="was made for partition_grace unset"):
            SqlTableStore(policy, engine).plan(WINDOW)
        assert survivors(engine, table) == everything

        # The old procedure, the policy without a grace: dropped through it, as before.
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP PROCEDURE {old}")
            conn.exec_driver_sql(
                f"CREATE PROCEDURE {old}(IN part VARCHAR(64), IN cutoff DATETIME(6), "
                f"IN expected BIGINT) SQL SECURITY DEFINER CALL {current}(part, cutoff, "
                "expected, 'drop')"
            )
        assert run_mariadb(SqlTableStore(without, engine), CUTOFF, held=True) == {
            "partitions": 5,
            "rows": 15,
        }
        assert survivors(engine, table) == mariadb_survivors(CUTOFF, held=True)
        assert mariadb_kept(engine, policy) == {}
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            conn.exec_driver_sql(f"DROP PROCEDURE IF EXISTS {old}")
            conn.exec_driver_sql(f"DROP PROCEDURE IF EXISTS {current}")
        engine.dispose()


def test_mariadb_refuses_to_keep_a_partition_whose_kept_name_would_not_fit(mariadb_url):
    engine = create_engine(mariadb_url)
    table = f"part_grace_{secrets.token_hex(3)}"
    policy = grace_policy(table, f"grace_{secrets.token_hex(3)}")
    longest = longest_keepable(kept_prefix(policy.name, table))
    assert longest == 36
    long = "p" + "x" * longest  # one character too many
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE {table} (id BIGINT NOT NULL, seen_at DATETIME(6) NULL, "
                "customer VARCHAR(10), KEY (id)) PARTITION BY RANGE COLUMNS(seen_at) "
                f"(PARTITION {long} VALUES LESS THAN ('2026-01-01'), "
                "PARTITION pmax VALUES LESS THAN (MAXVALUE))"
            )
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1, '2025-12-01', 'c')")
        store = SqlTableStore(policy, engine)
        message = rf"store\.partition_grace: partition {long} cannot be kept: .* longer than 64"
        with pytest.raises(StoreConfigError, match=message):
            store.plan(WINDOW)
        with pytest.raises(StoreConfigError, match=message):
            store.purge(WINDOW, approved=1)
        assert survivors(engine, table) == {1}
        assert mariadb_partitions(engine, table) == [long, "pmax"]
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()


def test_mariadb_a_table_in_another_database_keeps_through_the_swap_and_leaves_no_swap(
    mariadb_url,
):
    """`store.table` in a database other than the connection's, with holds (the swap table):
    the swap table is found, and dropped, in the table's own database (looked up in the
    connection's before, it stayed behind, and the next purge failed creating it)."""
    engine = create_engine(mariadb_url)
    database = f"lifecycle_other_{secrets.token_hex(3)}"
    table = f"{database}.part_grace"
    policy = grace_policy(table, f"grace_{secrets.token_hex(3)}")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    try:
        mariadb_partitioned(engine, table, "columns")
        store = SqlTableStore(policy, engine)

        assert run_mariadb(store, CUTOFF, held=True) == {
            "partitions": 5,
            "rows": 15,
            "detached": 5,
            "kept_dropped": 0,
        }

        with engine.connect() as conn:
            tables = set(
                conn.exec_driver_sql(
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                    f"'{database}'"
                ).scalars()
            )
        prefix = kept_prefix(policy.name, table)
        assert {t for t in tables if not t.startswith(prefix)} == {"part_grace"}  # no swap
        assert len([t for t in tables if t.startswith(prefix)]) == 5
        # The next purge makes its swap table again: the straddling and June's partitions.
        assert run_mariadb(store, LATER, held=True) == {
            "partitions": 2,
            "rows": len(ids_in(CUTOFF, LATER)),
            "detached": 2,
            "kept_dropped": 0,
        }
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
        engine.dispose()
