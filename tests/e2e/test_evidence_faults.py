"""Evidence that is complete and true, whatever fails (issue 11).

Each test breaks a purge for real (the store's connection terminated, the control database
crashed, the worker killed, the S3 endpoint gone) and then lets the run go on as Airflow would
(a retry of the slice, a rerun of the run, a later run of the policy). It then checks the
evidence against the store itself:

- the deletions the trail holds (the audit rows' `deleted`, a row written late by a later run
  included, and the ledger's totals per run) add up to what really went from the store;
- every deleted record is accounted to exactly one run and one try: no batch is counted twice
  across a retry or a rerun, and no batch counted that did not commit.

The steps are driven as the tasks run them (extract, check, split, delete, record), on a store
of their own: a dedicated table on the shared PostgreSQL, or a bucket of moto's S3 server behind
a proxy we can cut. The control database (connection `lifecycle_audit`) is a throwaway
PostgreSQL of this module, so that it can be crashed and started again.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from lifecycle import steps
from lifecycle.audit import ensure_schema, read_runs
from lifecycle.audit import ledger as ledger_table
from lifecycle.ledger import Journal, Ledger, RunKey
from lifecycle.policy import Policy
from lifecycle.stores.sql import StoreError
from tests.e2e.faults import (
    CuttableProxy,
    ThrowawayPostgres,
    airflow_connection,
    backends_on,
    kill_worker_when_paused,
    terminate,
    terminate_backends_on,
    wait_until,
)
from tests.e2e.test_runs import CUTOFF, LOGICAL_DATE
from tests.stores.test_sql import make_table

BATCH = 5
EXPIRED = 40  # ids 1..40, one hour apart before the cutoff: eight batches of five
KEPT = 10  # ids 41..50, in their window
TIMESTAMPS = [CUTOFF - timedelta(hours=h) for h in range(1, EXPIRED + 1)] + [
    CUTOFF + timedelta(days=d) for d in range(KEPT)
]
STATEMENT = {"service": "Test", "data": "Test data", "retention": "Zes maanden"}


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def control_instance():
    instance = ThrowawayPostgres()
    try:
        instance.start()
        engine = sa.create_engine(instance.url)
        try:
            ensure_schema(engine)  # the owner's `lifecycle audit-init`
        finally:
            engine.dispose()
        yield instance
    finally:
        instance.destroy()


@pytest.fixture
def control(control_instance, monkeypatch) -> ThrowawayPostgres:
    """The control database (audit trail and ledger), running; left running."""
    control_instance.ensure_running()
    monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", control_instance.airflow_connection())
    try:
        yield control_instance
    finally:
        control_instance.ensure_running()


@dataclass
class SqlStore:
    url: str
    engine: sa.Engine
    table: sa.Table

    @property
    def name(self) -> str:
        return self.table.name

    def gone(self) -> int:
        """Rows that really went from the table, whatever deleted them."""
        with self.engine.connect() as conn:
            left = conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one()
        return len(TIMESTAMPS) - left

    def kept(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).where(self.table.c.seen_at >= CUTOFF)
            ).scalar_one()


@pytest.fixture
def sql_store(postgres_url, monkeypatch) -> SqlStore:
    """A table of its own on the shared PostgreSQL, reached as connection `evidence_store`."""
    # No pool: an idle session of the test's own must not pass for the purge's backend.
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    table = make_table(engine, f"evidence_faults_{uuid.uuid4().hex[:12]}", TIMESTAMPS)
    monkeypatch.setenv("AIRFLOW_CONN_EVIDENCE_STORE", airflow_connection(postgres_url))
    try:
        yield SqlStore(postgres_url, engine, table)
    finally:
        table.drop(engine, checkfirst=True)
        engine.dispose()


# -- the run, step by step -----------------------------------------------------------------------


def sql_policy_spec(table: str) -> dict[str, Any]:
    return {
        "name": f"faults_{uuid.uuid4().hex[:12]}",  # a policy of its own: its own later runs
        "title": "Evidence under faults",
        "statement": STATEMENT,
        "controller": "provider",
        "legal_basis": "contract",
        "retention": {"period": "P6M"},
        "store": {
            "kind": "sql",
            "conn_id": "evidence_store",
            "table": table,
            "key": "id",
            "timestamp": "seen_at",
            "batch_size": BATCH,
            "shards": 1,
        },
        "guards": {"max_delete_fraction": 1},
        "retries": 0,
    }


def a_run(policy: Policy, run_id: str = "scheduled__1", logical_date=LOGICAL_DATE) -> steps.Run:
    return steps.Run(f"retention_{policy.name}", run_id, 0, logical_date, None, False, 1.0)


def prepare(policy: Policy, run: steps.Run):
    """extract, check (the ledger's approval) and split: the run up to its delete tasks."""
    extracted = steps.extract(policy, run)
    decision = steps.check(policy, run, extracted)
    assert decision["outcome"] == "approved", decision
    return extracted, decision, steps.split(policy, run, extracted, decision)


def worker_spec(spec, run, extracted, piece, pause: str, batch: int = 3) -> dict[str, Any]:
    """What the worker process needs to run `steps.delete` (try 1) and where it stops dead."""
    return {
        "policy": spec,
        "run": {k: v for k, v in vars(run).items() if k != "logical_date"},
        "logical_date": run.logical_date.isoformat(),
        "extracted": extracted,
        "shard": piece,
        "try_number": 1,
        "pause": pause,
        "batch": batch,
    }


def record(policy, run, extracted, decision, slices, purges) -> dict[str, Any]:
    # verify is left out (None): it proves what remains, not what went; the row says so.
    return steps.record(
        policy,
        run,
        slices=slices,
        purges=purges,
        extracted=extracted,
        decision=decision,
        verification=None,
    )


# -- the evidence --------------------------------------------------------------------------------


def audit_rows(control: ThrowawayPostgres, policy: Policy) -> list[dict[str, Any]]:
    engine = sa.create_engine(control.url)
    try:
        return read_runs(engine, policy.name)
    finally:
        engine.dispose()


def ledger_rows(control: ThrowawayPostgres, policy: Policy) -> list[sa.Row]:
    engine = sa.create_engine(control.url)
    try:
        with engine.connect() as conn:
            query = sa.select(ledger_table).where(ledger_table.c.policy == policy.name)
            return list(conn.execute(query.order_by(ledger_table.c.id)))
    finally:
        engine.dispose()


def ledger_totals(control: ThrowawayPostgres, policy: Policy, run: steps.Run) -> dict[str, Any]:
    engine = sa.create_engine(control.url)
    try:
        key = RunKey(policy.name, run.dag_id, run.run_id, run.attempt)
        return Ledger(engine, key).totals()
    finally:
        engine.dispose()


def counted_per_try(rows) -> dict[tuple[str, int, int], int]:
    """(run id, attempt, try) -> records the ledger accounts to it (batches and reconciled)."""
    counted: Counter[tuple[str, int, int]] = Counter()
    for row in rows:
        if row.event in ("batch", "unrecorded", "settled"):
            counted[(row.run_id, row.attempt, row.try_number)] += int(row.deleted or 0)
    return dict(counted)


def assert_each_batch_counted_once(rows) -> None:
    """A batch is counted by its `batch` row or, when its try ended before writing it, by one
    `unrecorded` row of the retry or one `settled` row of a later run: never both, never twice,
    and only a batch that began."""
    counted = Counter(
        (row.run_id, row.attempt, row.slice, row.try_number, row.batch)
        for row in rows
        if row.event == "batch" or (row.event in ("unrecorded", "settled") and row.deleted)
    )
    assert [key for key, n in counted.items() if n > 1] == []
    begun = {
        (row.run_id, row.attempt, row.slice, row.try_number, row.batch)
        for row in rows
        if row.event == "begin"
    }
    assert set(counted) <= begun


def in_flight_note(slice_index: int, try_number: int, batch: int, records: int) -> str:
    return (
        f"slice {slice_index}: batch {batch} of try {try_number} ({records} records) was in "
        "flight when its try ended"
    )


# -- 1. the store's connection terminated ------------------------------------------------------


@pytest.fixture
def store_proxy(sql_store, monkeypatch) -> CuttableProxy:
    """The store's connection through a loopback proxy to the shared PostgreSQL."""
    url = sa.make_url(sql_store.url)
    proxy = CuttableProxy(url.host, url.port or 5432)
    monkeypatch.setenv("AIRFLOW_CONN_EVIDENCE_STORE", airflow_connection(url.set(port=proxy.port)))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("fault", "then"),
    [
        ("terminated", "retry"),
        ("terminated", "rerun"),
        ("commit_answer_lost", "retry"),
        ("commit_answer_lost", "rerun"),
    ],
)
def test_store_connection_cut_inside_a_batch(request, control, sql_store, monkeypatch, fault, then):
    """The store's connection goes while batch 3 is in its transaction (its rows deleted, its
    `begin` row written): `terminated` by pg_terminate_backend on the purge's own backend before
    the commit (the batch rolls back), or `commit_answer_lost`: the COMMIT reaches PostgreSQL
    and commits, its answer is lost with the connection (a loopback proxy cut). Either way the
    delete fails. A retry of the slice (or a rerun of the whole run) finishes; the trail's
    deletions are exactly what went, each record counted once."""
    proxy = request.getfixturevalue("store_proxy") if fault == "commit_answer_lost" else None
    policy = Policy.model_validate(sql_policy_spec(sql_store.name))
    run = a_run(policy)
    extracted, decision, slices = prepare(policy, run)
    (piece,) = slices
    assert (piece["expired"], piece["past"]) == (EXPIRED, EXPIRED)
    before, killed = Journal.before, []

    def cut_the_store(journal, batch, expected, witnesses=None):
        before(journal, batch, expected, witnesses)  # the batch's `begin` row: it is in flight
        if batch == 3 and proxy is None:
            killed.extend(terminate_backends_on(sql_store.url, sql_store.name))
        elif batch == 3:
            proxy.lose_next_response()  # the next answer is the COMMIT's

    monkeypatch.setattr(Journal, "before", cut_the_store)
    with pytest.raises(StoreError, match="purge batch 3 failed"):
        steps.delete(policy, run, extracted, piece, try_number=1)
    monkeypatch.setattr(Journal, "before", before)

    if proxy is None:
        assert len(killed) == 1  # the purge's connection, and only it
    else:
        assert not proxy.open
        proxy.restore()
    first_try = sql_store.gone()
    # Batches 1 and 2 committed; batch 3 rolled back with its session, or committed unheard.
    assert first_try == {"terminated": 2 * BATCH, "commit_answer_lost": 3 * BATCH}[fault]
    totals = ledger_totals(control, policy, run)
    assert (totals["deleted"], totals["batches"]) == (2 * BATCH, 2)
    assert totals["in_flight"] == {0: [(1, 3, BATCH)]}  # named: it deleted all of them or none

    if then == "retry":
        retried = steps.delete(policy, run, extracted, piece, try_number=2)
        assert (retried["deleted"], retried["earlier_tries"]) == (EXPIRED, first_try)
        row = record(policy, run, extracted, decision, slices, retried)
        runs = [run]
    else:  # the run cleared and run again: attempt 1, a new split of what is left
        failed = record(policy, run, extracted, decision, slices, None)
        assert any(in_flight_note(0, 1, 3, BATCH) in reason for reason in failed["reasons"])
        rerun = replace(run, attempt=1)
        extracted, decision, slices = prepare(policy, rerun)
        assert slices[0]["expired"] == EXPIRED - first_try
        done = steps.delete(policy, rerun, extracted, slices[0], try_number=1)
        row = record(policy, rerun, extracted, decision, slices, done)
        runs = [run, rerun]

    gone = sql_store.gone()
    assert (gone, sql_store.kept()) == (EXPIRED, KEPT)
    rows = audit_rows(control, policy)
    assert [(r["run_id"], r["attempt"]) for r in rows] == [(r.run_id, r.attempt) for r in runs]
    assert row["deleted"] == rows[-1]["deleted"]
    assert sum(r["deleted"] for r in rows) == gone
    assert sum(ledger_totals(control, policy, r)["deleted"] for r in runs) == gone
    ledger = ledger_rows(control, policy)
    assert_each_batch_counted_once(ledger)
    if then == "retry":
        # Try 1 keeps its batches, the one in flight too if it committed (reconciled, counted
        # for try 1, never the retry); a rolled-back batch is closed with 0.
        assert counted_per_try(ledger) == {
            (run.run_id, 0, 1): first_try,
            (run.run_id, 0, 2): EXPIRED - first_try,
        }
    else:
        assert [r["deleted"] for r in rows] == [first_try, EXPIRED - first_try]
        # The rerun's check settled batch 3 of attempt 0 from its witnesses, against attempt 0
        # (its row written already: a `settled` row, added by every reader of the trail).
        settled = [
            (r.run_id, r.attempt, r.batch, r.deleted) for r in ledger if r.event == "settled"
        ]
        committed = BATCH if fault == "commit_answer_lost" else 0
        assert settled == [(run.run_id, 0, 3, committed)]
        found = "found committed" if committed else "found rolled back"
        assert any(found in reason for reason in rows[0]["reasons"])


def test_store_connection_killed_between_batches(control, sql_store, monkeypatch):
    """pg_terminate_backend on the purge's backend while it is idle between batches 2 and 3:
    the engine's pre-ping finds the dead connection at the next batch and opens another, so the
    purge goes on; its evidence is still exactly what went."""
    policy = Policy.model_validate(sql_policy_spec(sql_store.name))
    run = a_run(policy)
    extracted, decision, slices = prepare(policy, run)
    before, after = Journal.before, Journal.after
    purging, killed = [], []

    def inside_batch_2(journal, batch, expected, witnesses=None):
        before(journal, batch, expected, witnesses)
        if batch == 2:  # the purge's backend, found by the statement it runs
            purging.extend(backends_on(sql_store.url, sql_store.name))

    def cut_the_store(journal, batch, deleted):
        after(journal, batch, deleted)
        if batch == 2:  # committed: the session is idle in the pool
            killed.extend(terminate(sql_store.url, purging))

    monkeypatch.setattr(Journal, "before", inside_batch_2)
    monkeypatch.setattr(Journal, "after", cut_the_store)
    result = steps.delete(policy, run, extracted, slices[0], try_number=1)
    monkeypatch.setattr(Journal, "before", before)
    monkeypatch.setattr(Journal, "after", after)

    assert len(purging) == 1 and killed == purging
    (row,) = [record(policy, run, extracted, decision, slices, result)]
    gone = sql_store.gone()
    assert gone == EXPIRED and (result["deleted"], result["batches"]) == (gone, 8)
    assert [r["deleted"] for r in audit_rows(control, policy)] == [gone] == [row["deleted"]]
    ledger = ledger_rows(control, policy)
    assert_each_batch_counted_once(ledger)
    assert counted_per_try(ledger) == {(run.run_id, 0, 1): gone}


# -- 2. the control database crashed ---------------------------------------------------------


@pytest.mark.parametrize("stopped", ["after_its_row", "before_its_row"])
def test_control_database_stopped_mid_purge(control, sql_store, monkeypatch, stopped):
    """The control database crashes (pg_ctl stop -m immediate) right after batch 3 committed:
    once its `batch` row is written, or before (the row is lost). The purge stops before batch
    4: never more than the batch in flight goes beyond what the ledger holds. Started again, a
    retry reconciles and finishes; the trail sums to what went, each batch counted once."""
    policy = Policy.model_validate(sql_policy_spec(sql_store.name))
    run = a_run(policy)
    extracted, decision, slices = prepare(policy, run)
    (piece,) = slices
    after = Journal.after

    def crash_the_control_database(journal, batch, deleted):
        if batch == 3 and stopped == "before_its_row":
            control.stop()
        after(journal, batch, deleted)
        if batch == 3 and stopped == "after_its_row":
            control.stop()

    monkeypatch.setattr(Journal, "after", crash_the_control_database)
    with pytest.raises(sa.exc.OperationalError):
        steps.delete(policy, run, extracted, piece, try_number=1)
    monkeypatch.setattr(Journal, "after", after)

    assert not control.running()
    gone = sql_store.gone()
    assert gone == 3 * BATCH  # stopped before batch 4: nothing went without its evidence
    control.start()
    totals = ledger_totals(control, policy, run)
    if stopped == "after_its_row":
        assert (totals["deleted"], totals["in_flight"]) == (gone, {})
    else:
        assert (totals["deleted"], totals["in_flight"]) == (gone - BATCH, {0: [(1, 3, BATCH)]})
    in_flight = sum(n for batches in totals["in_flight"].values() for _, _, n in batches)
    assert totals["deleted"] <= gone <= totals["deleted"] + in_flight

    retried = steps.delete(policy, run, extracted, piece, try_number=2)
    row = record(policy, run, extracted, decision, slices, retried)

    gone = sql_store.gone()
    assert (gone, sql_store.kept()) == (EXPIRED, KEPT)
    assert (retried["deleted"], retried["earlier_tries"]) == (gone, 3 * BATCH)
    assert [r["deleted"] for r in audit_rows(control, policy)] == [gone] == [row["deleted"]]
    assert not any("in flight" in reason for reason in row["reasons"])  # reconciled
    ledger = ledger_rows(control, policy)
    assert_each_batch_counted_once(ledger)
    # The reconciled batch is counted for the try that ran it, never for the retry.
    assert counted_per_try(ledger) == {(run.run_id, 0, 1): 15, (run.run_id, 0, 2): 25}


# -- 3. the worker killed --------------------------------------------------------------------


@pytest.mark.parametrize("pause", ["committed", "in_transaction", "between"])
def test_worker_killed_mid_purge(control, sql_store, tmp_path, pause):
    """The delete task's worker process is SIGKILLed at batch 3: just after its commit (its
    `batch` row never written), inside its open transaction, or between batches. A retry of the
    slice in another process reconciles: the trail sums to what went, each batch once."""
    spec = sql_policy_spec(sql_store.name)
    policy = Policy.model_validate(spec)
    run = a_run(policy)
    extracted, decision, slices = prepare(policy, run)
    (piece,) = slices

    def paused_there():  # the ledger as the worker leaves it, batch 3 begun
        seen = {(r.event, r.batch) for r in ledger_rows(control, policy)}
        assert ("begin", 3) in seen and ("batch", 2) in seen and ("begin", 4) not in seen
        assert (("batch", 3) in seen) == (pause == "between")

    status = kill_worker_when_paused(
        worker_spec(spec, run, extracted, piece, pause), tmp_path / "worker.log", paused_there
    )
    assert status == -signal.SIGKILL

    # The killed worker's session ends with it (an open transaction rolls back).
    wait_until(
        lambda: not backends_on(sql_store.url, sql_store.name),
        what="the killed worker's session ended",
    )
    gone = sql_store.gone()
    totals = ledger_totals(control, policy, run)
    expected = {
        "committed": (15, 10, {0: [(1, 3, BATCH)]}),
        "in_transaction": (10, 10, {0: [(1, 3, BATCH)]}),
        "between": (15, 15, {}),
    }[pause]
    assert (gone, totals["deleted"], totals["in_flight"]) == expected
    in_flight = sum(n for batches in totals["in_flight"].values() for _, _, n in batches)
    assert totals["deleted"] <= gone <= totals["deleted"] + in_flight

    retried = steps.delete(policy, run, extracted, piece, try_number=2)
    row = record(policy, run, extracted, decision, slices, retried)

    first_try = gone
    gone = sql_store.gone()
    assert (gone, sql_store.kept()) == (EXPIRED, KEPT)
    assert (retried["deleted"], retried["earlier_tries"]) == (gone, first_try)
    assert [r["deleted"] for r in audit_rows(control, policy)] == [gone] == [row["deleted"]]
    ledger = ledger_rows(control, policy)
    assert_each_batch_counted_once(ledger)
    assert counted_per_try(ledger) == {
        (run.run_id, 0, 1): first_try,
        (run.run_id, 0, 2): EXPIRED - first_try,
    }


# -- 4. the S3 endpoint dropped --------------------------------------------------------------


@pytest.fixture
def s3_proxy(s3_endpoint):
    host, port = s3_endpoint.removeprefix("http://").split(":")
    proxy = CuttableProxy(host, int(port))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.parametrize("cut", ["refused", "response_lost"])
def test_s3_endpoint_dropped_mid_purge(control, s3_connection, s3_proxy, monkeypatch, cut):
    """The S3 endpoint goes away behind a loopback proxy right after the first DeleteObjects
    call returned (two versions a call, one call in flight): the second call never reaches the
    server (`refused`), or reaches it and deletes but its answer is lost (`response_lost`).
    botocore retries against a closed port and gives up; the delete fails. The proxy back, a
    retry finishes.

    What holds for S3: a retry cannot recount (listing the prefix again would cost a whole
    listing: `past_window` is None), so the call in flight stays in flight in the ledger and
    the audit row names it. The recorded deletions are every call that returned: at most what
    went, at least what went less the in-flight call's size. Exactly equal when the call never
    reached the server; short by that call when only its answer was lost."""
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    from lifecycle.demo.environment import s3_connection_uri
    from lifecycle.stores.s3 import client_from_connection
    from tests.stores.test_s3 import inventory, new_bucket, put

    direct = client_from_connection(s3_connection)  # straight to moto, never through the proxy
    bucket = new_bucket(direct)
    cutoff = LOGICAL_DATE - timedelta(days=90)
    for i in range(8):  # ten expired versions (two keys have two), two keys kept
        moments = [cutoff - timedelta(days=10 + i)]
        if i in (2, 5):
            moments.insert(0, cutoff - timedelta(days=30 + i))
        put(direct, bucket, f"support/old-{i}.wav", *moments)
    put(direct, bucket, "support/new-0.wav", cutoff)
    put(direct, bucket, "support/new-1.wav", cutoff + timedelta(days=1))
    versions = sum(inventory(direct, bucket).values())
    assert versions == 12
    monkeypatch.setenv("AIRFLOW_CONN_EVIDENCE_S3", s3_connection_uri(s3_proxy.url))
    policy = Policy.model_validate(
        {
            "name": f"faults_{uuid.uuid4().hex[:12]}",
            "title": "Recordings under faults",
            "statement": STATEMENT,
            "controller": "provider",
            "legal_basis": "legitimate_interest",
            "retention": {"period": "P90D"},
            "store": {
                "kind": "s3",
                "conn_id": "evidence_s3",
                "bucket": bucket,
                "prefix": "support/",
                "timestamp": "last_modified",
                "batch_size": 2,
                "max_in_flight": 1,
            },
            "guards": {"max_delete_fraction": 1},
            "retries": 0,
        }
    )
    run = a_run(policy)
    extracted, decision, slices = prepare(policy, run)
    (piece,) = slices
    assert (piece["expired"], piece["past"]) == (10, None)  # S3 cannot recount
    after = Journal.after

    def drop_the_endpoint(journal, batch, deleted):
        after(journal, batch, deleted)
        if batch == 1:
            s3_proxy.lose_next_response() if cut == "response_lost" else s3_proxy.cut()

    monkeypatch.setattr(Journal, "after", drop_the_endpoint)
    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        steps.delete(policy, run, extracted, piece, try_number=1)
    monkeypatch.setattr(Journal, "after", after)

    assert not s3_proxy.open
    went = versions - sum(inventory(direct, bucket).values())
    assert went == {"refused": 2, "response_lost": 4}[cut]
    totals = ledger_totals(control, policy, run)
    assert (totals["deleted"], totals["in_flight"]) == (2, {0: [(1, 2, 2)]})

    s3_proxy.restore()
    retried = steps.delete(policy, run, extracted, piece, try_number=2)
    row = record(policy, run, extracted, decision, slices, retried)

    went = versions - sum(inventory(direct, bucket).values())
    assert went == 10 and sorted(inventory(direct, bucket)) == [
        "support/new-0.wav",
        "support/new-1.wav",
    ]
    assert retried["earlier_uncounted"] is True
    (audited,) = audit_rows(control, policy)
    recorded = audited["deleted"]
    assert recorded == row["deleted"] == ledger_totals(control, policy, run)["deleted"]
    assert any(in_flight_note(0, 1, 2, 2) in reason for reason in audited["reasons"])
    assert recorded <= went <= recorded + 2  # short by at most the call in flight
    assert went - recorded == {"refused": 0, "response_lost": 2}[cut]
    ledger = ledger_rows(control, policy)
    assert_each_batch_counted_once(ledger)
    assert counted_per_try(ledger) == {(run.run_id, 0, 1): 2, (run.run_id, 0, 2): recorded - 2}


# -- 5. the audit database down when the run records --------------------------------------------


def test_a_run_whose_record_failed_gets_its_row_from_the_next_run(control, sql_store):
    """Run A deletes (every batch in the ledger); the control database is down when its
    `record` runs, with no retry left: no row. Started again, the next run of the policy
    (B, a day later) writes A's row from the ledger ("written later, by run B") as well as its
    own. The two rows sum to what went; A's deletions are counted for A only."""
    policy = Policy.model_validate(sql_policy_spec(sql_store.name))
    day_before = LOGICAL_DATE - timedelta(days=1)
    first = a_run(policy, "scheduled__a", day_before)
    extracted, decision, slices = prepare(policy, first)
    purged = steps.delete(policy, first, extracted, slices[0], try_number=1)
    gone_by_first = sql_store.gone()
    assert purged["deleted"] == gone_by_first == 16  # older than a day before the cutoff

    control.stop()
    with pytest.raises(sa.exc.OperationalError):
        record(policy, first, extracted, decision, slices, purged)
    control.start()
    assert audit_rows(control, policy) == []

    later = a_run(policy, "scheduled__b")
    extracted, decision, slices = prepare(policy, later)
    purged = steps.delete(policy, later, extracted, slices[0], try_number=1)
    row = record(policy, later, extracted, decision, slices, purged)
    # A retried `record` of B writes nothing twice (neither its row nor A's).
    record(policy, later, extracted, decision, slices, purged)

    gone = sql_store.gone()
    assert (gone, sql_store.kept()) == (EXPIRED, KEPT)
    rows = {r["run_id"]: r for r in audit_rows(control, policy)}
    assert sorted(rows) == ["scheduled__a", "scheduled__b"]
    late, own = rows["scheduled__a"], rows["scheduled__b"]
    assert (late["deleted"], own["deleted"], row["deleted"]) == (16, 24, 24)
    assert late["deleted"] + own["deleted"] == gone
    assert late["reasons"][0] == (
        "the run's own record task did not complete: this row was written later, by run "
        "scheduled__b, from the deletion ledger"
    )
    assert late["logical_date"] == day_before and late["cutoff"] == CUTOFF - timedelta(days=1)
    ledger = ledger_rows(control, policy)
    assert_each_batch_counted_once(ledger)
    assert counted_per_try(ledger) == {("scheduled__a", 0, 1): 16, ("scheduled__b", 0, 1): 24}
    # Both marked recorded (B's retried record marks itself again: harmless, a set is read).
    assert {r.run_id for r in ledger if r.event == "recorded"} == {"scheduled__a", "scheduled__b"}


def test_a_later_run_accounts_for_the_batch_a_killed_worker_left_in_flight(
    control, sql_store, tmp_path
):
    """The worker of run A is killed right after batch 3 committed, before its ledger row, and
    the slice has no retry left: A's row (written by its `record`) counts batches 1 and 2 and
    names batch 3 as in flight. The next run of the policy (B) deletes the rest. The trail
    should still account batch 3 to A: what went, every record counted for one run."""
    spec = sql_policy_spec(sql_store.name)
    policy = Policy.model_validate(spec)
    first = a_run(policy, "scheduled__a")
    extracted, decision, slices = prepare(policy, first)
    status = kill_worker_when_paused(
        worker_spec(spec, first, extracted, slices[0], "committed"), tmp_path / "worker.log"
    )
    assert status == -signal.SIGKILL
    assert sql_store.gone() == 3 * BATCH
    failed = record(policy, first, extracted, decision, slices, None)
    assert failed["deleted"] == 2 * BATCH
    assert any(in_flight_note(0, 1, 3, BATCH) in reason for reason in failed["reasons"])

    later = a_run(policy, "manual__b")
    extracted, decision, slices = prepare(policy, later)
    done = steps.delete(policy, later, extracted, slices[0], try_number=1)
    record(policy, later, extracted, decision, slices, done)

    gone = sql_store.gone()
    assert (gone, sql_store.kept()) == (EXPIRED, KEPT)
    rows = audit_rows(control, policy)
    assert sum(ledger_totals(control, policy, r)["deleted"] for r in (first, later)) == gone
    assert sum(r["deleted"] for r in rows) == gone
    # Batch 3 is A's: settled by B's check (before B deleted anything), added to A's row.
    assert [(r["run_id"], r["deleted"], r["batches"]) for r in rows] == [
        ("scheduled__a", 3 * BATCH, 3),
        ("manual__b", EXPIRED - 3 * BATCH, 5),
    ]
    assert rows[0]["reasons"][-1] == (
        f"{BATCH} more records went in 1 batch(es) in flight when a try ended: found committed "
        "by a later run of the policy (deletion ledger), counted here"
    )
    ledger = ledger_rows(control, policy)
    assert_each_batch_counted_once(ledger)
    assert counted_per_try(ledger) == {
        ("scheduled__a", 0, 1): 3 * BATCH,
        ("manual__b", 0, 1): EXPIRED - 3 * BATCH,
    }


def test_a_batch_in_flight_whose_rows_went_by_other_means_is_never_guessed(
    control, sql_store, monkeypatch
):
    """Batch 3 of run A rolls back (its connection terminated) and the slice has no retry
    left; then one of its witness rows goes by other means (another tool, another policy).
    The next run cannot tell what batch 3 did: it says so, settles nothing, counts nothing
    for A that A did not delete, and purges the rest as its own."""
    policy = Policy.model_validate(sql_policy_spec(sql_store.name))
    first = a_run(policy, "scheduled__a")
    extracted, decision, slices = prepare(policy, first)
    before, witnessed = Journal.before, []

    def cut_the_store(journal, batch, expected, witnesses=None):
        before(journal, batch, expected, witnesses)
        if batch == 3:
            witnessed.extend(witnesses)
            terminate_backends_on(sql_store.url, sql_store.name)

    monkeypatch.setattr(Journal, "before", cut_the_store)
    with pytest.raises(StoreError, match="purge batch 3 failed"):
        steps.delete(policy, first, extracted, slices[0], try_number=1)
    monkeypatch.setattr(Journal, "before", before)
    record(policy, first, extracted, decision, slices, None)
    assert sql_store.gone() == 2 * BATCH
    assert len(witnessed) == 2
    with sql_store.engine.begin() as conn:  # by other means: one witness of batch 3
        conn.execute(sa.delete(sql_store.table).where(sql_store.table.c.id == witnessed[0]))

    later = a_run(policy, "scheduled__b")
    extracted = steps.extract(policy, later)
    decision = steps.check(policy, later, extracted)
    assert (
        "batch 3 of run scheduled__a (attempt 0) was in flight when its try ended and cannot "
        "be settled: some of its records went by other means; it stays counted for none"
    ) in decision["warnings"]
    slices = steps.split(policy, later, extracted, decision)
    done = steps.delete(policy, later, extracted, slices[0], try_number=1)
    record(policy, later, extracted, decision, slices, done)

    gone = sql_store.gone()
    assert (gone, sql_store.kept()) == (EXPIRED, KEPT)
    rows = audit_rows(control, policy)
    assert [(r["run_id"], r["deleted"]) for r in rows] == [
        ("scheduled__a", 2 * BATCH),
        ("scheduled__b", EXPIRED - 2 * BATCH - 1),
    ]
    assert any(in_flight_note(0, 1, 3, BATCH) in reason for reason in rows[0]["reasons"])
    assert sum(r["deleted"] for r in rows) == gone - 1  # the one that went by other means
    assert [r for r in ledger_rows(control, policy) if r.event == "settled"] == []
