"""Concurrent writers never fork the audit trail's hash chain: threads appending at once (two
policies' runs finishing together, on PostgreSQL, MariaDB and a SQLite file) leave one chain,
every prev_hash used once. Each server test has a database of its own, dropped at the end."""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lifecycle.audit import ensure_schema, record_run
from lifecycle.chain import ZERO_HASH, verify
from lifecycle.control import runs
from tests.unit.test_audit_trail import row

THREADS, ROWS = 2, 40
DAY = datetime(2026, 11, 29, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def control_url(request, tmp_path) -> Iterator[sa.URL]:
    """A fresh control database: a SQLite file, or a database of its own on the server."""
    if request.param == "sqlite":
        yield sa.make_url(f"sqlite:///{tmp_path / 'audit.db'}")
        return
    server = sa.make_url(
        request.getfixturevalue("postgres_url" if request.param == "postgresql" else "mariadb_url")
    )
    name = f"chain_{secrets.token_hex(4)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield server.set(database=name)
    finally:
        force = " WITH (FORCE)" if request.param == "postgresql" else ""
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


def _writer(url: sa.URL, policy: str, barrier: threading.Barrier, errors: list) -> None:
    engine = sa.create_engine(url)
    try:
        for index in range(ROWS):
            # Both writers race for every row: a lone writer holding SQLite's lock for all its
            # rows would prove nothing about concurrency (and made the interleaving flaky).
            barrier.wait()
            fields = {"policy": policy, "dag_id": f"retention_{policy}", "deleted": index}
            logical_date = DAY + timedelta(days=index)
            assert record_run(engine, row(f"scheduled__{index}", logical_date, **fields))
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)
    finally:
        engine.dispose()


@pytest.mark.parametrize("control_url", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_concurrent_writers_leave_one_unbroken_chain(control_url):
    owner = sa.create_engine(control_url)
    try:
        ensure_schema(owner)
        barrier, errors = threading.Barrier(THREADS), []
        threads = [
            threading.Thread(target=_writer, args=(control_url, f"p{n}", barrier, errors))
            for n in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors

        with owner.connect() as conn:
            chained = conn.execute(
                sa.select(
                    runs.c.chain_seq, runs.c.prev_hash, runs.c.row_hash, runs.c.policy
                ).order_by(runs.c.chain_seq)
            ).all()
        total = THREADS * ROWS
        assert [r.chain_seq for r in chained] == list(range(1, total + 1))
        # No fork: every hash is the previous one of exactly one row, the first's is zeros.
        uses = Counter(r.prev_hash for r in chained)
        assert max(uses.values()) == 1 and chained[0].prev_hash == ZERO_HASH
        assert [r.prev_hash for r in chained[1:]] == [r.row_hash for r in chained[:-1]]
        # The writers did interleave: each round's two rows sit side by side in some order.
        switches = sum(1 for a, b in itertools.pairwise(chained) if a.policy != b.policy)
        assert switches >= ROWS
        result = verify(owner)
        assert result.intact and result.checked == total, result.summary()
    finally:
        owner.dispose()
