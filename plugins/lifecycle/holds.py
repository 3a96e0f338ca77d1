"""Holds: records that must not be deleted although their period has passed.

A legal hold, a restriction of processing while a correction or erasure request is pending
(the statement's "Beperken van verwerking"), or a dispute. A hold lives in the control database
(the audit connection), names a scope (one policy, or `*` for all), a subject (`customer`,
`phone`, ... as mapped by each policy's `store.subjects`, directly or through link tables,
or `prefix` for object keys) and a value, stored in canonical form (`lifecycle.subjects`).
Every run excludes held records from the purge and from the verification's failure
condition, and counts them per hold id. The value is personal data: it never leaves this table
and the task's memory.

A hold is active while it is not released and its expiry, if any, is after the run's logical
date: a released or expired hold makes its records eligible at the next run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa

from lifecycle.control import holds, read_time, require, stored_time
from lifecycle.stores import Hold
from lifecycle.subjects import SubjectValueError, canonical

REASONS = ("legal_hold", "restriction", "dispute")
ALL_POLICIES = "*"


class HoldError(ValueError):
    pass


def check_lengths(**fields: str | None) -> None:
    """Refuse a text longer than its column, naming the field. PostgreSQL and MariaDB refuse it
    with a driver error whose traceback carries the statement's parameters (the held value is
    personal data); SQLite stores it. Checked here, so all three behave alike, and never quoted."""
    for name, text in fields.items():
        limit = cast(sa.String, holds.c[name].type).length  # every text column is String(n)
        if text is not None and limit is not None and len(text) > limit:
            raise HoldError(f"{name}: longer than {limit} characters")


def place_hold(
    engine: sa.Engine,
    *,
    scope: str,
    subject: str,
    value: str,
    reason: str,
    placed_by: str,
    expires_at: datetime | None = None,
    note: str | None = None,
    now: datetime | None = None,
    request_id: int | None = None,
) -> int:
    """Place a hold; returns its id. `request_id`: the data-subject request it restricts for
    (deciding the request releases it)."""
    if reason not in REASONS:
        raise HoldError(f"reason: {reason!r} is not one of {', '.join(REASONS)}")
    check_lengths(scope=scope, subject=subject, note=note, placed_by=placed_by)
    if not value.strip():
        raise HoldError("value: a hold needs the subject value it protects")
    try:
        # Stored canonical (E.164 phone numbers, lower-case e-mail addresses), matched against
        # the canonical form of the stored values, whatever their formatting.
        value = canonical(subject, value)
    except SubjectValueError as exc:
        raise HoldError(f"{exc} for subject {subject!r}") from None
    if not placed_by.strip():
        raise HoldError("placed_by: say who places the hold")
    now = now or datetime.now(UTC)
    if expires_at is not None and expires_at <= now:
        raise HoldError(f"expires_at: {expires_at.isoformat()} is not in the future")
    require(engine, holds)
    with engine.begin() as conn:
        inserted = conn.execute(
            holds.insert().values(
                scope=scope,
                subject=subject,
                value=value.strip(),
                reason=reason,
                note=note,
                placed_at=stored_time(engine, now),
                placed_by=placed_by,
                expires_at=stored_time(engine, expires_at),
                **({} if request_id is None else {"request_id": request_id}),
            )
        ).inserted_primary_key
        if inserted is None:  # never for a one-row INSERT (SQLAlchemy raises first)
            raise HoldError("the hold was not stored: the database returned no id")
        return cast(int, inserted[0])


def release_hold(
    engine: sa.Engine, hold_id: int, *, released_by: str, now: datetime | None = None
) -> None:
    # Who released a hold is part of the evidence: a blank name would release it anonymously.
    if not released_by.strip():
        raise HoldError("released_by: say who releases the hold")
    check_lengths(released_by=released_by)
    if not 1 <= hold_id <= 2**31 - 1:  # the id column: beyond, an OverflowError or a DataError
        raise HoldError(f"hold {hold_id}: no such hold, or already released")
    require(engine, holds)
    with engine.begin() as conn:
        released = conn.execute(
            holds.update()
            .where(holds.c.id == hold_id, holds.c.released_at.is_(None))
            .values(
                released_at=stored_time(engine, now or datetime.now(UTC)), released_by=released_by
            )
        ).rowcount
    if not released:
        raise HoldError(f"hold {hold_id}: no such hold, or already released")


def list_holds(engine: sa.Engine, *, include_released: bool = False) -> list[dict[str, Any]]:
    require(engine, holds)
    query = sa.select(holds).order_by(holds.c.id)
    if not include_released:
        query = query.where(holds.c.released_at.is_(None))
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        for name in ("placed_at", "expires_at", "released_at"):
            row[name] = read_time(row[name])
    return rows


def active_holds(engine: sa.Engine, policy: str, as_of: datetime) -> tuple[Hold, ...]:
    """The holds protecting `policy`'s records in the run of logical date `as_of`."""
    require(engine, holds)
    columns = (holds.c.id, holds.c.scope, holds.c.subject, holds.c.value, holds.c.reason)
    query = sa.select(*columns).where(
        holds.c.scope.in_([policy, ALL_POLICIES]),
        holds.c.released_at.is_(None),
        sa.or_(holds.c.expires_at.is_(None), holds.c.expires_at > stored_time(engine, as_of)),
    )
    with engine.connect() as conn:
        return tuple(Hold(*row) for row in conn.execute(query.order_by(holds.c.id)))
