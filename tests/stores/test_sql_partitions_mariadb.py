"""MariaDB, `store.partitions: drop` with a least-privileged role (issue 13): `lifecycle grants`
has the table's owner create `lifecycle_drop_partition_<policy>`, a SQL SECURITY DEFINER
procedure; the role, with SELECT, DELETE, LOCK TABLES and EXECUTE on it alone, drops exactly
the expired partitions through it (a held record's partition stays, its rows row-purged) and
can drop nothing else: a partition after the cutoff, with a cutoff later than now minus the
period, another table's partition, the MAXVALUE one, one without the table locked, one that
no longer holds the rows counted, and nothing directly."""

from __future__ import annotations

import secrets
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from dateutil.relativedelta import relativedelta

from lifecycle.grants import apply_grants, owner_statements, required_grants
from lifecycle.stores import RetentionWindow
from lifecycle.stores.sql import SqlTableStore, create_engine
from lifecycle.stores.sql_partitions_mariadb import CHANGED, REFUSED
from tests.policies import TEST_STATEMENT, make_policy
from tests.stores.test_sql_partitions import (
    BOUNDS,
    CUTOFF,
    EXPIRED,
    HOLD,
    WINDOW,
    mariadb_partitioned,
    mariadb_partitions,
    partition_names,
    rows,
    survivors,
)

JANUARY = partition_names(datetime(2026, 1, 1, tzinfo=UTC))  # the held row's
STRADDLING = partition_names(CUTOFF)  # from the cutoff to 1 June


def policy_on(table: str, name: str, subjects: dict, timezone: str = "Europe/Amsterdam"):
    return make_policy(
        name=name,
        title="Events",
        statement=TEST_STATEMENT,
        timezone=timezone,
        retention={"period": "P6M"},
        store__conn_id="test",
        store__table=table,
        store__timestamp="seen_at",
        store__partitions="drop",
        store__batch_size=5,
        store__subjects=subjects,
    )


@contextmanager
def least_privileged(mariadb_url: str, policy, *tables: str, also=()):
    """A new MariaDB account given exactly what `lifecycle grants --apply` gives for `policy`
    (and the policies `also`; run as root, the tables' owner here); its engine. Dropped
    afterwards, with the tables and the procedures."""
    admin = create_engine(mariadb_url)
    user = f"part_jobs_{secrets.token_hex(3)}"
    policies = [policy, *also]
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE USER '{user}'@'%%'")
        assert apply_grants(admin, user, required_grants(policies)["test"], policies) == []
        jobs = create_engine(sa.make_url(mariadb_url).set(username=user, password=None))
        try:
            yield admin, jobs
        finally:
            jobs.dispose()
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(tables)}")
            for each in policies:
                conn.exec_driver_sql(
                    f"DROP PROCEDURE IF EXISTS lifecycle_drop_partition_{each.name}"
                )
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        admin.dispose()


def refusal(
    engine: sa.Engine, call: str, params: dict, lock: str | None = None, before: str = ""
) -> tuple[int, str] | None:
    """(errno, message) of the error the statement fails with (under `LOCK TABLES lock`, after
    the statement `before`)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        try:
            if before:
                conn.exec_driver_sql(before)
            if lock:
                conn.exec_driver_sql(f"LOCK TABLES {lock}")
            conn.execute(sa.text(call), params)
        except sa.exc.DBAPIError as exc:
            return int(exc.orig.args[0]), str(exc.orig.args[1])
        finally:
            conn.exec_driver_sql("UNLOCK TABLES")
    return None


def linked(table: str) -> tuple[dict, str]:
    """The hold's subject reached through a link table (the role locks it for reading, under
    the alias the predicate gives it): each row's `customer` column is a subscriber's id."""
    return (
        {"customer": {"column": "customer", "through": [
            {"table": f"{table}_subs", "key": "id", "column": "customer_id"}]}},
        f"{table}_subs",
    )  # fmt: skip


@pytest.mark.parametrize(("link", "held"), [(False, True), (True, True), (False, False)])
def test_mariadb_role_drops_exactly_the_expired_partitions_through_the_procedure(
    mariadb_url, link, held
):
    table = f"part_proc_{secrets.token_hex(3)}"
    subjects, subs = linked(table) if link else ({"customer": "customer"}, None)
    policy = policy_on(table, f"part_proc_{secrets.token_hex(3)}", subjects)
    admin = create_engine(mariadb_url)
    mariadb_partitioned(admin, table, "columns")
    if subs:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {subs}")
            conn.exec_driver_sql(f"CREATE TABLE {subs} (id VARCHAR(10), customer_id VARCHAR(10))")
            conn.exec_driver_sql(f"INSERT INTO {subs} VALUES ('c', 'c'), ('held', 'held')")
    admin.dispose()
    with least_privileged(mariadb_url, policy, table, *([subs] if subs else [])) as (
        admin,
        jobs,
    ):
        store = SqlTableStore(policy, jobs)
        window, expired = (WINDOW, EXPIRED) if held else (RetentionWindow(CUTOFF), EXPIRED | {900})
        plan = store.plan(window)
        assert plan.expired == len(expired)
        result = store.purge(window, approved=plan.expired)

        # November (the NULL-timestamp row's) and, with the hold, January (the held row's)
        # stay: row-purged. The row one microsecond before the cutoff goes with May's
        # partition, the rows at and after it stay.
        assert result.deleted == len(expired)
        assert (
            plan.partitions
            == result.partitions
            == ({"partitions": 5, "rows": 15} if held else {"partitions": 6, "rows": 19})
        )
        everything = {k for k, _t, _c in rows()} | {999}
        assert survivors(admin, table) == everything - expired
        assert (900 in survivors(admin, table)) is held
        gone = {partition_names(b) for b in BOUNDS[1:7] if b.month != 1 or not held}
        names = [partition_names(b) for b in BOUNDS[:-1]] + ["pmax"]
        assert mariadb_partitions(admin, table) == [n for n in names if n not in gone]
        assert SqlTableStore(policy, jobs).verify(window).success


def test_mariadb_role_can_drop_nothing_else(mariadb_url):
    table = f"part_proc_{secrets.token_hex(3)}"
    other = f"{table}_other"
    policy = policy_on(table, f"part_proc_{secrets.token_hex(3)}", {"customer": "customer"})
    admin = create_engine(mariadb_url)
    mariadb_partitioned(admin, table, "to_days")
    mariadb_partitioned(admin, other, "columns")
    admin.dispose()
    everything = {k for k, _t, _c in rows()} | {999}
    with least_privileged(mariadb_url, policy, table, other) as (admin, jobs):
        # The role's share of `other`: what it has on any table it purges, no more.
        with admin.begin() as conn:
            conn.exec_driver_sql(f"GRANT SELECT, DELETE ON {other} TO '{jobs.url.username}'")
        call = f"CALL lifecycle_drop_partition_{policy.name}(:part, :cutoff, :n, 'drop')"
        cutoff = CUTOFF.replace(tzinfo=None)
        lock = f"{table} WRITE"
        # A partition after the cutoff (to_days: the straddling one ends on 1 June).
        assert refusal(jobs, call, {"part": STRADDLING, "cutoff": cutoff, "n": 3}, lock) == (
            1644,
            f"{REFUSED}: not a range partition on seen_at ending by the cutoff",
        )
        # A cutoff later than now minus the period (P6M), for an expired partition.
        later = datetime.now(UTC).replace(tzinfo=None) - relativedelta(months=6, hours=-2)
        first = partition_names(BOUNDS[1])
        assert refusal(jobs, call, {"part": first, "cutoff": later, "n": 3}, lock) == (
            1644,
            f"{REFUSED}: cutoff after now minus the period P6M",
        )
        # The same with the session's clock set a year ahead (any account may SET timestamp):
        # the procedure reads the server's clock, not the session's.
        faked = "SET timestamp = UNIX_TIMESTAMP() + 366 * 86400"
        assert refusal(jobs, call, {"part": first, "cutoff": later, "n": 3}, lock, faked) == (
            1644,
            f"{REFUSED}: cutoff after now minus the period P6M",
        )
        # Another table's partition (a name this table does not have), and the MAXVALUE one.
        other_only = "p_other"
        with admin.begin() as conn:
            conn.exec_driver_sql(
                f"ALTER TABLE {other} REORGANIZE PARTITION {partition_names(BOUNDS[0])} INTO "
                f"(PARTITION {other_only} VALUES LESS THAN ('2025-11-01'), PARTITION "
                f"{partition_names(BOUNDS[0])} VALUES LESS THAN ('2025-12-01'))"
            )
        for part in (other_only, "pmax"):
            assert refusal(jobs, call, {"part": part, "cutoff": cutoff, "n": 0}, lock) == (
                1644,
                f"{REFUSED}: not a partition of {table}"
                if part == other_only
                else f"{REFUSED}: not a range partition on seen_at ending by the cutoff",
            )
        # Expired, without the table locked: the count could change before the drop.
        assert refusal(jobs, call, {"part": first, "cutoff": cutoff, "n": 3}) == (
            1644,
            f"{REFUSED}: call it with LOCK TABLES {table} WRITE",
        )
        # Expired and locked, but not the rows counted (January holds four, the held one
        # with them): nothing dropped.
        assert refusal(jobs, call, {"part": JANUARY, "cutoff": cutoff, "n": 3}, lock) == (
            1644,
            f"{CHANGED}: the partition holds 4 rows, 3 counted",
        )
        # Nothing directly.
        for statement in (
            f"ALTER TABLE {table} DROP PARTITION {first}",
            f"ALTER TABLE {other} DROP PARTITION {first}",
            f"ALTER TABLE {table} TRUNCATE PARTITION {first}",
            f"DROP TABLE {table}",
            f"TRUNCATE TABLE {table}",
            f"CREATE TABLE {table}_x (id INT)",
        ):
            errno, _message = refusal(jobs, statement, {}) or (0, "")
            assert errno in (1142, 1044), statement  # command denied, access denied
        assert survivors(admin, table) == everything
        assert survivors(admin, other) == everything
        assert len(mariadb_partitions(admin, table)) == len(BOUNDS)
        # What it may do: an expired partition, counted, under the lock.
        assert refusal(jobs, call, {"part": first, "cutoff": cutoff, "n": 3}, lock) is None
        assert len(mariadb_partitions(admin, table)) == len(BOUNDS) - 1


def test_the_procedure_is_what_lifecycle_grants_prints_for_mariadb():
    """One procedure per dropping policy, SQL SECURITY DEFINER, EXECUTE and LOCK TABLES for
    the role; its CREATE between DELIMITER lines, for the mysql client."""
    policy = policy_on("calls", "calls", {"customer": "customer"})
    printed = owner_statements([policy], "mysql", "jobs")["calls"]
    assert printed[0] == "DROP PROCEDURE IF EXISTS `lifecycle_drop_partition_calls`"
    assert printed[1].startswith("DELIMITER $$\nCREATE PROCEDURE `lifecycle_drop_partition_calls`")
    assert "SQL SECURITY DEFINER" in printed[1]
    assert printed[1].endswith("END$$\nDELIMITER ")
    assert printed[2:] == [
        "GRANT EXECUTE ON PROCEDURE `lifecycle_drop_partition_calls` TO 'jobs'",
        "GRANT LOCK TABLES ON * TO 'jobs'",
    ]
    # Without time zone tables the clock is bounded by the zone's offsets: Amsterdam's are
    # +1 and +2 hours; UTC's is none.
    assert "INTERVAL 3600 SECOND - INTERVAL 6 MONTH" in printed[1]
    assert "- INTERVAL 7200 SECOND;" in printed[1]
    utc = owner_statements([policy_on("calls", "calls", {}, "UTC")], "mysql", "jobs")["calls"]
    assert "INTERVAL 0 SECOND - INTERVAL 6 MONTH - INTERVAL 0 DAY - INTERVAL 0 SECOND" in utc[1]


def test_mariadb_a_hold_placed_between_two_partition_drops_protects_the_next(mariadb_url):
    """The holds are read again before each partition (each its own batch), as before any
    batch: a hold committed once December's partition went keeps January's, the held row's."""
    table = f"part_proc_{secrets.token_hex(3)}"
    policy = policy_on(table, f"part_proc_{secrets.token_hex(3)}", {"customer": "customer"})
    admin = create_engine(mariadb_url)
    mariadb_partitioned(admin, table, "columns")
    admin.dispose()
    placed: list[int] = []

    class PlacesTheHoldAfterTheFirstDrop:
        wants_witnesses = False

        def before(self, batch, expected, witnesses=None):
            pass

        def after(self, batch, deleted):
            placed.append(batch)

    with least_privileged(mariadb_url, policy, table) as (admin, jobs):
        store = SqlTableStore(policy, jobs)
        window = RetentionWindow(CUTOFF, reload_holds=lambda: (HOLD,) if placed else ())
        plan = store.plan(window)
        assert plan.expired == len(EXPIRED | {900})  # no hold yet

        result = store.purge(
            window, approved=plan.expired, journal=PlacesTheHoldAfterTheFirstDrop()
        )

        assert 900 in survivors(admin, table)  # January's partition stayed, row-purged
        assert result.deleted == len(EXPIRED)
        assert JANUARY in mariadb_partitions(admin, table)
