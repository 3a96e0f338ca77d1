"""Scale-out: a purge split into slices (one mapped task each) that never overlap and together
miss nothing, on real SQLite, PostgreSQL and MariaDB: ranges of blocks on PostgreSQL, of keys
elsewhere."""

from __future__ import annotations

import contextlib
import itertools
import threading
from datetime import timedelta

import sqlalchemy as sa

from lifecycle.stores import PurgeLimitExceeded, Slice
from lifecycle.stores.sql import SqlTableStore, create_engine
from tests.stores.test_sql import CUTOFF, ONE_US, WINDOW, config, make_table, survivors


def _timestamps(count: int) -> list:
    """Expired and kept rows interleaved in key order, plus rows without a timestamp."""
    pattern = [CUTOFF - timedelta(days=3), CUTOFF - ONE_US, CUTOFF, CUTOFF + timedelta(days=1)]
    return [pattern[i % len(pattern)] for i in range(count)] + [None] * 5


def test_integer_key_slices_partition_the_purgeable_rows(engine):
    _slices_partition_and_purge_in_parallel(engine, "integer")


def test_uuid_key_slices_partition_the_purgeable_rows(postgres_url):
    # UUID keys slice where the database has a UUID type (PostgreSQL); elsewhere they are text.
    engine = create_engine(postgres_url)
    try:
        _slices_partition_and_purge_in_parallel(engine, "uuid")
    finally:
        engine.dispose()


def _slices_partition_and_purge_in_parallel(engine, key_type):
    table = make_table(engine, "events", _timestamps(403), key_type=key_type)
    store = SqlTableStore(config(batch_size=10, slices=4), engine)
    expired = store.plan(WINDOW).expired
    assert expired == 202  # 101 three days old, 101 one microsecond past the cutoff

    pieces = store.slices(WINDOW, count=4, expired=expired)

    if engine.dialect.name == "postgresql":
        # Ranges of blocks (the table is walked in physical order): whole blocks of about 51
        # purgeable rows, contiguous from block 0 to the end of the table.
        assert 2 <= len(pieces) <= 4 and sum(s.expired for s in pieces) == 202
        assert all(s.of_blocks and not s.of_keys for s in pieces)
        assert pieces[0].from_block is None and pieces[-1].to_block is None
        assert all(a.to_block == b.from_block for a, b in itertools.pairwise(pieces))
    else:
        assert [s.index for s in pieces] == [0, 1, 2, 3]
        assert [s.expired for s in pieces] == [51, 51, 51, 49]
        assert pieces[0].after is None and pieces[-1].through is None
        assert all(a.through == b.after for a, b in itertools.pairwise(pieces))
    # A count over blocks cannot tell deleted from moved (an UPDATE moves a row): none there.
    counts = [s.expired for s in pieces] if engine.dialect.name != "postgresql" else [None] * 4
    assert [store.past_window(WINDOW, s) for s in pieces] == counts[: len(pieces)]
    # Each slice in its own thread and connection, as the mapped tasks run on their workers.
    results = {}

    def purge(piece: Slice) -> None:
        results[piece.index] = store.purge(WINDOW, approved=piece.expired, in_slice=piece)

    threads = [threading.Thread(target=purge, args=(s,)) for s in pieces]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {i: r.deleted for i, r in results.items()} == {s.index: s.expired for s in pieces}
    kept = [CUTOFF] * 101 + [CUTOFF + timedelta(days=1)] * 100
    assert survivors(engine, table) == sorted(kept) + [None] * 5
    assert store.verify(WINDOW).success


def test_a_slice_never_deletes_outside_its_bounds(engine):
    table = make_table(engine, "events", _timestamps(403))
    store = SqlTableStore(config(batch_size=10, slices=4), engine)
    second = store.slices(WINDOW, count=4, expired=202)[1]

    assert store.purge(WINDOW, approved=second.expired, in_slice=second).deleted == second.expired

    expired = table.c.seen_at < CUTOFF.replace(tzinfo=None)
    with engine.connect() as conn:
        left = sorted(conn.execute(sa.select(table.c.id).where(expired)).scalars())
        if engine.dialect.name == "postgresql":  # a range of blocks
            block = sa.literal_column("(events.ctid::text::point)[0]::bigint")
            blocks = set(conn.execute(sa.select(block).where(expired)).scalars())
            assert second.from_block is not None and second.to_block is not None
            assert not blocks & set(range(second.from_block, second.to_block))
        else:
            assert second.expired == 51
            assert not [i for i in left if second.after < i <= second.through]
    assert len(left) == 202 - second.expired
    if engine.dialect.name != "postgresql":
        assert store.past_window(WINDOW, second) == 0


def test_small_purges_and_text_keys_stay_in_one_slice(engine):
    # Text keys may be personal data (an e-mail address as key): never a bound in XCom. Where
    # slices are ranges of blocks (PostgreSQL), a block number says nothing: they slice too.
    make_table(engine, "events", _timestamps(403), key_type="text")
    store = SqlTableStore(config(batch_size=10, slices=4), engine)
    pieces = store.slices(WINDOW, count=4, expired=202)
    if engine.dialect.name == "postgresql":
        assert len(pieces) >= 2 and not any(p.of_keys for p in pieces)
        assert sum(p.expired for p in pieces) == 202
    else:
        assert pieces == [Slice(index=0, expired=202)]
    make_table(engine, "events", _timestamps(403))
    # Slices of two batches at least (the last may be smaller): 202 rows in batches of 110
    # make one slice, in batches of 60 a slice of 120 and one of the other 82.
    store = SqlTableStore(config(batch_size=110, slices=4), engine)
    assert len(store.slices(WINDOW, count=4, expired=202)) == 1
    store = SqlTableStore(config(batch_size=60, slices=4), engine)
    sizes = [s.expired for s in store.slices(WINDOW, count=4, expired=202)]
    if engine.dialect.name == "postgresql":  # whole blocks: at least 120, the rest last
        assert len(sizes) == 2 and sizes[0] >= 120 and sum(sizes) == 202
    else:
        assert sizes == [120, 82]
    assert len(store.slices(WINDOW, count=1, expired=202)) == 1


def test_a_slice_keeps_to_its_approved_count(engine):
    table = make_table(engine, "events", _timestamps(403))
    store = SqlTableStore(config(batch_size=10, slices=4), engine)
    first = store.slices(WINDOW, count=4, expired=202)[0]
    before = len(survivors(engine, table))
    # Stopped by the ceiling: either a batch would pass it (rolled back) or one ends on it
    # (the approval spent, nothing more is read).
    with contextlib.suppress(PurgeLimitExceeded):
        store.purge(WINDOW, approved=first.expired - 1, in_slice=first)
    gone = before - len(survivors(engine, table))
    assert first.expired - 1 - 10 < gone <= first.expired - 1


def test_a_key_that_is_not_unique_is_never_sliced(engine):
    # Forty rows a key value: a slice cut at one would hold more rows than it was counted with.
    table = sa.Table(
        "events",
        sa.MetaData(),
        sa.Column("batch_no", sa.Integer, nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True)),
    )
    table.drop(engine, checkfirst=True)
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"batch_no": i // 40, "seen_at": CUTOFF - timedelta(days=1)} for i in range(400)],
        )
    store = SqlTableStore(config(key="batch_no", batch_size=10, slices=4), engine)
    pieces = store.slices(WINDOW, count=4, expired=400)
    if engine.dialect.name == "postgresql":  # ranges of blocks: the key's values play no part
        assert len(pieces) > 1 and not any(p.of_keys for p in pieces)
        deleted = [store.purge(WINDOW, approved=p.expired, in_slice=p).deleted for p in pieces]
        assert deleted == [p.expired for p in pieces] and sum(deleted) == 400
    else:
        assert pieces == [Slice(index=0, expired=400)]
        assert store.purge(WINDOW, approved=400).deleted == 400
    assert store.plan(WINDOW).total == 0
