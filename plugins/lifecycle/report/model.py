"""The report's figures: the audit rows of a period folded per policy into typed, plain data.

Only counts, bounds, dates, policy names, hold ids and the engine's own reason texts reach a
report (the trail holds nothing else worth quoting; run ids are left out, a manual one is
whatever its trigger typed). The renderers (HTML, PDF) read these dataclasses and nothing else.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from lifecycle.audit import STATUSES, iter_runs
from lifecycle.periods import parse_period
from lifecycle.policy import Policy
from lifecycle.ui.overview import remaining_after

# A retired policy's file is gone with its timezone; the catalogue's zone reads its days.
DEFAULT_ZONE = "Europe/Amsterdam"
# A quarter reads day by day; longer periods (a year: 365 bars) week by week.
DAILY_UP_TO_DAYS = 92
FAILED = ("failed", "verification_failed")
NO_HASHES = "the audit trail is not hash-chained yet"  # before `audit-init` of the chain


@dataclass(frozen=True)
class Period:
    """Whole days, `first` and `last` included, each read in the zone of the policy it filters:
    the run of 1 July in Amsterdam (logical date 30 June 22:00 UTC) belongs to July."""

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"the period ends ({self.last}) before it starts ({self.first})")

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def bounds(self, zone: str) -> tuple[datetime, datetime]:
        """[start, end) in UTC: midnight of `first` to midnight after `last`, in `zone`."""
        tz = ZoneInfo(zone)
        start = datetime.combine(self.first, datetime.min.time(), tz)
        end = datetime.combine(self.last + timedelta(days=1), datetime.min.time(), tz)
        return start.astimezone(UTC), end.astimezone(UTC)

    def __str__(self) -> str:
        return f"{self.first.isoformat()} to {self.last.isoformat()}"


@dataclass(frozen=True)
class StatementRow:
    """The privacy statement's row, quoted as the policy file quotes it."""

    service: str
    data: str
    retention: str


@dataclass(frozen=True)
class HoldCount:
    """Records one hold kept from deletion: at the period's last run that saw it, and at most.
    Per run, not summed: the same held records are counted again by every run."""

    hold_id: str
    last: int
    peak: int
    runs: int


@dataclass(frozen=True)
class ReasonCount:
    reason: str
    count: int


@dataclass(frozen=True)
class Age:
    """The oldest record a run left behind against the limit at that run (in days), as the
    overview judges it: `within` None when the run could not tell."""

    on: date
    age_days: float | None
    limit_days: float | None
    within: bool | None


@dataclass(frozen=True)
class ChartBar:
    """Records deleted in the days from `start` (one day, or a week for long periods)."""

    start: date
    days: int
    deleted: int


@dataclass(frozen=True)
class PolicyReport:
    name: str
    title: str
    statement: StatementRow | None  # None: retired, the file that quoted it is gone
    controller: str
    legal_basis: str
    period: str  # ISO 8601, as in the policy (or, retired, as the last run recorded it)
    timezone: str
    retired: bool
    until_event: bool  # the period runs from an event (end of service): records have no age
    runs: int  # distinct runs
    attempts: int  # audit rows: a cleared and rerun run has several
    statuses: dict[str, int]
    deleted: int
    deleted_unknown: int  # attempts that failed midway without a ledger: count not known
    held_last: int | None
    holds: tuple[HoldCount, ...]
    verified_passed: int
    verified_failed: int
    last_age: Age | None
    worst_age: Age | None  # the oldest remaining record of any run, against its limit
    past_limit: int  # attempts that left unheld records past the limit
    refusals: int
    refusal_reasons: tuple[ReasonCount, ...]
    failures: int
    failure_reasons: tuple[ReasonCount, ...]
    first_run: date | None
    last_run: date | None
    chart: tuple[ChartBar, ...]
    ages: tuple[Age, ...] = ()  # per attempt with a known age and limit, oldest first


@dataclass(frozen=True)
class Report:
    period: Period
    generated_at: datetime
    source: str  # where the trail was read: "connection lifecycle_audit"
    policies: tuple[PolicyReport, ...]
    retired: tuple[PolicyReport, ...]
    invalid_files: tuple[str, ...] = ()
    # What `lifecycle.chain.verify` said of the trail's hash chain when the report was made; its
    # head ("row N sha256 H") only when intact: no hash is ever made up here.
    integrity: str = NO_HASHES
    chain_head: str | None = None

    @property
    def all(self) -> tuple[PolicyReport, ...]:
        return self.policies + self.retired


@dataclass
class _Tally:
    """The running figures of one policy while its rows stream by (rows are not kept)."""

    zone: str
    run_ids: set[tuple[str, str]] = field(default_factory=set)
    attempts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    deleted: int = 0
    deleted_unknown: int = 0
    by_day: Counter[date] = field(default_factory=Counter)
    holds: dict[str, list[int]] = field(default_factory=dict)  # id -> [last, peak, runs]
    held_last: int | None = None
    passed: int = 0
    failed_checks: int = 0
    ages: list[Age] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    last_row: dict[str, Any] | None = None
    first_day: date | None = None
    last_day: date | None = None

    def add(self, row: dict[str, Any], day: date) -> None:
        self.run_ids.add((row["dag_id"], row["run_id"]))
        self.attempts += 1
        self.statuses[row["status"]] += 1
        if row.get("deleted") is None and row["status"] == "failed":
            self.deleted_unknown += 1
        deleted = row.get("deleted") or 0
        self.deleted += deleted
        self.by_day[day] += deleted
        self.held_last = row.get("held")
        for hold_id, count in (row.get("holds") or {}).items():
            last_peak_runs = self.holds.setdefault(str(hold_id), [0, 0, 0])
            last_peak_runs[0] = int(count)
            last_peak_runs[1] = max(last_peak_runs[1], int(count))
            last_peak_runs[2] += 1
        self.passed += row.get("verified") is True
        self.failed_checks += row.get("verified") is False
        remaining = remaining_after(row)
        self.ages.append(Age(day, remaining.age_days, remaining.limit_days, remaining.within))
        reasons = row.get("reasons") or ["(no reason recorded)"]
        if row["status"] == "refused":
            self.refusals.update(reasons)
        elif row["status"] in FAILED:
            self.failures.update(reasons)
        self.first_day = self.first_day or day
        self.last_day, self.last_row = day, row


def _hold_order(hold_id: str) -> tuple[int, str]:
    return (int(hold_id), "") if hold_id.isdigit() else (1 << 62, hold_id)


def _reasons(counts: Counter[str]) -> tuple[ReasonCount, ...]:
    """Most frequent first, then alphabetically: the same report twice reads the same."""
    return tuple(ReasonCount(r, n) for r, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))


def chart_bars(by_day: Counter[date], period: Period) -> tuple[ChartBar, ...]:
    """Deletions per day over the whole period, days without a run as 0 (the time axis stays
    even); by week from period.first when the period is longer than a quarter."""
    step = 1 if period.days <= DAILY_UP_TO_DAYS else 7
    bars = []
    for offset in range(0, period.days, step):
        start = period.first + timedelta(days=offset)
        days = min(step, period.days - offset)
        total = sum(by_day.get(start + timedelta(days=d), 0) for d in range(days))
        bars.append(ChartBar(start, days, total))
    return tuple(bars)


def _ages(tally: _Tally, until_event: bool) -> tuple[Age | None, Age | None, int]:
    """The last run's age, the oldest of the period and how many runs left records past the
    limit. Until end of service a record has no age: records go at the event."""
    if until_event or not tally.ages:
        return None, None, 0
    dated = [age for age in tally.ages if age.age_days is not None]
    worst = max(dated, key=lambda age: age.age_days or 0.0) if dated else None
    return tally.ages[-1], worst, sum(age.within is False for age in tally.ages)


_UNITS = ("years", "months", "days", "hours", "minutes", "seconds", "microseconds")


def _zero_period(period: str) -> bool:
    """P0D (from an event): "until end of service", where a record's age means nothing."""
    try:
        return not any(vars(parse_period(period, allow_zero=True)).get(u) for u in _UNITS)
    except ValueError:
        return False


def _figures(tally: _Tally, period: Period, until_event: bool) -> dict[str, Any]:
    """The fields of a PolicyReport that come from the trail."""
    last_age, worst_age, past_limit = _ages(tally, until_event)
    holds = sorted(tally.holds.items(), key=lambda item: _hold_order(item[0]))
    return {
        "runs": len(tally.run_ids),
        "attempts": tally.attempts,
        "statuses": {status: tally.statuses[status] for status in STATUSES},
        "deleted": tally.deleted,
        "deleted_unknown": tally.deleted_unknown,
        "held_last": tally.held_last,
        "holds": tuple(HoldCount(i, last, peak, n) for i, (last, peak, n) in holds),
        "verified_passed": tally.passed,
        "verified_failed": tally.failed_checks,
        "last_age": last_age,
        "worst_age": worst_age,
        "past_limit": past_limit,
        "refusals": tally.statuses["refused"],
        "refusal_reasons": _reasons(tally.refusals),
        "failures": sum(tally.statuses[status] for status in FAILED),
        "failure_reasons": _reasons(tally.failures),
        "first_run": tally.first_day,
        "last_run": tally.last_day,
        "chart": chart_bars(tally.by_day, period),
        "ages": ()
        if until_event
        else tuple(a for a in tally.ages if a.age_days is not None and a.limit_days is not None),
    }


def _current(policy: Policy, tally: _Tally, period: Period) -> PolicyReport:
    until_event = policy.retention.from_event is not None and _zero_period(policy.retention.period)
    statement = policy.statement
    return PolicyReport(
        name=policy.name,
        title=policy.title,
        statement=StatementRow(statement.service, statement.data, statement.retention),
        controller=policy.controller,
        legal_basis=policy.legal_basis,
        period=policy.retention.period,
        timezone=policy.timezone,
        retired=False,
        until_event=until_event,
        **_figures(tally, period, until_event),
    )


def _retired(name: str, tally: _Tally, period: Period) -> PolicyReport:
    """A policy with runs in the period and no file any more: what its last row recorded."""
    row = tally.last_row or {}
    until_event = _zero_period(row.get("period") or "")
    return PolicyReport(
        name=name,
        title=row.get("title") or name,
        statement=None,
        controller=row.get("controller") or "",
        legal_basis=row.get("legal_basis") or "",
        period=row.get("period") or "",
        timezone=tally.zone,
        retired=True,
        until_event=until_event,
        **_figures(tally, period, until_event),
    )


def build_report(
    engine: sa.Engine,
    policies: list[Policy],
    period: Period,
    *,
    source: str = "the audit trail",
    invalid_files: tuple[str, ...] = (),
    now: datetime | None = None,
) -> Report:
    """Read the period's audit rows once, oldest first, and fold them per policy. The trail is
    read with one query over the widest bounds of the policies' zones; each row then counts
    when its logical date falls on one of the period's days in its own policy's zone."""
    by_name = {policy.name: policy for policy in policies}
    tallies = {policy.name: _Tally(policy.timezone) for policy in policies}
    zones = {policy.timezone for policy in policies} | {DEFAULT_ZONE}
    bounds = [period.bounds(zone) for zone in zones]
    start, end = min(b[0] for b in bounds), max(b[1] for b in bounds)
    for row in iter_runs(engine, start=start, end=end, retention_only=True):
        tally = tallies.setdefault(row["policy"], _Tally(DEFAULT_ZONE))
        day = row["logical_date"].astimezone(ZoneInfo(tally.zone)).date()
        if period.first <= day <= period.last:
            tally.add(row, day)
    current = tuple(_current(by_name[name], tallies[name], period) for name in sorted(by_name))
    retired = tuple(
        _retired(name, tally, period)
        for name, tally in sorted(tallies.items())
        if name not in by_name and tally.attempts
    )
    integrity, head = integrity_of(engine)
    return Report(
        period=period,
        generated_at=now or datetime.now(UTC),
        source=source,
        policies=current,
        retired=retired,
        invalid_files=invalid_files,
        integrity=integrity,
        chain_head=head,
    )


def integrity_of(engine: sa.Engine) -> tuple[str, str | None]:
    """(what the hash chain's walk found, its head when intact)."""
    from lifecycle.chain import verify

    try:
        chain = verify(engine)
    except sa.exc.DBAPIError as exc:
        return f"the hash chain could not be read ({type(exc.orig).__name__})", None
    if not chain.chained:
        return NO_HASHES, None
    if chain.broken is not None:
        return f"the audit trail's hash chain is BROKEN ({chain.broken})", None
    head = f"row {chain.last_row_id} sha256 {chain.last_hash}" if chain.last_row_id else None
    return f"the audit trail's hash chain verified intact ({chain.checked} rows)", head
