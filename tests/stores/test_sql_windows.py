"""Until end of service, per-client periods and holds, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from lifecycle.holds import HoldError, active_holds, place_hold, release_hold
from lifecycle.stores import Hold, RetentionWindow
from lifecycle.stores.sql import SqlTableStore, create_engine
from tests.stores.test_sql import CUTOFF, ONE_US, config

Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
GRACE_CUTOFF = CUTOFF  # with P0D the cutoff is the run's own instant


def stamp(engine, instant):
    if instant is None:
        return None
    return instant if engine.dialect.name == "postgresql" else instant.replace(tzinfo=None)


def contracts_and_contacts(engine, contracts: list[tuple[int, datetime | None]], customers):
    """contracts(id, customer_id, ended_at) and org_contacts(id, customer_id, name)."""
    meta = sa.MetaData()
    contract = sa.Table(
        "contracts",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer),
        sa.Column("ended_at", Timestamp, nullable=True),
    )
    contacts = sa.Table(
        "org_contacts",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, nullable=True),
        sa.Column("name", sa.String(50)),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            contract.insert(),
            [
                {"id": i, "customer_id": c, "ended_at": stamp(engine, ended)}
                for i, (c, ended) in enumerate(contracts, start=1)
            ],
        )
        conn.execute(
            contacts.insert(),
            [
                {"id": i, "customer_id": c, "name": f"contact {i}"}
                for i, c in enumerate(customers, 1)
            ],
        )
    return contacts


def remaining(engine, table) -> list:
    with engine.connect() as conn:
        return sorted(
            conn.execute(sa.select(table.c.customer_id)).scalars(), key=lambda v: (v is None, v)
        )


EVENT = {
    "period": "P0D",
    "from_event": {
        "table": "contracts",
        "subject": "customer_id",
        "key": "customer_id",
        "timestamp": "ended_at",
    },
}


def contacts_policy(**retention):
    return config(
        table="org_contacts",
        timestamp=None,
        retention=EVENT | retention,
        subjects={"customer": "customer_id"},
    )


def test_until_end_of_service_keeps_every_client_with_a_running_or_recent_contract(engine):
    contacts = contracts_and_contacts(
        engine,
        [
            (1, CUTOFF - timedelta(days=40)),  # 1: its only contract ended: expired
            (2, CUTOFF - timedelta(days=40)),  # 2: one ended, one still running: kept
            (2, None),
            (3, CUTOFF),  # 3: ended exactly at the cutoff: kept
            (4, CUTOFF - ONE_US),  # 4: ended a microsecond before: expired
            (5, CUTOFF - timedelta(days=400)),  # 5: ended long ago, but a later one ends
            (5, CUTOFF + timedelta(days=1)),  #    after the cutoff: kept
            (6, CUTOFF - timedelta(days=3)),  # 6: all its contracts ended: expired
            (6, CUTOFF - timedelta(days=300)),
            # 7: no contract at all (yet): never expired
        ],
        customers=[1, 1, 2, 3, 4, 5, 6, 7, None],
    )
    store = SqlTableStore(contacts_policy(), engine)
    window = RetentionWindow(GRACE_CUTOFF)

    plan = store.plan(window)

    assert (plan.total, plan.expired, plan.active, plan.anomalies) == (9, 4, 2, 1)
    assert plan.newest_expired == (CUTOFF - ONE_US).isoformat()
    assert not store.verify(window).success
    assert store.purge(window, approved=plan.expired).deleted == 4
    assert remaining(engine, contacts) == [2, 3, 5, 7, None]
    assert store.verify(window).success


def test_a_grace_period_counts_from_the_event(engine):
    contacts = contracts_and_contacts(
        engine,
        [(1, CUTOFF - timedelta(days=31)), (2, CUTOFF - timedelta(days=29))],
        customers=[1, 2],
    )
    # The run's cutoff for P30D is 30 days before the logical date; the test passes it directly.
    store = SqlTableStore(contacts_policy(period="P30D"), engine)
    window = RetentionWindow(CUTOFF - timedelta(days=30))
    store.purge(window, approved=store.plan(window).expired)
    assert remaining(engine, contacts) == [2]


def test_event_in_the_records_own_row(engine):
    meta = sa.MetaData()
    accounts = sa.Table(
        "voip_accounts",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer),
        sa.Column("decommissioned_at", Timestamp, nullable=True),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    moments = [CUTOFF - timedelta(days=1), CUTOFF - ONE_US, CUTOFF, None]
    with engine.begin() as conn:
        conn.execute(
            accounts.insert(),
            [
                {"id": i, "customer_id": i, "decommissioned_at": stamp(engine, m)}
                for i, m in enumerate(moments, 1)
            ],
        )
    policy = config(
        table="voip_accounts",
        timestamp=None,
        retention={"period": "P0D", "from_event": {"timestamp": "decommissioned_at"}},
    )
    store = SqlTableStore(policy, engine)
    plan = store.plan(RetentionWindow(CUTOFF))
    assert (plan.expired, plan.active) == (2, 1)
    store.purge(RetentionWindow(CUTOFF), approved=2)
    assert remaining(engine, accounts) == [3, 4]


def test_holds_keep_their_records_and_are_counted_by_hold(engine):
    contacts = contracts_and_contacts(
        engine,
        [(c, CUTOFF - timedelta(days=10)) for c in (1, 2, 3)],
        customers=[1, 1, 2, 3, None],
    )
    store = SqlTableStore(contacts_policy(), engine)
    holds = (
        Hold(id=7, scope="*", subject="customer", value="1", reason="legal_hold"),
        Hold(id=8, scope="org_contacts", subject="customer", value="3", reason="restriction"),
        Hold(id=9, scope="*", subject="phone", value="+31 6", reason="dispute"),  # not mapped
        Hold(id=10, scope="*", subject="customer", value="not a number", reason="dispute"),
    )
    window = RetentionWindow(CUTOFF, holds=holds)

    plan = store.plan(window)

    assert (plan.expired, plan.held) == (1, 3)
    assert plan.held_by_hold == {"7": 2, "8": 1}
    store.purge(window, approved=plan.expired)
    assert remaining(engine, contacts) == [1, 1, 3, None]
    verification = store.verify(window)
    assert verification.success  # held records are not a verification failure
    assert (
        "1 " not in verification.summary["checked"] and "4 holds" in verification.summary["checked"]
    )

    # Released: the next run deletes them, and verification without the holds sees them first.
    released = RetentionWindow(CUTOFF)
    assert store.verify(released).remaining == 3
    store.purge(released, approved=store.plan(released).expired)
    assert remaining(engine, contacts) == [None]


def test_a_hold_on_several_columns(engine):
    meta = sa.MetaData()
    calls = sa.Table(
        "calls",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("caller", sa.String(20)),
        sa.Column("callee", sa.String(20), nullable=True),
        sa.Column("seen_at", Timestamp),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    old = stamp(engine, CUTOFF - timedelta(days=1))
    rows = [("A", "B"), ("B", "A"), ("C", "D"), ("A", "A"), ("C", None)]
    with engine.begin() as conn:
        conn.execute(
            calls.insert(),
            [
                {"id": i, "caller": a, "callee": b, "seen_at": old}
                for i, (a, b) in enumerate(rows, 1)
            ],
        )
    policy = config(table="calls", subjects={"phone": ["caller", "callee"]})
    store = SqlTableStore(policy, engine)
    window = RetentionWindow(CUTOFF, holds=(Hold(1, "*", "phone", "A", "legal_hold"),))
    plan = store.plan(window)
    assert (plan.expired, plan.held, plan.held_by_hold) == (2, 3, {"1": 3})
    store.purge(window, approved=2)
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(calls.c.id)).scalars()) == [1, 2, 4]


def tenant_events(engine: sa.Engine, rows: list[tuple[str | None, datetime]]) -> sa.Table:
    """A table of records of client organisations (`tenant`, NULL for none), created anew with
    `rows` (tenant, time): the store of a policy whose clients set their own periods."""
    meta = sa.MetaData()
    events = sa.Table(
        "tenant_events",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant", sa.String(20), nullable=True),
        sa.Column("seen_at", Timestamp),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            events.insert(),
            [
                {"id": i, "tenant": t, "seen_at": stamp(engine, at)}
                for i, (t, at) in enumerate(rows, 1)
            ],
        )
    return events


TENANT_POLICY = {
    "table": "tenant_events",
    "retention": {"period": "P6M", "per_tenant": {"column": "tenant"}},
}


def test_periods_set_per_client_organisation(engine):
    ages = [10, 40, 100, 200, 400]  # days before the logical date
    logical = CUTOFF
    rows = [(t, age) for t in ("short", "long", "unset", None) for age in ages]
    events = tenant_events(engine, [(t, logical - timedelta(days=age)) for t, age in rows])
    policy = config(**TENANT_POLICY)
    window = RetentionWindow(
        logical - timedelta(days=182),  # the default, P6M
        tenant_cutoffs={
            "short": logical - timedelta(days=30),
            "long": logical - timedelta(days=365),
        },
    )
    store = SqlTableStore(policy, engine)

    plan = store.plan(window)

    assert plan.by_tenant == {
        "short": {"total": 5, "expired": 4},
        "long": {"total": 5, "expired": 1},
        "unset": {"total": 5, "expired": 2},
    }
    assert plan.expired == 4 + 1 + 2 + 2  # the NULL tenant runs on the default too
    store.purge(window, approved=plan.expired)
    with engine.connect() as conn:
        kept = conn.execute(sa.select(events.c.tenant, events.c.seen_at)).all()
    ages_kept = sorted(
        (t or "", (logical - (s if s.tzinfo else s.replace(tzinfo=UTC))).days) for t, s in kept
    )
    assert ages_kept == [
        ("", 10),
        ("", 40),
        ("", 100),
        ("long", 10),
        ("long", 40),
        ("long", 100),
        ("long", 200),
        ("short", 10),
        ("unset", 10),
        ("unset", 40),
        ("unset", 100),
    ]
    assert store.verify(window).success


def test_hold_lifecycle_in_the_control_database(engine):
    from lifecycle.holds import holds, list_holds

    holds.drop(engine, checkfirst=True)
    holds.create(engine)  # the owner's audit-init: holds are never created on the fly
    now = datetime(2026, 11, 29, 9, tzinfo=UTC)
    legal = place_hold(
        engine,
        scope="*",
        subject="customer",
        value="1",
        reason="legal_hold",
        placed_by="po",
        now=now,
    )
    restriction = place_hold(
        engine,
        scope="org_contacts",
        subject="phone",
        value="+31 20 123 4567",
        reason="restriction",
        placed_by="po",
        expires_at=now + timedelta(days=30),
        now=now,
    )
    other = place_hold(
        engine,
        scope="cdrs",
        subject="phone",
        value="06-1234 5678",
        reason="dispute",
        placed_by="po",
    )
    # Stored canonical: E.164, whatever the formatting it was typed in.
    assert {h.id: h.value for h in active_holds(engine, "cdrs", now)}[other] == "+31612345678"
    with pytest.raises(HoldError, match="not a possible phone number"):
        place_hold(
            engine, scope="cdrs", subject="phone", value="+31 6 1", reason="dispute", placed_by="po"
        )

    def ids(policy, as_of):
        return [hold.id for hold in active_holds(engine, policy, as_of)]

    assert ids("org_contacts", now) == [legal, restriction]  # cdrs's hold protects only cdrs
    assert ids("cdrs", now) == [legal, other]
    assert ids("org_contacts", now + timedelta(days=31)) == [legal]  # expired
    release_hold(engine, legal, released_by="po", now=now + timedelta(days=1))
    assert ids("org_contacts", now) == [restriction]
    assert [row["id"] for row in list_holds(engine)] == [restriction, other]
    assert [row["id"] for row in list_holds(engine, include_released=True)] == [
        legal,
        restriction,
        other,
    ]
    with pytest.raises(ValueError, match="already released"):
        release_hold(engine, legal, released_by="po")
    with pytest.raises(ValueError, match="reason: 'whim'"):
        place_hold(engine, scope="*", subject="x", value="1", reason="whim", placed_by="po")


def test_a_thousand_client_periods_stay_one_flat_expression(tmp_path):
    # SQLite refuses expressions nested over 1000 deep: a CASE is flat where ORs were not.
    engine = create_engine(f"sqlite:///{tmp_path / 'tenants.db'}")
    contacts = contracts_and_contacts(
        engine, [(c, CUTOFF - timedelta(days=10)) for c in (1, 2)], customers=[1, 2]
    )
    policy = contacts_policy(per_tenant={"column": "customer_id"})
    cutoffs = {str(t): CUTOFF - timedelta(days=20) for t in range(3, 1200)}
    cutoffs["2"] = CUTOFF  # customer 2 set a period that makes its contact expire
    window = RetentionWindow(CUTOFF - timedelta(days=20), tenant_cutoffs=cutoffs)
    store = SqlTableStore(policy, engine)
    assert store.plan(window).expired == 1
    store.purge(window, approved=1)
    assert remaining(engine, contacts) == [1]


def test_a_hold_whose_value_fits_no_column_is_reported(engine):
    contracts_and_contacts(engine, [(1, CUTOFF - timedelta(days=1))], customers=[1])
    store = SqlTableStore(contacts_policy(), engine)
    holds = (
        Hold(3, "*", "customer", "C-0001", "legal_hold"),  # not a number: matches nothing
        Hold(4, "*", "customer", "1", "legal_hold"),
    )
    plan = store.plan(RetentionWindow(CUTOFF, holds=holds))
    assert (plan.held, plan.inert_holds) == (1, ["3"])
