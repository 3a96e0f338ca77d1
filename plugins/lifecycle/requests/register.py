"""The register of data-subject requests, in the control database.

A request: its kind, when it was received and is due (one calendar month later, the GDPR's
deadline), who registered it, its status, what its runs found per category (`outcome`) and how
it was decided. The subject's identifiers are stored apart (`retention_request_subjects`), in
canonical form, and read back only by the request's own tasks and the privacy officer's CLI.

Status: `open` (registered, not answered yet), `answered` (a run found and did what it could;
for a restriction: the holds are in force), `needs_review` (a guard refused part of it, or a
category must be forwarded to the client organisation), `failed` (a run failed: run it again),
`closed` (decided: granted or rejected; a restriction's holds are released).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from dateutil.relativedelta import relativedelta

from lifecycle.control import (
    holds,
    read_time,
    request_results,
    request_subjects,
    requests,
    require,
    stored_time,
)
from lifecycle.requests import KINDS
from lifecycle.subjects import SubjectValueError, canonical

log = logging.getLogger(__name__)

STATUSES = ("open", "answered", "needs_review", "failed", "closed")
DECISIONS = ("granted", "rejected")
DUE_AFTER = relativedelta(months=1)


class RequestError(ValueError):
    """A request that cannot be registered, run or decided as asked; the message names the
    field and never quotes an identifier."""


@dataclass(frozen=True)
class Request:
    """A registered request, without its identifiers (see `identifiers_of`)."""

    id: int
    kind: str
    received_at: datetime
    due_at: datetime
    status: str
    registered_by: str
    reference: str | None = None
    client_instructed: bool = False
    copy_objects: bool = False
    runs: int = 0
    last_run_id: str | None = None
    outcome: dict[str, Any] = field(default_factory=dict)
    completed_at: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision: str | None = None
    note: str | None = None
    subjects: tuple[str, ...] = ()  # the identifiers' names (customer, phone...), not values

    def overdue(self, now: datetime) -> bool:
        return self.status != "closed" and self.due_at < now


def _text(name: str, value: str | None, *, required: bool = False) -> str | None:
    if value is None or not value.strip():
        if required:
            raise RequestError(f"{name}: say who or what (it is part of the evidence)")
        return None
    limit = cast(sa.String, requests.c[name].type).length
    if limit is not None and len(value) > limit:
        raise RequestError(f"{name}: longer than {limit} characters")
    return value.strip()


def canonical_identifiers(
    identifiers: Mapping[str, str], mapped: Iterable[str] | None = None
) -> dict[str, str]:
    """The identifiers in canonical form (phone numbers E.164, e-mail addresses lower case).
    `mapped`: the subjects the loaded policies map; an identifier none of them maps would find
    nothing anywhere, and is refused."""
    if not identifiers:
        raise RequestError(
            "identifiers: give at least one (customer=..., phone=..., email=..., prefix=...)"
        )
    known = None if mapped is None else set(mapped)
    result = {}
    for subject, value in identifiers.items():
        if known is not None and subject not in known:
            raise RequestError(
                f"identifiers: no policy maps the subject {subject!r} (mapped: "
                f"{', '.join(sorted(known)) or 'none'}); nothing registered"
            )
        if len(subject) > 63:
            raise RequestError("identifiers: a subject name is longer than 63 characters")
        try:
            result[subject] = canonical(subject, value)
        except SubjectValueError as exc:
            raise RequestError(f"identifiers: {exc} for subject {subject!r}") from None
    return result


def register_request(
    engine: sa.Engine,
    *,
    kind: str,
    identifiers: Mapping[str, str],
    registered_by: str,
    received_at: datetime | None = None,
    reference: str | None = None,
    client_instructed: bool = False,
    copy_objects: bool = False,
    mapped: Iterable[str] | None = None,
    now: datetime | None = None,
) -> int:
    """Register a request; returns its id. Nothing is written when anything is wrong."""
    if kind not in KINDS:
        raise RequestError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    by = _text("registered_by", registered_by, required=True)
    reference = _text("reference", reference)
    values = canonical_identifiers(identifiers, mapped)
    now = now or datetime.now(UTC)
    received = received_at or now
    if received.tzinfo is None:
        raise RequestError("received_at: give a time zone (2026-11-30T09:00+01:00)")
    if received > now:
        raise RequestError(f"received_at: {received.isoformat()} is in the future")
    if client_instructed and kind != "erasure":
        raise RequestError("client_instructed: only an erasure request is instructed by a client")
    if copy_objects and kind not in ("access", "portability"):
        raise RequestError("copy_objects: only an access or portability request copies objects")
    require(engine, requests)
    with engine.begin() as conn:
        inserted = conn.execute(
            requests.insert().values(
                kind=kind,
                received_at=stored_time(engine, received),
                due_at=stored_time(engine, received + DUE_AFTER),
                status="open",
                registered_by=by,
                reference=reference,
                client_instructed=client_instructed,
                copy_objects=copy_objects,
                runs=0,
            )
        ).inserted_primary_key
        if inserted is None:  # never for a one-row INSERT
            raise RequestError("the request was not stored: the database returned no id")
        request_id = cast(int, inserted[0])
        conn.execute(
            request_subjects.insert(),
            [{"request_id": request_id, "subject": s, "value": v} for s, v in values.items()],
        )
    return request_id


def _valid_id(request_id: Any) -> int:
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        raise RequestError("request_id: give the request's number")
    try:
        number = int(request_id)
    except ValueError:
        raise RequestError("request_id: give the request's number") from None
    if not 1 <= number <= 2**31 - 1:
        raise RequestError(f"request {number}: no such request")
    return number


REQUEST_FIELDS = frozenset(field.name for field in dataclasses.fields(Request)) - {"subjects"}
TIMES = ("received_at", "due_at", "completed_at", "decided_at")


def request_of(row: sa.Row[Any], subjects: tuple[str, ...]) -> Request:
    """A register row as a `Request`, its times aware (UTC)."""
    values = {name: value for name, value in row._mapping.items() if name in REQUEST_FIELDS}
    for name in TIMES:
        values[name] = read_time(values.get(name))
    values["outcome"] = values.get("outcome") or {}
    values["client_instructed"] = bool(values.get("client_instructed"))
    values["copy_objects"] = bool(values.get("copy_objects"))
    values["runs"] = values.get("runs") or 0
    return Request(**values, subjects=subjects)


def get_request(engine: sa.Engine, request_id: Any) -> Request:
    number = _valid_id(request_id)
    require(engine, requests)
    with engine.connect() as conn:
        row = conn.execute(sa.select(requests).where(requests.c.id == number)).one_or_none()
    if row is None:
        raise RequestError(f"request {number}: no such request")
    return request_of(row, (subject_names(engine, number) or {}).get(number, ()))


def list_requests(
    engine: sa.Engine, *, include_closed: bool = False, limit: int | None = None
) -> list[Request]:
    """Requests, the soonest due first (closed ones, when asked for, after the open ones)."""
    require(engine, requests)
    query = sa.select(requests).order_by(
        (requests.c.status == "closed"), requests.c.due_at, requests.c.id
    )
    if not include_closed:
        query = query.where(requests.c.status != "closed")
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    names = (subject_names(engine) or {}) if rows else {}
    return [request_of(row, names.get(row.id, ())) for row in rows]


def subject_names(
    engine: sa.Engine, request_id: int | None = None
) -> dict[int, tuple[str, ...]] | None:
    """Each request's identifier names (customer, phone...), never a value, or one request's;
    None when this role may not read them (the audit UI's, granted before its column grant on
    the names) or the table is missing. On a connection of its own: a refused statement aborts
    PostgreSQL's transaction, and on MariaDB even asking whether the table exists is refused."""
    query = sa.select(request_subjects.c.request_id, request_subjects.c.subject)
    if request_id is not None:
        query = query.where(request_subjects.c.request_id == request_id)
    names: dict[int, list[str]] = {}
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(request_subjects.name):
                return None
            for number, subject in conn.execute(query):
                names.setdefault(number, []).append(subject)
    except sa.exc.DBAPIError as exc:
        log.info("identifier names of requests not readable (%s)", type(exc).__name__)
        return None
    return {number: tuple(sorted(found)) for number, found in names.items()}


def identifiers_of(engine: sa.Engine, request_id: int) -> dict[str, str]:
    """The subject's identifiers (personal data: keep them in memory, never log them)."""
    require(engine, request_subjects)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(request_subjects.c.subject, request_subjects.c.value).where(
                request_subjects.c.request_id == request_id
            )
        ).all()
    return {subject: value for subject, value in rows}


def runnable(engine: sa.Engine, request_id: Any, kind: str) -> Request:
    """The request a `dsr_<kind>` run was triggered for, refused when it cannot run."""
    request = get_request(engine, request_id)
    if request.kind != kind:
        raise RequestError(
            f"request {request.id} is a {request.kind} request: trigger dsr_{request.kind}, "
            f"not dsr_{kind}"
        )
    if request.status == "closed":
        raise RequestError(f"request {request.id} is closed ({request.decision}): nothing done")
    return request


def record_outcome(
    engine: sa.Engine,
    request_id: int,
    *,
    status: str,
    outcome: dict[str, Any],
    run_id: str,
    now: datetime | None = None,
) -> None:
    """What a run of the request found and did (counts per category; client ids to forward
    to): the register's, never the trail's."""
    if status not in STATUSES:
        raise RequestError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    with engine.begin() as conn:
        conn.execute(
            requests.update()
            .where(requests.c.id == request_id, requests.c.status != "closed")
            .values(
                status=status,
                outcome=outcome,
                last_run_id=run_id,
                runs=requests.c.runs + 1,
                completed_at=stored_time(engine, now or datetime.now(UTC)),
            )
        )


def decide_request(
    engine: sa.Engine,
    request_id: Any,
    *,
    decision: str,
    decided_by: str,
    note: str | None = None,
    now: datetime | None = None,
) -> list[int]:
    """Close a request, granted or rejected; a restriction's holds are released with it.
    Returns the ids of the holds released."""
    if decision not in DECISIONS:
        raise RequestError(f"decision: {decision!r} is not one of {', '.join(DECISIONS)}")
    by = _text("decided_by", decided_by, required=True)
    note = _text("note", note)
    request = get_request(engine, request_id)
    if request.status == "closed":
        raise RequestError(f"request {request.id} is already closed ({request.decision})")
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        released = list(
            conn.execute(
                sa.select(holds.c.id).where(
                    holds.c.request_id == request.id, holds.c.released_at.is_(None)
                )
            ).scalars()
        )
        if released:
            conn.execute(
                holds.update()
                .where(holds.c.id.in_(released))
                .values(released_at=stored_time(engine, now), released_by=by)
            )
        conn.execute(
            requests.update()
            .where(requests.c.id == request.id)
            .values(
                status="closed",
                decision=decision,
                decided_by=by,
                decided_at=stored_time(engine, now),
                note=note,
            )
        )
    return released


def category_results(
    conn: sa.Connection, request_id: int, run_id: str
) -> list[sa.Row[str, str, Any, Any]]:
    """Each category's result of one run of a request, by policy: `policy`, `status`,
    `result` (counts, exceptions, archive) and `clients` (to forward to: the privacy
    officer's, never shown in the audit pages)."""
    columns = (
        request_results.c.policy,
        request_results.c.status,
        request_results.c.result,
        request_results.c.clients,
    )
    query = (
        sa.select(*columns)
        .where(request_results.c.request_id == request_id, request_results.c.run_id == run_id)
        .order_by(request_results.c.policy)
    )
    return list(conn.execute(query))
