"""The forecast (`Plan.due`) of the SQL store on SQLite, PostgreSQL and MariaDB: per horizon, the
records that reach the end of their window within it, exact to the microsecond either side of
each horizon, held records never, per-client cutoffs moved forward with the policy's, counted in
the plan's one query."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from lifecycle.stores import HORIZON_DAYS, Hold, RetentionWindow
from lifecycle.stores.sql import SqlTableStore
from tests.stores.test_sql import CUTOFF, ONE_US, WINDOW, config, make_table
from tests.stores.test_sql_windows import (
    TENANT_POLICY,
    Timestamp,
    contacts_policy,
    contracts_and_contacts,
    stamp,
    tenant_events,
)

DAY = timedelta(days=1)


def around_each_horizon(cutoff=CUTOFF) -> list:
    """Past the window by a microsecond, at the cutoff, and a microsecond either side of each
    horizon's moved cutoff."""
    moments = [cutoff - ONE_US, cutoff]
    for days in HORIZON_DAYS:
        moments += [cutoff + days * DAY - ONE_US, cutoff + days * DAY]
    return moments


@pytest.mark.parametrize("timezone", [True, False], ids=["aware", "naive"])
def test_due_counts_exactly_a_microsecond_either_side_of_each_horizon(engine, timezone):
    make_table(
        engine, "events", [*around_each_horizon(), CUTOFF + 400 * DAY, None], timezone=timezone
    )
    store = SqlTableStore(config(), engine)

    plan = store.plan(WINDOW)

    assert HORIZON_DAYS == (7, 30, 90)
    assert (plan.total, plan.expired, plan.anomalies) == (10, 1, 1)
    # Due within 7 days: the record at the cutoff and the one a microsecond before the 7th day;
    # the record at exactly cutoff + 7 d is due within 30 (each count includes the shorter).
    assert plan.due == {"7": 2, "30": 4, "90": 6}
    # Counted from the same predicate: the plan a horizon later finds exactly those expired.
    for days, due in plan.due.items():
        assert store.plan(WINDOW.moved(int(days))).expired == plan.expired + due


def test_the_forecast_is_counted_in_the_plans_one_query(engine):
    make_table(engine, "events", around_each_horizon())
    store = SqlTableStore(config(), engine)
    statements: list[str] = []

    def seen(conn, cursor, statement, *_):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        plan = store.plan(WINDOW)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert plan.due == {"7": 2, "30": 4, "90": 6}
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


def test_held_records_are_never_due(engine):
    meta = sa.MetaData()
    calls = sa.Table(
        "calls",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, nullable=True),
        sa.Column("seen_at", Timestamp),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    soon, later, past = CUTOFF + 3 * DAY, CUTOFF + 20 * DAY, CUTOFF - DAY
    rows = [(1, soon), (1, later), (1, past), (2, soon), (2, later), (2, past), (None, soon)]
    with engine.begin() as conn:
        conn.execute(
            calls.insert(),
            [
                {"id": i, "customer_id": c, "seen_at": stamp(engine, at)}
                for i, (c, at) in enumerate(rows, 1)
            ],
        )
    policy = config(table="calls", subjects={"customer": "customer_id"})
    store = SqlTableStore(policy, engine)
    window = RetentionWindow(CUTOFF, holds=(Hold(4, "*", "customer", "1", "legal_hold"),))

    plan = store.plan(window)

    assert (plan.expired, plan.held, plan.held_by_hold) == (1, 1, {"4": 1})
    # Customer 1's records are held: neither the one past the window nor those still in it are
    # due. Customer 2's and the unlinked record are (a NULL subject matches no hold).
    assert plan.due == {"7": 2, "30": 3, "90": 3}
    assert store.plan(RetentionWindow(CUTOFF)).due == {"7": 3, "30": 5, "90": 5}


def test_client_periods_move_forward_with_the_policys(engine):
    cutoffs = {"short": CUTOFF + 60 * DAY, "long": CUTOFF - 200 * DAY}
    tenants = {"short": cutoffs["short"], "long": cutoffs["long"], "unset": CUTOFF, None: CUTOFF}
    rows = [(t, at) for t, cutoff in tenants.items() for at in around_each_horizon(cutoff)]
    tenant_events(engine, rows)
    policy = config(**TENANT_POLICY)
    store = SqlTableStore(policy, engine)
    window = RetentionWindow(CUTOFF, tenant_cutoffs=cutoffs)

    plan = store.plan(window)

    # Every client's records around its own cutoff: on the policy's cutoff, the short client's
    # would all be expired now and the long client's none due within 90 days.
    assert plan.expired == 4 * 1
    assert plan.due == {"7": 4 * 2, "30": 4 * 4, "90": 4 * 6}
    assert plan.by_tenant["short"] == {"total": 8, "expired": 1}


def test_until_end_of_service_a_contract_ending_soon_is_due_and_a_running_one_never(engine):
    contracts_and_contacts(
        engine,
        [
            (1, CUTOFF - ONE_US),  # 1: ended: expired now
            (2, CUTOFF + 5 * DAY),  # 2: ends within 7 days
            (3, CUTOFF + 29 * DAY),  # 3: within 30
            (3, CUTOFF + 10 * DAY),
            (4, CUTOFF + 10 * DAY),  # 4: one contract ends soon, another still runs: never
            (4, None),
            (5, CUTOFF + 89 * DAY),  # 5: within 90
        ],
        customers=[1, 2, 2, 3, 4, 5, 6, None],
    )
    store = SqlTableStore(contacts_policy(), engine)

    plan = store.plan(RetentionWindow(CUTOFF))

    assert (plan.expired, plan.active, plan.anomalies) == (1, 2, 1)
    assert plan.due == {"7": 2, "30": 3, "90": 4}
