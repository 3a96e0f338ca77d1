"""The check between finding and deleting: refuse when a purge looks wrong.

Inspired by rclone's max-delete and Delta's VACUUM floor: a misconfigured period or a clock gone
wrong must not empty a customer's table. A refusal deletes nothing and is audited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from lifecycle.periods import period_floor_ok
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


def check(
    policy: Policy,
    plan: Plan,
    cutoff: datetime,
    *,
    wall_clock: datetime,
    dry_run: bool = False,
    max_delete_fraction: float | None = None,
) -> Decision:
    """Decide whether the planned purge may go ahead.

    `max_delete_fraction` overrides the policy's guard for one run (a DAG param), for the first
    run on a table that has never been purged, where most rows are legitimately expired.
    """
    guards = policy.guards
    fraction_limit = (
        guards.max_delete_fraction if max_delete_fraction is None else max_delete_fraction
    )
    reasons: list[str] = []
    warnings: list[str] = []

    if cutoff > wall_clock:
        reasons.append(
            f"the cutoff {cutoff.isoformat()} is later than the wall clock "
            f"{wall_clock.isoformat()}: records still inside their window would be deleted"
        )
    if policy.retention.from_event is None and not period_floor_ok(
        policy.retention.period, guards.min_period
    ):
        reasons.append(
            f"the retention period {policy.retention.period} is shorter than the floor "
            f"guards.min_period {guards.min_period}"
        )
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
