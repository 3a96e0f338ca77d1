"""Whole runs through Airflow: exact survivors, reruns, crashes, refusals, dry runs, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from tests.e2e.conftest import interrupted_after_the_second_commit, task_states
from tests.stores.test_sql import make_table, survivors

AMS = ZoneInfo("Europe/Amsterdam")
LOGICAL_DATE = datetime(2026, 11, 29, tzinfo=AMS)
CUTOFF = datetime(2026, 5, 29, tzinfo=AMS).astimezone(UTC)  # P6M before, at local midnight
ONE_US = timedelta(microseconds=1)
TIMESTAMPS = [
    CUTOFF - timedelta(days=300),
    CUTOFF - timedelta(days=2),
    CUTOFF - ONE_US,
    CUTOFF,
    CUTOFF + ONE_US,
    CUTOFF + timedelta(days=30),
]
KEPT = TIMESTAMPS[3:]


def seeded(deployment, timestamps=TIMESTAMPS, **policy):
    engine = sa.create_engine(deployment.store_url)
    table = make_table(engine, "events", timestamps)
    deployment.write_policy("events", "events", "seen_at", **policy)
    return engine, table


def test_run_deletes_exactly_what_is_expired_and_audits_it(deployment):
    engine, table = seeded(deployment, [*TIMESTAMPS, None], batch_size=2)

    dag_run = deployment.run("retention_events", LOGICAL_DATE)

    assert str(dag_run.state) == "success"
    assert set(task_states(dag_run).values()) == {"success"}
    assert survivors(engine, table) == [*KEPT, None]  # every row before the cutoff gone
    (row,) = deployment.audit("events")
    assert row["status"] == "purged"
    assert row["cutoff"] == CUTOFF
    assert row["logical_date"] == LOGICAL_DATE
    assert (row["total"], row["expired"], row["deleted"], row["anomalies"]) == (7, 3, 3, 1)
    assert (row["verified"], row["remaining"]) == (True, 0)
    assert row["verification"]["success"] is True
    (expectation,) = row["verification"]["expectations"]
    assert expectation["expectation_type"] == "expect_table_row_count_to_equal"
    assert expectation["result"]["observed_value"] == 0
    assert row["controller"] == "provider" and row["legal_basis"] == "contract"
    assert row["run_id"] == dag_run.run_id
    assert "1 records have no timestamp" in row["reasons"][0]


def test_rerun_deletes_nothing_and_adds_one_row_per_run(deployment):
    engine, table = seeded(deployment)
    deployment.run("retention_events", LOGICAL_DATE)
    second = deployment.run("retention_events", LOGICAL_DATE)

    assert str(second.state) == "success"
    assert survivors(engine, table) == KEPT
    rows = deployment.audit("events")
    assert [(r["expired"], r["deleted"], r["status"]) for r in rows] == [
        (3, 3, "purged"),
        (0, 0, "purged"),
    ]
    assert len({(r["run_id"], r["attempt"]) for r in rows}) == 2


def test_a_purge_that_crashes_midway_is_audited_and_a_rerun_finishes(deployment):
    timestamps = [CUTOFF - timedelta(hours=h) for h in range(1, 13)] + KEPT
    engine, table = seeded(deployment, timestamps, batch_size=3)
    # A real failure inside the database: deleting row 7 (in the third batch) aborts.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TRIGGER crash BEFORE DELETE ON events WHEN old.id = 7 "
                "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
            )
        )

    failed = deployment.run("retention_events", LOGICAL_DATE)

    assert str(failed.state) == "failed"
    states = task_states(failed)
    assert (states["delete"], states["verify"], states["record"]) == (
        "failed",
        "upstream_failed",
        "failed",  # record audits, then fails the run on purpose
    )
    remaining = survivors(engine, table)
    # Two slices of six: the first deleted in two batches; the second's first batch holds
    # row 7 and was rolled back.
    assert len(remaining) == 12 + 3 - 6
    assert set(KEPT) <= set(remaining)  # nothing unexpired touched
    (row,) = deployment.audit("events")
    # The deletion ledger recorded every committed batch: the failed run's row counts them.
    assert (row["status"], row["expired"], row["deleted"], row["batches"]) == ("failed", 12, 6, 2)
    # The failing batch never reached its commit: nothing of it in flight, nothing unaccounted.
    assert row["reasons"] == [
        "delete of slice 1 did not complete (see its task log); the other slices deleted 6"
    ]

    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER crash"))
    rerun = deployment.run("retention_events", LOGICAL_DATE)

    assert str(rerun.state) == "success"
    assert survivors(engine, table) == KEPT
    # Every deleted record accounted to exactly one run: 6 + 6 = the 12 that went.
    assert [(r["status"], r["deleted"]) for r in deployment.audit("events")] == [
        ("failed", 6),
        ("purged", 6),
    ]


def test_guard_refusal_leaves_the_table_untouched_and_is_audited(deployment):
    engine, table = seeded(deployment, guards="{max_delete_fraction: 0.25}")
    before = survivors(engine, table)

    dag_run = deployment.run("retention_events", LOGICAL_DATE)

    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert (states["check"], states["delete"], states["record"]) == (
        "failed",
        "upstream_failed",
        "failed",
    )
    assert survivors(engine, table) == before
    (row,) = deployment.audit("events")
    assert (row["status"], row["expired"], row["deleted"], row["verified"]) == (
        "refused",
        3,
        0,
        None,
    )
    assert (
        "3 of 6 records (50.0%) would be deleted, more than max_delete_fraction 0.25"
        in (row["reasons"][0])
    )


def test_one_run_override_of_the_fraction_lets_the_purge_through(deployment):
    engine, table = seeded(deployment, guards="{max_delete_fraction: 0.25}")
    dag_run = deployment.run("retention_events", LOGICAL_DATE, {"max_delete_fraction": 0.6})
    assert str(dag_run.state) == "success"
    assert survivors(engine, table) == KEPT


def test_dry_run_deletes_nothing_and_records_what_it_would_do(deployment):
    engine, table = seeded(deployment)

    dag_run = deployment.run("retention_events", LOGICAL_DATE, {"dry_run": True})

    assert str(dag_run.state) == "success"
    states = task_states(dag_run)
    assert (states["check"], states["delete"], states["verify"], states["record"]) == (
        "skipped",
        "skipped",
        "skipped",
        "success",
    )
    assert survivors(engine, table) == sorted(TIMESTAMPS)
    (row,) = deployment.audit("events")
    assert (row["status"], row["dry_run"], row["expired"], row["deleted"]) == (
        "dry_run",
        True,
        3,
        0,
    )


def test_expired_rows_left_behind_fail_verification(deployment):
    engine, _table = seeded(deployment)
    # Something re-inserts an expired row while the purge runs (a replica catching up, a
    # backfill): outside the key range the purge planned, so verification must catch it.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TRIGGER backfill AFTER DELETE ON events WHEN old.id = 1 BEGIN "
                "INSERT INTO events (id, seen_at, payload) "
                "VALUES (1000, '2020-01-01 00:00:00.000000', 'late'); END"
            )
        )

    dag_run = deployment.run("retention_events", LOGICAL_DATE)

    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["verify"] == "failed"
    (row,) = deployment.audit("events")
    assert (row["status"], row["deleted"], row["verified"], row["remaining"]) == (
        "verification_failed",
        3,
        False,
        1,
    )
    assert row["verification"]["success"] is False


def test_manual_run_without_logical_date_uses_run_after(deployment):
    from lifecycle.factory import build_dags

    engine, table = seeded(deployment)

    dag = build_dags(deployment.policy_dir)["retention_events"]
    run_after = LOGICAL_DATE.astimezone(UTC)
    dag_run = dag.test(run_after=run_after, logical_date=None)

    assert str(dag_run.state) == "success"
    assert survivors(engine, table) == KEPT
    (row,) = deployment.audit("events")
    assert row["cutoff"] == CUTOFF


def test_a_cleared_run_never_reuses_the_evidence_of_an_earlier_attempt(deployment):
    # Airflow clears a task's XCom only when that task runs again: after a clear (the run's
    # clear number goes up) whose extract fails, the XComs of attempt 0's later steps remain.
    from lifecycle import steps
    from lifecycle.loader import load_policies

    seeded(deployment)
    first = deployment.run("retention_events", LOGICAL_DATE)
    (policy,) = [loaded.policy for loaded in load_policies(deployment.policy_dir).policies]
    ti = first.get_task_instances()
    stale = {t.task_id: t.xcom_pull(task_ids=t.task_id) for t in ti}
    (stale["delete"],) = stale["delete"]  # the one slice of the mapped delete
    assert stale["delete"]["deleted"] == 3 and stale["delete"]["attempt"] == 0

    cleared = steps.Run(
        dag_id=first.dag_id,
        run_id=first.run_id,
        attempt=1,
        logical_date=LOGICAL_DATE,
        started_at=None,
    )
    row = steps.record(
        policy,
        cleared,
        extracted=None,  # extract failed in attempt 1
        decision=stale["check"],
        slices=stale["split"],
        purges=stale["delete"],
        verification={**stale["verify"]},
    )

    # Attempt 1 was never approved in the deletion ledger: it deleted nothing, and says so.
    assert (row["status"], row["deleted"], row["verified"]) == ("failed", 0, None)
    rows = deployment.audit("events")
    assert [(r["attempt"], r["status"], r["deleted"], r["verified"]) for r in rows] == [
        (0, "purged", 3, True),
        (1, "failed", 0, None),
    ]


def test_a_large_purge_is_split_into_parallel_slices_and_audited_once(deployment):
    # 120 expired rows in batches of 10, at most 3 slices: three mapped delete tasks of 40.
    timestamps = [TIMESTAMPS[i % len(TIMESTAMPS)] for i in range(240)]
    engine, table = seeded(deployment, timestamps, batch_size=10, shards=3)

    dag_run = deployment.run("retention_events", LOGICAL_DATE)

    assert str(dag_run.state) == "success"
    slices = sorted(
        (ti.map_index, str(ti.state), ti.xcom_pull(task_ids="delete", map_indexes=ti.map_index))
        for ti in dag_run.get_task_instances()
        if ti.task_id == "delete"
    )
    assert [(index, state) for index, state, _ in slices] == [
        (0, "success"),
        (1, "success"),
        (2, "success"),
    ]
    assert [result["deleted"] for _, _, result in slices] == [40, 40, 40]
    assert survivors(engine, table) == sorted(t for t in timestamps if t >= CUTOFF)
    (row,) = deployment.audit("events")
    assert (row["status"], row["expired"], row["deleted"], row["shards"]) == ("purged", 120, 120, 3)
    assert row["verified"] is True


def test_a_retried_slice_reports_what_its_interrupted_try_deleted(deployment, monkeypatch):
    # The steps as the tasks run them. The interrupted try commits its second batch and dies
    # before the ledger hears of it (a worker killed, the control database gone): the retry
    # reconciles that batch against the try that had it in flight.
    from lifecycle import steps
    from lifecycle.loader import load_policies

    timestamps = [TIMESTAMPS[i % len(TIMESTAMPS)] for i in range(240)]
    engine, table = seeded(deployment, timestamps, batch_size=10, shards=3)
    (policy,) = [loaded.policy for loaded in load_policies(deployment.policy_dir).policies]
    run = steps.Run("retention_events", "manual_1", 0, LOGICAL_DATE, None, False, 1.0)
    extracted = steps.extract(policy, run)
    decision = steps.check(policy, run, extracted)
    slices = steps.split(policy, run, extracted, decision)
    assert [(s["expired"], s["past"]) for s in slices] == [(40, 40), (40, 40), (40, 40)]
    second = slices[1]
    expired_ids = sorted_ids_of(engine, table, second)
    interrupted_after_the_second_commit(
        monkeypatch, lambda: steps.delete(policy, run, extracted, second, try_number=1)
    )
    # Someone else deletes a row of the slice meanwhile: not this run's deletion.
    with engine.begin() as conn:
        conn.execute(table.delete().where(table.c.id == expired_ids[-1]))

    retried = steps.delete(policy, run, extracted, second, try_number=2)
    first = steps.delete(policy, run, extracted, slices[0], try_number=1)

    # Two batches of ten keys went in the first try: the first recorded, the second reconciled.
    first_try = sum(1 for i in expired_ids if i <= second["after"] + 20)
    assert (retried["deleted"], retried["earlier_tries"]) == (39, first_try)
    assert (first["deleted"], first["earlier_tries"]) == (40, 0)
    merged = steps.merge_purges(run, slices, [first, retried])
    assert merged.incomplete == [2]  # slice 2 has not run: the total is not known yet
    last = steps.delete(policy, run, extracted, slices[2], try_number=1)
    merged = steps.merge_purges(run, slices, [first, retried, last])
    assert (merged.deleted, merged.earlier_tries, merged.slices) == (119, first_try, 3)
    assert survivors(engine, table) == sorted(t for t in timestamps if t >= CUTOFF)
    with steps.run_ledger(policy, run) as ledger:
        totals = ledger.totals()
    assert (totals["deleted"], totals["in_flight"]) == (119, {})


def sorted_ids_of(engine, table, piece) -> list[int]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                sa.select(table.c.id).where(
                    table.c.id > piece["after"],
                    table.c.id <= piece["through"],
                    table.c.seen_at < CUTOFF,
                )
            ).scalars()
        )
