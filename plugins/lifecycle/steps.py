"""What each task of a retention run does, as plain functions of a policy and a run.

The factory wires these into TaskFlow tasks and handles what is Airflow's (XCom, skip and fail).
Everything a step returns goes to XCom, so it holds counts, bounds, settings, tenant ids and hold
ids only: hold values and records stay in the store and in the step's memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lifecycle.connections import sql_engine
from lifecycle.payloads import (
    CheckDecision,
    Extracted,
    Purge,
    RunResults,
    SliceResult,
    SliceTask,
    TenantInfo,
    VerificationResult,
)
from lifecycle.policy import Policy

if TYPE_CHECKING:
    import sqlalchemy as sa

    from lifecycle.ledger import Ledger
    from lifecycle.stores import Hold, RetentionStore, RetentionWindow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """The facts of a DAG run a step needs."""

    dag_id: str
    run_id: str
    attempt: int  # the run's clear number: a cleared and rerun run is a new attempt
    logical_date: datetime  # or, for a manual run without one, its run_after
    started_at: datetime | None
    dry_run: bool = False
    max_delete_fraction: float | None = None


def open_policy_store(policy: Policy) -> RetentionStore:
    from lifecycle.connections import airflow_connection
    from lifecycle.stores import open_store

    return open_store(policy, airflow_connection(policy.store.conn_id))


class _HoldSource:
    """The active holds of a policy, read again on every call (an indexed lookup in the
    control database): the purge asks before every batch. With `engine` (a delete task's open
    control database) the reads share its pool instead of connecting anew each batch."""

    def __init__(self, policy: Policy, run: Run, engine: sa.Engine | None = None):
        self.policy, self.run, self.engine = policy, run, engine

    def __call__(self) -> tuple[Hold, ...]:
        from lifecycle.connections import control_engine
        from lifecycle.holds import active_holds

        if self.engine is not None:
            return active_holds(self.engine, self.policy.name, self.run.logical_date)
        with control_engine() as engine:
            return active_holds(engine, self.policy.name, self.run.logical_date)


def _tenant_periods(policy: Policy) -> dict[str, str]:
    from lifecycle.tenants import read_tenant_periods

    settings = policy.retention.per_tenant
    if settings is None:
        return {}
    conn_id = settings.conn_id or policy.store.conn_id
    with sql_engine(conn_id, "retention.per_tenant.conn_id") as engine:
        return read_tenant_periods(engine, settings.table, policy.name)


def window(
    policy: Policy, run: Run, extracted: dict[str, Any] | None = None
) -> tuple[RetentionWindow, dict[str, str]]:
    """The run's retention window, and the client periods it was computed from. Cutoffs are
    computed once, by extract, and reused by the later steps (a settings change mid-run cannot
    move them); holds are read again by each step, so a hold placed mid-run protects at once."""
    from lifecycle.periods import compute_cutoff
    from lifecycle.stores import RetentionWindow
    from lifecycle.tenants import tenant_cutoffs

    if extracted is None:
        cutoff = compute_cutoff(
            run.logical_date,
            policy.retention.period,
            policy.timezone,
            allow_zero=policy.retention.from_event is not None,
        )
        periods = _tenant_periods(policy)
        tenants = tenant_cutoffs(periods, run.logical_date, policy.timezone)
    else:
        facts = Extracted.from_json(extracted)
        cutoff, tenants, periods = (
            facts.cutoff_at,
            facts.tenant_cutoffs_at(),
            facts.tenant_periods(),
        )
    source = _HoldSource(policy, run)
    current = RetentionWindow(
        cutoff=cutoff, tenant_cutoffs=tenants, holds=source(), reload_holds=source
    )
    return current, periods


def _hold_warnings(policy: Policy, holds: Iterable[Hold], unreached: list[str]) -> list[str]:
    """Holds that protect nothing in this policy, said once per run (ids and subjects only,
    never the value): a hold scoped to this policy on a subject it cannot reach, and any hold
    on a subject it maps whose value reaches no record here (another formatting, a typo)."""
    mapped = policy.store.hold_subjects()
    warnings = []
    for hold in holds:
        if hold.subject not in mapped and hold.scope == policy.name:
            warnings.append(
                f"hold {hold.id} ({hold.subject}) names a subject this policy cannot reach "
                f"(it reaches {', '.join(sorted(mapped)) or 'none'}): it protects nothing here"
            )
        elif str(hold.id) in unreached and hold.scope == policy.name:
            warnings.append(
                f"hold {hold.id} ({hold.subject}) reaches no records in this policy: check its "
                "value (it protects nothing here)"
            )
        elif str(hold.id) in unreached:  # a hold on all policies: this one may hold none
            warnings.append(
                f"hold {hold.id} ({hold.subject}, all policies) reaches no records in this policy"
            )
    return warnings


def extract(policy: Policy, run: Run) -> dict[str, Any]:
    started_at = datetime.now(UTC)  # the run's real start, for the evidence page
    current, periods = window(policy, run)
    with open_policy_store(policy) as store:
        plan = store.plan(current)
    tenants = {
        tenant: TenantInfo(
            period=periods.get(tenant, policy.retention.period),
            default=tenant not in periods,
            **plan.by_tenant.get(tenant, {}),
        )
        for tenant in sorted(set(plan.by_tenant) | set(periods))
    }
    warnings = _hold_warnings(policy, current.holds, plan.inert_holds)
    log.info(
        "%s: cutoff %s; %d of %d records expired, %d held by %d holds, %d active, %d without "
        "timestamp or subject",
        policy.name,
        current.cutoff.isoformat(),
        plan.expired,
        plan.total,
        plan.held,
        len(current.holds),
        plan.active,
        plan.anomalies,
    )
    on_default = sorted(t for t, info in tenants.items() if info.default)
    if tenants:
        log.info("%s: %d tenants, on the default period: %s", policy.name, len(tenants), on_default)
    return Extracted(
        cutoff=current.cutoff.isoformat(),
        tenant_cutoffs={t: c.isoformat() for t, c in current.tenant_cutoffs.items()},
        tenants=tenants,
        plan=plan,
        warnings=warnings,
        started_at=started_at.isoformat(),
        attempt=run.attempt,
    ).to_json()


def check(
    policy: Policy, run: Run, extracted: dict[str, Any], refusals: tuple[str, ...] = ()
) -> dict[str, Any]:
    from lifecycle import guards

    facts = Extracted.from_json(extracted)
    decision = guards.check(
        policy,
        facts.plan,
        facts.cutoff_at,
        # The wall clock, not the logical date: no record goes while its window is still open.
        wall_clock=datetime.now(UTC),
        dry_run=run.dry_run,
        max_delete_fraction=run.max_delete_fraction,
        tenant_periods=facts.tenant_periods(),
        tenant_cutoffs=facts.tenant_cutoffs_at(),
        refusals=refusals,
    )
    warnings = [*decision.warnings, *facts.warnings]
    if decision.outcome == "approved":
        # Intent before action: the trail holds the approval (run, cutoff, ceiling) before a
        # delete task may start; if the control database cannot take it, nothing is deleted.
        # First, the batches earlier attempts or runs left in flight are settled: what they
        # deleted is theirs, found before this run deletes anything.
        with run_ledger(policy, run) as ledger:
            warnings += _settle_in_flight(policy, ledger)
            ledger.approve(facts.cutoff_at, decision.approved_records, run.logical_date)
    for warning in warnings:
        log.warning("%s: %s", policy.name, warning)
    return CheckDecision(
        outcome=decision.outcome,
        approved=decision.approved,
        dry_run=decision.dry_run,
        approved_records=decision.approved_records,
        reasons=list(decision.reasons),
        warnings=warnings,
        attempt=run.attempt,
    ).to_json()


def _settle_in_flight(policy: Policy, ledger: Ledger) -> list[str]:
    """The store is opened only when a batch is left to settle (rare: after a crash)."""
    pending = ledger.in_flight_elsewhere()
    if not pending:
        return []
    with open_policy_store(policy) as store:
        return ledger.settle_in_flight(store.witnesses_left, pending)


def _ledger_of(policy: Policy, run: Run, engine: sa.Engine) -> Ledger:
    """The deletion ledger's rows of this run attempt, on the control database `engine`."""
    from lifecycle.ledger import Ledger, RunKey

    return Ledger(engine, RunKey(policy.name, run.dag_id, run.run_id, run.attempt))


@contextmanager
def run_ledger(policy: Policy, run: Run) -> Iterator[Ledger]:
    """The deletion ledger of this run attempt (control database)."""
    from lifecycle.connections import control_engine
    from lifecycle.control import ledger, require

    with control_engine() as engine:
        require(engine, ledger)
        yield _ledger_of(policy, run, engine)


def split(
    policy: Policy, run: Run, extracted: dict[str, Any], decision: dict[str, Any]
) -> list[dict[str, Any]]:
    """Cut the approved purge into slices, one mapped delete task each (see `store.slices`)."""
    from lifecycle.stores import PurgeLimitExceeded

    current, _ = window(policy, run, extracted)
    approved = CheckDecision.from_json(decision).approved_records
    with open_policy_store(policy) as store:
        pieces = store.slices(current, count=policy.store.max_slices, expired=approved)
        pieces = [replace(piece, past=store.past_window(current, piece)) for piece in pieces]
    found = sum(piece.expired for piece in pieces)
    if found > approved:
        raise PurgeLimitExceeded(
            f"{policy.name}: {found} records to delete at the split, more than the {approved} "
            "approved by the check; nothing deleted, run again"
        )
    log.info(
        "%s: purge split into %d slice(s) of %s records",
        policy.name,
        len(pieces),
        [piece.expired for piece in pieces],
    )
    return [SliceTask.of(piece, run.attempt, len(pieces)).to_json() for piece in pieces]


def delete(
    policy: Policy,
    run: Run,
    extracted: dict[str, Any],
    task: dict[str, Any],
    *,
    try_number: int = 1,
) -> dict[str, Any]:
    """Purge one slice, every batch in the deletion ledger as it commits.

    Nothing is deleted without the check's approval in the ledger. A retry (after a worker died
    mid-purge, say) first reconciles: what is gone from the slice since the split (past the
    window, held or not) and not in the ledger was deleted by the batch the interrupted try had
    in flight, and is written to the ledger against that try. Where the store cannot count
    cheaply (object stores) or a count cannot tell deleted from moved (slices of blocks), the
    in-flight batch stays reported as such, and the retry may delete what the slice's approval
    leaves after the earlier tries' recorded deletions."""
    from lifecycle.errors import NotApproved
    from lifecycle.ledger import SliceTotals

    current, _ = window(policy, run, extracted)
    sliced = SliceTask.from_json(task)
    piece = sliced.bounds()
    earlier, uncounted = 0, False
    with run_ledger(policy, run) as ledger, open_policy_store(policy) as store:
        current = replace(current, reload_holds=_HoldSource(policy, run, ledger.engine))
        if ledger.approved() is None:
            raise NotApproved(
                f"{policy.name}: no approval for run {run.run_id} (attempt {run.attempt}) in the "
                "deletion ledger: nothing deleted"
            )
        if try_number > 1:
            now = store.past_window(current, piece) if piece.past is not None else None
            if now is None or piece.past is None:  # now is None whenever past is
                uncounted = True
                # What earlier tries are known to have deleted is spent: the in-flight batch
                # stays reported as such, settled by its witnesses before the next run.
                earlier = ledger.slice_totals(piece.index, before_try=try_number).deleted
            else:
                earlier = max(0, piece.past - now)
                found = ledger.reconcile(piece.index, try_number, earlier)
                log.info(
                    "%s: slice %d: earlier tries deleted %d (%d of them found by reconciling)",
                    policy.name,
                    piece.index,
                    earlier,
                    found,
                )
        result = store.purge(
            current,
            approved=max(0, piece.expired - earlier),
            in_slice=piece,
            journal=ledger.journal(piece.index, try_number),
        )
        seconds, swept = result.seconds, SliceTotals()
        # Slices of blocks: a row an UPDATE moved into a slice already walked is in no slice's
        # range any more; the last slice to finish sweeps the whole table for such rows, within
        # what the run's approval leaves, journaled as a slice of its own (index: the count of
        # slices), so that no slice's accounting mixes in rows of another's blocks.
        if piece.of_blocks and ledger.finish_slice(piece.index, sliced.slices):
            seconds += _final_sweep(store, current, ledger, sliced.slices, try_number)
            swept = ledger.slice_totals(sliced.slices)
        totals = ledger.slice_totals(piece.index)
    return SliceResult(
        slice=piece.index,
        deleted=totals.deleted + swept.deleted,
        batches=totals.batches + swept.batches,
        seconds=seconds,
        failed=result.failed,
        partitions=result.partitions,
        earlier_tries=totals.deleted - result.deleted,
        earlier_uncounted=uncounted and bool(totals.in_flight),
        attempt=run.attempt,
    ).to_json()


def _final_sweep(
    store: RetentionStore, current: RetentionWindow, ledger: Ledger, index: int, try_number: int
) -> float:
    """The whole table's sweep after every slice of blocks finished: at most what the run's
    approval leaves once every recorded deletion and every batch still in flight (it may have
    committed) is counted; its seconds."""
    totals = ledger.totals()
    in_flight = sum(n for batches in totals["in_flight"].values() for _t, _b, n in batches)
    left = (ledger.approved() or 0) - int(totals["deleted"]) - in_flight
    result = store.sweep_all(
        current, approved=max(0, left), journal=ledger.journal(index, try_number), after_batch=0
    )
    return result.seconds


def merge_purges(run: Run, tasks: list[dict[str, Any]] | None, results: Any) -> Purge | None:
    """The run's purge from its slices' results. None without this attempt's split; with a
    slice unfinished, only what the finished ones deleted (a slice that failed may have
    committed batches: the run's total is then unknown)."""
    if not tasks or any(t.get("attempt") != run.attempt for t in tasks):
        return None
    if isinstance(results, dict):  # one mapped task: Airflow returns its value alone
        results = [results]
    done = {
        result.slice: result
        for result in (SliceResult.of_attempt(r, run.attempt) for r in results or ())
        if result is not None
    }
    missing = sorted({t["index"] for t in tasks} - set(done))
    if missing:  # what the finished slices deleted is known; the run's total is not
        return Purge(incomplete=missing, deleted_by_finished=sum(r.deleted for r in done.values()))
    failed: dict[str, int] = {}
    for result in done.values():
        for code, n in result.failed.items():
            failed[code] = failed.get(code, 0) + n
    partitions: dict[str, int] = {}
    for result in done.values():
        for what, n in result.partitions.items():
            partitions[what] = partitions.get(what, 0) + n
    return Purge(
        deleted=sum(r.deleted for r in done.values()),
        batches=sum(r.batches for r in done.values()),
        seconds=max(r.seconds for r in done.values()),
        failed=failed,
        partitions=partitions,
        slices=len(done),
        earlier_tries=sum(r.earlier_tries for r in done.values()),
        earlier_uncounted=sorted(i for i, r in done.items() if r.earlier_uncounted),
    )


def verify(policy: Policy, run: Run, extracted: dict[str, Any]) -> dict[str, Any]:
    current, _ = window(policy, run, extracted)
    with open_policy_store(policy) as store:
        result = store.verify(current)
    return VerificationResult(**result.to_dict(), attempt=run.attempt).to_json()


def record(
    policy: Policy,
    run: Run,
    *,
    slices: list[dict[str, Any]] | None,
    purges: Any,
    extracted: dict[str, Any] | None,
    decision: dict[str, Any] | None,
    verification: dict[str, Any] | None,
    failures: list[str] | None = None,
) -> dict[str, Any]:
    """Write the audit row of the run from what its steps left (None where a step failed):
    one row for the run, the slices' purges summed.

    A cleared run keeps the XComs of the steps that have not run again yet: a result of another
    attempt is ignored, or the row would claim deletions and verifications it did not do.
    """
    from lifecycle.audit import audit_row, record_run
    from lifecycle.connections import control_engine

    results = RunResults(
        extracted=Extracted.of_attempt(extracted, run.attempt),
        decision=CheckDecision.of_attempt(decision, run.attempt),
        purged=merge_purges(run, slices, purges),
        verification=VerificationResult.of_attempt(verification, run.attempt),
    )
    with control_engine() as engine:
        approved, totals = _ledger_totals(policy, run, engine)
        row = audit_row(
            policy,
            dag_id=run.dag_id,
            run_id=run.run_id,
            attempt=run.attempt,
            logical_date=run.logical_date,
            dry_run=run.dry_run,
            started_at=_started(run, results.extracted),
            failures=failures or [],
            ledger_totals=totals,
            results=results,
        )
        if not record_run(engine, row):
            log.info(
                "%s: the audit row of attempt %d was written by an earlier try",
                policy.name,
                run.attempt,
            )
        if approved:
            _ledger_of(policy, run, engine).mark_recorded()
        if _has_ledger(engine):
            _write_late_rows(policy, run, engine)
    return row


def _started(run: Run, extracted: Extracted | None) -> datetime | None:
    """The run's real start: its first task's (a run of `dags test` or the demo would otherwise
    say it started at its logical date)."""
    if extracted is not None and extracted.started_at:
        return datetime.fromisoformat(extracted.started_at)
    return run.started_at


NOTHING_DELETED: dict[str, Any] = {"deleted": 0, "batches": 0, "in_flight": {}}


def _ledger_totals(policy: Policy, run: Run, engine: sa.Engine) -> tuple[bool, dict[str, Any]]:
    """Whether this attempt was approved, and what the ledger says it deleted. Without an
    approval nothing can have been deleted (a delete task refuses to start): zero, known."""
    if not _has_ledger(engine):
        return False, NOTHING_DELETED  # no approval can have been written
    ledger = _ledger_of(policy, run, engine)
    if ledger.approved() is None:
        return False, NOTHING_DELETED
    return True, ledger.totals()


def _has_ledger(engine: sa.Engine) -> bool:
    from lifecycle.control import ledger, present

    return present(engine, ledger)


def _write_late_rows(policy: Policy, run: Run, engine: sa.Engine) -> None:
    """The audit rows of earlier runs of this policy that deleted (or were approved to) but
    whose own `record` never wrote: their deletions are accounted to them, from the ledger."""
    from lifecycle.audit import late_row, record_run
    from lifecycle.ledger import Ledger, unrecorded_runs

    for key in unrecorded_runs(engine, policy.name):
        if (key.dag_id, key.run_id, key.attempt) == (run.dag_id, run.run_id, run.attempt):
            continue
        ledger = Ledger(engine, key)
        row = late_row(policy, key, ledger.approval(), ledger.totals(), written_by=run.run_id)
        record_run(engine, row)  # False: the row was there, only the mark was missing
        ledger.mark_recorded()
        log.warning(
            "%s: wrote the missing audit row of run %s (attempt %d): %d records deleted",
            policy.name,
            key.run_id,
            key.attempt,
            row["deleted"],
        )
