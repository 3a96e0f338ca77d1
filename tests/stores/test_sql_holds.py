"""Holds that reach linked records, whatever the stored formatting, from the moment they are
committed: on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lifecycle.holds import active_holds, holds, place_hold
from lifecycle.stores import Hold, RetentionWindow
from lifecycle.stores.sql import SqlTableStore
from tests.stores.test_sql import CUTOFF, config
from tests.stores.test_sql_windows import Timestamp, stamp

OLD = CUTOFF - timedelta(days=30)
CUSTOMER_LINK = {
    "column": "subscriber_id",
    "through": [{"table": "subscribers", "key": "id", "column": "customer_id"}],
}


def calls_with_subscribers(engine, calls: list[tuple[int, str, str]]) -> sa.Table:
    """subscribers(id, customer_id) 10->1, 11->1, 20->2, and calls(id, subscriber_id, caller,
    email, seen_at), every call past the window."""
    meta = sa.MetaData()
    subscribers = sa.Table(
        "subscribers",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, nullable=False),
    )
    table = sa.Table(
        "calls",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("subscriber_id", sa.Integer, nullable=True),
        sa.Column("caller", sa.String(40), nullable=True),
        sa.Column("email", sa.String(100), nullable=True),
        sa.Column("seen_at", Timestamp),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            subscribers.insert(),
            [
                {"id": 10, "customer_id": 1},
                {"id": 11, "customer_id": 1},
                {"id": 20, "customer_id": 2},
            ],
        )
        conn.execute(
            table.insert(),
            [
                {
                    "id": i,
                    "subscriber_id": s,
                    "caller": c,
                    "email": e,
                    "seen_at": stamp(engine, OLD),
                }
                for i, (s, c, e) in enumerate(calls, start=1)
            ],
        )
    return table


def kept(engine, table) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(table.c.id)).scalars())


def purge(store, window):
    plan = store.plan(window)
    store.purge(window, approved=plan.expired)
    return plan


def test_a_hold_on_a_customer_keeps_records_linked_through_another_table(engine):
    table = calls_with_subscribers(
        engine, [(10, "x", "a@x.nl"), (11, "x", "b@x.nl"), (20, "x", "c@x.nl"), (None, "x", None)]
    )
    policy = config(
        table="calls", subjects={"subscriber": "subscriber_id", "customer": CUSTOMER_LINK}
    )
    store = SqlTableStore(policy, engine)
    window = RetentionWindow(CUTOFF, holds=(Hold(7, "*", "customer", "1", "legal_hold"),))
    plan = purge(store, window)
    assert (plan.expired, plan.held, plan.held_by_hold, plan.inert_holds) == (2, 2, {"7": 2}, [])
    # Customer 1's two subscribers' calls survive; customer 2's and the unlinked call go.
    assert kept(engine, table) == [1, 2]
    assert store.verify(window).success


def test_a_link_of_two_hops(engine):
    table = calls_with_subscribers(engine, [(10, "x", None), (20, "x", None)])
    meta = sa.MetaData()
    customers = sa.Table(
        "customers_of_groups",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("group_id", sa.String(10)),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(customers.insert(), [{"id": 1, "group_id": "G1"}, {"id": 2, "group_id": "G2"}])
    link = {
        "column": "subscriber_id",
        "through": [
            {"table": "subscribers", "key": "id", "column": "customer_id"},
            {"table": "customers_of_groups", "key": "id", "column": "group_id"},
        ],
    }
    store = SqlTableStore(config(table="calls", subjects={"group": link}), engine)
    window = RetentionWindow(CUTOFF, holds=(Hold(3, "*", "group", "G2", "legal_hold"),))
    purge(store, window)
    assert kept(engine, table) == [2]


def test_a_held_phone_number_matches_every_stored_formatting(engine):
    table = calls_with_subscribers(
        engine,
        [
            (10, "+31 6 00000901", None),
            (10, "06-00000901", None),
            (10, "0031600000901", None),
            (10, "+31 (0)6 0000 0901", None),
            (10, "+31600000902", None),  # another number
            (10, "+44 6 00000901", None),  # the same digits in another country
            (10, None, None),
        ],
    )
    store = SqlTableStore(config(table="calls", subjects={"phone": "caller"}), engine)
    window = RetentionWindow(CUTOFF, holds=(Hold(1, "*", "phone", "+31600000901", "restriction"),))
    plan = purge(store, window)
    assert plan.held_by_hold == {"1": 4}
    assert kept(engine, table) == [1, 2, 3, 4]
    assert store.verify(window).success


def test_a_held_email_address_matches_whatever_its_case_and_spaces(engine):
    table = calls_with_subscribers(
        engine,
        [
            (10, None, "lead902@example.nl"),
            (10, None, " Lead902@Example.NL "),
            (10, None, "x@y.nl"),
        ],
    )
    store = SqlTableStore(config(table="calls", subjects={"email": "email"}), engine)
    hold = Hold(1, "*", "email", "LEAD902@EXAMPLE.NL", "restriction")  # as typed by a person
    purge(store, RetentionWindow(CUTOFF, holds=(hold,)))
    assert kept(engine, table) == [1, 2]


def test_a_hold_that_reaches_no_record_is_reported_by_id(engine):
    calls_with_subscribers(engine, [(10, "+31600000901", "a@x.nl")])
    policy = config(table="calls", subjects={"phone": "caller", "customer": CUSTOMER_LINK})
    store = SqlTableStore(policy, engine)
    window = RetentionWindow(
        CUTOFF,
        holds=(
            Hold(1, "*", "phone", "+31699999999", "restriction"),  # no such number here
            Hold(2, "*", "customer", "not a number", "legal_hold"),  # fits no integer column
            Hold(3, "*", "customer", "1", "legal_hold"),  # reaches the call
            Hold(4, "*", "ip", "10.0.0.1", "legal_hold"),  # a subject this policy does not map
        ),
    )
    assert store.plan(window).inert_holds == ["1", "2"]


def test_a_hold_placed_during_a_purge_protects_from_the_next_batch(engine):
    """The race: the hold commits while the purge runs; no batch after it deletes held rows."""
    meta = sa.MetaData()
    table = sa.Table(
        "events",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer),
        sa.Column("seen_at", Timestamp),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    holds.drop(engine, checkfirst=True)
    holds.create(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"id": i, "customer_id": i % 2, "seen_at": stamp(engine, OLD)} for i in range(1, 101)],
        )
    store = SqlTableStore(config(subjects={"customer": "customer_id"}, batch_size=10), engine)
    as_of = datetime(2026, 11, 29, tzinfo=UTC)
    calls = []

    def reload_holds():
        calls.append(1)
        if len(calls) == 3:  # after two batches, a privacy officer places a legal hold
            place_hold(
                engine,
                scope="*",
                subject="customer",
                value="1",
                reason="legal_hold",
                placed_by="po",
            )
        return active_holds(engine, "events", as_of)

    window = RetentionWindow(CUTOFF, reload_holds=reload_holds)
    result = store.purge(window, approved=100)
    survivors = kept(engine, table)
    # Batches 1-2 (keys 1-20) went whole; from batch 3 on customer 1's rows (odd ids) stay.
    assert survivors == [i for i in range(21, 101) if i % 2 == 1]
    assert result.deleted == 100 - len(survivors)


def test_verification_binds_hold_values_and_survives_colons_in_literals(engine):
    """A hold value like ':evil' made every verification fail: GX wraps its SQL in text(),
    which read it as a bind parameter. Hold values are now bound by the store; client ids,
    which stay literal for GX, are escaped."""
    meta = sa.MetaData()
    table = sa.Table(
        "events",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer", sa.String(20)),
        sa.Column("tenant", sa.String(20)),
        sa.Column("seen_at", Timestamp),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    rows = [(1, ":evil", ":acme"), (2, "x", ":acme"), (3, "y", "other")]
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": i, "customer": c, "tenant": t, "seen_at": stamp(engine, OLD)}
                for i, c, t in rows
            ],
        )
    policy = config(
        subjects={"customer": "customer"},
        retention={"period": "P6M", "per_tenant": {"column": "tenant"}},
    )
    store = SqlTableStore(policy, engine)
    hold = Hold(1, "*", "customer", ":evil", "legal_hold")
    window = RetentionWindow(CUTOFF, tenant_cutoffs={":acme": CUTOFF}, holds=(hold,))
    assert not store.verify(window).success  # rows 2 and 3 are still there
    purge(store, window)
    assert kept(engine, table) == [1]
    verification = store.verify(window)
    assert (verification.success, verification.remaining) == (True, 0)
    assert ":evil" not in str(verification.summary)  # the value never reaches the evidence
