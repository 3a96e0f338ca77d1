"""One subject's records in a SQL table, for data-subject requests (`lifecycle.requests`).

The table store, narrowed: "past the window" becomes "the subject's (any identifier of the
request the policy maps, through its links, in canonical form) and not active", so the purge
(key-range batches, the ceiling, the deletion ledger, holds re-read before every batch) and the
Great Expectations verification are the retention run's own. No physical walk: a subject's rows
are few, found through its keys.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lifecycle import subjects as canon
from lifecycle.stores import Hold, RetentionWindow, SubjectStore, SubjectSummary, Verification
from lifecycle.stores.sql import (
    SqlTableStore,
    _iso,
    _refuse_protected_target,
    create_engine,
    url_from_connection,
)
from lifecycle.stores.sql_subjects import hold_value

if TYPE_CHECKING:
    from lifecycle.policy import Policy

INVENTORY_CHUNK = 50_000  # remaining records per GX validation: bounded memory


def json_safe(value: Any) -> Any:
    """A column value as JSON can hold it (and CSV prints it)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


class SqlSubjectStore(SqlTableStore, SubjectStore):
    walks_whole_table = False

    def __init__(self, policy: Policy, engine: Engine, identifiers: Mapping[str, str]):
        super().__init__(policy, engine)
        # Canonical, as the register stores them (and as a hold's value is matched).
        self.identifiers = {
            s: canon.canonical_or_none(s, v) or v.strip()
            for s, v in identifiers.items()
            if s in self.subjects.subjects
        }

    @property
    def reaches(self) -> bool:
        return bool(self.identifiers)

    def _subject(self) -> sa.ColumnElement[bool]:
        if not self.identifiers:
            return sa.false()
        return sa.or_(*(self.subjects.matches(s, [v]) for s, v in self.identifiers.items()))

    def _active(self) -> sa.ColumnElement[bool]:
        return self.time.plan_terms().active

    def _past_window(self, window: RetentionWindow) -> sa.ColumnElement[bool]:
        return sa.and_(self._subject(), sa.not_(self._active()))

    def verify(self, window: RetentionWindow) -> Verification:
        """Great Expectations on the subject's remaining records, one number each: -1 for a
        record neither held nor active (one the erasure should have deleted), none for a held
        one. The query that finds them binds the identifiers as parameters: unlike a retention
        run's cutoff, they are personal data, and never reach the SQL GX is given (none is)."""
        from lifecycle.verification import verify_inventory

        marks = sa.select(sa.case((self._held(window.holds), sa.null()), else_=sa.literal(-1.0)))
        query = marks.select_from(self.table).where(self._past_window(window))

        def chunks() -> Iterator[list[float | None]]:
            with self.guarded("request verify"), self.engine.connect() as conn:
                chunk: list[float | None] = []
                for (mark,) in conn.execution_options(yield_per=INVENTORY_CHUNK).execute(query):
                    chunk.append(None if mark is None else float(mark))
                    if len(chunk) == INVENTORY_CHUNK:
                        yield chunk
                        chunk = []
                if chunk:
                    yield chunk

        result = verify_inventory(
            chunks(),
            label=self.label,
            held=len(window.holds),
            unit="records",
            also_excepted=" and running contracts",
        )
        return replace(result, summary={**result.summary, "residue": self.residue_after(window)})

    def summary(self, holds: tuple[Hold, ...]) -> SubjectSummary:
        subject, active = self._subject(), self._active()
        held = self._held(holds)
        moment = self.time.plan_terms().moment
        mapped = [hold for hold in holds if hold.subject in self.subjects.subjects]
        per_hold = [
            self._counted(
                sa.and_(
                    subject,
                    sa.not_(active),
                    self.subjects.matches(hold.subject, [hold_value(hold)]),
                )
            )
            for hold in mapped
        ]
        query = sa.select(
            self._counted(subject),
            self._counted(sa.and_(subject, active)),
            self._counted(sa.and_(subject, sa.not_(active), held)),
            sa.func.min(sa.case((subject, moment))),
            sa.func.max(sa.case((subject, moment))),
            *per_hold,
        ).select_from(self.table)
        clients: list[str] = []
        with self.guarded("request summary"), self.engine.connect() as conn:
            records, n_active, n_held, oldest, newest, *hold_counts = conn.execute(query).one()
            client_column = self._client_column()
            if client_column is not None and records:
                found = conn.execute(
                    sa.select(client_column).where(subject, client_column.is_not(None)).distinct()
                ).scalars()
                clients = sorted(str(value) for value in found)
        return SubjectSummary(
            records=records,
            erasable=records - n_active - n_held,
            held=n_held,
            active=n_active,
            held_by_hold={str(h.id): n for h, n in zip(mapped, hold_counts, strict=True) if n},
            oldest=_iso(oldest),
            newest=_iso(newest),
            clients=clients,
        )

    def _client_column(self) -> sa.Column[Any] | None:
        """The column naming the client organisation: the tenant column where clients set
        their period, else the `customer` subject's own column where it has one."""
        if self.tenant is not None:
            return self.tenant
        for link in self.subjects.links.get("customer", []):
            if not link.hops:
                return link.column  # type: ignore[return-value]
        return None

    def fields(self) -> list[str]:
        return [column.name for column in self.table.columns]

    def records(self) -> Iterator[dict[str, Any]]:
        query = sa.select(self.table).where(self._subject()).order_by(self.key)
        with self.guarded("request export"), self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=1000).execute(query):
                yield {name: json_safe(value) for name, value in row._mapping.items()}


def open_subject_store(
    policy: Policy, connection: Any, identifiers: Mapping[str, str]
) -> SqlSubjectStore:
    url = url_from_connection(connection)
    _refuse_protected_target(policy, url)
    return SqlSubjectStore(policy, create_engine(url), identifiers)
