"""SQLite: a purge steps through rowid ranges, the table's storage order, where its key is not
the rowid (a text or UUID key); exact survivors either way."""

from __future__ import annotations

import random
from datetime import timedelta

import sqlalchemy as sa

from lifecycle.stores.sql import SqlTableStore, create_engine
from tests.stores.test_sql import CUTOFF, ONE_US, WINDOW, config, survivors

EXPIRED, KEPT, BATCH = 40, 60, 5


def _table(engine: sa.Engine, key: sa.types.TypeEngine, without_rowid: bool = False) -> sa.Table:
    """Rows inserted in time order under keys in random order: the oldest EXPIRED are past the
    window (the last by one microsecond), the others in it."""
    table = sa.Table(
        "calls",
        sa.MetaData(),
        sa.Column("id", key, primary_key=True, autoincrement=False),
        sa.Column("seen_at", sa.DateTime(timezone=True)),
        sqlite_with_rowid=not without_rowid,
    )
    table.create(engine)
    keys = [f"+316{n:08d}" for n in random.Random(7).sample(range(10**8), EXPIRED + KEPT)]
    times = [CUTOFF - timedelta(days=EXPIRED - i) - ONE_US for i in range(EXPIRED)]
    times += [CUTOFF + timedelta(hours=i) for i in range(KEPT)]
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": k, "seen_at": t.replace(tzinfo=None)}
                for k, t in zip(keys, times, strict=True)
            ],
        )
    return table


def test_a_text_keyed_table_is_purged_in_rowid_ranges(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    table = _table(engine, sa.String(20))
    store = SqlTableStore(config("calls", key="id", batch_size=BATCH), engine)
    assert "rowid" in str(store.step)

    result = store.purge(WINDOW, approved=EXPIRED)

    # The expired rows are the first EXPIRED stored: EXPIRED / BATCH rowid ranges hold them all
    # (in key order, they are scattered over the whole key range: 20 ranges).
    assert (result.deleted, result.batches) == (EXPIRED, EXPIRED // BATCH)
    assert survivors(engine, table) == [CUTOFF + timedelta(hours=i) for i in range(KEPT)]
    assert store.verify(WINDOW).success
    engine.dispose()


def test_the_key_is_stepped_where_it_is_the_storage_order(tmp_path):
    integer = create_engine(f"sqlite:///{tmp_path / 'integer.db'}")
    sa.Table(
        "events",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seen_at", sa.DateTime(timezone=True)),
    ).create(integer)
    # INTEGER PRIMARY KEY is the rowid itself; a WITHOUT ROWID table is stored by its key.
    assert SqlTableStore(config("events", key="id"), integer).step.name == "id"
    without_rowid = create_engine(f"sqlite:///{tmp_path / 'without_rowid.db'}")
    table = _table(without_rowid, sa.String(20), without_rowid=True)
    store = SqlTableStore(config("calls", key="id", batch_size=BATCH), without_rowid)
    assert store.step.name == "id"
    assert store.purge(WINDOW, approved=EXPIRED).deleted == EXPIRED
    assert survivors(without_rowid, table) == [CUTOFF + timedelta(hours=i) for i in range(KEPT)]
    integer.dispose()
    without_rowid.dispose()
