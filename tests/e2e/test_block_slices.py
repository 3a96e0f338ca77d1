"""A split purge on PostgreSQL (issue 13): slices are ranges of blocks, whatever the key, run as
mapped delete tasks; the last slice to finish sweeps the whole table for what an UPDATE moved
out of a slice not yet walked into one already walked, within the run's approval."""

from __future__ import annotations

from collections import Counter

import pytest
import sqlalchemy as sa

from lifecycle.stores.sql import create_engine
from tests.e2e.conftest import interrupted_after_the_second_commit, task_states
from tests.e2e.test_runs import CUTOFF, LOGICAL_DATE, TIMESTAMPS

ROWS = 3000
MOMENTS = [TIMESTAMPS[i % len(TIMESTAMPS)] for i in range(ROWS)]  # every block: both kinds
EXPIRED = sum(1 for moment in MOMENTS if moment < CUTOFF)


@pytest.fixture
def pg_store(deployment, postgres_url, monkeypatch):
    """A text-keyed table of its own on PostgreSQL, the deployment's store connection on it."""
    url = sa.make_url(postgres_url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_TELECOM_DB", f"postgres://{url.username}@{url.host}:{url.port}/{url.database}"
    )
    engine = create_engine(postgres_url)
    table = sa.Table(
        # The table of the other runs' `events` policy: one asset URI for the session's
        # Airflow (another URI under the same asset name would make the first inactive).
        "events",
        sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),  # a text key: never a bound in XCom
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text),
    )
    table.drop(engine, checkfirst=True)
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": f"caller-{i:05d}", "seen_at": moment, "payload": "x" * 60}
                for i, moment in enumerate(MOMENTS)
            ],
        )
        conn.exec_driver_sql(f"ANALYZE {table.name}")
    deployment.write_policy("events", table.name, "seen_at", batch_size=100, slices=3)
    yield engine, table
    table.drop(engine, checkfirst=True)
    engine.dispose()


def left(engine: sa.Engine, table: sa.Table) -> Counter:
    with engine.connect() as conn:
        return Counter(conn.scalars(sa.select(table.c.seen_at)))


def block_of(engine: sa.Engine, table: sa.Table, key: str) -> int:
    with engine.connect() as conn:
        ctid = conn.execute(
            sa.select(sa.literal_column("ctid")).select_from(table).where(table.c.id == key)
        ).scalar_one()
    return int(str(ctid).strip("()").split(",")[0])


def fill_the_last_block(engine: sa.Engine, table: sa.Table) -> int:
    """Kept rows (as wide as the others) until the last block holds as many as the first."""
    with engine.connect() as conn:
        per_block = Counter(
            int(str(ctid).strip("()").split(",")[0])
            for ctid in conn.scalars(sa.select(sa.literal_column("ctid")).select_from(table))
        )
    missing = per_block[0] - per_block[max(per_block)]
    if missing:
        with engine.begin() as conn:
            conn.execute(
                table.insert(),
                [
                    {"id": f"filler-{i:05d}", "seen_at": CUTOFF, "payload": "x" * 60}
                    for i in range(missing)
                ],
            )
    return missing


def split_run(deployment, run_id: str):
    """The steps as the tasks run them, up to the split: (policy, run, extracted, slices)."""
    from lifecycle import steps
    from lifecycle.loader import load_policies

    (policy,) = [loaded.policy for loaded in load_policies(deployment.policy_dir).policies]
    run = steps.Run("retention_events", run_id, 0, LOGICAL_DATE, None, False, 1.0)
    extracted = steps.extract(policy, run)
    decision = steps.check(policy, run, extracted)
    return policy, run, extracted, steps.split(policy, run, extracted, decision)


def test_a_run_splits_a_text_keyed_table_into_ranges_of_blocks(deployment, pg_store):
    engine, table = pg_store

    dag_run = deployment.run("retention_events", LOGICAL_DATE)

    assert str(dag_run.state) == "success", task_states(dag_run)
    deletes = sorted(
        (ti.map_index, ti.xcom_pull(task_ids="delete", map_indexes=ti.map_index))
        for ti in dag_run.get_task_instances()
        if ti.task_id == "delete"
    )
    assert [index for index, _ in deletes] == [0, 1, 2]
    assert sum(result["deleted"] for _, result in deletes) == EXPIRED
    kept = Counter(moment for moment in MOMENTS if moment >= CUTOFF)
    assert left(engine, table) == kept
    (row,) = deployment.audit("events")
    assert (row["status"], row["expired"], row["deleted"], row["shards"]) == (
        "purged",
        EXPIRED,
        EXPIRED,
        3,
    )
    assert row["verified"] is True


def test_the_last_slice_to_finish_sweeps_a_row_moved_into_a_walked_slice(deployment, pg_store):
    """Slices 0 and 1 are purged; their blocks vacuumed, an UPDATE moves an expired row of slice
    2 (not yet walked) into slice 0's freed space. Slice 2's walk cannot see it there; being the
    last to finish, it sweeps the whole table and deletes it, counted in its result, the run's
    total exact and within the approval."""
    from lifecycle import steps

    engine, table = pg_store
    policy, run, extracted, slices = split_run(deployment, "manual_blocks")
    assert len(slices) == 3 and sum(s["expired"] for s in slices) == EXPIRED
    assert all(s["after"] is None and s["through"] is None for s in slices)  # no key in XCom
    last_block = slices[2]["from_block"]
    moved = f"caller-{ROWS - 6:05d}"  # an expired row (TIMESTAMPS[0]) near the end
    assert block_of(engine, table, moved) >= last_block

    fillers = fill_the_last_block(engine, table)  # no room at the end for the moved row

    first = steps.delete(policy, run, extracted, slices[0], try_number=1)
    second = steps.delete(policy, run, extracted, slices[1], try_number=1)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM {table.name}")  # the walked pages: free space again
    with engine.begin() as conn:  # too wide for its own full page: a new version elsewhere
        conn.execute(table.update().where(table.c.id == moved).values(payload="m" * 100))
    assert block_of(engine, table, moved) < last_block  # in a slice already walked
    third = steps.delete(policy, run, extracted, slices[2], try_number=1)

    assert (first["deleted"], second["deleted"]) == (slices[0]["expired"], slices[1]["expired"])
    assert third["deleted"] == slices[2]["expired"]  # the moved row: swept, once
    assert third["earlier_tries"] == 0  # the sweep's row is no interrupted try's
    merged = steps.merge_purges(run, slices, [first, second, third])
    assert merged.deleted == EXPIRED
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).where(table.c.id == moved)) == 0
    kept = Counter(moment for moment in MOMENTS if moment >= CUTOFF)
    kept[CUTOFF] += fillers
    assert left(engine, table) == kept
    with steps.run_ledger(policy, run) as ledger:
        assert ledger.totals()["deleted"] == EXPIRED <= (ledger.approved() or 0)
        # The sweep is journaled as a slice of its own, after the three.
        assert (ledger.slice_totals(2).deleted, ledger.slice_totals(3).deleted) == (
            slices[2]["expired"] - 1,
            1,
        )


def test_a_slice_finishing_before_the_others_leaves_the_sweep_to_the_last(
    deployment, pg_store, monkeypatch
):
    from lifecycle import steps
    from lifecycle.stores.sql import SqlTableStore

    engine, table = pg_store
    policy, run, extracted, slices = split_run(deployment, "manual_order")
    swept: list[int] = []
    sweep_all = SqlTableStore.sweep_all

    def counted(store, window, **kwargs):
        swept.append(kwargs["approved"])
        return sweep_all(store, window, **kwargs)

    monkeypatch.setattr(SqlTableStore, "sweep_all", counted)
    for piece in (slices[2], slices[0]):
        steps.delete(policy, run, extracted, piece, try_number=1)
    assert swept == []  # slice 1 has not finished
    steps.delete(policy, run, extracted, slices[1], try_number=1)
    assert swept == [0]  # once, by the last, with nothing of the approval left to spend
    assert left(engine, table) == Counter(m for m in MOMENTS if m >= CUTOFF)


def test_a_retried_slice_of_blocks_spends_only_what_its_earlier_tries_left(
    deployment, pg_store, monkeypatch
):
    """Try 1 of a slice commits its second batch and dies before the ledger hears of it. A
    count over the slice's blocks cannot tell deleted rows from rows an UPDATE moved away, so
    the retry reconciles nothing by counting: the batch stays in flight (for the next run to
    settle by its witnesses), and the retry may delete what the approval leaves after try 1's
    recorded batch; it finishes the slice, exact survivors."""
    from lifecycle import steps

    engine, table = pg_store
    policy, run, extracted, slices = split_run(deployment, "manual_retry")
    first = slices[0]
    assert first["past"] is None  # nothing counted over blocks at the split
    interrupted_after_the_second_commit(
        monkeypatch, lambda: steps.delete(policy, run, extracted, first, try_number=1)
    )
    with steps.run_ledger(policy, run) as ledger:
        totals = ledger.slice_totals(0)
    assert totals.batches == 1 and len(totals.in_flight) == 1
    (_try, _batch, in_flight), one = totals.in_flight[0], totals.deleted

    retried = steps.delete(policy, run, extracted, first, try_number=2)

    assert retried["earlier_uncounted"] is True
    assert retried["deleted"] == first["expired"] - in_flight  # the in-flight batch: not counted
    assert one + in_flight + (retried["deleted"] - one) == first["expired"]
    for piece in slices[1:]:
        steps.delete(policy, run, extracted, piece, try_number=1)
    assert left(engine, table) == Counter(m for m in MOMENTS if m >= CUTOFF)
