"""Data-subject requests in the audit UI: the register, each request's result per category, and
the request log an auditor exports (issue 14, "Evidence").

What the pages read: the register (`retention_requests`), the results of each run per category
(`retention_request_results`) and the request's rows of the audit trail. Of the subject's
identifiers (`retention_request_subjects`, personal data) only their names (customer, phone...)
are asked for, never a value, and the audit UI's least-privileged role may not read even those:
the pages then say so and show everything else. Of a category forwarded to the client
organisations, the pages show how many there are, never their ids (the privacy officer's CLI
`requests show` has them).

Times are shown in Europe/Amsterdam (the register's zone, as the CLI prints it), UTC on hover.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.control import present, read_time, request_results, requests, runs
from lifecycle.requests.register import (
    TIMES,
    Request,
    category_results,
    request_of,
    subject_names,
)
from lifecycle.ui.export import neutralised
from lifecycle.ui.zones import DEFAULT_ZONE, local

log = logging.getLogger(__name__)

ZONE = DEFAULT_ZONE
CLOSED_SHOWN = 100  # closed requests on the page, the latest decided first; the export has all
# What a category's part of a request came to (lifecycle.requests.steps), in the export's order.
CATEGORY_STATUSES = (
    "exported",
    "erased",
    "kept",
    "restricted",
    "forwarded",
    "not_applicable",
    "unsupported",
    "refused",
    "verification_failed",
    "failed",
)


class RegisterMissing(RuntimeError):
    """The control database has no register (`audit-init` not run since requests came)."""


# -- the register -------------------------------------------------------------------------------


def _require_register(engine: sa.Engine) -> None:
    if not present(engine, requests):
        raise RegisterMissing(
            "the control database has no register of data-subject requests "
            f"({requests.name}): run `python -m lifecycle audit-init` as the tables' owner"
        )


@dataclass(frozen=True)
class Register:
    open: list[Request]  # the soonest due first
    closed: list[Request]  # the latest decided first
    names_readable: bool


def read_register(engine: sa.Engine) -> Register:
    """Every request, without its identifiers: open ones (any status but closed) the soonest
    due first, closed ones the latest decided first."""
    _require_register(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(requests).order_by(requests.c.due_at, requests.c.id)).all()
    names = subject_names(engine) if rows else {}
    found = [request_of(row, (names or {}).get(row.id, ())) for row in rows]
    closed = [r for r in found if r.status == "closed"]
    closed.sort(key=lambda r: (r.decided_at or r.due_at, r.id), reverse=True)
    return Register(
        open=[r for r in found if r.status != "closed"],
        closed=closed,
        names_readable=names is not None,
    )


def read_request(engine: sa.Engine, request_id: int) -> tuple[Request, bool] | None:
    """One request and whether its identifier names were readable; None: no such request."""
    _require_register(engine)
    with engine.connect() as conn:
        row = conn.execute(sa.select(requests).where(requests.c.id == request_id)).one_or_none()
    if row is None:
        return None
    names = subject_names(engine, request_id)
    return request_of(row, (names or {}).get(request_id, ())), names is not None


# -- one request's last run ---------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """An audit row of the request's run: the evidence page's id and what it says."""

    id: int
    policy: str
    attempt: int
    status: str


@dataclass(frozen=True)
class Category:
    policy: str
    status: str
    result: dict[str, Any]  # counts, exceptions, archive path (never an identifier)
    clients: int  # client organisations to forward to: how many, never their ids
    evidence: list[Evidence]

    @property
    def holds(self) -> list[tuple[str, int]]:
        by_hold = self.result.get("held_by_hold") or {}
        return sorted(((str(h), int(n)) for h, n in by_hold.items()), key=_hold_order)


def _hold_order(item: tuple[str, int]) -> tuple[int, str]:
    hold = item[0]
    return (int(hold), hold) if hold.isdigit() else (2**31, hold)


@dataclass(frozen=True)
class LastRun:
    run_id: str
    at: datetime | None
    recorded: bool  # the register holds this run's outcome (False: running, or it stopped)
    categories: list[Category]
    outcome_rows: list[Evidence]  # the request's own row(s) in the trail (policy `*`)
    runs: int  # runs with a result in the register, this one included


def last_run(engine: sa.Engine, request: Request) -> LastRun | None:
    """The results per category of the request's latest run (the one whose results were
    written last: a run that stopped before its outcome shows too, and says so), with the
    audit rows of that run."""
    from lifecycle.requests.steps import category_run_id

    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(request_results.name):
            return None
        latest = sa.func.max(request_results.c.at)
        found = conn.execute(
            sa.select(request_results.c.run_id, latest.label("at"))
            .where(request_results.c.request_id == request.id)
            .group_by(request_results.c.run_id)
            .order_by(latest.desc(), request_results.c.run_id.desc())
        ).all()
        if not found:
            return None
        run_id, at = found[0].run_id, read_time(found[0].at)
        rows = category_results(conn, request.id, run_id)
        # The run's own row (`*`) and each category's, every try of it (`<run>/<policy>`,
        # `<run>/<policy>/try-2`...: lifecycle.requests.steps.category_run_id).
        trail = conn.execute(
            sa.select(runs.c.id, runs.c.run_id, runs.c.policy, runs.c.attempt, runs.c.status)
            .where(
                runs.c.request_id == request.id,
                sa.or_(runs.c.run_id == run_id, runs.c.run_id.startswith(f"{run_id}/")),
            )
            .order_by(runs.c.attempt, runs.c.id)
        ).all()
    evidence: dict[str, list[Evidence]] = {}
    for row in trail:
        own = run_id if row.policy == "*" else category_run_id(run_id, row.policy)
        if row.run_id == own or row.run_id.startswith(f"{own}/try-"):
            evidence.setdefault(row.policy, []).append(
                Evidence(row.id, row.policy, row.attempt, row.status)
            )
    categories = [
        Category(
            policy=row.policy,
            status=row.status,
            result=row.result if isinstance(row.result, dict) else {},
            clients=len(row.clients) if isinstance(row.clients, list | dict) else 0,
            evidence=evidence.get(row.policy, []),
        )
        for row in rows
    ]
    return LastRun(
        run_id=run_id,
        at=at,
        recorded=run_id == request.last_run_id,
        categories=categories,
        outcome_rows=evidence.get("*", []),
        runs=len(found),
    )


# -- what the pages show of a request -----------------------------------------------------------


def category_counts(request: Request) -> dict[str, int]:
    """How many categories came to each status in the request's last recorded run (its
    outcome in the register); `missing`: categories that wrote no result."""
    categories = (request.outcome or {}).get("categories") or {}
    counts: dict[str, int] = {}
    for status in categories.values():
        counts[str(status)] = counts.get(str(status), 0) + 1
    missing = (request.outcome or {}).get("missing") or []
    if missing:
        counts["missing"] = len(missing)
    return counts


def summary(request: Request) -> str:
    """`2 erased, 1 kept, 1 forwarded`: the last recorded run's categories, skipping those the
    request did not concern."""
    counts = category_counts(request)
    order = [*CATEGORY_STATUSES, "missing"]
    known = sorted(counts, key=lambda s: (order.index(s) if s in order else len(order), s))
    return ", ".join(f"{counts[s]} {s.replace('_', ' ')}" for s in known if s != "not_applicable")


def due_note(request: Request, now: datetime) -> str:
    """How long is left, or how late it is; nothing for a closed request."""
    if request.status == "closed":
        return ""
    if request.overdue(now):
        late = (now - request.due_at).days
        return f"{late} d late" if late >= 1 else "less than a day late"
    left = (request.due_at - now).days
    return f"{left} d left" if left >= 1 else "due within a day"


# -- the request log ----------------------------------------------------------------------------

LOG_COLUMNS = [
    "id",
    "kind",
    "status",
    "overdue",
    "timezone",
    "received_at",
    "received_at_local",
    "due_at",
    "due_at_local",
    "registered_by",
    "reference",
    "client_instructed",
    "runs",
    "last_run_id",
    "completed_at",
    "completed_at_local",
    "decided_at",
    "decided_at_local",
    "decided_by",
    "decision",
    "note",
    *(f"categories_{status}" for status in CATEGORY_STATUSES),
    "categories_other",
    "categories_missing",
]


def log_rows(engine: sa.Engine) -> list[Request]:
    """Every request, in the order they were registered."""
    _require_register(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(requests).order_by(requests.c.id)).all()
    return [request_of(row, ()) for row in rows]


def _log_record(request: Request, now: datetime) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": request.id,
        "kind": request.kind,
        "status": request.status,
        "overdue": request.overdue(now),
        "timezone": ZONE,
        "registered_by": request.registered_by,
        "reference": request.reference,
        "client_instructed": request.client_instructed,
        "runs": request.runs,
        "last_run_id": request.last_run_id,
        "decided_by": request.decided_by,
        "decision": request.decision,
        "note": request.note,
    }
    for name in TIMES:
        value = getattr(request, name)
        record[name] = value.isoformat() if value else None
        moment = local(value, ZONE)
        record[f"{name}_local"] = moment.isoformat() if moment else None
    counts = category_counts(request)
    for status in CATEGORY_STATUSES:
        record[f"categories_{status}"] = counts.pop(status, 0)
    record["categories_missing"] = counts.pop("missing", 0)
    record["categories_other"] = sum(counts.values())
    return record


def _cell(value: Any) -> Any:
    # Counts and flags as they are; every text cell (a reference, a note, a name: typed by
    # people) neutralised against formulas, as the audit trail's export does.
    return value if isinstance(value, bool | int) or value is None else neutralised(str(value))


def log_lines(requests: Iterable[Request], now: datetime, *, excel: bool = False) -> Iterator[str]:
    """The request log as CSV: a header, a row per request; no identifier, no client id.
    `excel`: a byte order mark and `;`, as the audit trail's export for Excel."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", delimiter=";" if excel else ",")
    writer.writerow(LOG_COLUMNS)
    for request in requests:
        record = _log_record(request, now)
        writer.writerow([_cell(record[name]) for name in LOG_COLUMNS])
    yield ("\ufeff" if excel else "") + buffer.getvalue()
