"""PostgreSQL purges in physical order (`lifecycle.stores.sql_walk`): batches of block ranges
whatever the key, then a keyed sweep of what remains. On the real PostgreSQL, tables of their
own: exact survivors around the cutoff, rows moved by an UPDATE during the walk, holds, the
approved ceiling and the journal."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from lifecycle.stores import Hold, PurgeLimitExceeded, RetentionWindow
from lifecycle.stores.sql import SqlTableStore, create_engine
from lifecycle.stores.sql_walk import tid_ranges
from tests.stores.test_sql import AROUND_CUTOFF, CUTOFF, KEY_TYPES, ONE_US, WINDOW, config

ROWS = 3000  # about 45 pages of ~70 rows: walks of many ranges
EXPIRED = ROWS // 2  # the first three of the six AROUND_CUTOFF moments are before the cutoff
HELD = sum(1 for i in range(ROWS) if i % 10 == 7 and i % 6 < 3)  # customer 7's expired rows


@pytest.fixture
def pg(postgres_url):
    engine = create_engine(postgres_url)
    made: list[sa.Table] = []
    yield engine, made
    for table in made:
        table.drop(engine, checkfirst=True)
    engine.dispose()


def build(pg, key_type: str, rows: int = ROWS, analyze: bool = True) -> sa.Table:
    """`rows` rows in insertion order, each moment of AROUND_CUTOFF in turn (so every block
    holds expired and kept rows), keys in an order unrelated to it (uuid, text)."""
    engine, made = pg
    column_type, make_key = KEY_TYPES[key_type]
    table = sa.Table(
        f"physical_{uuid.uuid4().hex[:12]}",
        sa.MetaData(),
        sa.Column("id", column_type, primary_key=True, autoincrement=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("customer_id", sa.Integer, nullable=False),
        sa.Column("payload", sa.String(80)),
    )
    made.append(table)
    table.create(engine)
    moments = AROUND_CUTOFF
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "id": make_key(i),
                    "seen_at": moments[i % len(moments)],
                    "customer_id": i % 10,
                    "payload": "x" * 60,
                }
                for i in range(rows)
            ],
        )
    if analyze:  # else the store counts the rows of the first blocks
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"ANALYZE {table.name}"))
    return table


def store_of(pg, table: sa.Table, **store) -> SqlTableStore:
    engine, _ = pg
    return SqlTableStore(config(table=table.name, **store), engine)


def left(pg, table: sa.Table) -> Counter:
    engine, _ = pg
    with engine.connect() as conn:
        return Counter(conn.scalars(sa.select(table.c.seen_at)).all())


def block_of(pg, table: sa.Table, key) -> int:
    engine, _ = pg
    with engine.connect() as conn:
        ctid = conn.execute(
            sa.select(sa.literal_column("ctid")).select_from(table).where(table.c.id == key)
        ).scalar_one()
    return int(str(ctid).strip("()").split(",")[0])


def fill_the_last_block(pg, table: sa.Table) -> int:
    """Kept rows (as wide as the others) until the last block holds as many as the first."""
    engine, _ = pg
    _, make_key = KEY_TYPES["uuid"]
    with engine.connect() as conn:
        per_block = Counter(
            int(str(ctid).strip("()").split(",")[0])
            for ctid in conn.scalars(sa.select(sa.literal_column("ctid")).select_from(table))
        )
    missing = per_block[0] - per_block[max(per_block)]
    moment = CUTOFF + timedelta(days=10)
    rows = [
        {"id": make_key(ROWS + i), "seen_at": moment, "customer_id": 0, "payload": "x" * 60}
        for i in range(missing)
    ]
    if rows:
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    return missing


class Sweeps:
    """Counts the batches of the keyed sweep (`SqlTableStore._batch`)."""

    def __init__(self, monkeypatch):
        self.batches = 0
        batch = SqlTableStore._batch

        def counted(store, *args, **kwargs):
            self.batches += 1
            return batch(store, *args, **kwargs)

        monkeypatch.setattr(SqlTableStore, "_batch", counted)


class Journal:
    """What the deletion ledger is told around each batch, and a hook after each commit."""

    wants_witnesses = True

    def __init__(self, hook=None) -> None:
        self.begun: list[tuple[int, int, list | None]] = []
        self.committed: list[tuple[int, int]] = []
        self.hook = hook

    def before(self, batch, expected, witnesses=None):
        self.begun.append((batch, expected, witnesses))

    def after(self, batch, deleted):
        self.committed.append((batch, deleted))
        if self.hook is not None:
            self.hook(batch)


def test_ranges_cover_every_block_once():
    # Whole blocks: 10 rows a page, 35 a batch -> 3 blocks a range; the last one shorter.
    whole = list(tid_ranges(10, 10.0, 35, lambda block: pytest.fail("not asked")))
    assert whole == [((0, 0), (3, 0)), ((3, 0), (6, 0)), ((6, 0), (9, 0)), ((9, 0), (10, 0))]
    # Parts of a block: 5 line pointers a range up to the block's last row, then the rest.
    parts = list(tid_ranges(2, 50.0, 5, {0: 12, 1: 0}.__getitem__))
    assert parts == [
        ((0, 0), (0, 6)),
        ((0, 6), (0, 11)),
        ((0, 11), (1, 0)),
        ((1, 0), (2, 0)),
    ]


@pytest.mark.parametrize("key_type", ["uuid", "text"])
@pytest.mark.parametrize("batch_size", [200, 25])  # whole blocks; parts of one block
def test_exact_survivors_one_microsecond_either_side(pg, monkeypatch, key_type, batch_size):
    table = build(pg, key_type, analyze=batch_size == 200)
    store = store_of(pg, table, batch_size=batch_size)
    assert store.plan(WINDOW).expired == EXPIRED
    sweeps, journal = Sweeps(monkeypatch), Journal()

    result = store.purge(WINDOW, approved=EXPIRED, journal=journal)

    assert result.deleted == EXPIRED
    assert sweeps.batches == 0  # nothing moved: the walk found everything
    assert result.batches >= EXPIRED // batch_size
    assert max(n for _, n in journal.committed) <= batch_size * 1.5
    per_moment = ROWS // len(AROUND_CUTOFF)
    assert left(pg, table) == {moment: per_moment for moment in AROUND_CUTOFF[3:]}
    assert CUTOFF - ONE_US not in left(pg, table) and CUTOFF in left(pg, table)
    assert store.verify(WINDOW).success


def test_rows_moved_during_the_walk_are_swept(pg, monkeypatch):
    """After batch 1 commits, an UPDATE backdates a kept row of block 0 (its new version stays
    in that walked block, HOT) and, the walked blocks vacuumed, an UPDATE moves an expired row
    of a block not yet walked into their free space: the walk cannot see either again; the
    keyed sweep deletes both."""
    engine, _ = pg
    table = build(pg, "uuid")
    store = store_of(pg, table, batch_size=200)
    _, make_key = KEY_TYPES["uuid"]
    backdated, moved = make_key(3), make_key(ROWS - 400)  # kept (CUTOFF); expired (400 days)
    assert block_of(pg, table, backdated) == 0 and block_of(pg, table, moved) > 20
    fillers = fill_the_last_block(pg, table)  # every page full but the ones batch 1 empties
    blocks: dict[str, int] = {}

    def concurrent_updates(batch: int) -> None:
        if batch != 1:
            return
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"VACUUM {table.name}"))
        with engine.begin() as conn:
            older = CUTOFF - timedelta(days=2)
            conn.execute(table.update().where(table.c.id == backdated).values(seen_at=older))
            conn.execute(table.update().where(table.c.id == moved).values(payload="m" * 60))
        blocks.update(backdated=block_of(pg, table, backdated), moved=block_of(pg, table, moved))

    sweeps, journal = Sweeps(monkeypatch), Journal(concurrent_updates)

    result = store.purge(WINDOW, approved=EXPIRED + 1, journal=journal)

    # Batch 1 walked blocks 0-1 (about 70 rows a page, 200 a batch): both rows are there now.
    assert blocks["backdated"] == 0 and blocks["moved"] <= 1, blocks
    assert result.deleted == EXPIRED + 1
    assert sweeps.batches >= 1
    with engine.connect() as conn:
        ids = set(conn.scalars(sa.select(table.c.id)))
    assert backdated not in ids and moved not in ids
    per_moment = ROWS // len(AROUND_CUTOFF)
    expected = {moment: per_moment for moment in AROUND_CUTOFF[3:]}
    expected[CUTOFF] -= 1  # the backdated one
    expected[CUTOFF + timedelta(days=10)] += fillers
    assert left(pg, table) == expected


def test_rows_appended_past_the_end_are_swept(pg, monkeypatch):
    engine, _ = pg
    table = build(pg, "text")
    store = store_of(pg, table, batch_size=500)

    def append(batch: int) -> None:
        if batch == 1:
            rows = [
                {"id": f"late-{i}", "seen_at": CUTOFF - ONE_US, "customer_id": 1, "payload": "y"}
                for i in range(300)
            ]
            with engine.begin() as conn:
                conn.execute(table.insert(), rows)

    sweeps = Sweeps(monkeypatch)
    result = store.purge(WINDOW, approved=EXPIRED + 300, journal=Journal(append))

    assert result.deleted == EXPIRED + 300
    assert sweeps.batches >= 1
    assert CUTOFF - ONE_US not in left(pg, table)


def test_held_rows_are_kept(pg):
    table = build(pg, "uuid")
    store = store_of(pg, table, batch_size=200, subjects={"customer": "customer_id"})
    hold = Hold(id=1, scope="*", subject="customer", value="7", reason="legal_hold")
    window = RetentionWindow(CUTOFF, holds=(hold,))
    plan = store.plan(window)
    assert plan.held == HELD

    assert store.purge(window, approved=plan.expired).deleted == plan.expired

    engine, _ = pg
    with engine.connect() as conn:
        past = conn.execute(
            sa.select(table.c.customer_id, sa.func.count())
            .where(table.c.seen_at < CUTOFF)
            .group_by(table.c.customer_id)
        ).all()
    assert past == [(7, HELD)]
    assert store.verify(window).success


def test_a_hold_placed_during_the_walk_protects_from_the_next_batch(pg):
    table = build(pg, "uuid")
    store = store_of(pg, table, batch_size=200, subjects={"customer": "customer_id"})
    hold = Hold(id=1, scope="*", subject="customer", value="7", reason="legal_hold")
    calls: list[int] = []

    def reload_holds() -> tuple[Hold, ...]:
        calls.append(1)
        return (hold,) if len(calls) > 2 else ()

    result = store.purge(RetentionWindow(CUTOFF, reload_holds=reload_holds), approved=EXPIRED)

    engine, _ = pg
    with engine.connect() as conn:
        held_left = conn.execute(
            sa.select(sa.func.count()).where(table.c.seen_at < CUTOFF, table.c.customer_id == 7)
        ).scalar_one()
        others = conn.execute(
            sa.select(sa.func.count()).where(table.c.seen_at < CUTOFF, table.c.customer_id != 7)
        ).scalar_one()
    assert others == 0 and 0 < held_left < HELD  # batches 1-2 took some of them
    assert result.deleted == EXPIRED - held_left


@pytest.mark.parametrize("key_type", ["uuid", "text"])
def test_the_ceiling_is_never_exceeded(pg, key_type):
    table = build(pg, key_type)
    store = store_of(pg, table, batch_size=200)
    journal = Journal()

    with pytest.raises(PurgeLimitExceeded, match="rolled back"):
        store.purge(WINDOW, approved=EXPIRED - 1, journal=journal)

    committed = sum(n for _, n in journal.committed)
    assert 0 < committed <= EXPIRED - 1
    # The batch that would have passed the ceiling rolled back before the journal heard of it.
    assert [b for b, _, _ in journal.begun] == [b for b, _ in journal.committed]
    assert EXPIRED - 1 - committed < 200  # stopped by the ceiling, within a batch of it
    assert sum(left(pg, table).values()) == ROWS - committed


@pytest.mark.parametrize("key_type", ["integer", "uuid", "text"])
def test_the_journal_sees_every_batch_with_its_count(pg, key_type):
    engine, _ = pg
    table = build(pg, key_type)
    store = store_of(pg, table, batch_size=200)
    with engine.connect() as conn:
        before = set(conn.scalars(sa.select(table.c.id)))
    journal = Journal()

    result = store.purge(WINDOW, approved=EXPIRED, journal=journal)

    numbers = list(range(1, result.batches + 1))
    assert [b for b, _, _ in journal.begun] == [b for b, _ in journal.committed] == numbers
    assert [n for _, n, _ in journal.begun] == [n for _, n in journal.committed]
    assert all(n > 0 for _, n in journal.committed)  # a range with nothing to delete: no batch
    assert sum(n for _, n in journal.committed) == result.deleted == EXPIRED
    witnesses = [w for _, _, w in journal.begun]
    if key_type == "text":  # a text key may be personal data: never in the ledger
        assert witnesses == [None] * len(witnesses)
        return
    with engine.connect() as conn:
        after = set(conn.scalars(sa.select(table.c.id)))
    gone = {str(key) for key in before - after}
    assert all(len(w) == 2 and {str(k) for k in w} <= gone for w in witnesses if w)
    assert all(w and w[0] != w[1] for w in witnesses)
    assert store.witnesses_left([k for w in witnesses if w for k in w]) == 0
    if key_type == "integer":  # the lowest and the highest key of the batch
        assert all(w is not None and w[0] < w[1] for w in witnesses)


@pytest.mark.parametrize("key_type", ["uuid", "text"])
def test_slices_of_a_split_purge_are_ranges_of_blocks(pg, monkeypatch, key_type):
    """Slices (`split`) are ranges of blocks, cut from a count of purgeable rows per group of
    blocks (no row_number() over every purgeable key), whatever the key: a text key slices
    too, since no key value travels. Each slice walks its own blocks, in parallel, and never
    another's; together they delete exactly what a whole purge would."""
    engine, _ = pg
    table = build(pg, key_type)
    store = store_of(pg, table, batch_size=100, slices=4)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", _record(statements))
    try:
        pieces = store.slices(WINDOW, count=4, expired=EXPIRED)
    finally:
        sa.event.remove(engine, "before_cursor_execute", _record(statements))
    assert not any("row_number" in sql.lower() for sql in statements)
    assert len(pieces) == 4 and sum(p.expired for p in pieces) == EXPIRED
    assert not any(p.of_keys for p in pieces)
    assert pieces[0].from_block is None and pieces[-1].to_block is None
    assert all(a.to_block == b.from_block for a, b in itertools.pairwise(pieces))
    assert all(p.expired >= EXPIRED // 4 for p in pieces[:-1])
    assert [store.past_window(WINDOW, p) for p in pieces] == [None] * 4  # moved is not deleted
    sweeps = Sweeps(monkeypatch)
    results: dict[int, int] = {}

    def purge(piece) -> None:
        results[piece.index] = store.purge(WINDOW, approved=piece.expired, in_slice=piece).deleted

    threads = [threading.Thread(target=purge, args=(p,)) for p in pieces]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == {p.index: p.expired for p in pieces}
    assert sweeps.batches == 0  # the walks found everything: the sweeps had nothing left
    per_moment = ROWS // len(AROUND_CUTOFF)
    assert left(pg, table) == {moment: per_moment for moment in AROUND_CUTOFF[3:]}


def test_slices_follow_where_the_purgeable_rows_are(pg):
    """Rows inserted in time order keep the expired ones in the first blocks: the slices cut
    there, each about a quarter of them, and the last runs from there to the end."""
    engine, made = pg
    table = sa.Table(
        f"physical_{uuid.uuid4().hex[:12]}",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.String(80)),
    )
    made.append(table)
    table.create(engine)
    moments = [CUTOFF - timedelta(days=30) + timedelta(minutes=i) for i in range(ROWS)]
    moments = sorted([*moments, CUTOFF - ONE_US, CUTOFF])  # one either side of the cutoff
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"id": i, "seen_at": m, "payload": "x" * 60} for i, m in enumerate(moments)],
        )
    expired = sum(1 for m in moments if m < CUTOFF)
    store = store_of(pg, table, batch_size=100, slices=4)

    pieces = store.slices(WINDOW, count=4, expired=expired)

    assert len(pieces) == 4 and sum(p.expired for p in pieces) == expired
    assert all(expired // 4 <= p.expired < expired // 4 + 100 for p in pieces[:-1])
    for piece in pieces:
        assert store.purge(WINDOW, approved=piece.expired, in_slice=piece).deleted == piece.expired
    assert left(pg, table) == {CUTOFF: 1}


def _record(statements: list[str]):
    def before(conn, cursor, statement, *args):
        statements.append(statement)

    return _RECORDERS.setdefault(id(statements), before)


_RECORDERS: dict[int, object] = {}


def test_a_partitioned_table_is_purged_in_key_ranges(pg, monkeypatch):
    """A partitioned table has no blocks of its own (each partition has its ctids)."""
    engine, made = pg
    name = f"physical_parted_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {name} (id uuid NOT NULL, seen_at timestamptz NOT NULL, "
                "payload text, PRIMARY KEY (id, seen_at)) PARTITION BY RANGE (seen_at)"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE TABLE {name}_old PARTITION OF {name} FOR VALUES FROM (MINVALUE) "
                f"TO ('{CUTOFF.isoformat()}')"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE TABLE {name}_new PARTITION OF {name} FOR VALUES FROM "
                f"('{CUTOFF.isoformat()}') TO (MAXVALUE)"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {name} SELECT gen_random_uuid(), "
                "CAST(:cutoff AS timestamptz) + (g % 6 - 3) * interval '1 microsecond', 'p' "
                "FROM generate_series(1, 600) AS g"
            ),
            {"cutoff": CUTOFF},
        )
    table = sa.Table(name, sa.MetaData(), autoload_with=engine)
    made.append(table)  # dropping the parent drops its partitions
    store = store_of(pg, table, batch_size=50)
    sweeps = Sweeps(monkeypatch)

    result = store.purge(WINDOW, approved=300)

    assert result.deleted == 300 and sweeps.batches == result.batches
    with engine.connect() as conn:
        oldest = conn.execute(sa.select(sa.func.min(table.c.seen_at))).scalar_one()
    assert oldest == CUTOFF


def time_ordered(pg, rows: int = ROWS) -> tuple[sa.Table, int]:
    """`rows` rows inserted in time order (as CDRs are), a random UUID key: the expired ones
    fill the first blocks, the two either side of the cutoff among them. Returns the table and
    how many are expired."""
    engine, made = pg
    _, make_key = KEY_TYPES["uuid"]
    table = sa.Table(
        f"physical_{uuid.uuid4().hex[:12]}",
        sa.MetaData(),
        sa.Column("id", sa.Uuid(), primary_key=True, autoincrement=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.String(80)),
    )
    made.append(table)
    table.create(engine)
    moments = [CUTOFF - timedelta(minutes=rows // 2) + timedelta(minutes=i) for i in range(rows)]
    moments = sorted([*moments, CUTOFF - ONE_US])
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"id": make_key(i), "seen_at": m, "payload": "x" * 60} for i, m in enumerate(moments)],
        )
    return table, sum(1 for m in moments if m < CUTOFF)


def test_the_walk_ends_where_the_approval_is_spent(pg):
    """Expired rows in the first half of the blocks: once the walk has deleted what the check
    approved, no later range can delete anything, so none is read and nothing looks for rows
    the walk missed (it missed none it could still delete): every DELETE deleted rows, and the
    last statement is the last batch's."""
    engine, _ = pg
    table, expired = time_ordered(pg)
    store = store_of(pg, table, batch_size=200)
    assert store.plan(WINDOW).expired == expired
    executed: list[tuple[str, int]] = []

    def after(conn, cursor, statement, parameters, context, executemany):
        executed.append((statement.split()[0], cursor.rowcount))

    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        result = store.purge(WINDOW, approved=expired, journal=Journal())
    finally:
        sa.event.remove(engine, "after_cursor_execute", after)

    assert result.deleted == expired
    deletes = [n for verb, n in executed if verb == "DELETE"]
    assert all(n > 0 for n in deletes) and sum(deletes) == expired
    assert executed[-1][0] == "DELETE"  # nothing read after the batch that spent the approval
    survivors = left(pg, table)
    assert sum(survivors.values()) == ROWS + 1 - expired and min(survivors) == CUTOFF


def test_a_row_that_became_purgeable_after_the_check_is_left_to_the_verification(pg):
    """The approval counts what was purgeable at the check. A row inserted backdated during the
    walk is past the window but was not approved: the purge deletes exactly the approved rows
    and stops (before: its keyed sweep found the row and failed the task on the ceiling); the
    verification reports the row as what remains."""
    engine, _ = pg
    table, expired = time_ordered(pg)
    store = store_of(pg, table, batch_size=200)
    late = uuid.uuid4()

    def insert_backdated(batch: int) -> None:
        if batch == 1:
            with engine.begin() as conn:
                row = {"id": late, "seen_at": CUTOFF - timedelta(days=2), "payload": "late"}
                conn.execute(table.insert(), [row])

    result = store.purge(WINDOW, approved=expired, journal=Journal(insert_backdated))

    assert result.deleted == expired
    with engine.connect() as conn:
        past = conn.scalars(sa.select(table.c.id).where(table.c.seen_at < CUTOFF)).all()
    assert past == [late]
    verification = store.verify(WINDOW)
    assert not verification.success and verification.remaining == 1
