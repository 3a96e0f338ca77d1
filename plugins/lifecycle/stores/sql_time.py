"""Where a record's period starts, for the SQL store: one small class per source. The store asks
its source for the expiry predicate and for the plan's terms; it never tests which one it has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lifecycle.stores.sql_dialects import Dialect


@dataclass(frozen=True)
class PlanTerms:
    """What `plan` counts by: each record's moment, and which records are active or anomalies."""

    moment: sa.ColumnElement[Any]
    active: sa.ColumnElement[bool]
    anomaly: sa.ColumnElement[bool]


@dataclass(frozen=True)
class OwnTimestamp:
    """The record's own column (`store.timestamp`, or an event column of its own row). A NULL
    means the period has not started (`active`) or is an anomaly, as the policy says."""

    column: sa.Column[Any]
    null_means_active: bool
    dialect: Dialect

    def expired(self, threshold: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        return self.dialect.before(self.column, threshold)

    def plan_terms(self) -> PlanTerms:
        not_started = self.column.is_(None)
        active = not_started if self.null_means_active else sa.false()
        anomaly: sa.ColumnElement[bool] = sa.false() if self.null_means_active else not_started
        malformed = self.dialect.malformed(self.column)  # no time: never expires, reported
        if malformed is not None:
            anomaly = sa.or_(anomaly, malformed)
        return PlanTerms(self.column, active, anomaly)


@dataclass(frozen=True)
class EventTimestamp:
    """The latest event of the record's subject in another table (`retention.from_event`): a
    contract still running (a NULL end) or none yet keeps the record."""

    column: sa.Column[Any]  # the event table's time column
    event_key: sa.Column[Any]
    subject: sa.Column[Any]  # the record's column that links to `event_key`
    dialect: Dialect

    def expired(self, threshold: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        linked = self.event_key == self.subject
        before = self.dialect.before(self.column, threshold)
        ended = sa.exists().where(linked, before)
        # A contract still running (NULL end) or ended within the window keeps the subject.
        keeps = sa.exists().where(linked, sa.or_(self.column.is_(None), sa.not_(before)))
        return sa.and_(ended, sa.not_(keeps))

    def plan_terms(self) -> PlanTerms:
        linked = self.event_key == self.subject
        moment = sa.select(sa.func.max(self.column)).where(linked).scalar_subquery()
        anomaly: sa.ColumnElement[bool] = self.subject.is_(None)  # linked to no event ever
        malformed = self.dialect.malformed(self.column)  # an event time that is none keeps it
        if malformed is not None:
            anomaly = sa.or_(anomaly, sa.exists().where(linked, malformed))
        active = sa.and_(
            self.subject.is_not(None),
            sa.or_(
                sa.not_(sa.exists().where(linked)),
                sa.exists().where(linked, self.column.is_(None)),
            ),
        )
        return PlanTerms(moment, active, anomaly)


TimeSource = OwnTimestamp | EventTimestamp
