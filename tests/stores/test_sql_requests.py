"""One subject's records in a SQL table (data-subject requests), on SQLite, PostgreSQL and
MariaDB: found exactly as a hold on the same subject finds them (links, phone spellings, e-mail
case), erased except what is held or active, and verified."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from lifecycle.stores import Hold, erasure_window
from lifecycle.stores.sql_requests import SqlSubjectStore
from tests.stores.test_sql import CUTOFF, config
from tests.stores.test_sql_holds import CUSTOMER_LINK, calls_with_subscribers, kept
from tests.stores.test_sql_windows import stamp

SUBJECTS = {"customer": CUSTOMER_LINK, "phone": "caller", "email": "email"}
CALLS = [
    (10, "+31 6 12345678", "someone@x.nl"),  # 1: customer 1, the subject's number
    (11, "+31 20 5555555", "other@x.nl"),  # 2: customer 1
    (20, "06-12345678", "c@x.nl"),  # 3: customer 2, the subject's number spelled otherwise
    (20, "+31 20 7777777", "d@x.nl"),  # 4: customer 2: nothing of the subject
    (None, None, " A@X.nl "),  # 5: the subject's address, another case and spaces
]


def subject_store(engine, identifiers, **store):
    policy = config(table="calls", subjects=SUBJECTS, **store)
    return SqlSubjectStore(policy, engine, identifiers)


def test_a_request_finds_what_a_hold_on_the_same_subject_protects(engine):
    calls_with_subscribers(engine, CALLS)
    with subject_store(engine, {"customer": "1"}) as store:
        assert [r["id"] for r in store.records()] == [1, 2]
    with subject_store(engine, {"phone": "0612345678"}) as store:
        assert [r["id"] for r in store.records()] == [1, 3]
    with subject_store(engine, {"email": "a@x.nl"}) as store:
        records = list(store.records())
        assert [r["id"] for r in records] == [5]
        assert store.fields() == ["id", "subscriber_id", "caller", "email", "seen_at"]
        assert records[0]["email"] == " A@X.nl "  # as stored: the subject's own data
    with subject_store(engine, {"iban": "NL00"}) as store:  # a subject this table maps not
        assert not store.reaches
        assert list(store.records()) == []


def test_erasure_deletes_the_subjects_records_of_any_age_but_the_held_ones(engine):
    table = calls_with_subscribers(engine, CALLS)
    with engine.begin() as conn:  # call 2 is recent: erasure does not wait for its window
        conn.execute(
            table.update()
            .where(table.c.id == 2)
            .values(seen_at=stamp(engine, CUTOFF + timedelta(days=90)))
        )
    held = (Hold(9, "*", "phone", "+31612345678", "legal_hold"),)
    with subject_store(engine, {"customer": "1", "email": "a@x.nl"}) as store:
        summary = store.summary(held)
        assert (summary.records, summary.erasable, summary.held, summary.active) == (3, 2, 1, 0)
        assert summary.held_by_hold == {"9": 1}
        window = erasure_window(held)
        result = store.purge(window, approved=store.removals(held))
        assert result.deleted == 2
        verification = store.verify(window)
        assert verification.success and verification.remaining == 0
    # Customer 1's call 1 is held (its number); calls 3 and 4 are another customer's.
    assert kept(engine, table) == [1, 3, 4]


def test_erasure_never_goes_beyond_the_approved_ceiling(engine):
    table = calls_with_subscribers(engine, CALLS)
    with subject_store(engine, {"customer": "1"}) as store:
        try:
            store.purge(erasure_window(()), approved=1)
        except Exception as exc:
            assert "more than the 1 approved" in str(exc)
        else:
            raise AssertionError("a purge past its ceiling must stop")
    assert kept(engine, table) == [1, 2, 3, 4, 5]


def test_the_records_of_a_running_contract_are_active_and_kept(engine):
    meta = sa.MetaData()
    contracts = sa.Table(
        "contracts",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
    )
    names = sa.Table(
        "billing",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer),
        sa.Column("name", sa.String(50)),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    ended = stamp(engine, CUTOFF - timedelta(days=3))
    with engine.begin() as conn:
        conn.execute(
            contracts.insert(),
            [
                {"id": 1, "customer_id": 1, "ended_at": ended},
                {"id": 2, "customer_id": 2, "ended_at": None},  # still running
            ],
        )
        conn.execute(
            names.insert(),
            [
                {"id": 1, "customer_id": 1, "name": "A"},
                {"id": 2, "customer_id": 2, "name": "B"},
                {"id": 3, "customer_id": 3, "name": "C"},
            ],
        )
    retention = {
        "period": "P0D",
        "from_event": {
            "table": "contracts",
            "subject": "customer_id",
            "key": "customer_id",
            "timestamp": "ended_at",
        },
    }
    policy = config(
        table="billing", retention=retention, subjects={"customer": "customer_id"}, timestamp=None
    )
    for customer, expected in (("2", [1, 2, 3]), ("1", [2, 3])):
        with SqlSubjectStore(policy, engine, {"customer": customer}) as store:
            summary = store.summary(())
            store.purge(erasure_window(()), approved=store.removals(()))
            assert store.verify(erasure_window(())).success
        if customer == "2":
            assert (summary.records, summary.active, summary.erasable) == (1, 1, 0)
            assert summary.clients == ["2"]
        with engine.connect() as conn:
            assert sorted(conn.execute(sa.select(names.c.id)).scalars()) == expected
