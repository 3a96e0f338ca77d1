"""The register of data-subject requests and `lifecycle requests` on a SQLite control database:
what a privacy officer types, what is refused (naming the flag, touching nothing), what is
printed (never an identifier but with `show --identifiers`), and how a request's rows stay out of
the policies' own views of the trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lifecycle import cli
from lifecycle.audit import latest_runs, read_runs, record_run
from lifecycle.control import holds, request_subjects, requests
from lifecycle.holds import place_hold
from lifecycle.requests.register import (
    RequestError,
    decide_request,
    get_request,
    list_requests,
    register_request,
    runnable,
)
from lifecycle.ui.queries import count_runs
from tests.conftest import PROJECT
from tests.unit.test_audit_trail import DAY, row

PHONE, EMAIL = "06-1234 5678", " Jan@Example.NL "
SECRETS = ("12345678", "jan@example")
NOW = datetime(2026, 11, 30, 9, tzinfo=UTC)


@pytest.fixture
def control_db(tmp_path, monkeypatch) -> sa.Engine:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", url)
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(PROJECT / "include/policies"))
    assert cli.main(["audit-init"]) == 0
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_identifiers_are_stored_canonical_and_apart_from_the_request(control_db):
    request_id = register_request(
        control_db,
        kind="erasure",
        identifiers={"phone": PHONE, "email": EMAIL, "customer": " 17 "},
        registered_by="dpo",
        received_at=NOW - timedelta(days=3),
        now=NOW,
    )
    with control_db.connect() as conn:
        stored = dict(
            conn.execute(
                sa.select(request_subjects.c.subject, request_subjects.c.value).where(
                    request_subjects.c.request_id == request_id
                )
            ).all()
        )
        register_row = conn.execute(sa.select(requests)).one()._mapping
    assert stored == {"phone": "+31612345678", "email": "jan@example.nl", "customer": "17"}
    # Nothing of the subject in the request's own row.
    assert not any(s in str(dict(register_row)).lower() for s in SECRETS)
    request = get_request(control_db, request_id)
    assert request.subjects == ("customer", "email", "phone")
    assert request.due_at == datetime(2026, 12, 27, 9, tzinfo=UTC)  # one calendar month
    assert (request.status, request.overdue(NOW), request.overdue(NOW + timedelta(days=28))) == (
        "open",
        False,
        True,
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "forget"}, "kind: 'forget' is not one of"),
        ({"identifiers": {}}, "identifiers: give at least one"),
        ({"identifiers": {"phone": "12"}}, "not a possible phone number"),
        ({"identifiers": {"email": "no-at-sign"}}, "not an e-mail address"),
        ({"identifiers": {"iban": "NL91"}}, "no policy maps the subject 'iban'"),
        ({"registered_by": " "}, "registered_by: say who"),
        ({"received_at": NOW + timedelta(hours=1)}, "is in the future"),
        ({"kind": "access", "client_instructed": True}, "client_instructed: only an erasure"),
        ({"kind": "erasure", "copy_objects": True}, "copy_objects: only an access"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field_and_nothing_is_stored(
    control_db, fields, message
):
    arguments = {
        "kind": "erasure",
        "identifiers": {"phone": PHONE},
        "registered_by": "dpo",
        "mapped": {"phone", "email", "customer"},
        "now": NOW,
    } | fields
    with pytest.raises(RequestError, match=message) as raised:
        register_request(control_db, **arguments)
    assert not any(s in str(raised.value) for s in SECRETS)
    assert (_count(control_db, requests), _count(control_db, request_subjects)) == (0, 0)


def test_a_run_is_refused_for_a_closed_request_or_another_kind(control_db):
    request_id = register_request(
        control_db, kind="restriction", identifiers={"customer": "17"}, registered_by="dpo"
    )
    with pytest.raises(RequestError, match="trigger dsr_restriction, not dsr_erasure"):
        runnable(control_db, request_id, "erasure")
    with pytest.raises(RequestError, match="request 999: no such request"):
        runnable(control_db, 999, "restriction")
    with pytest.raises(RequestError, match="give the request's number"):
        runnable(control_db, "seven", "restriction")
    hold = place_hold(
        control_db,
        scope="cdrs",
        subject="customer",
        value="17",
        reason="restriction",
        placed_by="request",
        request_id=request_id,
    )
    assert decide_request(control_db, request_id, decision="granted", decided_by="dpo") == [hold]
    with control_db.connect() as conn:
        released = conn.execute(sa.select(holds.c.released_by).where(holds.c.id == hold)).scalar()
    assert released == "dpo"
    with pytest.raises(RequestError, match="is closed"):
        runnable(control_db, request_id, "restriction")
    with pytest.raises(RequestError, match="already closed"):
        decide_request(control_db, request_id, decision="rejected", decided_by="dpo")


def test_the_cli_registers_lists_shows_and_decides_printing_no_identifier(control_db, capsys):
    base = ["requests", "register", "--by", "A. de Vries (FG)", "--reference", "DSR-1"]
    assert (
        cli.main([*base, "--kind", "erasure", "--subject", f"phone={PHONE}", "--subject",
                  f"email={EMAIL}"]) == 0
    )  # fmt: skip
    registered = capsys.readouterr().out
    assert "registered request 1, due " in registered
    assert """airflow dags trigger dsr_erasure --conf '{"request_id": 1}'""" in registered
    assert cli.main(["requests", "list"]) == 0
    listed = capsys.readouterr().out
    assert "erasure" in listed and "subjects: email, phone" in listed and "1 requests" in listed
    assert cli.main(["requests", "show", "1"]) == 0
    shown = capsys.readouterr().out
    assert "reference: DSR-1" in shown
    printed = registered + listed + shown
    assert not any(secret in printed.lower() for secret in SECRETS)
    assert cli.main(["requests", "show", "1", "--identifiers"]) == 0
    assert "phone = +31612345678" in capsys.readouterr().out  # asked for: the officer's check
    assert cli.main(["requests", "decide", "1", "--decision", "rejected", "--by", "dpo"]) == 0
    assert "request 1 closed (rejected)" in capsys.readouterr().out
    assert cli.main(["requests", "list"]) == 0
    assert "0 requests" in capsys.readouterr().out
    assert list_requests(control_db, include_closed=True)[0].decision == "rejected"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--subject", "iban=NL91ABNA0417164300"], "no policy maps the subject 'iban'"),
        (["--subject", "phone"], "--subject #1: write NAME=VALUE"),
        (["--subject", "phone=1", "--subject", "phone=2"], "--subject phone: given twice"),
        (["--subject", "phone=06 1234 5678", "extra words"], "unexpected argument"),
    ],
)
def test_the_cli_refuses_a_bad_registration_and_repeats_no_value(
    control_db, capsys, arguments, message
):
    command = ["requests", "register", "--kind", "access", "--by", "dpo", *arguments]
    try:
        code = cli.main(command)
    except SystemExit as exit_:  # argparse's own refusal
        code = exit_.code
    assert code not in (0, None)
    error = capsys.readouterr().err
    assert message in error
    assert "NL91ABNA" not in error and "extra words" not in error
    assert _count(control_db, requests) == 0


def test_a_requests_rows_stay_out_of_the_policys_own_views(control_db):
    assert record_run(control_db, row("scheduled__1", DAY))
    request_row = row("manual__2/cdrs", DAY + timedelta(days=1), status="erased", request_id=4)
    assert record_run(control_db, request_row)
    # The policy's last run, its runs and their count: the retention run only.
    assert latest_runs(control_db)["cdrs"]["run_id"] == "scheduled__1"
    assert [r["run_id"] for r in read_runs(control_db, "cdrs")] == ["scheduled__1"]
    assert count_runs(control_db, "cdrs") == 1
    # The whole trail (its export, its chain): both.
    assert [r["run_id"] for r in read_runs(control_db)] == ["scheduled__1", "manual__2/cdrs"]
