"""The overview's judgement of each policy's last run (plain data, no server)."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from lifecycle.ui.overview import attention, remaining_after

DAY = datetime(2026, 11, 29, tzinfo=UTC)


def run(**fields):
    return {
        "logical_date": DAY,
        "cutoff": DAY - timedelta(days=90),
        "status": "purged",
        "verified": True,
        "expired": 10,
        "deleted": 10,
        "held": 2,
        "oldest_expired": DAY - timedelta(days=400),
        "oldest_retained": DAY - timedelta(days=89, hours=12),
        "tenants": {},
    } | fields


def test_a_verified_purge_is_within_and_ages_the_oldest_record_it_kept():
    remaining = remaining_after(run())
    assert (remaining.age_days, remaining.limit_days, remaining.within) == (89.5, 90.0, True)
    assert remaining.held == 2


def test_what_a_dry_run_or_a_failed_delete_left_is_past_the_limit():
    for fields in ({"status": "dry_run", "deleted": 0, "verified": None}, {"status": "failed"}):
        remaining = remaining_after(run(**({"deleted": 4} | fields)))
        assert (remaining.age_days, remaining.within) == (400.0, False), fields


def test_a_failed_verification_is_past_even_when_every_planned_record_went():
    remaining = remaining_after(run(status="verification_failed", verified=False))
    assert remaining.within is False


def test_nothing_expired_is_within_even_without_a_purge():
    remaining = remaining_after(run(status="refused", expired=0, deleted=0, verified=None))
    assert (remaining.age_days, remaining.within) == (89.5, True)


def test_client_periods_measure_against_the_longest_one():
    tenants = {"acme": {"period": "P30D"}, "globex": {"period": "P2Y"}}
    remaining = remaining_after(run(tenants=tenants))
    assert remaining.limit_days == 730.0


def test_no_run_is_unknown_and_stands_out():
    remaining = remaining_after(None)
    assert (remaining.age_days, remaining.within) == (None, None)
    assert attention(None, remaining, DAY) == ["no run yet"]


def test_reasons_a_row_stands_out():
    fine = run()
    assert attention(fine, remaining_after(fine), DAY + timedelta(hours=30)) == []
    assert attention(fine, remaining_after(fine), DAY + timedelta(days=3)) == ["no run for 3 days"]
    dry = run(status="dry_run", deleted=0, verified=None)
    assert attention(dry, remaining_after(dry), DAY) == [
        "last run was a dry run: nothing deleted",
        "records past the limit remain",
    ]
    refused = run(status="refused", deleted=0, verified=None)
    assert attention(refused, remaining_after(refused), DAY) == ["last run refused"]


def test_a_failed_delete_leaves_what_remains_unknown():
    remaining = remaining_after(run(status="failed", deleted=None, verified=None))
    assert (remaining.age_days, remaining.within) == (None, None)


def test_a_policy_may_go_its_schedule_interval_and_a_day_without_a_run():
    from lifecycle.ui.overview import stale_after

    daily = SimpleNamespace(schedule="0 0 * * *", timezone="Europe/Amsterdam")
    weekly = SimpleNamespace(schedule="0 3 * * 1", timezone="Europe/Amsterdam")
    assert stale_after(daily, DAY) == timedelta(days=2)
    assert stale_after(weekly, DAY) == timedelta(days=8)


def test_a_hold_that_protects_nothing_needs_attention_on_the_overview():
    warned = run(
        reasons=[
            "hold 4 (phone) reaches no records in this policy: check its value (it protects "
            "nothing here)",
            "3 records have no timestamp and would escape retention forever",
        ]
    )
    reasons = attention(warned, remaining_after(warned), DAY)
    assert reasons == [warned["reasons"][0]]
    assert attention(run(), remaining_after(run()), DAY) == []


def test_a_hold_on_all_policies_that_reaches_nothing_in_one_is_no_alarm(make_policy):
    from lifecycle.steps import _hold_warnings
    from lifecycle.stores import Hold

    policy = make_policy(store__subjects={"customer": "id"})
    holds = (
        Hold(1, "*", "customer", "1", "legal_hold"),
        Hold(2, "cdrs", "customer", "9", "restriction"),
        Hold(3, "cdrs", "ip", "10.0.0.1", "dispute"),
        Hold(4, "*", "ip", "10.0.0.1", "dispute"),
    )
    warnings = _hold_warnings(policy, holds, unreached=["1", "2"])
    assert warnings == [
        "hold 1 (customer, all policies) reaches no records in this policy",
        "hold 2 (customer) reaches no records in this policy: check its value (it protects "
        "nothing here)",
        "hold 3 (ip) names a subject this policy cannot reach (it reaches customer): it "
        "protects nothing here",
    ]
    needing_attention = attention(run(reasons=warnings), remaining_after(run()), DAY)
    assert needing_attention == warnings[1:]
