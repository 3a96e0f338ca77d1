"""The work of the request DAGs' tasks, without Airflow: `prepare` checks the request and says
what each policy will do, `handle` does one policy's part and writes its audit row and result,
`finish` writes the request's outcome. Each reads the request's identifiers from the register
itself: what they return (XCom) carries the request id, policy names and counts only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.policy import Policy
from lifecycle.requests import dag_id_of
from lifecycle.requests.register import (
    Request,
    RequestError,
    identifiers_of,
    record_outcome,
    runnable,
)
from lifecycle.requests.scope import CategoryScope, mapped_subjects, scope_of

log = logging.getLogger(__name__)

# Category statuses that leave the request for the privacy officer to look at.
REVIEW = ("forwarded", "refused", "failed", "verification_failed", "unsupported")


@dataclass(frozen=True)
class RequestRun:
    """The facts of a request DAG run a step needs."""

    request_id: int
    kind: str
    run_id: str
    attempt: int
    logical_date: datetime
    started_at: datetime | None

    @property
    def dag_id(self) -> str:
        return dag_id_of(self.kind)


@contextmanager
def _control() -> Iterator[sa.Engine]:
    from lifecycle.connections import control_engine

    with control_engine() as engine:
        yield engine


def prepare(run: RequestRun, policies: list[Policy]) -> list[dict[str, Any]]:
    """The request checked (it exists, is of this DAG's kind, is not closed, and one of its
    identifiers is mapped by a policy), and each policy's part: names and actions only."""
    with _control() as control:
        request = runnable(control, run.request_id, run.kind)
    if not any(mapped_subjects(policy, request.subjects) for policy in policies):
        raise RequestError(
            f"request {request.id}: no policy maps any of its identifiers "
            f"({', '.join(request.subjects) or 'none'}): nothing done"
        )
    scopes = [scope_of(policy, request) for policy in policies]
    for scope in scopes:
        log.info("request %d: %s: %s %s", request.id, scope.policy, scope.action, scope.reason)
    return [{"policy": s.policy, "action": s.action} for s in scopes]


def handle(policy: Policy, run: RequestRun, *, try_number: int = 1) -> dict[str, Any]:
    """One policy's part of the request; its audit row and its result written before it
    returns. A failure is written too (and raised again), so the evidence is complete."""
    started = datetime.now(UTC)
    with _control() as control:
        request = runnable(control, run.request_id, run.kind)
        scope = scope_of(policy, request)
        try:
            outcome = _do(policy, run, request, scope, control, try_number)
        except Exception as exc:
            outcome = Outcome(
                status="failed",
                reasons=[f"{type(exc).__name__}: {_safe_message(exc)}"],
            )
            if scope.action == "erase":  # what went before the failure: the ledger knows
                _deleted_before_failure(policy, run, control, outcome, try_number)
            _write(policy, run, scope, outcome, control, started, try_number)
            raise
        _write(policy, run, scope, outcome, control, started, try_number)
    return outcome.public(policy.name, scope)


def _ledger(policy: Policy, run: RequestRun, control: sa.Engine, try_number: int) -> Any:
    """The deletion ledger of this try of the category: its key is the category's row's."""
    from lifecycle.ledger import Ledger, RunKey

    run_id = category_run_id(run.run_id, policy.name, try_number)
    return Ledger(control, RunKey(policy.name, run.dag_id, run_id, run.attempt))


def _deleted_before_failure(
    policy: Policy, run: RequestRun, control: sa.Engine, outcome: Outcome, try_number: int
) -> None:
    try:
        ledger = _ledger(policy, run, control, try_number)
        totals = ledger.totals()
    except Exception:  # the control database failing too: the row will say nothing more
        return
    outcome.deleted, outcome.batches = int(totals["deleted"]), int(totals["batches"])
    if outcome.deleted or totals["in_flight"]:
        in_flight = " (a batch in flight when it failed: the next retention run settles it)"
        outcome.reasons = [
            *(outcome.reasons or []),
            f"{outcome.deleted} records deleted in {outcome.batches} batches before the failure "
            "(deletion ledger)" + (in_flight if totals["in_flight"] else ""),
        ]
    ledger.mark_recorded()


def _safe_message(exc: Exception) -> str:
    """Our errors are written for the trail (names and counts); a library's may quote values."""
    from lifecycle.errors import PermanentError
    from lifecycle.stores.sql import StoreError

    if isinstance(exc, PermanentError | StoreError | RequestError):
        return str(exc)[:500]
    return "see the task log"


@dataclass
class Outcome:
    status: str
    records: int = 0
    erasable: int = 0
    held: int = 0
    active: int = 0
    deleted: int = 0
    batches: int = 0
    held_by_hold: dict[str, int] | None = None
    reasons: list[str] | None = None
    verification: dict[str, Any] | None = None
    verified: bool | None = None
    remaining: int | None = None
    archive: str | None = None
    oldest: str | None = None
    newest: str | None = None
    kept_until: str | None = None
    holds_placed: list[int] | None = None
    clients: list[str] | None = None  # the register's only: never in XCom or the trail

    def public(self, policy: str, scope: CategoryScope) -> dict[str, Any]:
        """What XCom may carry: the category's counts and status."""
        return {
            "policy": policy,
            "action": scope.action,
            "status": self.status,
            "records": self.records,
            "deleted": self.deleted,
            "held": self.held,
            "active": self.active,
            "verified": self.verified,
        }

    def result(self) -> dict[str, Any]:
        found = {name: value for name, value in vars(self).items() if name != "clients"}
        return {name: value for name, value in found.items() if value is not None}


def _do(
    policy: Policy,
    run: RequestRun,
    request: Request,
    scope: CategoryScope,
    control: sa.Engine,
    try_number: int,
) -> Outcome:
    if scope.action in ("not_applicable", "unsupported"):
        return Outcome(status=scope.action, reasons=[scope.reason])
    from lifecycle.connections import airflow_connection
    from lifecycle.holds import active_holds
    from lifecycle.stores import open_subject_store

    identifiers = identifiers_of(control, request.id)
    holds = active_holds(control, policy.name, run.logical_date)
    connection = airflow_connection(policy.store.conn_id)
    with open_subject_store(policy, connection, identifiers) as store:
        if not store.reaches:
            return Outcome(
                status="not_applicable",
                reasons=["none of the request's identifiers applies to this store"],
            )
        summary = store.summary(holds)
        found = Outcome(
            status=scope.action,
            records=summary.records,
            erasable=summary.erasable,
            held=summary.held,
            active=summary.active,
            held_by_hold=summary.held_by_hold,
            oldest=summary.oldest,
            newest=summary.newest,
            reasons=[scope.reason] if scope.reason else [],
        )
        if scope.action == "export":
            return _export(policy, run, request, store, found)
        if scope.action == "keep":
            return _keep(policy, found)
        if scope.action == "forward":
            found.status = "forwarded"
            found.clients = summary.clients
            found.reasons = [
                *(found.reasons or []),
                f"{summary.records} records of {len(summary.clients)} client organisation(s): "
                "not erased here (the client ids are in the request's result)",
            ]
            return found
        if scope.action == "restrict":
            return _restrict(policy, request, scope, control, found)
        return _erase(policy, run, store, holds, control, found, try_number)


def _keep(policy: Policy, found: Outcome) -> Outcome:
    from lifecycle.periods import parse_period

    found.status = "kept"
    if found.newest is not None:
        last = datetime.fromisoformat(found.newest) + parse_period(policy.retention.period)
        found.kept_until = last.date().isoformat()
        found.reasons = [
            *(found.reasons or []),
            f"{found.records} records kept; the last goes by {found.kept_until} (its window)",
        ]
    return found


def _export(
    policy: Policy, run: RequestRun, request: Request, store: Any, found: Outcome
) -> Outcome:
    from lifecycle.requests.archive import export_sink, run_folder, write_json, write_records

    folder = f"{run_folder(request.id, run.run_id)}{policy.name}/"
    with export_sink() as sink:
        exported = write_records(sink, folder, store.fields(), store.records())
        copied = 0
        if request.copy_objects:

            def write(key: str, data: bytes) -> None:
                with sink.open(f"{folder}objects/{key}") as file:
                    file.write(data)

            copied = store.copy_objects(write)
        write_json(sink, f"{folder}manifest.json", _manifest(policy, found, exported, copied))
        found.archive = f"{sink.location}{folder}"
    found.status = "exported"
    found.records = exported
    return found


def _manifest(policy: Policy, found: Outcome, exported: int, copied: int) -> dict[str, Any]:
    return {
        "category": policy.name,
        "title": policy.title,
        "statement": policy.statement.model_dump(),
        "controller": policy.controller,
        "legal_basis": policy.legal_basis,
        "retention_period": policy.retention.period,
        "records": exported,
        "oldest": found.oldest,
        "newest": found.newest,
        "objects_copied": copied,
        "files": ["records.csv", "records.json"],
    }


def _restrict(
    policy: Policy, request: Request, scope: CategoryScope, control: sa.Engine, found: Outcome
) -> Outcome:
    from lifecycle.control import holds
    from lifecycle.holds import place_hold

    identifiers = identifiers_of(control, request.id)
    placed = []
    with control.connect() as conn:  # a retried task finds the holds it placed already
        existing = {
            row.subject: row.id
            for row in conn.execute(
                sa.select(holds.c.id, holds.c.subject).where(
                    holds.c.request_id == request.id,
                    holds.c.scope == policy.name,
                    holds.c.released_at.is_(None),
                )
            )
        }
    for subject in scope.subjects:
        hold_id = existing.get(subject)
        if hold_id is None:
            hold_id = place_hold(
                control,
                scope=policy.name,
                subject=subject,
                value=identifiers[subject],
                reason="restriction",
                placed_by=f"request {request.id}",
                note=f"data-subject request {request.id}",
                request_id=request.id,
            )
        placed.append(hold_id)
    found.status = "restricted"
    found.holds_placed = placed
    found.reasons = [
        *(found.reasons or []),
        f"restriction hold(s) {', '.join(map(str, placed))} placed on {found.records} records; "
        "deciding the request releases them",
    ]
    return found


def _erase(
    policy: Policy,
    run: RequestRun,
    store: Any,
    holds: tuple[Any, ...],
    control: sa.Engine,
    found: Outcome,
    try_number: int,
) -> Outcome:
    from lifecycle.holds import active_holds
    from lifecycle.stores import erasure_window

    removals = store.removals(holds)
    limit = policy.guards.max_erasure_records
    exceptions = _exceptions(found)
    if removals > limit:
        found.status = "refused"
        found.reasons = [
            f"the erasure would remove {removals} records, more than guards.max_erasure_records "
            f"{limit}: refused for review, nothing deleted",
            *exceptions,
        ]
        return found
    # The ledger's key is the category's row's (this try's): its batches are summed there.
    ledger = _ledger(policy, run, control, try_number)

    def reload() -> tuple[Any, ...]:
        return active_holds(control, policy.name, run.logical_date)

    window = erasure_window(holds, reload)
    ledger.approve(run.logical_date, removals, run.logical_date)
    result = store.purge(window, approved=removals, journal=ledger.journal(0, try_number))
    verification = store.verify(erasure_window(reload()))
    totals = ledger.totals()
    found.deleted = int(totals["deleted"])
    found.batches = int(totals["batches"])
    found.verified = verification.success
    found.remaining = verification.remaining
    found.verification = verification.summary
    found.status = "erased" if verification.success else "verification_failed"
    found.reasons = [
        *exceptions,
        *(f"{code}: {n} not deleted" for code, n in result.failed.items()),
    ]
    ledger.mark_recorded()
    return found


def _exceptions(found: Outcome) -> list[str]:
    notes = []
    if found.held:
        by_hold = ", ".join(
            f"hold {h}: {n}" if h.isdigit() else f"Object Lock: {n}"
            for h, n in sorted((found.held_by_hold or {}).items())
        )
        notes.append(f"{found.held} record(s) kept under a hold ({by_hold})")
    if found.active:
        notes.append(
            f"{found.active} record(s) kept: still active (a running contract, an open ticket)"
        )
    return notes


def _write(
    policy: Policy,
    run: RequestRun,
    scope: CategoryScope,
    outcome: Outcome,
    control: sa.Engine,
    started: datetime,
    try_number: int = 1,
) -> None:
    from lifecycle.audit import _describe_policy, record_run
    from lifecycle.control import request_results

    finished = datetime.now(UTC)
    row = _describe_policy(policy) | {
        "dag_id": run.dag_id,
        # One row per category (and try) of one run: the trail keys rows on (dag_id, run_id,
        # attempt), and the row of a try that failed stays as written.
        "run_id": category_run_id(run.run_id, policy.name, try_number),
        "attempt": run.attempt,
        "logical_date": run.logical_date,
        "status": outcome.status,
        "dry_run": False,
        "total": outcome.records,
        "expired": outcome.erasable,
        "held": outcome.held,
        "active": outcome.active,
        "deleted": outcome.deleted,
        "batches": outcome.batches,
        "verified": outcome.verified,
        "remaining": outcome.remaining,
        "holds": outcome.held_by_hold or {},
        "reasons": outcome.reasons or [],
        "verification": outcome.verification,
        "started_at": started,
        "finished_at": finished,
        "request_id": run.request_id,
    }
    record_run(control, row)
    values = {
        "status": outcome.status,
        "result": {"action": scope.action, **outcome.result()},
        "clients": outcome.clients,
        "at": _naive(control, finished),
    }
    key = {"request_id": run.request_id, "run_id": run.run_id, "policy": policy.name}
    with control.begin() as conn:  # a retry replaces its try's result
        updated = conn.execute(
            request_results.update()
            .where(*(request_results.c[name] == value for name, value in key.items()))
            .values(values)
        ).rowcount
        if not updated:
            conn.execute(request_results.insert().values(key | values))


def category_run_id(run_id: str, policy: str, try_number: int = 1) -> str:
    """The trail's run id of one category's row: `<run id>/<policy>` (policy names have no
    slash), each category its own; a task tried again writes `<run id>/<policy>/try-<n>`: the
    first try's row (its deletions, its failure) stays as written, the new try's beside it."""
    suffix = f"/{policy}" + (f"/try-{try_number}" if try_number > 1 else "")
    return f"{run_id[: 250 - len(suffix)]}{suffix}"


def _naive(engine: sa.Engine, instant: datetime) -> datetime:
    return instant.replace(tzinfo=None) if engine.dialect.name in ("mysql", "mariadb") else instant


def finish(run: RequestRun, results: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The request's outcome: in the register (status, counts per category) and as one audit
    row of its own. A category whose task wrote nothing (it never ran) counts as failed."""
    from lifecycle.audit import record_run
    from lifecycle.requests.register import category_results

    with _control() as control:
        request = runnable(control, run.request_id, run.kind)
        with control.connect() as conn:
            rows = category_results(conn, request.id, run.run_id)
        statuses = {row.policy: row.status for row in rows}
        if request.kind in ("access", "portability"):
            _archive_manifest(run, request, rows)
        expected = [item["policy"] for item in results or [] if item]
        missing = sorted(set(expected) - set(statuses))
        failed = any(statuses[p] in ("failed", "verification_failed") for p in statuses)
        review = failed or missing or any(s in REVIEW for s in statuses.values())
        status = "failed" if failed or missing else ("needs_review" if review else "answered")
        counts = {p: s for p, s in sorted(statuses.items())}
        record_outcome(
            control,
            request.id,
            status=status,
            outcome={"run_id": run.run_id, "categories": counts, "missing": missing},
            run_id=run.run_id,
        )
        summary: dict[str, int] = {}
        for value in statuses.values():
            summary[value] = summary.get(value, 0) + 1
        record_run(
            control,
            {
                "dag_id": run.dag_id,
                "run_id": run.run_id,
                "attempt": run.attempt,
                "policy": "*",
                "title": f"Data-subject request {request.id} ({request.kind})",
                "controller": "provider",
                "legal_basis": "legal_obligation",
                "store": "requests",
                "period": "P1M",
                "logical_date": run.logical_date,
                "status": "answered" if status == "answered" else "needs_review",
                "dry_run": False,
                "total": len(statuses),
                "reasons": [f"{n} categories {s}" for s, n in sorted(summary.items())]
                + [f"no result from {p}" for p in missing],
                "holds": {},
                "started_at": run.started_at,
                "finished_at": datetime.now(UTC),
                "request_id": request.id,
            },
        )
    return {"request_id": request.id, "status": status, "categories": counts}


def _archive_manifest(run: RequestRun, request: Request, rows: list[Any]) -> None:
    """The archive's own manifest: the request (never its identifiers) and each category it
    holds, left out or not, and why."""
    from lifecycle.requests.archive import export_sink, run_folder, write_json

    categories = {
        row.policy: {
            "result": row.status,
            "records": (row.result or {}).get("records", 0),
            **({"reasons": row.result["reasons"]} if (row.result or {}).get("reasons") else {}),
        }
        for row in rows
    }
    manifest = {
        "request": request.id,
        "kind": request.kind,
        "received_at": request.received_at.isoformat(),
        "due_at": request.due_at.isoformat(),
        "run": run.run_id,
        "written_at": datetime.now(UTC).isoformat(),
        "categories": categories,
        "folders": sorted(p for p, c in categories.items() if c["result"] == "exported"),
    }
    with export_sink() as sink:
        write_json(sink, f"{run_folder(request.id, run.run_id)}manifest.json", manifest)
