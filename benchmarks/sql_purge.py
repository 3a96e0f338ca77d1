"""SQL purge benchmark on PostgreSQL (DESIGN §7; issue 13). Prints ratios; asserts nothing.

For each key kind, side by side in one run: a bigint key that follows time (an append-only
table), a random UUID key (`gen_random_uuid()`, as billing platforms key calls) and a text key
in no time order (`md5`, a call id). Each kind gets tables of `--rows` rows (1,000,000), about
half of them expired, an index on the timestamp, built once and copied row for row (the same
physical order), then per round:
- one plain `DELETE ... WHERE ts < cutoff` on one copy (the throughput to match);
- the engine's purge on another (blocks in physical order, then the keyed sweep; the ANALYZE of
  the stale statistics is the verification's, reported with it), without the deletion ledger
  as before; target: at least 0.7x the plain DELETE;
- in the first round, on two more copies: the purge with a journal that asks for witnesses
  as the ledger does (the lowest and highest key of each batch; the ledger's two inserts per
  batch into the control database are not in the figure), and the key-range walk (the purge
  before physical order).
The order of the plain DELETE and the purge alternates from round to round (whichever runs
second pays for the first one's WAL otherwise). Then peak memory of a purge at two table
sizes (target: flat) and the Great Expectations verification against a hand-written count(*).

    PYTHONPATH=plugins .venv/bin/python benchmarks/sql_purge.py [--rows 1000000] [--rounds 3]

The purge stops reading once it has deleted what the check approved: here, rows inserted in
time order, that is half-way through the table. With --shuffled, the rows' moments are in no
order, expired rows are in every block and the walk reads them all.

With --mariadb, the same three key kinds on MariaDB/InnoDB, where the purge stays in key ranges
(the table is clustered on its primary key): plain DELETE against the purge, nothing else.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from bench_servers import MARIADB_URL, POSTGRES_URL

from lifecycle.policy import Policy
from lifecycle.stores import RetentionWindow
from lifecycle.stores.sql import SqlTableStore, create_engine

URL = POSTGRES_URL
CUTOFF = datetime(2026, 5, 29, tzinfo=UTC)
WINDOW = RetentionWindow(CUTOFF)
TARGET = 0.7
# Key kind -> (column type, value of row g); rows are inserted in time order (g).
KINDS = {
    "bigint": ("bigint", "g"),
    "uuid": ("uuid", "gen_random_uuid()"),
    "text": ("text", "md5(g::text)"),
}


# Row g's moment, in steps of 10 s from the start: in insertion order (as CDRs arrive), or
# with --shuffled in none (expired rows in every block: the walk must read all of them).
MOMENT = ["g"]
SHUFFLED = "(random() * :rows)::bigint"


def build(engine: sa.Engine, kind: str, rows: int, copies: list[str]) -> None:
    """`rows` rows, one every 10 s, half of them before the cutoff; ~80-byte payload like a
    CDR. The first table is generated, the others copied from it in its physical order."""
    column_type, key = KINDS[kind]
    start = CUTOFF - timedelta(seconds=10 * (rows // 2))
    first, *others = copies
    with engine.begin() as conn:
        for table in copies:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(
            sa.text(
                f"CREATE TABLE {first} (id {column_type} PRIMARY KEY, ts timestamptz NOT NULL, "
                "caller text, callee text, duration integer)"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {first} SELECT {key}, :start + {MOMENT[0]} * interval '10 seconds', "
                "'+31 6 ' || lpad((g * 7919 % 100000000)::text, 8, '0'), "
                "'+31 20 ' || lpad((g * 104729 % 10000000)::text, 7, '0'), g % 3600 "
                "FROM generate_series(0::bigint, :rows - 1) AS g"
            ),
            {"start": start, "rows": rows},
        )
        for table in others:
            conn.execute(sa.text(f"CREATE TABLE {table} (LIKE {first} INCLUDING ALL)"))
            conn.execute(sa.text(f"INSERT INTO {table} SELECT * FROM {first}"))
        for table in copies:
            conn.execute(sa.text(f"CREATE INDEX {table}_ts ON {table} (ts)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in copies:
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


# MariaDB: a random (version 4) UUID from md5: UUID() is time-based, and MariaDB stores it in
# time order.
MARIADB_KINDS = {
    "bigint": ("BIGINT", "seq"),
    "uuid": (
        "UUID",
        "CAST(CONCAT(SUBSTR(MD5(seq), 1, 8), '-', SUBSTR(MD5(seq), 9, 4), '-4', "
        "SUBSTR(MD5(seq), 14, 3), '-8', SUBSTR(MD5(seq), 18, 3), '-', SUBSTR(MD5(seq), 21, 12)) "
        "AS UUID)",
    ),
    "text": ("VARCHAR(32)", "MD5(seq)"),
}


def build_mariadb(engine: sa.Engine, kind: str, rows: int, copies: list[str]) -> None:
    """The same rows on MariaDB/InnoDB (clustered on the key: key ranges are physical there)."""
    column_type, key = MARIADB_KINDS[kind]
    start = (CUTOFF - timedelta(seconds=10 * (rows // 2))).replace(tzinfo=None)
    first, *others = copies
    with engine.begin() as conn:
        for table in copies:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(
            sa.text(
                f"CREATE TABLE {first} (id {column_type} PRIMARY KEY, ts DATETIME(6) NOT NULL, "
                f"caller VARCHAR(20), callee VARCHAR(20), duration INT, KEY {first}_ts (ts)) "
                "ENGINE=InnoDB"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {first} SELECT {key}, :start + INTERVAL (seq * 10) SECOND, "
                "CONCAT('+31 6 ', LPAD(seq * 7919 % 100000000, 8, '0')), "
                "CONCAT('+31 20 ', LPAD(seq * 104729 % 10000000, 7, '0')), seq % 3600 "
                f"FROM seq_0_to_{rows - 1}"
            ),
            {"start": start},
        )
        for table in others:
            conn.execute(sa.text(f"CREATE TABLE {table} LIKE {first}"))
            conn.execute(sa.text(f"INSERT INTO {table} SELECT * FROM {first}"))
        for table in copies:
            conn.execute(sa.text(f"ANALYZE TABLE {table}"))


def mariadb_round(engine: sa.Engine, kind: str, rows: int, round_number: int) -> dict[str, Any]:
    """Plain DELETE and the engine's purge (key ranges) on identical MariaDB copies."""
    plain, purged = f"bench_{kind}_plain", f"bench_{kind}_keys"
    build_mariadb(engine, kind, rows, [plain, purged])
    store = store_for(engine, purged)
    expired = store.plan(WINDOW).expired
    cutoff = CUTOFF.replace(tzinfo=None)

    def plain_delete() -> int:
        with engine.begin() as conn:
            statement = sa.text(f"DELETE FROM {plain} WHERE ts < :cutoff")
            return int(conn.execute(statement, {"cutoff": cutoff}).rowcount)

    def purge() -> int:
        return store.purge(WINDOW, approved=expired).deleted

    figures = {}
    for name, operation in [("plain", plain_delete), ("walk", purge)][
        :: 1 if round_number % 2 else -1
    ]:
        seconds, deleted = timed(operation)
        assert deleted == expired, (kind, name, deleted, expired)
        figures[name] = seconds
    drop(engine, [plain, purged])
    return {"expired": expired, **figures}


def mariadb(rows: int, rounds: int, kinds: list[str]) -> None:
    engine = create_engine(MARIADB_URL)
    print(f"MariaDB purge benchmark (key ranges): {rows:,} rows per table, {rounds} rounds")
    for kind in kinds:
        results = [mariadb_round(engine, kind, rows, n) for n in range(1, rounds + 1)]
        ratios = [r["plain"] / r["walk"] for r in results]
        plain = ", ".join(f"{r['plain']:.2f}" for r in results)
        purge = ", ".join(f"{r['walk']:.2f}" for r in results)
        median = sorted(ratios)[len(ratios) // 2]
        print(
            f"{kind:<6} MariaDB    : {results[0]['expired']:,} rows; plain DELETE {plain} s; "
            f"purge {purge} s; median {median:.2f}x of {', '.join(f'{r:.2f}' for r in ratios)}"
            f" ({'meets' if median >= TARGET else 'BELOW'} the {TARGET}x target)"
        )


def drop(engine: sa.Engine, tables: list[str]) -> None:
    with engine.begin() as conn:
        for table in tables:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))


def store_for(engine: sa.Engine, table: str, *, key_ranges: bool = False) -> SqlTableStore:
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
    store = SqlTableStore(policy, engine)
    if key_ranges:  # as before physical order: no walk, the keyed loop does everything
        store.sql.heap_layout = lambda conn, table: None  # type: ignore[method-assign]
    return store


class WitnessJournal:
    """Asks for witnesses as the deletion ledger does, and keeps nothing."""

    wants_witnesses = True

    def before(self, batch: int, expected: int, witnesses: list[Any] | None = None) -> None:
        pass

    def after(self, batch: int, deleted: int) -> None:
        pass


def checkpoint(engine: sa.Engine) -> None:
    """Flush WAL before a timed phase, so that one phase does not pay for the other's writes
    (needs superuser; skipped otherwise)."""
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("CHECKPOINT"))
    except sa.exc.DBAPIError:
        pass


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def one_round(engine: sa.Engine, kind: str, rows: int, round_number: int) -> dict[str, Any]:
    """Plain DELETE and the engine's purge on identical copies (and, in round 1, the key-range
    walk on a third); seconds and rows of each."""
    names = ("plain", "walk", "keys", "witnessed")
    plain, walked, keyed, witnessed = (f"bench_{kind}_{name}" for name in names)
    tables = [plain, walked] + ([keyed, witnessed] if round_number == 1 else [])
    build(engine, kind, rows, tables)
    store = store_for(engine, walked)
    expired = store.plan(WINDOW).expired

    def plain_delete() -> int:
        with engine.begin() as conn:
            statement = sa.text(f"DELETE FROM {plain} WHERE ts < :cutoff")
            return int(conn.execute(statement, {"cutoff": CUTOFF}).rowcount)

    def purge(target: SqlTableStore, journal: WitnessJournal | None = None) -> Callable[[], int]:
        return lambda: target.purge(WINDOW, approved=expired, journal=journal).deleted

    operations = [("plain", plain_delete), ("walk", purge(store))][:: 1 if round_number % 2 else -1]
    if round_number == 1:
        operations.append(("keys", purge(store_for(engine, keyed, key_ranges=True))))
        operations.append(("witnessed", purge(store_for(engine, witnessed), WitnessJournal())))
    figures = {}
    for name, operation in operations:
        checkpoint(engine)
        seconds, deleted = timed(operation)
        assert deleted == expired, (kind, name, deleted, expired)
        figures[name] = seconds
    drop(engine, tables)
    return {"expired": expired, **figures}


def purge_memory(rows: int) -> dict[str, int]:
    """Run in a child process: peak RSS growth of one purge over a uuid table of `rows` rows."""
    engine = create_engine(URL)
    table = f"bench_mem_{rows}"
    build(engine, "uuid", rows, [table])
    store = store_for(engine, table)
    plan = store.plan(WINDOW)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = store.purge(WINDOW, approved=plan.expired, journal=WitnessJournal())
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    drop(engine, [table])
    return {"rows": rows, "deleted": result.deleted, "growth": after - before, "peak": after}


def compare_verification(engine: sa.Engine, rows: int) -> None:
    """Medians of 5 (after a warm-up) of the GX verification and of a hand-written count(*),
    on a table before and after its purge."""
    table = "bench_verify"
    build(engine, "uuid", rows, [table])
    store = store_for(engine, table)

    def count() -> int:
        with engine.connect() as conn:
            statement = sa.text(f"SELECT count(*) FROM {table} WHERE ts < :cutoff")
            return int(conn.execute(statement, {"cutoff": CUTOFF}).scalar_one())

    for when in ("before purge", "after purge"):
        first, _ = timed(lambda: store.verify(WINDOW))  # after the purge: with its ANALYZE
        count()
        gx = sorted(timed(lambda: store.verify(WINDOW)) for _ in range(5))
        counted = sorted(timed(count) for _ in range(5))
        remaining = gx[0][1].remaining
        assert remaining == counted[0][1], (remaining, counted[0][1])
        gx_ms, count_ms = gx[2][0] * 1000, counted[2][0] * 1000
        print(
            f"verification      : {when:<12} ({remaining:>9,} expired): GX {gx_ms:6.1f} ms vs "
            f"hand-written count(*) {count_ms:6.1f} ms, ratio {gx_ms / count_ms:5.2f} (target <= 2)"
        )
        if when == "after purge":  # the statistics refresh the purge leaves to verify
            print(
                f"verification      : the first after the purge, with its ANALYZE of the stale "
                f"statistics: {first * 1000:.0f} ms (Great Expectations' fixed cost included)"
            )
        if when == "before purge":
            store.purge(WINDOW, approved=remaining)
    drop(engine, [table])


def report(kind: str, rounds: list[dict[str, Any]]) -> float:
    ratios = [r["plain"] / r["walk"] for r in rounds]
    median = sorted(ratios)[len(ratios) // 2]
    first = rounds[0]
    rate = first["expired"] / first["walk"]
    plain = ", ".join(f"{r['plain']:.2f}" for r in rounds)
    walk = ", ".join(f"{r['walk']:.2f}" for r in rounds)
    print(
        f"{kind:<6} key        : {first['expired']:,} rows; plain DELETE {plain} s; purge "
        f"{walk} s ({rate:,.0f} rows/s in round 1)"
    )
    verdict = "meets" if median >= TARGET else "BELOW"
    print(
        f"{kind:<6} ratio      : median {median:.2f}x of {', '.join(f'{r:.2f}' for r in ratios)}"
        f" ({verdict} the {TARGET}x target)"
    )
    print(
        f"{kind:<6} round 1    : with the ledger's witnesses {first['witnessed']:.2f} s = "
        f"{first['plain'] / first['witnessed']:.2f}x; key ranges as before "
        f"{first['keys']:.2f} s = {first['plain'] / first['keys']:.2f}x"
    )
    return median


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--skip-extras", action="store_true", help="no memory, no verification")
    parser.add_argument("--mariadb", action="store_true", help="MariaDB only (key ranges)")
    parser.add_argument(
        "--shuffled", action="store_true", help="rows in no time order (PostgreSQL only)"
    )
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(purge_memory(args.memory_child)))
        return
    if args.mariadb:
        mariadb(args.rows, args.rounds, args.kinds.split(","))
        return

    engine = create_engine(URL)
    if args.shuffled:
        MOMENT[0] = SHUFFLED
    print(
        f"PostgreSQL purge benchmark: {args.rows:,} rows per table, cutoff {CUTOFF.isoformat()},"
        f" {args.rounds} rounds, batches of {store_batch_size()}, rows "
        + ("in no time order (expired ones in every block)" if args.shuffled else "in time order")
    )
    kinds = args.kinds.split(",")
    results = {
        kind: [one_round(engine, kind, args.rows, n) for n in range(1, args.rounds + 1)]
        for kind in kinds
    }
    medians = {kind: report(kind, rounds) for kind, rounds in results.items()}
    print(
        "summary           : "
        + ", ".join(f"{kind} {median:.2f}x" for kind, median in medians.items())
        + f" (target >= {TARGET}x each)"
    )
    if args.skip_extras:
        return
    import great_expectations  # noqa: F401  (a one-off ~3 s per task process)

    compare_verification(engine, args.rows)
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
    for figure in figures:
        print(
            f"purge peak memory : {figure['deleted']:>9,} rows deleted (uuid key), peak RSS "
            f"{figure['peak'] / 1024:.0f} MiB, growth during the purge "
            f"{figure['growth'] / 1024:.1f} MiB"
        )
    ratio = figures[1]["peak"] / max(figures[0]["peak"], 1)
    print(f"memory ratio      : peak RSS at 10x the rows = {ratio:.2f}x (target: flat, ~1.0)")


def store_batch_size() -> int:
    from lifecycle.stores.sql_config import SqlStore

    return int(SqlStore.model_fields["batch_size"].default)


if __name__ == "__main__":
    main()
