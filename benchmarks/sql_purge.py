"""SQL purge benchmark on PostgreSQL (DESIGN §7). Prints ratios; asserts nothing.

Two identical 2,000,000-row tables, about half of the rows expired. In the same run:
- one plain `DELETE ... WHERE ts < cutoff` on the first table (the throughput to match);
- the engine's batched purge on the second table (target: at least 0.5x the plain DELETE);
- peak memory of the purge at two table sizes (target: flat, not growing with the row count);
- the Great Expectations verification against a hand-written `count(*)` (target: within 2x).

    PYTHONPATH=plugins .venv/bin/python benchmarks/sql_purge.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from lifecycle.policy import Policy
from lifecycle.stores import RetentionWindow
from lifecycle.stores.sql import SqlTableStore, create_engine

URL = os.environ.get(
    "LIFECYCLE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CUTOFF = datetime(2026, 5, 29, tzinfo=UTC)
WINDOW = RetentionWindow(CUTOFF)


def build(engine: sa.Engine, table: str, rows: int) -> None:
    """`rows` rows, one every 10 s ending a little after `rows/2` 10-second steps past the cutoff;
    ids follow time as in an append-only table; ~80-byte payload like a CDR."""
    start = CUTOFF - timedelta(seconds=10 * (rows // 2))
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(
            sa.text(
                f"CREATE TABLE {table} (id bigint PRIMARY KEY, ts timestamptz NOT NULL, "
                "caller text, callee text, duration integer)"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {table} SELECT g, :start + g * interval '10 seconds', "
                "'+31 6 ' || lpad((g * 7919 % 100000000)::text, 8, '0'), "
                "'+31 20 ' || lpad((g * 104729 % 10000000)::text, 7, '0'), g % 3600 "
                "FROM generate_series(0::bigint, :rows - 1) AS g"
            ),
            {"start": start, "rows": rows},
        )
        conn.execute(sa.text(f"CREATE INDEX {table}_ts ON {table} (ts)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


def store_for(engine: sa.Engine, table: str) -> SqlTableStore:
    policy = Policy.model_validate(
        {
            "name": "bench",
            "title": "Benchmark",
            "statement": {"service": "VoIP", "data": "CDRs", "retention": "Zes maanden"},
            "controller": "provider",
            "legal_basis": "contract",
            "retention": {"period": "P6M"},
            "store": {
                "kind": "sql",
                "conn_id": "bench",
                "table": table,
                "key": "id",
                "timestamp": "ts",
            },
        }
    )
    return SqlTableStore(policy, engine)


def purge_memory(rows: int) -> dict:
    """Run in a child process: peak RSS growth of one purge over a table of `rows` rows."""
    engine = create_engine(URL)
    table = f"bench_mem_{rows}"
    build(engine, table, rows)
    store = store_for(engine, table)
    plan = store.plan(WINDOW)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = store.purge(WINDOW, approved=plan.expired)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {table}"))
    return {
        "rows": rows,
        "deleted": result.deleted,
        "peak_growth_kib": after - before,
        "peak_kib": after,
    }


def compare_verification(engine: sa.Engine, store: SqlTableStore) -> tuple[float, float, int]:
    """Medians of 5 (after a warm-up) of the GX verification and of a hand-written count(*)."""

    def count():
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT count(*) FROM bench_engine WHERE ts < :cutoff"), {"cutoff": CUTOFF}
            ).scalar()

    store.verify(WINDOW)
    count()
    gx_runs = [timed(lambda: store.verify(WINDOW)) for _ in range(5)]
    count_runs = [timed(count) for _ in range(5)]
    remaining = gx_runs[0][1].remaining
    assert remaining == count_runs[0][1], (remaining, count_runs[0][1])
    gx_ms = sorted(seconds for seconds, _ in gx_runs)[2] * 1000
    count_ms = sorted(seconds for seconds, _ in count_runs)[2] * 1000
    return gx_ms, count_ms, remaining


def checkpoint(engine: sa.Engine) -> None:
    """Flush WAL before a timed phase, so that one phase does not pay for the other's writes
    (needs superuser; skipped otherwise)."""
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("CHECKPOINT"))
    except sa.exc.DBAPIError:
        pass


def timed(function):
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def one_round(engine: sa.Engine, rows: int, *, plain_first: bool):
    """Build both tables, time the plain DELETE and the engine's purge (in alternating order
    from round to round: whichever runs second pays for the first one's WAL otherwise)."""
    build(engine, "bench_plain", rows)
    build(engine, "bench_engine", rows)
    store = store_for(engine, "bench_engine")
    plan = store.plan(WINDOW)

    def plain_delete():
        with engine.begin() as conn:
            return conn.execute(
                sa.text("DELETE FROM bench_plain WHERE ts < :cutoff"), {"cutoff": CUTOFF}
            ).rowcount

    def purge():
        return store.purge(WINDOW, approved=plan.expired)

    # Verification on the unpurged table (1M expired rows: the pushed-down query does real
    # work), then after the purge.
    before = compare_verification(engine, store)
    timings = {}
    for name, operation in (("plain", plain_delete), ("engine", purge))[
        :: 1 if plain_first else -1
    ]:
        checkpoint(engine)
        timings[name] = timed(operation)
    (plain_seconds, plain_deleted), (purge_seconds, result) = timings["plain"], timings["engine"]
    assert plain_deleted == result.deleted == plan.expired, (plain_deleted, result, plan)
    plain_rate, purge_rate = plain_deleted / plain_seconds, result.deleted / purge_seconds
    print(
        f"plain DELETE      : {plain_deleted:,} rows in {plain_seconds:.2f} s"
        f" = {plain_rate:,.0f} rows/s"
    )
    print(
        f"engine purge      : {result.deleted:,} rows in {purge_seconds:.2f} s"
        f" = {purge_rate:,.0f} rows/s"
        f" ({result.batches} batches of {store.config.batch_size:,}, ANALYZE included)"
    )
    return purge_rate / plain_rate, before, compare_verification(engine, store)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(purge_memory(args.memory_child)))
        return

    engine = create_engine(URL)
    print(f"PostgreSQL purge benchmark: {args.rows:,} rows per table, cutoff {CUTOFF.isoformat()}")
    # GX is imported once first: a one-off ~3 s per task process, not per validation.
    import great_expectations  # noqa: F401

    ratios = []
    for round_number in range(1, args.rounds + 1):
        ratio, before, after = one_round(engine, args.rows, plain_first=round_number % 2 == 1)
        ratios.append(ratio)
    print(
        f"throughput ratio  : median {sorted(ratios)[len(ratios) // 2]:.2f} of "
        f"{', '.join(f'{r:.2f}' for r in ratios)} (target >= 0.5)"
    )
    for when, (gx_ms, count_ms, remaining) in (("before purge", before), ("after purge", after)):
        print(
            f"verification      : {when:<12} ({remaining:>9,} expired): GX {gx_ms:6.1f} ms vs "
            f"hand-written count(*) {count_ms:6.1f} ms, ratio {gx_ms / count_ms:5.2f} (target <= 2)"
        )

    # Memory: the same purge at a tenth and at the full size, each in a fresh process.
    figures = []
    for rows in (args.rows // 10, args.rows):
        output = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(rows)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        figures.append(json.loads(output.strip().splitlines()[-1]))
    small, large = figures
    for figure in figures:
        print(
            f"purge peak memory : {figure['deleted']:>9,} rows deleted, peak RSS "
            f"{figure['peak_kib'] / 1024:.0f} MiB, growth during the purge "
            f"{figure['peak_growth_kib'] / 1024:.1f} MiB"
        )
    ratio = (large["peak_kib"]) / max(small["peak_kib"], 1)
    print(f"memory ratio      : peak RSS at 10x the rows = {ratio:.2f}x (target: flat, ~1.0)")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE bench_plain"))
        conn.execute(sa.text("DROP TABLE bench_engine"))


if __name__ == "__main__":
    main()
