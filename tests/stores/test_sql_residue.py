"""What a purge leaves behind in the database (issue 15, "Residual copies"): reported in the
verification's summary, as counts, on each database: PostgreSQL's dead tuples until VACUUM,
MariaDB's history rows of a system-versioned table until DELETE HISTORY, SQLite's free pages
(and whether secure_delete overwrites them)."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
import sqlalchemy as sa

from lifecycle.stores import Hold, RetentionWindow
from lifecycle.stores.sql import SqlTableStore, create_engine
from tests.e2e.faults import wait_until
from tests.stores.test_sql import CUTOFF, WINDOW, config, make_table

EXPIRED, KEPT = 300, 100
TIMESTAMPS = [CUTOFF - timedelta(hours=h) for h in range(1, EXPIRED + 1)] + [
    CUTOFF + timedelta(hours=h) for h in range(KEPT)
]


def test_postgresql_reports_the_dead_tuples_a_purge_leaves(postgres_url):
    engine = create_engine(postgres_url)
    make_table(engine, "residue_events", TIMESTAMPS)
    purging = SqlTableStore(config("residue_events", batch_size=100), engine)
    assert purging.purge(WINDOW, approved=EXPIRED).deleted == EXPIRED
    engine.dispose()  # the delete task ends: its sessions flush their statistics on exit

    checking = create_engine(postgres_url)
    store = SqlTableStore(config("residue_events"), checking)
    try:

        def reported() -> dict | None:
            residue = store.verify(WINDOW).summary["residue"]
            return residue if residue["dead_tuples"] else None

        residue = wait_until(reported, timeout=20, what="dead tuples in the statistics")
        # Every deleted row is still in its page until VACUUM (the statistics may already have
        # been vacuumed by autovacuum: then fewer, never more than what went).
        assert 0 < residue["dead_tuples"] <= EXPIRED
        assert residue["removed_by"] == "VACUUM (autovacuum or the owner)"
        with checking.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM residue_events")
        wait_until(
            lambda: store.verify(WINDOW).summary["residue"]["dead_tuples"] == 0,
            timeout=20,
            what="no dead tuples after VACUUM",
        )
    finally:
        with checking.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS residue_events")
        checking.dispose()


def test_mariadb_reports_the_history_a_system_versioned_table_keeps(mariadb_url):
    engine = create_engine(mariadb_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS residue_versioned")
        conn.exec_driver_sql(
            "CREATE TABLE residue_versioned (id INT PRIMARY KEY, seen_at DATETIME(6), "
            "payload VARCHAR(50)) WITH SYSTEM VERSIONING"
        )
        conn.execute(
            sa.text("INSERT INTO residue_versioned VALUES (:id, :seen_at, 'x')"),
            [
                {"id": i, "seen_at": ts.replace(tzinfo=None)}
                for i, ts in enumerate(TIMESTAMPS, start=1)
            ],
        )
    try:
        store = SqlTableStore(config("residue_versioned", batch_size=100), engine)
        assert store.purge(WINDOW, approved=EXPIRED).deleted == EXPIRED
        verification = store.verify(WINDOW)
        assert verification.success
        # The deleted rows are all in the history, exactly; the live table holds the kept.
        assert verification.summary["residue"] == {
            "history_rows": EXPIRED,
            "removed_by": "DELETE HISTORY (needs the DELETE HISTORY privilege)",
        }
        plain = make_table(engine, "residue_plain", TIMESTAMPS[:3])
        assert (
            SqlTableStore(config("residue_plain"), engine).verify(WINDOW).summary["residue"] == {}
        )  # not system-versioned: nothing a reader can count
        plain.drop(engine)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS residue_versioned")
        engine.dispose()


def test_sqlite_reports_free_pages_and_whether_they_are_overwritten(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    make_table(engine, "events", TIMESTAMPS)
    with engine.begin() as conn:  # rows big enough that the purge empties whole pages
        conn.exec_driver_sql("UPDATE events SET payload = printf('%.40c', 'x')")
    with engine.connect() as conn:  # a build setting (Debian's SQLite overwrites by default)
        overwritten = bool(conn.exec_driver_sql("PRAGMA secure_delete").scalar())
    store = SqlTableStore(config(batch_size=100), engine)
    before = {"free_pages": 0, "secure_delete": overwritten}
    assert store.verify(WINDOW).summary["residue"] == before
    store.purge(WINDOW, approved=EXPIRED)
    residue = store.verify(WINDOW).summary["residue"]
    assert residue["free_pages"] > 0 and residue["secure_delete"] is overwritten
    engine.dispose()


# -- removal (`store.residue: remove`) ----------------------------------------------------------


@pytest.fixture
def pg_database(postgres_url):
    """A throwaway database (pageinspect in it; VACUUM's horizon there is ours alone: another
    test's transaction in the shared database cannot keep a dead tuple alive), dropped after."""
    admin_url = sa.make_url(postgres_url)
    name = f"residue_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = admin_url.set(database=name)
    owner = sa.create_engine(url)
    with owner.begin() as conn:
        conn.exec_driver_sql("CREATE EXTENSION pageinspect")
    owner.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def pg_events(engine: sa.Engine, name: str) -> sa.Table:
    """EXPIRED + KEPT rows, autovacuum off (it would race the test for the dead tuples)."""
    table = make_table(engine, name, TIMESTAMPS)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {name} SET (autovacuum_enabled = false)")
    return table


def dead_in_pages(engine: sa.Engine, name: str) -> int:
    """The deleted rows still in the table's pages, read from the pages themselves
    (pageinspect): tuples whose deletion committed, and the dead line pointers a page prune
    leaves of them; VACUUM turns both into unused slots."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM generate_series(0, pg_relation_size(CAST(:t AS regclass)) "
                "/ current_setting('block_size')::int - 1) AS b, "
                "heap_page_items(get_raw_page(CAST(:t AS text), b::int)) "
                "WHERE lp_flags = 3 OR (lp_flags = 1 AND t_xmax <> 0)"
            ),
            {"t": name},
        ).scalar_one()


def vacuum_count(engine: sa.Engine, name: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = CAST(:t AS regclass)"
            ),
            {"t": name},
        ).scalar_one()


def test_postgresql_vacuums_the_table_when_the_policy_removes_its_residue(pg_database):
    engine = create_engine(pg_database)
    try:
        pg_events(engine, "residue_vacuumed")
        store = SqlTableStore(config("residue_vacuumed", batch_size=100, residue="remove"), engine)
        assert store.purge(WINDOW, approved=EXPIRED).deleted == EXPIRED
        # Every deleted row is still in the pages: the residue.
        assert dead_in_pages(engine, "residue_vacuumed") == EXPIRED
        vacuums = vacuum_count(engine, "residue_vacuumed")

        verification = store.verify(WINDOW)

        assert verification.success and verification.remaining == 0
        residue = verification.summary["residue"]
        assert residue["removed"]["by"] == "VACUUM (INDEX_CLEANUP ON)"
        assert residue["after"] == {
            "dead_tuples": 0,
            "removed_by": "VACUUM (autovacuum or the owner)",
        }
        assert "removal_error" not in residue
        assert dead_in_pages(engine, "residue_vacuumed") == 0
        assert vacuum_count(engine, "residue_vacuumed") == vacuums + 1
        with engine.connect() as conn:  # the kept rows untouched
            assert conn.exec_driver_sql("SELECT count(*) FROM residue_vacuumed").scalar() == KEPT
    finally:
        engine.dispose()


def test_postgresql_without_the_right_to_vacuum_reports_it_and_keeps_the_purge(pg_database):
    """Before PostgreSQL 17 only the owner may VACUUM; a role that may not gets a warning from
    PostgreSQL and nothing is removed: the run must say so, not claim a removal."""
    owner = create_engine(pg_database)
    role = f"residue_jobs_{secrets.token_hex(4)}"
    try:
        pg_events(owner, "residue_not_owned")
        with owner.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            conn.exec_driver_sql(f"GRANT SELECT, DELETE ON residue_not_owned TO {role}")
        jobs = create_engine(pg_database.set(username=role))
        try:
            policy = config("residue_not_owned", batch_size=100, residue="remove")
            store = SqlTableStore(policy, jobs)
            assert store.purge(WINDOW, approved=EXPIRED).deleted == EXPIRED
            verification = store.verify(WINDOW)
        finally:
            jobs.dispose()
        assert verification.success and verification.remaining == 0
        residue = verification.summary["residue"]
        assert "removed" not in residue and "after" not in residue
        assert residue["removal_error"] == (
            "InsufficientPrivilege: VACUUM of residue_not_owned needs its owner before "
            "PostgreSQL 17 (no grant gives it alone); its dead tuples stay until autovacuum"
        )
        assert dead_in_pages(owner, "residue_not_owned") == EXPIRED
    finally:
        with owner.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS residue_not_owned")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        owner.dispose()


def versioned_table(engine: sa.Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        conn.exec_driver_sql(
            f"CREATE TABLE {name} (id INT PRIMARY KEY, seen_at DATETIME(6), "
            "customer VARCHAR(10), payload VARCHAR(50)) WITH SYSTEM VERSIONING"
        )
        conn.execute(
            sa.text(f"INSERT INTO {name} VALUES (:id, :seen_at, :customer, 'x')"),
            [
                {"id": i, "seen_at": ts.replace(tzinfo=None), "customer": f"c{i % 7}"}
                for i, ts in enumerate(TIMESTAMPS, start=1)
            ],
        )


def history_rows(engine: sa.Engine, name: str) -> int:
    with engine.connect() as conn:
        every = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {name} FOR SYSTEM_TIME ALL").scalar()
        live = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {name}").scalar()
    return int(every) - int(live)


KEPT_BECAUSE = (
    "DELETE HISTORY cannot spare one version: kept from the first version of a record inside its "
    "window or under a hold on"
)
HISTORY_FOUND = {
    "history_rows": EXPIRED,
    "removed_by": "DELETE HISTORY (needs the DELETE HISTORY privilege)",
}


def test_mariadb_deletes_the_history_of_a_system_versioned_table(mariadb_url):
    engine = create_engine(mariadb_url)
    versioned_table(engine, "residue_history")
    try:
        store = SqlTableStore(config("residue_history", batch_size=100, residue="remove"), engine)
        assert store.purge(WINDOW, approved=EXPIRED).deleted == EXPIRED
        assert history_rows(engine, "residue_history") == EXPIRED
        # A kept record changes after the purge: its old version is history too, in its window.
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE residue_history SET payload = 'y' WHERE id = {EXPIRED + 1}"
            )

        verification = store.verify(WINDOW)

        assert verification.success
        assert verification.summary["residue"] == HISTORY_FOUND | {
            "history_rows": EXPIRED + 1,
            "removed": {
                "history_rows": EXPIRED,
                "by": "DELETE HISTORY",
                "kept_history_rows": 1,
                "kept_because": KEPT_BECAUSE,
            },
            "after": HISTORY_FOUND | {"history_rows": 1},
        }
        assert history_rows(engine, "residue_history") == 1  # the in-window version stays
        with engine.connect() as conn:
            kept = conn.exec_driver_sql(
                "SELECT id, payload FROM residue_history FOR SYSTEM_TIME ALL "
                "WHERE id = %s ORDER BY payload" % (EXPIRED + 1)
            ).all()
            assert [tuple(r) for r in kept] == [(EXPIRED + 1, "x"), (EXPIRED + 1, "y")]
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM residue_history").scalar() == KEPT
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS residue_history")
        engine.dispose()


def test_mariadb_keeps_the_history_from_a_held_record_s_version_on(mariadb_url):
    """DELETE HISTORY cannot spare one version: a held record's earlier version, ended before
    the purge, stops the removal there, and all history after it is kept."""
    engine = create_engine(mariadb_url)
    versioned_table(engine, "residue_held")
    hold = Hold(5, "*", "customer", "c3", "legal_hold")
    window = RetentionWindow(CUTOFF, holds=(hold,))
    held = sum(1 for i in range(1, EXPIRED + 1) if i % 7 == 3)
    try:
        with engine.begin() as conn:  # a held, expired record changes before the purge
            conn.exec_driver_sql("UPDATE residue_held SET payload = 'y' WHERE id = 3")
        policy = config(
            "residue_held", batch_size=100, residue="remove", subjects={"customer": "customer"}
        )
        store = SqlTableStore(policy, engine)
        assert store.purge(window, approved=EXPIRED - held).deleted == EXPIRED - held

        residue = store.verify(window).summary["residue"]

        assert residue["history_rows"] == EXPIRED - held + 1
        assert residue["removed"] == {
            "history_rows": 0,
            "by": "DELETE HISTORY",
            "kept_history_rows": EXPIRED - held + 1,
            "kept_because": KEPT_BECAUSE,
        }
        assert residue["after"]["history_rows"] == EXPIRED - held + 1
        assert history_rows(engine, "residue_held") == EXPIRED - held + 1
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS residue_held")
        engine.dispose()


def test_mariadb_delete_history_takes_the_generated_grant(mariadb_url):
    """The role `lifecycle grants` makes for a policy that removes its residue may DELETE
    HISTORY; the role made for a policy that only reports may not, and the run says so."""
    from lifecycle.grants import grant_statements, required_grants

    admin = create_engine(mariadb_url)
    user = f"residue_{secrets.token_hex(4)}"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE USER '{user}'@'%%'")
        as_user = sa.make_url(mariadb_url).set(username=user, password=None)
        for residue, removed in (("report", None), ("remove", EXPIRED)):
            versioned_table(admin, "residue_granted")
            with admin.begin() as conn:
                conn.exec_driver_sql(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{user}'@'%%'")
            policy = config("residue_granted", batch_size=100, residue=residue)
            (grants,) = required_grants([policy], audit_conn_id="test").values()
            granted = [g for g in grants if g.table == "residue_granted"]
            with admin.begin() as conn:
                for statement in grant_statements("mysql", user, granted):
                    conn.exec_driver_sql(statement.replace(f"'{user}'", f"'{user}'@'%%'"))
            jobs = create_engine(as_user)
            try:
                removing = config("residue_granted", batch_size=100, residue="remove")
                store = SqlTableStore(removing, jobs)
                assert store.purge(WINDOW, approved=EXPIRED).deleted == EXPIRED
                found = store.verify(WINDOW).summary["residue"]
            finally:
                jobs.dispose()
            if removed is None:
                assert found["removal_error"] == (
                    "OperationalError (code 42000): removing the residue of residue_granted "
                    "was refused; the database's own message is withheld"
                )
                assert history_rows(admin, "residue_granted") == EXPIRED
            else:
                assert found["removed"] == {"history_rows": removed, "by": "DELETE HISTORY"}
                assert history_rows(admin, "residue_granted") == 0
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS residue_granted")
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        admin.dispose()


def sqlite_without_secure_delete(path) -> sa.Engine:
    """An engine whose connections do not overwrite deleted content (Debian's build does by
    default; other builds, and SQLite's own default, do not)."""
    engine = create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _plain_delete(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA secure_delete = OFF")

    make_table(engine, "events", TIMESTAMPS)
    with engine.begin() as conn:  # marked content, big enough that the purge empties pages
        conn.exec_driver_sql(
            "UPDATE events SET payload = printf('%s-%06d-%.30c', "
            f"CASE WHEN id <= {EXPIRED} THEN 'gone' ELSE 'kept' END, id, 'x')"
        )
    return engine


@pytest.mark.parametrize("residue", ["report", "remove"])
def test_sqlite_overwrites_and_vacuums_when_the_policy_removes_its_residue(tmp_path, residue):
    path = tmp_path / "store.db"
    engine = sqlite_without_secure_delete(path)
    try:
        store = SqlTableStore(config(batch_size=100, residue=residue), engine)
        assert store.purge(WINDOW, approved=EXPIRED).deleted == EXPIRED
        found = store.verify(WINDOW).summary["residue"]
    finally:
        engine.dispose()
    content = path.read_bytes()
    assert found["free_pages"] > 0
    if residue == "report":  # the deleted rows' bytes are still in the file
        assert "removed" not in found and found["secure_delete"] is False
        assert content.count(b"gone-") > 0
    else:  # deleted with secure_delete on, then the file rebuilt: one copy of each kept row
        assert found["secure_delete"] is True
        assert found["removed"] == {"free_pages": found["free_pages"], "by": "VACUUM"}
        assert found["after"] == {"free_pages": 0, "secure_delete": True}
        assert content.count(b"gone-") == 0
        assert content.count(b"kept-") == KEPT
