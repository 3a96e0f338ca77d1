"""The check: refusals and warnings, from counts only."""

from datetime import UTC, datetime

import pytest

from lifecycle.guards import check
from lifecycle.loader import parse_policy
from lifecycle.periods import compute_cutoff
from lifecycle.policy import Guards
from lifecycle.stores import Plan
from tests.policies import DROP, make_policy, policy_yaml

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
CUTOFF = datetime(2026, 5, 28, 22, tzinfo=UTC)


def policy(**overrides):
    return make_policy(**overrides)


def test_within_limits_is_approved_for_the_expired_count():
    decision = check(policy(), Plan(total=100, expired=50), CUTOFF, wall_clock=NOW)
    assert (decision.approved, decision.outcome, decision.approved_records) == (
        True,
        "approved",
        50,
    )


def test_fraction_over_the_guard_is_refused():
    decision = check(policy(), Plan(total=100, expired=51), CUTOFF, wall_clock=NOW)
    assert decision.outcome == "refused"
    assert decision.approved_records == 0
    assert "51 of 100 records (51.0%)" in decision.reasons[0]


def test_one_run_override_of_the_fraction():
    plan = Plan(total=100, expired=90)
    assert check(policy(), plan, CUTOFF, wall_clock=NOW, max_delete_fraction=0.95).approved
    assert not check(policy(), plan, CUTOFF, wall_clock=NOW, max_delete_fraction=0.8).approved


def test_row_limit():
    limited = policy(guards={"max_delete_fraction": 1, "max_delete_rows": 10})
    assert check(limited, Plan(total=100, expired=10), CUTOFF, wall_clock=NOW).approved
    refused = check(limited, Plan(total=100, expired=11), CUTOFF, wall_clock=NOW)
    assert "more than max_delete_rows 10" in refused.reasons[0]


def test_cutoff_in_the_future_is_refused():
    decision = check(policy(), Plan(total=10, expired=1), NOW.replace(year=2027), wall_clock=NOW)
    assert not decision.approved
    assert "later than the wall clock" in decision.reasons[0]


def test_period_below_the_floor_is_refused():
    # Validation refuses this too; the check refuses it again at run time, in case a policy
    # reached the run some other way.
    lowered = policy(retention={"period": "PT1H"}, guards={"min_period": "PT1H"})
    short = lowered.model_copy(update={"guards": Guards()})
    decision = check(short, Plan(total=10, expired=1), CUTOFF, wall_clock=NOW)
    assert "shorter than the floor guards.min_period P1D" in decision.reasons[0]


def test_dry_run_approves_nothing_and_null_timestamps_warn():
    decision = check(
        policy(), Plan(total=10, expired=2, anomalies=3), CUTOFF, wall_clock=NOW, dry_run=True
    )
    assert (decision.outcome, decision.approved_records) == ("dry_run", 0)
    assert "3 records have no timestamp" in decision.warnings[0]


def test_empty_store_is_approved():
    assert check(policy(), Plan(total=0, expired=0), CUTOFF, wall_clock=NOW).approved


def test_a_future_logical_date_is_refused_though_its_cutoff_is_in_the_past():
    """`make demo DATE=2027-01-15`: cutoff 2026-07-15, in the past, yet records 4.5 months old
    (six-month promise) would go. Measured to the wall clock, their window is still open."""
    future = compute_cutoff(datetime(2027, 1, 14, 23, tzinfo=UTC), "P6M", "Europe/Amsterdam")
    assert future < NOW
    decision = check(policy(), Plan(total=10, expired=1), future, wall_clock=NOW)
    assert decision.outcome == "refused"
    assert "later than the wall clock minus the period" in decision.reasons[0]
    # Today's run, and one a second before the limit, pass.
    today = compute_cutoff(NOW, "P6M", "Europe/Amsterdam")
    assert check(policy(), Plan(total=10, expired=1), today, wall_clock=NOW).approved


def test_no_override_lifts_the_window_check():
    future = datetime(2026, 7, 14, 22, tzinfo=UTC)
    decision = check(
        policy(), Plan(total=10, expired=1), future, wall_clock=NOW, max_delete_fraction=1
    )
    assert not decision.approved


def test_a_client_period_below_the_floor_is_refused_naming_the_client_and_value():
    floored = policy(guards={"min_period": "P30D"})
    decision = check(
        floored,
        Plan(total=10, expired=1),
        CUTOFF,
        wall_clock=NOW,
        tenant_periods={"acme": "PT1H", "globex": "P1Y"},
        tenant_cutoffs={
            "acme": NOW.replace(hour=10),
            "globex": NOW.replace(year=2025),
        },
    )
    assert decision.outcome == "refused"
    assert decision.reasons == (
        "client 'acme': period PT1H is shorter than the floor guards.min_period P30D",
    )


def test_a_client_cutoff_computed_from_a_future_date_is_refused():
    decision = check(
        policy(),
        Plan(total=10, expired=1),
        CUTOFF,
        wall_clock=NOW,
        tenant_periods={"acme": "P1M"},
        tenant_cutoffs={"acme": datetime(2026, 11, 1, tzinfo=UTC)},  # past, but after now - P1M
    )
    assert "client 'acme': period P1M: the cutoff" in decision.reasons[0]


def test_an_event_grace_obeys_a_floor_the_policy_sets():
    event = policy_yaml(
        retention={"period": "P0D", "from_event": {"timestamp": "ended_at"}}, store__timestamp=DROP
    )
    assert parse_policy(event).period_floor == "P0D"  # until end of service: at the event
    with pytest.raises(ValueError, match=r"shorter than guards\.min_period P1D"):
        parse_policy(event + "guards: {min_period: P1D}\n")


def test_a_conflict_found_before_the_check_refuses_the_run():
    decision = check(
        policy(), Plan(total=10, expired=1), CUTOFF, wall_clock=NOW, refusals=("same table",)
    )
    assert decision.reasons == ("same table",)
