"""What a purge leaves behind in the database (issue 15, "Residual copies"): reported in the
verification's summary, as counts, on each database: PostgreSQL's dead tuples until VACUUM,
MariaDB's history rows of a system-versioned table until DELETE HISTORY, SQLite's free pages
(and whether secure_delete overwrites them)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

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
