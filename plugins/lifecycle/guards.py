"""The check between finding and deleting: refuse when a purge looks wrong.

Inspired by rclone's max-delete and Delta's VACUUM floor: a misconfigured period or a clock gone
wrong must not empty a customer's table. A refusal deletes nothing and is audited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, cast

from lifecycle.fields import period_at_least
from lifecycle.periods import compute_cutoff
from lifecycle.policy import Policy
from lifecycle.stores import Plan


@dataclass(frozen=True)
class Decision:
    approved: bool
    dry_run: bool
    approved_records: int  # the purge may delete at most this many
    reasons: tuple[str, ...] = ()  # why it was refused: counts and settings only
    warnings: tuple[str, ...] = ()  # reported, not blocking

    @property
    def outcome(self) -> str:
        if not self.approved:
            return "refused"
        return "dry_run" if self.dry_run else "approved"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome}


def window_problems(
    policy: Policy,
    cutoff: datetime,
    wall_clock: datetime,
    tenant_periods: Mapping[str, str] | None = None,
    tenant_cutoffs: Mapping[str, datetime] | None = None,
) -> list[str]:
    """Why the run's window would delete a record whose window is still open, measured to the
    wall clock (a future logical date, a client period below the floor): refusal reasons.

    A cutoff may not be later than the wall clock minus the period it was computed with, for
    the policy's own period and each client's: whatever the run's logical date or type.
    """
    reasons: list[str] = []
    zero_ok = policy.retention.from_event is not None
    floor = policy.period_floor
    # None is the policy's own period and cutoff; str keys are tenants (the casts widen the key).
    periods = {
        None: policy.retention.period,
        **cast(Mapping[str | None, str], tenant_periods or {}),
    }
    cutoffs = {None: cutoff, **cast(Mapping[str | None, datetime], tenant_cutoffs or {})}
    for tenant, period in sorted(periods.items(), key=lambda item: str(item[0] or "")):
        who = "the policy's period" if tenant is None else f"client {tenant!r}: period"
        if not period_at_least(period, floor):
            reasons.append(f"{who} {period} is shorter than the floor guards.min_period {floor}")
            continue
        limit = compute_cutoff(wall_clock, period, policy.timezone, allow_zero=zero_ok)
        used = cutoffs.get(tenant)
        if used is not None and used > limit:
            reasons.append(
                f"{who} {period}: the cutoff {used.isoformat()} is later than the wall clock "
                f"minus the period ({limit.isoformat()}): records still inside their window "
                "would be deleted (a logical date in the future?)"
            )
    return reasons


def check(
    policy: Policy,
    plan: Plan,
    cutoff: datetime,
    *,
    wall_clock: datetime,
    dry_run: bool = False,
    max_delete_fraction: float | None = None,
    tenant_periods: Mapping[str, str] | None = None,
    tenant_cutoffs: Mapping[str, datetime] | None = None,
    refusals: Sequence[str] = (),
) -> Decision:
    """Decide whether the planned purge may go ahead.

    `max_delete_fraction` overrides the policy's guard for one run (a DAG param), for the first
    run on a table that has never been purged, where most rows are legitimately expired. No
    override lifts the window checks. `refusals` are reasons found before the check (a policy
    that conflicts with another on the same table).
    """
    guards = policy.guards
    fraction_limit = (
        guards.max_delete_fraction if max_delete_fraction is None else max_delete_fraction
    )
    reasons: list[str] = list(refusals)
    warnings: list[str] = []
    reasons += window_problems(policy, cutoff, wall_clock, tenant_periods, tenant_cutoffs)
    if plan.total and plan.expired / plan.total > fraction_limit:
        reasons.append(
            f"{plan.expired} of {plan.total} records ({plan.expired / plan.total:.1%}) would be "
            f"deleted, more than max_delete_fraction {fraction_limit:g}"
        )
    if guards.max_delete_rows is not None and plan.expired > guards.max_delete_rows:
        reasons.append(
            f"{plan.expired} records would be deleted, more than max_delete_rows "
            f"{guards.max_delete_rows}"
        )
    if plan.anomalies:
        warnings.append(
            f"{plan.anomalies} records have no timestamp and would escape retention forever: "
            "reported, not deleted; fix them at the source"
        )
    return Decision(
        approved=not reasons,
        dry_run=dry_run,
        approved_records=plan.expired if not reasons and not dry_run else 0,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
    )
