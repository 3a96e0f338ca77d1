"""Retention runs on a real Celery cluster, triggered through the REST API.

The runs execute on two `airflow celery worker`s fed by Redis, scheduled by a real scheduler on a
PostgreSQL metadata database; the test only seeds the store, triggers and reads the results.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from lifecycle.audit import read_runs
from lifecycle.holds import place_hold
from tests.cluster.conftest import BASIC, SLOW, WORKERS, Cluster, running

AMS = ZoneInfo("Europe/Amsterdam")
# After the DAGs' start date (2026-01-01): a run of an earlier date gets no task instances.
LOGICAL_DATE = datetime(2026, 9, 1, tzinfo=AMS)
CUTOFF = datetime(2026, 3, 1, tzinfo=AMS).astimezone(UTC)  # P6M before, at local midnight
ONE_US = timedelta(microseconds=1)
HELD_SUBSCRIBER = 7


def make_table(engine: sa.Engine, name: str, rows: list[tuple[int, int, datetime]]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        conn.execute(
            sa.text(
                f"CREATE TABLE {name} (id bigint PRIMARY KEY, subscriber_id integer NOT NULL, "
                "started_at timestamptz NOT NULL, seconds integer NOT NULL DEFAULT 60)"
            )
        )
        conn.execute(
            sa.text(f"INSERT INTO {name} (id, subscriber_id, started_at) VALUES (:i, :s, :t)"),
            [{"i": i, "s": s, "t": t} for i, s, t in rows],
        )


def ids(engine: sa.Engine, table: str) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(f"SELECT id FROM {table}")).scalars())


def count_expired(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(f"SELECT count(*) FROM {table} WHERE started_at < :cutoff"), {"cutoff": CUTOFF}
        ).scalar_one()


def audit_rows(engine: sa.Engine, policy: str, run_id: str) -> list[dict]:
    return [row for row in read_runs(engine, policy) if row["run_id"] == run_id]


def executed(cluster: Cluster, workers: int) -> dict[str, int]:
    """Celery tasks each live worker has accepted so far (one per task instance try)."""
    return {
        worker: sum(stats.get("total", {}).values())
        for worker, stats in cluster.celery_stats(workers).items()
    }


def test_a_run_triggered_through_the_rest_api_purges_exactly_the_expired_rows(cluster):
    engine = sa.create_engine(cluster.store_url)
    # Two years of calls around the cutoff, one every ~4.4 hours, and the three edge instants.
    rows = [(i, i % 40, CUTOFF + timedelta(minutes=263 * (i - 1400))) for i in range(1, 2001)] + [
        (3001, 1, CUTOFF - ONE_US),
        (3002, 1, CUTOFF),
        (3003, 1, CUTOFF + ONE_US),
    ]
    make_table(engine, BASIC.table, rows)
    hold = place_hold(
        engine,
        scope=BASIC.name,
        subject="subscriber",
        value=str(HELD_SUBSCRIBER),
        reason="legal_hold",
        placed_by="cluster test",
    )
    kept = {i for i, s, t in rows if t >= CUTOFF or s == HELD_SUBSCRIBER}
    held = sum(1 for i, s, t in rows if t < CUTOFF and s == HELD_SUBSCRIBER)
    expired = len(rows) - len(kept)
    assert 3002 in kept and 3003 in kept and 3001 not in kept and held > 0
    before = executed(cluster, 2)
    run_id = "cluster-basic"

    cluster.trigger(BASIC.dag_id, run_id, LOGICAL_DATE.isoformat())
    state = cluster.wait_for_run(BASIC.dag_id, run_id, timeout=120)

    assert state == "success", cluster.describe(BASIC.dag_id, run_id)
    tis = cluster.task_instances(BASIC.dag_id, run_id)
    assert {ti["state"] for ti in tis} == {"success"}, cluster.describe(BASIC.dag_id, run_id)
    # Every task instance ran as a Celery task on one of the two workers, none twice.
    after = executed(cluster, 2)
    assert set(after) == set(WORKERS)
    assert sum(after.values()) - sum(before.values()) == len(tis)
    assert ids(engine, BASIC.table) == kept
    (row,) = audit_rows(engine, BASIC.name, run_id)
    assert row["status"] == "purged"
    assert row["dag_id"] == BASIC.dag_id and row["attempt"] == 0
    assert row["logical_date"] == LOGICAL_DATE and row["cutoff"] == CUTOFF
    assert (row["total"], row["expired"], row["held"]) == (len(rows), expired, held)
    assert row["holds"] == {str(hold): held}
    assert (row["verified"], row["remaining"]) == (True, 0)
    assert row["deleted"] == expired
    # The worker loaded Great Expectations before forking the task: verify paid nothing for it.
    verify_log = cluster.task_logs(BASIC.dag_id, run_id, lines=10_000)
    assert "Great Expectations: already loaded in this process" in verify_log, verify_log[-3000:]
    assert "Great Expectations: loaded in" not in verify_log
    # The scheduler added no run of its own: the triggered one is the DAG's only run.
    runs = cluster.get(f"/api/v2/dags/{BASIC.dag_id}/dagRuns")["dag_runs"]
    assert [r["dag_run_id"] for r in runs] == [run_id]


EXPIRED_SLOW = 16_000
KILL_AFTER = 2_000  # rows deleted (20 batches of 100) before the worker is killed


def freeze_a_busy_worker(cluster: Cluster, dag_id: str, run_id: str):
    """(worker, task instance) of a worker stopped (SIGSTOP) while it runs a task of the run.

    The task instance is read again once the worker is frozen, so it cannot have finished
    between the look-up and the kill; a worker caught between two tasks is thawed (None).
    """
    for ti in cluster.task_instances(dag_id, run_id):
        worker = cluster.worker_of(ti["pid"]) if ti["state"] == "running" and ti["pid"] else None
        if worker is None:
            continue
        frozen = cluster.freeze(worker)
        inside = [
            t
            for t in cluster.task_instances(dag_id, run_id)
            if t["state"] == "running" and t["pid"] in frozen
        ]
        if len(inside) == 1:  # one task at a time: --concurrency 1
            return worker, inside[0]
        cluster.thaw(worker)
        assert not inside, f"{worker} runs {len(inside)} tasks at once"
    return None


def test_a_worker_killed_mid_purge_is_replaced_by_a_retry_on_the_other_worker(cluster):
    engine = sa.create_engine(cluster.store_url)
    # 16,000 expired rows, 2,000 kept (the first one exactly at the cutoff).
    rows = [
        (i, i % 100, CUTOFF + timedelta(minutes=7 * (i - EXPIRED_SLOW - 1)))
        for i in range(1, EXPIRED_SLOW + 2001)
    ]
    make_table(engine, SLOW.table, rows)
    kept = {i for i, _, t in rows if t >= CUTOFF}
    assert len(rows) - len(kept) == EXPIRED_SLOW
    # Every DELETE statement takes 50 ms more in the database: 160 batches, a purge of 8 s+.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE OR REPLACE FUNCTION cluster_slow_delete() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE TRIGGER slow_delete BEFORE DELETE ON {SLOW.table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION cluster_slow_delete()"
            )
        )
    run_id = "cluster-kill"
    cluster.trigger(SLOW.dag_id, run_id, LOGICAL_DATE.isoformat())

    def purge_under_way() -> bool:
        state = cluster.run_state(SLOW.dag_id, run_id)
        assert state not in ("success", "failed"), f"run {state} before the kill"
        return count_expired(engine, SLOW.table) <= EXPIRED_SLOW - KILL_AFTER

    cluster.wait_for(f"{KILL_AFTER} rows purged", purge_under_way, timeout=120, interval=0.2)
    victim, victim_ti = cluster.wait_for(
        "a worker frozen in the middle of a task of the run",
        lambda: freeze_a_busy_worker(cluster, SLOW.dag_id, run_id),
        timeout=30,
        interval=0.1,
    )
    (survivor,) = set(WORKERS) - {victim}

    killed = cluster.kill(victim)
    remaining = count_expired(engine, SLOW.table)
    executed_by_survivor = executed(cluster, 1)[survivor]

    assert killed and not running(killed)
    assert 0 < remaining <= EXPIRED_SLOW - KILL_AFTER  # killed mid-purge
    state = cluster.wait_for_run(SLOW.dag_id, run_id, timeout=150)

    assert state == "success", cluster.describe(SLOW.dag_id, run_id)
    assert cluster.celery_ping() == {survivor}
    key = (victim_ti["task_id"], victim_ti["map_index"])
    tis = cluster.task_instances(SLOW.dag_id, run_id)
    final = {(ti["task_id"], ti["map_index"]): ti for ti in tis}
    assert {ti["state"] for ti in final.values()} == {"success"}
    assert final[key]["try_number"] == victim_ti["try_number"] + 1
    tries = cluster.get(
        f"/api/v2/dags/{SLOW.dag_id}/dagRuns/{run_id}/taskInstances/{key[0]}"
        + (f"/{key[1]}" if key[1] >= 0 else "")
        + "/tries"
    )["task_instances"]
    assert [t["state"] for t in tries] == ["failed", "success"], tries
    # The retry (and what followed it) ran as Celery tasks on the surviving worker.
    assert executed(cluster, 1)[survivor] > executed_by_survivor
    assert ids(engine, SLOW.table) == kept
    (row,) = audit_rows(engine, SLOW.name, run_id)
    assert row["status"] == "purged"
    assert (row["expired"], row["verified"], row["remaining"]) == (EXPIRED_SLOW, True, 0)
    # Everything past the window is gone: the killed try's batches count too.
    assert row["deleted"] == EXPIRED_SLOW, (
        f"audit says {row['deleted']} deleted; {EXPIRED_SLOW - remaining} went before the kill"
    )
