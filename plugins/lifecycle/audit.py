"""The audit trail: one row per run attempt in our own database (connection `lifecycle_audit`).

Airflow 3 tasks may not use the metadata database, and evidence must outlive Airflow's own
cleanup, so the trail lives in a database of ours. A row holds counts, bounds, settings and the
verification summary: never a key, a phone number, an address, an e-mail address or an IP.

The tables are defined in `lifecycle.control`, which alone creates or alters them.

A row is keyed on (dag_id, run_id, attempt), where attempt is the run's clear number. The trail
is append-only: a row, once written, is never changed (the jobs' database role may INSERT here,
nothing else). A retried `record` task finds its attempt's row already written from the same
inputs and keeps it; a run cleared and run again gets a row of its own, so the evidence of what
the first attempt deleted is never overwritten.

Every row is chained (`lifecycle.chain`): it carries the SHA-256 of its content as stored and of
the row before it, computed in the transaction that inserts it, with the chain's head locked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from lifecycle.chain import CHAIN_COLUMNS
from lifecycle.connections import AUDIT_CONN_ID  # noqa: F401 - importable from here too
from lifecycle.control import (  # noqa: F401 - the trail's tables, importable from here too
    Timestamp,
    chain_head,
    ensure_schema,
    ledger,
    metadata,
    require,
    runs,
)

if TYPE_CHECKING:
    from lifecycle.payloads import Purge, RunResults
    from lifecycle.stores import Plan

log = logging.getLogger(__name__)

STATUSES = ("purged", "dry_run", "refused", "failed", "verification_failed")
# Rows of data-subject requests (lifecycle.requests), `request_id` set: one per category (any of
# these or refused, failed, verification_failed) and one for the request itself (policy `*`).
REQUEST_STATUSES = (
    "exported",
    "erased",
    "kept",
    "forwarded",
    "restricted",
    "not_applicable",
    "unsupported",
    "answered",
    "needs_review",
)


def retention_rows(columns: list[sa.Column[Any]] | None = None) -> sa.ColumnElement[bool]:
    """The rows of retention runs, not of data-subject requests: what a policy's page, its
    charts, the overview and the watchdog read (a trail without the column has none else)."""
    if columns is not None and "request_id" not in {column.name for column in columns}:
        return sa.true()
    return runs.c.request_id.is_(None)


def _as_utc(value: Any, naive: bool) -> datetime | None:
    """Timestamps are stored in UTC; as naive UTC where the column type has no zone (MySQL)."""
    if value is None:
        return None
    instant = (value if isinstance(value, datetime) else datetime.fromisoformat(value)).astimezone(
        UTC
    )
    return instant.replace(tzinfo=None) if naive else instant


def record_run(engine: sa.Engine, row: dict[str, Any]) -> bool:
    """Append the row of this run attempt; False when a retry finds it already written."""
    # The chain's columns are this function's to fill (a row read back and written again, as
    # a test may, brings the old ones).
    row = {name: value for name, value in row.items() if name not in CHAIN_COLUMNS}
    unknown = set(row) - set(runs.c.keys())
    if unknown:
        raise ValueError(f"unknown audit fields: {sorted(unknown)}")
    if row["status"] not in STATUSES + REQUEST_STATUSES:
        raise ValueError(f"unknown audit status {row['status']!r}")
    naive = engine.dialect.name in ("mysql", "mariadb")
    values: dict[str, Any] = {
        name: _as_utc(value, naive) if isinstance(runs.c[name].type, sa.DateTime) else value
        for name, value in row.items()
    }
    require(engine, runs)  # never created here: `lifecycle audit-init` (or the demo) does
    with engine.connect() as conn:
        present = {c["name"] for c in sa.inspect(conn).get_columns(runs.name)}
    lacking = sorted(set(values) - present)
    if lacking:
        # A run after an upgrade, before `audit-init` added the new columns (the jobs' role may
        # not ALTER): write what the table holds and say what it lacks; the evidence stays.
        log.warning("audit table lacks %s: run `lifecycle audit-init`", lacking)
        values = {k: v for k, v in values.items() if k in present}
        if "reasons" in values:
            values["reasons"] = [
                *(values["reasons"] or []),
                f"audit schema outdated, not recorded: {', '.join(lacking)} "
                "(run `lifecycle audit-init`)",
            ]
    try:
        with engine.begin() as conn:
            _chain(conn, values, present)
            conn.execute(sa.insert(runs).values(values))
    except sa.exc.IntegrityError as exc:
        if exc.orig is not None and "chain_seq" in str(exc.orig):
            # The head is behind the chain (its row was reset): never taken for a retry's
            # duplicate, or the run's row would be lost without a word.
            raise RuntimeError(
                "the audit trail's chain head is behind its rows: run `lifecycle audit-verify` "
                "(as the owner) and repair the head; the run's row is not written yet"
            ) from None
        if exc.orig is not None and _is_duplicate(exc.orig):
            return False  # an earlier try of this attempt wrote it
        raise
    return True


def _chain(conn: sa.Connection, values: dict[str, Any], present: set[str]) -> None:
    """Chain the row onto the head (locked until this transaction ends): a trail without the
    chain yet (before `audit-init` of this version) gets the row unchained, and says so."""
    from lifecycle.chain import chain_onto

    if not set(CHAIN_COLUMNS) <= present or not sa.inspect(conn).has_table(chain_head.name):
        log.warning("audit trail has no hash chain yet: row written unchained (run audit-init)")
        return
    if chain_onto(conn, values) is None:
        log.warning("the chain's head has no row: row written unchained (run audit-init)")


def _is_duplicate(error: BaseException) -> bool:
    """A unique-key violation (the run's row exists), told apart from other integrity errors
    by the driver's code: PostgreSQL 23505, MySQL/MariaDB 1062, SQLite's CONSTRAINT_UNIQUE."""
    if getattr(error, "sqlstate", None) == "23505":
        return True
    if getattr(error, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_UNIQUE":
        return True
    return bool(error.args) and error.args[0] == 1062


# -- reading: never creates or alters anything (the audit UI's role may only SELECT) -------------


def _filtered(
    query: sa.Select[Any],
    engine: sa.Engine,
    policy: str | None,
    start: Any,
    end: Any,
    columns: list[sa.Column[Any]] | None = None,
    retention_only: bool = False,
) -> sa.Select[Any]:
    naive = engine.dialect.name in ("mysql", "mariadb")
    if policy is not None or retention_only:
        # A policy's runs: its retention runs (a request's rows are the request's evidence).
        query = query.where(retention_rows(columns))
    if policy is not None:
        query = query.where(runs.c.policy == policy)
    if start is not None:
        query = query.where(runs.c.logical_date >= _as_utc(start, naive))
    if end is not None:
        query = query.where(runs.c.logical_date < _as_utc(end, naive))
    return query


def _present(conn: sa.Connection) -> list[sa.Column[Any]] | None:
    """The model's columns the table has: a trail written by an older version (before the next
    `audit-init` or run adds the new columns) still reads, its new fields as None."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(runs.name):
        return None
    present = {column["name"] for column in inspector.get_columns(runs.name)}
    return [column for column in runs.columns if column.name in present]


Settled = dict[tuple[str, str, int], tuple[int, int, int]]


def settled_later(conn: sa.Connection, policies: list[str] | None = None) -> Settled:
    """(dag_id, run_id, attempt) -> (records, batches, settlements) found after the run's row
    was written: batches in flight when its try ended, settled by a later run of the policy from
    the deletion ledger (`Ledger.settle_in_flight`). The row stays as written (append-only);
    every reader adds these to it (`with_settled`). By policy, on the ledger's policy index."""
    if not sa.inspect(conn).has_table(ledger.name):
        return {}
    if policies is None:
        policies = list(conn.execute(sa.select(runs.c.policy).distinct()).scalars())
    query = (
        sa.select(
            ledger.c.dag_id,
            ledger.c.run_id,
            ledger.c.attempt,
            sa.func.sum(ledger.c.deleted),
            sa.func.sum(sa.case((ledger.c.deleted > 0, 1), else_=0)),
            sa.func.count(),
        )
        .where(ledger.c.policy.in_(policies), ledger.c.event == "settled")
        .group_by(ledger.c.dag_id, ledger.c.run_id, ledger.c.attempt)
    )
    return {
        (row[0], row[1], row[2]): (int(row[3] or 0), int(row[4] or 0), int(row[5]))
        for row in conn.execute(query)
    }


def with_settled(row: dict[str, Any], settled: Settled) -> dict[str, Any]:
    """The run's row with what a later run settled for it (see `settled_later`)."""
    found = settled.get((row["dag_id"], row["run_id"], row["attempt"]))
    if found is None:
        return row
    records, batches, settlements = found
    row["deleted"] = (row["deleted"] or 0) + records
    row["batches"] = (row["batches"] or 0) + batches
    note = (
        f"{records} more records went in {batches} batch(es) in flight when a try ended: "
        "found committed by a later run of the policy (deletion ledger), counted here"
        if records
        else f"{settlements} batch(es) in flight when a try ended: found rolled back by a "
        "later run of the policy (deletion ledger), nothing more deleted"
    )
    row["reasons"] = [*(row["reasons"] or []), note]
    return row


def _complete(
    row: sa.Row[Any], settled: Settled | None = None, as_stored: bool = False
) -> dict[str, Any]:
    complete = _utc(dict.fromkeys(runs.c.keys()) | dict(row._mapping))
    if as_stored:
        return settled_apart(complete, settled or {})
    return with_settled(complete, settled) if settled else complete


def settled_apart(row: dict[str, Any], settled: Settled) -> dict[str, Any]:
    """The row as stored (as its hash was taken), what a later run settled for it beside it, in
    `settled_later` (records, batches, settlements; None: nothing), for an export whose hashes
    a third party rechecks."""
    found = settled.get((row["dag_id"], row["run_id"], row["attempt"]))
    row["settled_later"] = (
        None
        if found is None
        else {"records": found[0], "batches": found[1], "settlements": found[2]}
    )
    return row


def iter_runs(
    engine: sa.Engine,
    policy: str | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    chunk: int = 1000,
    as_stored: bool = False,
    retention_only: bool = False,
) -> Iterator[dict[str, Any]]:
    """Audit rows, oldest first, streamed: optionally one policy, logical dates in [start, end).
    `as_stored`: each row as written (and hashed), what a later run settled for it apart
    (`settled_apart`) instead of added to it (`with_settled`)."""
    with engine.connect() as conn:
        columns = _present(conn)
        if columns is None:
            return
        settled = settled_later(conn, None if policy is None else [policy])
        query = sa.select(*columns).order_by(runs.c.logical_date, runs.c.id)
        query = _filtered(query, engine, policy, start, end, columns, retention_only)
        for row in conn.execution_options(yield_per=chunk).execute(query):
            yield _complete(row, settled, as_stored)


def read_runs(engine: sa.Engine, policy: str | None = None, **bounds: Any) -> list[dict[str, Any]]:
    return list(iter_runs(engine, policy, **bounds))


def read_run(engine: sa.Engine, row_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        columns = _present(conn)
        if columns is None:
            return None
        row = conn.execute(sa.select(*columns).where(runs.c.id == row_id)).one_or_none()
        settled = {} if row is None else settled_later(conn, [row.policy])
    return None if row is None else _complete(row, settled)


def latest_runs(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """Each policy's last run: the latest logical date, and of that the latest attempt."""
    with engine.connect() as conn:
        columns = _present(conn)
        if columns is None:
            return {}
        rank = (
            sa.func.row_number()
            .over(
                partition_by=runs.c.policy,
                order_by=(runs.c.logical_date.desc(), runs.c.attempt.desc(), runs.c.id.desc()),
            )
            .label("rank")
        )
        ranked = sa.select(*columns, rank).where(retention_rows(columns)).subquery()
        query = sa.select(*(ranked.c[c.name] for c in columns)).where(ranked.c.rank == 1)
        latest = list(conn.execute(query))
        settled = settled_later(conn, [row.policy for row in latest])
        return {row.policy: _complete(row, settled) for row in latest}


def _utc(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite and MySQL return naive datetimes; the trail is in UTC."""
    for name, value in row.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            row[name] = value.replace(tzinfo=UTC)
    return row


def _outcome(results: RunResults) -> tuple[str, list[str]]:
    """The run's status and why, from what its steps left (None where a step failed). Failures
    are named by step, never by exception text: a database error can quote a record."""
    extracted, decision, purged = results.extracted, results.decision, results.purged
    verification = results.verification
    if extracted is None:
        return "failed", ["extract did not complete (see its task log)"]
    if decision is None:
        return "failed", ["check did not complete (see its task log)"]
    if decision.outcome == "refused":
        return "refused", list(decision.reasons)
    if decision.outcome == "dry_run":
        return "dry_run", []
    if purged is None:
        return "failed", ["delete did not complete (see its task log)"]
    if purged.incomplete:
        slices = ", ".join(map(str, purged.incomplete))
        return "failed", [
            f"delete of slice {slices} did not complete (see its task log); the other slices "
            f"deleted {purged.deleted_by_finished}"
        ]
    if verification is None:
        return "failed", ["verify did not complete (see its task log)"]
    if not verification.success:
        return "verification_failed", [
            f"{verification.remaining} unheld records before the cutoff remain"
        ]
    return "purged", []


def _purge_notes(purged: Purge | None, ledger_totals: dict[str, Any] | None) -> list[str]:
    notes: list[str] = []
    if purged and purged.failed:
        notes += [f"{n} not deleted: {code}" for code, n in sorted(purged.failed.items())]
    parts = purged.partitions if purged else {}
    if parts.get("partitions"):
        detached = parts.get("detached", 0)
        went = (
            "dropped whole"
            if not detached
            else f"taken out whole ({detached} kept as tables for the grace period)"
        )
        notes.append(
            f"{parts['partitions']} partitions before the cutoff {went}, "
            f"holding {parts.get('rows', 0)} of the deleted records"
        )
    if parts.get("kept_dropped"):
        notes.append(
            f"{parts['kept_dropped']} partitions kept by earlier runs dropped, their grace over "
            "(their records counted when they left the table)"
        )
    if purged and purged.earlier_tries:
        notes.append(
            f"{purged.earlier_tries} of the deleted records went in an interrupted try "
            "(in the deletion ledger, batch by batch, or reconciled from what was left of its "
            "slice past the window)"
        )
    for index, batches in sorted((ledger_totals or {}).get("in_flight", {}).items()):
        tried = ", ".join(f"batch {b} of try {t} ({n} records)" for t, b, n in batches)
        notes.append(
            f"slice {index}: {tried} was in flight when its try ended: it deleted all of them "
            "or none (one transaction), not counted here; a retry of the slice or the next "
            "approved run of the policy settles it"
        )
    return notes


def _residue_notes(summary: dict[str, Any] | None) -> list[str]:
    """A residue the policy asked to remove and that stayed (`store.residue: remove`): the
    records are gone and verified, their copies in the database are not; said in the reasons
    (the message names the table and what it needs, never a value)."""
    found = (summary or {}).get("residue") or {}
    error = found.get("removal_error") if isinstance(found, dict) else None
    return [f"residue not removed: {error}"] if error else []


def _deleted(
    status: str, purged: Purge | None, ledger_totals: dict[str, Any] | None
) -> tuple[int | None, int | None]:
    """(deleted, batches): the ledger's sums; without a ledger, what the delete tasks said;
    unknown (None) when the delete failed without a ledger."""
    if ledger_totals is not None:
        return ledger_totals["deleted"], ledger_totals["batches"]
    if purged is not None:
        return purged.deleted, purged.batches
    return (0, 0) if status != "failed" else (None, None)


def audit_row(
    policy: Any,
    *,
    dag_id: str,
    run_id: str,
    attempt: int,
    logical_date: datetime,
    dry_run: bool,
    results: RunResults,
    started_at: datetime | None,
    failures: list[str] | None = None,
    ledger_totals: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The audit row of a run from what its tasks left in XCom, and from the deletion ledger
    (`ledger_totals`: what the attempt's batches deleted, recorded as each committed), which
    makes the count true even when a slice failed midway."""
    extracted, decision, verification = results.extracted, results.decision, results.verification
    status, reasons = _outcome(results)
    purged = None if results.purged and results.purged.incomplete else results.purged
    reasons += _purge_notes(purged, ledger_totals)  # an incomplete one: the ledger knows
    # Configuration errors that failed a step at once (a missing connection, a protected
    # table): their messages name settings, never records.
    reasons += [f for f in failures or () if f not in reasons]
    warnings = decision.warnings if decision else (extracted.warnings if extracted else [])
    reasons += list(warnings)
    reasons += _residue_notes(verification.summary if verification else None)
    deleted, batches = _deleted(status, purged, ledger_totals)
    timings = {
        step: result.seconds
        for step, result in (("delete", purged), ("verify", verification))
        if result is not None
    }
    return _describe_policy(policy) | {
        "dag_id": dag_id,
        "run_id": run_id,
        "attempt": attempt,
        "logical_date": logical_date,
        "cutoff": extracted.cutoff if extracted else None,
        "status": status,
        "dry_run": dry_run,
        **_plan_fields(extracted.plan if extracted else None),
        "deleted": deleted,
        "batches": batches,
        "shards": purged.slices if purged else None,  # the column's name: slices
        "tenants": {t: i.model_dump() for t, i in extracted.tenants.items()} if extracted else {},
        "verified": None if verification is None else verification.success,
        "remaining": None if verification is None else verification.remaining,
        "reasons": reasons,
        "verification": None if verification is None else verification.summary,
        "timings": timings,
        "started_at": started_at,
        "finished_at": datetime.now(UTC),
    }


_PLAN_COUNTS = ("total", "expired", "held", "active", "anomalies")
_PLAN_BOUNDS = ("oldest_expired", "newest_expired", "oldest_retained")


def _plan_fields(plan: Plan | None) -> dict[str, Any]:
    """What the plan (extract) found: counts and timestamp bounds, hold ids with their counts,
    and the forecast (None where the store did not count it: never hashed then)."""
    if plan is None:
        return dict.fromkeys((*_PLAN_COUNTS, *_PLAN_BOUNDS, "due")) | {"holds": {}}
    return {name: getattr(plan, name) for name in (*_PLAN_COUNTS, *_PLAN_BOUNDS)} | {
        "holds": dict(plan.held_by_hold),
        "due": dict(plan.due) or None,
    }


def _describe_policy(policy: Any) -> dict[str, Any]:
    store = policy.store
    return {
        "policy": policy.name,
        "title": policy.title,
        "controller": policy.controller,
        "legal_basis": policy.legal_basis,
        "store": f"{store.kind}:{store.conn_id}:{store.location}",
        "period": policy.retention.period,
    }


def late_row(
    policy: Any,
    key: Any,
    approval: dict[str, Any] | None,
    totals: dict[str, Any],
    *,
    written_by: str,
) -> dict[str, Any]:
    """The audit row of a run whose own `record` never wrote it, from the deletion ledger: its
    deletions are accounted to it, not to the run that found them."""
    approval = approval or {}
    reasons = [
        f"the run's own record task did not complete: this row was written later, by run "
        f"{written_by}, from the deletion ledger",
        *_purge_notes(None, totals),
    ]
    return _describe_policy(policy) | {
        "dag_id": key.dag_id,
        "run_id": key.run_id,
        "attempt": key.attempt,
        "logical_date": approval.get("logical_date"),
        "cutoff": approval.get("cutoff"),
        "status": "failed",
        "dry_run": False,
        "deleted": totals["deleted"],
        "batches": totals["batches"],
        "reasons": reasons,
        "holds": {},
        "tenants": {},
        "timings": {},
        "started_at": approval.get("at"),
        "finished_at": datetime.now(UTC),
    }
