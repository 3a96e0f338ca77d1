"""Range-partitioned table benchmark (DESIGN §7; issue 13, `store.partitions: drop`). Prints
ratios; asserts nothing.

A CDR-like table range-partitioned by month on its timestamp: 24 monthly partitions (December
2024 to November 2026), `--rows` rows (3,000,000) spread evenly over them, a bigint key in time
order, and a cutoff on 15 June 2026: 18 partitions wholly before it, June straddling it, five
after. Two identical copies, then side by side:
- one plain `DELETE ... WHERE ts < cutoff` on one copy (the throughput to beat);
- the engine's purge with `store.partitions: drop` on the other: the 18 partitions detached
  and dropped, June's expired rows deleted in batches, ANALYZE included;
target: the purge at least 3x the plain DELETE (same rows deleted, so the ratio of times).
The order alternates from round to round, and before the second measurement the first one's
background work is waited for (InnoDB's purge of delete-marked rows and its dirty pages
written out; PostgreSQL's CHECKPOINT).

    PYTHONPATH=plugins .venv/bin/python benchmarks/sql_partitions.py [--rows 3000000]
        [--rounds 3] [--mariadb]

With --mariadb, the same on MariaDB/InnoDB (`PARTITION BY RANGE (TO_DAYS(ts))`), where each
partition goes by EXCHANGE PARTITION into an empty table, counted there, then dropped.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from bench_servers import MARIADB_URL, POSTGRES_URL

from lifecycle.policy import Policy
from lifecycle.stores import RetentionWindow
from lifecycle.stores.sql import SqlTableStore, create_engine

URL = POSTGRES_URL
CUTOFF = datetime(2026, 6, 15, tzinfo=UTC)
MONTHS = [datetime(2024 + (11 + m) // 12, (11 + m) % 12 + 1, 1, tzinfo=UTC) for m in range(25)]
FIRST, END = MONTHS[0], MONTHS[-1]
TARGET = 3.0


def policy(table: str) -> Policy:
    return Policy.model_validate(
        {
            "name": "bench_partitions",
            "title": "Partitioned purge benchmark",
            "statement": {"service": "bench", "data": "bench", "retention": "bench"},
            "controller": "provider",
            "legal_basis": "contract",
            "retention": {"period": "P6M"},
            "store": {
                "kind": "sql",
                "conn_id": "bench",
                "table": table,
                "key": "id",
                "timestamp": "ts",
                "partitions": "drop",
            },
        }
    )


def build_postgresql(engine: sa.Engine, rows: int, tables: list[str]) -> None:
    step = (END - FIRST) / rows
    with engine.begin() as conn:
        for table in tables:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            conn.exec_driver_sql(
                f"CREATE TABLE {table} (id bigint NOT NULL, ts timestamptz NOT NULL, "
                "caller text, callee text, duration integer, PRIMARY KEY (id, ts)) "
                "PARTITION BY RANGE (ts)"
            )
            conn.exec_driver_sql(f"CREATE INDEX {table}_ts ON {table} (ts)")
            for lower, upper in itertools.pairwise(MONTHS):
                conn.exec_driver_sql(
                    f"CREATE TABLE {table}_{lower:%Y%m} PARTITION OF {table} FOR VALUES "
                    f"FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
                )
            conn.execute(
                sa.text(
                    f"INSERT INTO {table} SELECT g, :first + g * :step, "
                    "'+31 6 ' || lpad((g * 7919 % 100000000)::text, 8, '0'), "
                    "'+31 20 ' || lpad((g * 104729 % 10000000)::text, 7, '0'), g % 3600 "
                    "FROM generate_series(0::bigint, :rows - 1) AS g"
                ),
                {"first": FIRST, "step": step, "rows": rows},
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.exec_driver_sql(f"VACUUM ANALYZE {table}")


def build_mariadb(engine: sa.Engine, rows: int, tables: list[str]) -> None:
    seconds = int((END - FIRST).total_seconds())
    parts = ", ".join(
        f"PARTITION p{lower:%Y%m} VALUES LESS THAN (TO_DAYS('{upper:%Y-%m-%d}'))"
        for lower, upper in itertools.pairwise(MONTHS)
    )
    with engine.begin() as conn:
        for table in tables:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            conn.exec_driver_sql(
                f"CREATE TABLE {table} (id BIGINT NOT NULL, ts DATETIME(6) NOT NULL, "
                "caller VARCHAR(20), callee VARCHAR(20), duration INT, PRIMARY KEY (id, ts), "
                "KEY (ts)) "
                f"ENGINE=InnoDB PARTITION BY RANGE (TO_DAYS(ts)) ({parts})"
            )
            conn.execute(
                sa.text(
                    f"INSERT INTO {table} SELECT seq, :first + INTERVAL "
                    f"(seq * {seconds} DIV {rows}) SECOND, "
                    "CONCAT('+31 6 ', LPAD(seq * 7919 % 100000000, 8, '0')), "
                    "CONCAT('+31 20 ', LPAD(seq * 104729 % 10000000, 7, '0')), seq % 3600 "
                    f"FROM seq_0_to_{rows - 1}"
                ),
                {"first": FIRST.replace(tzinfo=None)},
            )
        for table in tables:
            conn.exec_driver_sql(f"ANALYZE TABLE {table}")


def settle(engine: sa.Engine) -> None:
    """Between the two measurements, the first one's background work done, so that the second
    does not pay for it: on MariaDB InnoDB's purge of the plain DELETE's 2 million
    delete-marked rows (the history list), on PostgreSQL a CHECKPOINT of its WAL."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CHECKPOINT")
        return
    deadline = time.monotonic() + 120
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            length = conn.exec_driver_sql(
                "SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'"
            ).one()[1]
            conn.rollback()
            if int(length) < 1000:
                break
            time.sleep(0.5)
    flush_dirty_pages(engine, deadline)


def flush_dirty_pages(engine: sa.Engine, deadline: float) -> None:
    """InnoDB's CHECKPOINT: its dirty pages written out (the page cleaner asked to flush them
    all, then its setting restored), else the next DDL (the purge's DROP PARTITION) waits for
    the redo log's checkpoint of the plain DELETE's pages. Needs SUPER; skipped without it."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        try:
            setting = conn.exec_driver_sql("SELECT @@GLOBAL.innodb_max_dirty_pages_pct").scalar()
            conn.exec_driver_sql("SET GLOBAL innodb_max_dirty_pages_pct = 0")
        except sa.exc.DBAPIError:
            return
        try:
            while time.monotonic() < deadline:
                dirty = conn.exec_driver_sql(
                    "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'"
                ).one()[1]
                if int(dirty) < 100:
                    return
                time.sleep(0.2)
        finally:
            conn.exec_driver_sql(f"SET GLOBAL innodb_max_dirty_pages_pct = {float(setting)}")


def plain_delete(engine: sa.Engine, table: str) -> tuple[int, float]:
    cutoff = CUTOFF if engine.dialect.name == "postgresql" else CUTOFF.replace(tzinfo=None)
    started = time.perf_counter()
    with engine.begin() as conn:
        deleted = conn.execute(
            sa.text(f"DELETE FROM {table} WHERE ts < :cutoff"), {"cutoff": cutoff}
        ).rowcount
    return deleted, time.perf_counter() - started


def purge(engine: sa.Engine, table: str) -> tuple[int, float, dict[str, int]]:
    store = SqlTableStore(policy(table), engine)
    window = RetentionWindow(CUTOFF)
    expired = store.plan(window).expired
    started = time.perf_counter()
    result = store.purge(window, approved=expired)
    return result.deleted, time.perf_counter() - started, result.partitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="fresh copies each, median")
    parser.add_argument("--mariadb", action="store_true", help="MariaDB instead of PostgreSQL")
    args = parser.parse_args()
    engine = create_engine(MARIADB_URL if args.mariadb else URL)
    tables = ["bench_part_plain", "bench_part_purge"]
    build = build_mariadb if args.mariadb else build_postgresql
    ratios = []
    try:
        for round_ in range(args.rounds):
            started = time.perf_counter()
            build(engine, args.rows, tables)
            print(
                f"round {round_ + 1}, {engine.dialect.name}: 2 copies of {args.rows:,} rows in 24 "
                f"monthly partitions, built in {time.perf_counter() - started:.1f} s; cutoff "
                f"{CUTOFF:%Y-%m-%d}"
            )
            # Whichever runs second pays for the first one's writes: alternate.
            settle(engine)  # the build's own background work
            if round_ % 2 == 0:
                plain_rows, plain_seconds = plain_delete(engine, tables[0])
                settle(engine)
                purged_rows, purge_seconds, dropped = purge(engine, tables[1])
            else:
                purged_rows, purge_seconds, dropped = purge(engine, tables[1])
                settle(engine)
                plain_rows, plain_seconds = plain_delete(engine, tables[0])
            assert purged_rows == plain_rows, (purged_rows, plain_rows)
            ratios.append(plain_seconds / purge_seconds)
            print(f"  plain DELETE: {plain_rows:,} rows in {plain_seconds:.2f} s")
            print(
                f"  purge (partitions: drop): {purged_rows:,} rows in {purge_seconds:.2f} s, "
                f"{dropped.get('partitions', 0)} partitions dropped whole holding "
                f"{dropped.get('rows', 0):,} rows; ratio {ratios[-1]:.1f}x"
            )
    finally:
        with engine.begin() as conn:
            for table in tables:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()
    median = statistics.median(ratios)
    verdict = "meets" if median >= TARGET else "misses"
    print(
        f"{engine.dialect.name}: purge {median:.1f}x the plain DELETE, median of "
        f"{len(ratios)} rounds ({', '.join(f'{r:.1f}x' for r in ratios)}; {verdict} the "
        f"{TARGET:.0f}x target)"
    )


if __name__ == "__main__":
    main()
