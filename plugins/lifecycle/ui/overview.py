"""The compliance overview: every policy beside its last audited run, as plain data.

No Airflow and no web framework here: the page, the charts and the tests all read these rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from lifecycle.periods import parse_period
from lifecycle.policy import Policy
from lifecycle.stores import HORIZON_DAYS

if TYPE_CHECKING:
    from lifecycle.loader import LoadResult

FAILED_STATUSES = {"failed", "refused", "verification_failed"}


@dataclass(frozen=True)
class Remaining:
    """The oldest record left after a run, against the retention limit at that run."""

    age_days: float | None  # None: nothing dated remains (or no run)
    limit_days: float | None
    within: bool | None  # None: unknown (no run, or the run could not tell)
    held: int = 0  # past the limit but under a hold: kept lawfully, shown apart


@dataclass(frozen=True)
class OverviewRow:
    policy: Policy
    last_run: dict[str, Any] | None
    remaining: Remaining
    attention: list[str] = field(default_factory=list)  # why the row stands out; empty: fine

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def due(self) -> list[tuple[int, int]] | None:
        return due_figures(self.last_run)

    @property
    def due_note(self) -> str:
        return not_counted()


def due_figures(run: dict[str, Any] | None) -> list[tuple[int, int]] | None:
    """The forecast a run counted: (horizon in days, records due within it), shortest first;
    None where it counted none (an object store, a run before the forecast, no run)."""
    due = (run or {}).get("due")
    if not due:
        return None
    return sorted((int(days), int(count)) for days, count in due.items())


def not_counted(*, of: str = "its last run") -> str:
    """Why a policy shows no forecast: the run(s) `of` counted none (written before the
    forecast existed, or before its store kind counted one)."""
    return f"not counted by {of}"


def _days(delta: timedelta) -> float:
    return round(delta.total_seconds() / 86400, 1)


def remaining_after(run: dict[str, Any] | None) -> Remaining:
    """What a run left behind. Within the limit only when its verification proved that no unheld
    record past the cutoff remains; then the oldest remaining record is the oldest one the
    window kept. Otherwise (dry run, refused, failed) the expired records it found still stand."""
    if run is None or run.get("cutoff") is None or run.get("logical_date") is None:
        return Remaining(None, None, None)
    logical_date, cutoff = run["logical_date"], run["cutoff"]
    limit = _days(logical_date - cutoff)
    if run.get("tenants"):  # client periods: a record may lawfully be as old as the longest one
        longest = max(
            logical_date - (logical_date - parse_period(tenant["period"], allow_zero=True))
            for tenant in run["tenants"].values()
        )
        limit = max(limit, _days(longest))
    held = run.get("held") or 0
    if run["status"] == "purged" and run.get("verified"):
        oldest = run.get("oldest_retained")
        return Remaining(_days(logical_date - oldest) if oldest else None, limit, True, held)
    if run["status"] == "failed" and run.get("deleted") is None:
        # The delete failed midway: committed batches went, how many is not known.
        return Remaining(None, limit, None, held)
    expired_left = (run.get("expired") or 0) - (run.get("deleted") or 0)
    if expired_left > 0 or run.get("verified") is False:
        oldest = run.get("oldest_expired")
        return Remaining(_days(logical_date - oldest) if oldest else None, limit, False, held)
    oldest = run.get("oldest_retained")
    # Nothing was past the window when the run looked (a dry run or a refusal with 0 expired).
    within = True if run.get("expired") == 0 else None
    return Remaining(_days(logical_date - oldest) if oldest else None, limit, within, held)


def attention(
    run: dict[str, Any] | None,
    remaining: Remaining,
    now: datetime,
    patience: timedelta = timedelta(days=2),
) -> list[str]:
    if run is None:
        return ["no run yet"]
    reasons = []
    status = run["status"]
    if status in FAILED_STATUSES:
        reasons.append(f"last run {status.replace('_', ' ')}")
    elif status == "dry_run":
        reasons.append("last run was a dry run: nothing deleted")
    if remaining.within is False and status not in FAILED_STATUSES:
        reasons.append("records past the limit remain")
    if run.get("logical_date") and now - run["logical_date"] > patience:
        reasons.append(f"no run for {(now - run['logical_date']).days} days")
    # A hold that protects nothing is a privacy officer's mistake to fix before the window of
    # what it was meant to keep runs out (ids and subjects only).
    reasons += [r for r in run.get("reasons") or () if is_hold_warning(r)]
    return reasons


def is_hold_warning(reason: str) -> bool:
    return reason.startswith("hold ") and "protects nothing here" in reason


def stale_after(policy: Policy, now: datetime) -> timedelta:
    """How long a policy may go without a run: its schedule's interval plus a day of slack
    (two days for the daily default, eight for a weekly one)."""
    from croniter import croniter

    schedule = croniter(policy.schedule, now.astimezone(ZoneInfo(policy.timezone)))
    latest = schedule.get_prev(datetime)
    return latest - schedule.get_prev(datetime) + timedelta(days=1)


def overview(
    policies: list[Policy], latest: dict[str, dict[str, Any]], now: datetime
) -> list[OverviewRow]:
    """One row per policy, the ones that need a look first, then by name."""
    rows = []
    for policy in policies:
        run = latest.get(policy.name)
        remaining = remaining_after(run)
        reasons = attention(run, remaining, now, stale_after(policy, now))
        rows.append(OverviewRow(policy, run, remaining, reasons))
    return sorted(rows, key=lambda row: (not row.attention, row.name))


def history(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run, oldest first: the figures the charts plot (counts and ages, nothing else)."""
    points = []
    for run in runs:
        remaining = remaining_after(run)
        points.append(
            {
                "logical_date": run["logical_date"],
                "status": run["status"],
                "deleted": run.get("deleted") or 0,
                "held": run.get("held") or 0,
                "age_days": remaining.age_days,
                "limit_days": remaining.limit_days,
                "within": remaining.within,
                # The forecast at the run (None: not counted then).
                **{f"due_{days}": (run.get("due") or {}).get(str(days)) for days in HORIZON_DAYS},
            }
        )
    return points


@dataclass(frozen=True)
class RetiredRow:
    """A policy the trail knows and no valid file describes any more: its last run stands for
    it. `invalid_file`: a file of that name exists but does not load (not retired: broken)."""

    name: str
    last_run: dict[str, Any]
    remaining: Remaining
    invalid_file: str | None = None


def retired(latest: dict[str, dict[str, Any]], loaded: LoadResult) -> list[RetiredRow]:
    current = {p.policy.name for p in loaded.policies}
    invalid = {error.path.stem: error.path.name for error in loaded.errors}
    return [
        RetiredRow(name, run, remaining_after(run), invalid.get(name))
        for name, run in sorted(latest.items())
        if name not in current
    ]


def chart_gaps(rows: list[OverviewRow]) -> list[tuple[str, str]]:
    """The policies the overview chart cannot place (an age as a share of a limit), and why."""
    gaps = []
    for row in rows:
        remaining = row.remaining
        if remaining.age_days is not None and remaining.limit_days:
            continue
        if row.last_run is None:
            why = "no run yet"
        elif row.policy.retention.from_event and not remaining.limit_days:
            why = "until end of service: no age"
        elif remaining.limit_days is None:
            why = "its last run recorded no cutoff"
        else:
            why = "its last run measured no age"
        gaps.append((row.name, why))
    return sorted(gaps, key=lambda gap: (gap[1], gap[0]))
