"""Data-subject requests in the audit UI (issue 14, "Evidence"): the register with its due dates
(overdue ones marked), each request's result per category with its audit records, and the
request log's export; never an identifier's value, never a client organisation's id.

The register is filled as the product fills it: `register_request`, then each category's result
and audit row written by the request DAGs' own step (`steps._write`) and the run's outcome by
`steps.finish`. In process over SQLite (Airflow's login overridden, tests/ui/conftest); the
least-privileged reader role on PostgreSQL and MariaDB; the pages in chromium against the real
`airflow api-server`."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import secrets
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from lifecycle.control import ensure_schema, request_results, request_subjects
from lifecycle.grants import grant_statements, reader_grants
from lifecycle.requests import steps
from lifecycle.requests.register import decide_request, get_request, register_request
from lifecycle.requests.scope import CategoryScope
from lifecycle.ui import requests_pages
from lifecycle.ui.requests_pages import CATEGORY_STATUSES, LOG_COLUMNS
from tests.ui.auth import NARROW_USER
from tests.ui.conftest import NARROW_PASSWORD, PASSWORD, USER, client_over, log_in, policy
from tests.ui.test_audit_ui import CHROMIUM_ARGS, _shot, _token

# The pages' clock: 10 December 2026, 12:00 in Amsterdam.
NOW = datetime(2026, 12, 10, 11, 0, tzinfo=UTC)
SUBJECT = {"customer": "904217", "phone": "06-12345678", "email": "Jan.Jansen@Example.nl"}
CLIENTS = ["org-71-acme", "org-72-beta"]  # the controllers to forward to: the CLI's, not the UI's
# What must never appear in a page or an export: the identifiers as registered and as stored
# (canonical: +31612345678, jan.jansen@example.nl), and the client organisations' ids.
SECRETS = ("904217", "12345678", "jan.jansen", "example.nl", *CLIENTS)
FIRST_RUN = "manual__2026-10-21T09:00:00+00:00"
LAST_RUN = "manual__2026-10-22T09:00:00+00:00"
ACCESS_RUN = "manual__2026-12-06T10:00:00+00:00"
PORTABILITY_RUN = "manual__2026-09-02T10:00:00+00:00"
ARCHIVE = "file:///srv/exports/requests/request-2/manual__2026-12-06T10_00_00_00_00/cdrs/"


def _scope(name: str, action: str, subjects=("customer",), reason: str = "") -> CategoryScope:
    return CategoryScope(name, action, subjects, reason)  # type: ignore[arg-type]


def _run(request_id: int, kind: str, run_id: str, day: datetime) -> steps.RequestRun:
    return steps.RequestRun(request_id, kind, run_id, 1, day, day)


def _result(engine, run, name: str, scope: CategoryScope, outcome: steps.Outcome) -> None:
    """A category's audit row and result, written by the request DAG's own step."""
    steps._write(policy(name), run, scope, outcome, engine, run.logical_date)


def seed(engine: sa.Engine, monkeypatch) -> dict[str, int]:
    """Four requests as a privacy officer's month leaves them:

    1. an erasure received 20 October, due 20 November: overdue on 10 December; a first run that
       failed, then a second: cdrs erased (3 records under hold 7), lawful interception kept
       until its window ends, the call recordings forwarded to two client organisations;
    2. an access request received 5 December, due 5 January: its run exported cdrs and has not
       finished (no outcome recorded yet);
    3. a portability request received 1 September, answered and decided (closed): its due date
       passed, and it is not overdue;
    4. a restriction received 25 November, due 25 December: no run yet.
    Registered in that order, so the ids (1-4) are not the order of their due dates."""
    monkeypatch.setattr(steps, "_control", lambda: contextlib.nullcontext(engine))
    # The finished access and portability runs write their archive's manifest there.
    exports = Path(tempfile.mkdtemp(prefix="exports-"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_LIFECYCLE_EXPORTS",
        json.dumps({"conn_type": "fs", "extra": {"path": str(exports)}}),
    )

    def register(kind: str, received: datetime, **extra) -> int:
        return register_request(
            engine,
            kind=kind,
            identifiers=SUBJECT,
            registered_by="dpo",
            received_at=received,
            now=NOW,
            **extra,
        )

    erasure = register(
        "erasure", datetime(2026, 10, 20, 8, 30, tzinfo=UTC), reference="DSR-2026-114"
    )
    access = register("access", datetime(2026, 12, 5, 9, 0, tzinfo=UTC), reference="+31 desk")
    portability = register("portability", datetime(2026, 9, 1, 7, 0, tzinfo=UTC))
    restriction = register("restriction", datetime(2026, 11, 25, 14, 0, tzinfo=UTC))

    first = _run(erasure, "erasure", FIRST_RUN, datetime(2026, 10, 21, 9, tzinfo=UTC))
    _result(
        engine,
        first,
        "cdrs",
        _scope("cdrs", "erase"),
        steps.Outcome(status="failed", reasons=["StoreError: the store did not answer"]),
    )
    steps.finish(first, [{"policy": "cdrs"}])
    last = _run(erasure, "erasure", LAST_RUN, datetime(2026, 10, 22, 9, tzinfo=UTC))
    _result(
        engine,
        last,
        "cdrs",
        _scope("cdrs", "erase", ("customer", "phone")),
        steps.Outcome(
            status="erased",
            records=12,
            erasable=9,
            held=3,
            deleted=9,
            batches=1,
            held_by_hold={"7": 3},
            verified=True,
            remaining=0,
            reasons=["3 records kept under a hold (hold 7: 3)"],
            verification={"success": True},
        ),
    )
    _result(
        engine,
        last,
        "support_call_recordings",
        _scope("support_call_recordings", "erase", ("phone",)),
        steps.Outcome(
            status="erased",
            records=7,
            erasable=3,
            held=4,
            deleted=3,
            held_by_hold={"12": 1, "9": 1, "object_lock": 2},
            verified=True,
            remaining=0,
            reasons=["4 record(s) kept under a hold (hold 12: 1, hold 9: 1, Object Lock: 2)"],
        ),
    )
    _result(
        engine,
        last,
        "lawful_intercept_traffic",
        _scope(
            "lawful_intercept_traffic",
            "keep",
            ("phone",),
            "ground legal obligation: kept until its own window ends",
        ),
        steps.Outcome(
            status="kept",
            records=4,
            kept_until="2027-05-01",
            reasons=[
                "ground legal obligation: kept until its own window ends",
                "4 records kept; the last goes by 2027-05-01 (its window)",
            ],
        ),
    )
    _result(
        engine,
        last,
        "customer_call_recordings",
        _scope(
            "customer_call_recordings",
            "forward",
            ("customer",),
            "the client organisation is the controller: forward the request to it",
        ),
        steps.Outcome(
            status="forwarded",
            records=5,
            clients=CLIENTS,
            reasons=[
                "the client organisation is the controller: forward the request to it",
                "5 records of 2 client organisation(s): not erased here (the client ids are "
                "in the request's result)",
            ],
        ),
    )
    _result(
        engine,
        last,
        "web_analytics",
        _scope("web_analytics", "not_applicable", (), "maps none of the request's identifiers"),
        steps.Outcome(status="not_applicable", reasons=["maps none of the request's identifiers"]),
    )
    categories = [
        "cdrs",
        "support_call_recordings",
        "lawful_intercept_traffic",
        "customer_call_recordings",
        "web_analytics",
    ]
    steps.finish(last, [{"policy": name} for name in categories])

    running = _run(access, "access", ACCESS_RUN, datetime(2026, 12, 6, 10, tzinfo=UTC))
    _result(
        engine,
        running,
        "cdrs",
        _scope("cdrs", "export"),
        steps.Outcome(status="exported", records=12, archive=ARCHIVE),
    )

    answered = _run(portability, "portability", PORTABILITY_RUN, datetime(2026, 9, 2, tzinfo=UTC))
    _result(
        engine,
        answered,
        "cdrs",
        _scope("cdrs", "export"),
        steps.Outcome(status="exported", records=12, archive=ARCHIVE),
    )
    _result(
        engine,
        answered,
        "lawful_intercept_traffic",
        _scope("lawful_intercept_traffic", "not_applicable"),
        steps.Outcome(status="not_applicable"),
    )
    steps.finish(answered, [{"policy": "cdrs"}, {"policy": "lawful_intercept_traffic"}])
    decide_request(
        engine,
        portability,
        decision="granted",
        decided_by="dpo",
        note="=HYPERLINK(1) granted after review",
        now=datetime(2026, 9, 20, 12, tzinfo=UTC),
    )
    return {
        "erasure": erasure,
        "access": access,
        "portability": portability,
        "restriction": restriction,
    }


@pytest.fixture
def client(app_client, monkeypatch):
    from lifecycle.ui import app as ui

    made = app_client([])  # the control database's tables, no retention run
    monkeypatch.setattr(ui, "_now", lambda: NOW)
    ids = seed(ui.audit_engine(), monkeypatch)
    return made, ids, ui.audit_engine()


def _rows(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-request="(\d+)"', page)]


def _row(page: str, request_id: int) -> str:
    return page.split(f'<tr data-request="{request_id}"')[1].split("</tr>")[0]


def _cell(row: str, field: str) -> str:
    """The text of a row's `data-field` cell, tags and runs of spaces removed."""
    match = re.search(rf'data-field="{field}"[^>]*>(.*?)</td>', row, re.S)
    assert match is not None, field
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def _category(page: str, name: str) -> str:
    return page.split(f'<tr data-policy="{name}"')[1].split("</tr>")[0]


def _assert_no_identifier(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret.lower() not in text.lower(), (where, secret)


def _csv(text: str, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


def test_open_requests_first_the_soonest_due_first_the_overdue_one_marked(client):
    made, ids, _ = client
    page = made.get("/requests", headers={"accept": "text/html"})
    assert page.status_code == 200
    text = page.text
    open_part, closed_part = text.split('<details id="closed">')
    # Due 20 November, 25 December, 5 January (registered 1, 4, 2); the closed one below.
    assert _rows(open_part) == [ids["erasure"], ids["restriction"], ids["access"]]
    assert _rows(closed_part) == [ids["portability"]]
    assert 'data-field="open-count">3 open requests<' in text
    assert 'data-field="overdue-count" class="late">1 overdue<' in text

    overdue = _row(text, ids["erasure"])
    assert 'class="overdue"' in overdue
    assert _cell(overdue, "due") == "2026-11-20 09:30 CET overdue 20 d late"
    assert 'title="2026-11-20 08:30 UTC"' in overdue
    assert _cell(overdue, "received") == "2026-10-20 10:30 CEST"
    assert _cell(overdue, "status") == "needs review 2 erased, 1 kept, 1 forwarded"
    assert _cell(overdue, "subjects") == "customer, email, phone"  # names, never values
    assert _cell(overdue, "runs") == "2"
    assert _cell(overdue, "decision") == "–"
    for request_id, left in ((ids["restriction"], "15 d left"), (ids["access"], "25 d left")):
        row = _row(text, request_id)
        assert 'class=""' in row and "overdue" not in row, request_id
        assert _cell(row, "due").endswith(left), request_id
    # Its due date passed long ago, and it is decided: closed, not overdue.
    closed = _row(text, ids["portability"])
    assert "overdue" not in closed and 'class=""' in closed
    assert _cell(closed, "decision") == "granted dpo, 2026-09-20 14:00 CEST"
    assert _cell(closed, "status") == "closed 1 exported"
    assert f'href="/requests/{ids["erasure"]}"' in overdue
    assert 'data-field="names-unreadable"' not in text


def test_the_overview_links_to_the_requests(client):
    made, _, _ = client
    overview = made.get("/").text
    assert '<a href="/requests">Data-subject requests</a>' in overview


def test_a_request_shows_its_last_run_per_category_and_its_audit_records(client):
    made, ids, engine = client
    response = made.get(f"/requests/{ids['erasure']}", headers={"accept": "text/html"})
    assert response.status_code == 200
    page = response.text
    assert 'data-field="overdue">overdue<' in page
    assert "20 d late" in page
    assert f"<code>{LAST_RUN}</code>" in page
    assert "1 earlier run" in page and 'data-field="not-recorded"' not in page
    assert 'data-field="subjects">customer, email, phone' in page
    assert 'data-field="reference">DSR-2026-114<' in page
    # The last run's categories, in policy order; the first run's failed cdrs is not shown.
    names = re.findall(r'<tr data-policy="(\w+)"', page)
    assert names == [
        "cdrs",
        "customer_call_recordings",
        "lawful_intercept_traffic",
        "support_call_recordings",
        "web_analytics",
    ]
    assert "StoreError" not in page

    cdrs = _category(page, "cdrs")
    assert _cell(cdrs, "action") == "erase"
    assert _cell(cdrs, "status") == "erased"
    assert (_cell(cdrs, "records"), _cell(cdrs, "deleted"), _cell(cdrs, "active")) == (
        "12",
        "9",
        "0",
    )
    assert _cell(cdrs, "held") == "3 hold #7: 3"
    assert _cell(cdrs, "verified") == "passed 0 records remain"
    assert _cell(cdrs, "reasons") == "3 records kept under a hold (hold 7: 3)"
    # Holds in their number's order, an S3 bucket's Object Lock by its name.
    recordings = _category(page, "support_call_recordings")
    assert _cell(recordings, "held") == "4 hold #9: 1, hold #12: 1, Object Lock: 2"
    kept = _category(page, "lawful_intercept_traffic")
    assert (_cell(kept, "status"), _cell(kept, "kept_until")) == ("kept", "2027-05-01")
    assert _cell(kept, "verified") == "–"
    forwarded = _category(page, "customer_call_recordings")
    assert _cell(forwarded, "status") == "forwarded forward to 2 client organisations"
    assert _cell(forwarded, "records") == "5"

    # Each category links to its own audit record of that run, the request to its own.
    with engine.connect() as conn:
        trail = {
            (run_id, name): row_id
            for row_id, run_id, name in conn.execute(
                sa.text("SELECT id, run_id, policy FROM retention_audit")
            )
        }
    for name in names:
        row_id = trail[(f"{LAST_RUN}/{name}", name)]
        assert re.findall(r'data-evidence="(\d+)"', _category(page, name)) == [str(row_id)]
        evidence = made.get(f"/runs/{row_id}", headers={"accept": "text/html"})
        assert evidence.status_code == 200, name
        _assert_no_identifier(evidence.text, f"/runs/{row_id}")
    own = trail[(LAST_RUN, "*")]
    assert f'href="/runs/{own}" data-evidence="{own}"' in page.split("<table")[0]
    assert made.get(f"/runs/{own}", headers={"accept": "text/html"}).status_code == 200
    assert str(trail[(f"{FIRST_RUN}/cdrs", "cdrs")]) not in re.findall(
        r'data-evidence="(\d+)"', page
    )


def test_a_run_without_its_outcome_says_so_and_shows_the_archive(client):
    made, ids, _ = client
    page = made.get(f"/requests/{ids['access']}").text
    assert 'data-field="not-recorded"' in page  # its outcome is not in the register yet
    exported = _category(page, "cdrs")
    assert _cell(exported, "status") == "exported"
    assert f'<code data-field="archive">{ARCHIVE}</code>' in exported
    assert 'data-field="copy_objects">no: listed only<' in page
    never_run = made.get(f"/requests/{ids['restriction']}").text
    assert 'data-field="no-run"' in never_run
    assert "airflow dags trigger dsr_restriction" in never_run
    assert '<table id="categories">' not in never_run


def test_an_unknown_request_is_a_404_that_says_so(client):
    made, _, _ = client
    page = made.get("/requests/999", headers={"accept": "text/html"})
    assert page.status_code == 404
    assert 'data-field="error-title">Not found' in page.text
    assert "no data-subject request 999 in the register" in page.text
    assert made.get("/requests/999").json() == {
        "detail": "no data-subject request 999 in the register"
    }
    for bad in ("0", "abc", str(2**31)):
        response = made.get(f"/requests/{bad}")
        assert response.status_code == 422, bad
        assert response.json()["detail"].startswith("request_id: not a request number"), bad


def test_the_request_log_export(client):
    made, ids, engine = client
    response = made.get("/requests/export.csv")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        'attachment; filename="retention-requests-2026-12-10.csv"'
    )
    assert response.headers["cache-control"] == "no-store"
    assert response.text.splitlines()[0].split(",") == LOG_COLUMNS
    rows = _csv(response.text)
    none = {f"categories_{status}": "0" for status in CATEGORY_STATUSES}
    none |= {"categories_other": "0", "categories_missing": "0"}

    def completed(request_id: int) -> dict[str, str]:
        at = get_request(engine, request_id).completed_at
        return {
            "completed_at": at.isoformat(),
            "completed_at_local": at.astimezone(ZoneInfo("Europe/Amsterdam")).isoformat(),
        }

    base = {"timezone": "Europe/Amsterdam", "registered_by": "dpo", "client_instructed": "False"}
    nothing = {
        "last_run_id": "",
        "completed_at": "",
        "completed_at_local": "",
        "decided_at": "",
        "decided_at_local": "",
        "decided_by": "",
        "decision": "",
        "note": "",
    }
    assert rows == [
        base
        | none
        | nothing
        | completed(ids["erasure"])
        | {
            "id": str(ids["erasure"]),
            "kind": "erasure",
            "status": "needs_review",
            "overdue": "True",
            "received_at": "2026-10-20T08:30:00+00:00",
            "received_at_local": "2026-10-20T10:30:00+02:00",
            "due_at": "2026-11-20T08:30:00+00:00",
            "due_at_local": "2026-11-20T09:30:00+01:00",
            "reference": "DSR-2026-114",
            "runs": "2",
            "last_run_id": LAST_RUN,
            "categories_erased": "2",
            "categories_kept": "1",
            "categories_forwarded": "1",
            "categories_not_applicable": "1",
        },
        base
        | none
        | nothing
        | {
            "id": str(ids["access"]),
            "kind": "access",
            "status": "open",
            "overdue": "False",
            "received_at": "2026-12-05T09:00:00+00:00",
            "received_at_local": "2026-12-05T10:00:00+01:00",
            "due_at": "2027-01-05T09:00:00+00:00",
            "due_at_local": "2027-01-05T10:00:00+01:00",
            "reference": "'+31 desk",  # a text a spreadsheet would read as a formula
            "runs": "0",
        },
        base
        | none
        | completed(ids["portability"])
        | {
            "id": str(ids["portability"]),
            "kind": "portability",
            "status": "closed",
            "overdue": "False",
            "received_at": "2026-09-01T07:00:00+00:00",
            "received_at_local": "2026-09-01T09:00:00+02:00",
            "due_at": "2026-10-01T07:00:00+00:00",
            "due_at_local": "2026-10-01T09:00:00+02:00",
            "reference": "",
            "runs": "1",
            "last_run_id": PORTABILITY_RUN,
            "decided_at": "2026-09-20T12:00:00+00:00",
            "decided_at_local": "2026-09-20T14:00:00+02:00",
            "decided_by": "dpo",
            "decision": "granted",
            "note": "'=HYPERLINK(1) granted after review",
            "categories_exported": "1",
            "categories_not_applicable": "1",
        },
        base
        | none
        | nothing
        | {
            "id": str(ids["restriction"]),
            "kind": "restriction",
            "status": "open",
            "overdue": "False",
            "received_at": "2026-11-25T14:00:00+00:00",
            "received_at_local": "2026-11-25T15:00:00+01:00",
            "due_at": "2026-12-25T14:00:00+00:00",
            "due_at_local": "2026-12-25T15:00:00+01:00",
            "reference": "",
            "runs": "0",
        },
    ]
    excel = made.get("/requests/export-excel.csv")
    assert excel.status_code == 200
    assert excel.headers["content-disposition"].endswith('-2026-12-10-excel.csv"')
    assert excel.content.startswith(b"\xef\xbb\xbf")
    assert _csv(excel.text.removeprefix("\ufeff"), delimiter=";") == rows


def test_no_identifier_value_or_client_id_in_any_page_or_export(client):
    made, ids, engine = client
    with engine.connect() as conn:  # the register holds them (else this test proves nothing)
        stored = {value for (value,) in conn.execute(sa.select(request_subjects.c.value))}
        clients = [c for (c,) in conn.execute(sa.select(request_results.c.clients)) if c]
    assert stored == {"904217", "+31612345678", "jan.jansen@example.nl"}
    assert clients == [CLIENTS]
    paths = [
        "/",
        "/requests",
        "/requests/export.csv",
        "/requests/export-excel.csv",
        *(f"/requests/{n}" for n in ids.values()),
    ]
    with engine.connect() as conn:
        paths += [
            f"/runs/{row_id}"
            for (row_id,) in conn.execute(sa.text("SELECT id FROM retention_audit"))
        ]
    for path in paths:
        response = made.get(path, headers={"accept": "text/html"})
        assert response.status_code == 200, path
        _assert_no_identifier(response.text, path)


def test_no_request_is_an_empty_register_and_no_register_a_503(app_client):
    made = app_client([])
    page = made.get("/requests").text
    assert 'data-field="empty"' in page and "<table" not in page
    assert made.get("/requests/export.csv").text == ",".join(LOG_COLUMNS) + "\r\n"
    from lifecycle.ui import app as ui

    with ui.audit_engine().begin() as conn:
        conn.exec_driver_sql("DROP TABLE retention_requests")
    for path in ("/requests", "/requests/1", "/requests/export.csv"):
        response = made.get(path)
        assert response.status_code == 503, path
        assert "run `python -m lifecycle audit-init`" in response.json()["detail"], path


def test_only_the_latest_closed_requests_are_listed(client, monkeypatch):
    made, ids, engine = client
    decide_request(engine, ids["restriction"], decision="rejected", decided_by="dpo", now=NOW)
    monkeypatch.setattr(requests_pages, "CLOSED_SHOWN", 1)
    page = made.get("/requests").text
    _, closed = page.split('<details id="closed">')
    assert _rows(closed) == [ids["restriction"]]  # decided 10 December, the other in September
    assert "1 more in the request log's export" in closed
    assert "Closed (2)" in closed


# -- the audit UI's least-privileged role, on PostgreSQL and MariaDB -----------------------------


@pytest.fixture(params=["postgresql", "mariadb"])
def reader_role(request):
    """A database of its own, its tables and register filled as the owner, and a role with the
    audit UI's grants (lifecycle.grants.reader_grants) as `lifecycle grants --audit-reader`
    gives them. Yields the owner's and the role's engines, the role's name and how a GRANT names
    it; drops the database and the role at the end."""
    server = sa.make_url(
        request.getfixturevalue("postgres_url" if request.param == "postgresql" else "mariadb_url")
    )
    suffix, password = secrets.token_hex(4), secrets.token_hex(16)
    name = f"lifecycle_ui_requests_{suffix}"
    postgres = request.param == "postgresql"
    grantee = name if postgres else f"'{name}'@'%%'"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
        if postgres:
            conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        else:
            conn.exec_driver_sql(f"CREATE USER {grantee} IDENTIFIED BY '{password}'")
    owner = sa.create_engine(server.set(database=name))
    reader = sa.create_engine(server.set(database=name, username=name, password=password))
    try:
        ensure_schema(owner)
        yield owner, reader, name, grantee
    finally:
        reader.dispose()
        owner.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if postgres else "")
            )
            conn.exec_driver_sql(f"DROP {'ROLE' if postgres else 'USER'} IF EXISTS {grantee}")
        admin.dispose()


def test_the_least_privileged_reader_role_reads_the_register_without_identifiers(
    reader_role, monkeypatch
):
    from lifecycle.ui import app as ui

    owner, reader, role, grantee = reader_role
    ids = seed(owner, monkeypatch)
    (grants,) = reader_grants().values()
    with owner.begin() as conn:
        for statement in grant_statements(owner.dialect.name, role, grants):
            conn.exec_driver_sql(statement)
    # The role reads which identifiers a request has (their names), never their values.
    with pytest.raises(sa.exc.DBAPIError), reader.connect() as conn:
        conn.execute(sa.select(request_subjects.c.value))
    monkeypatch.setattr(ui, "_now", lambda: NOW)
    made = client_over(reader, monkeypatch)

    page = made.get("/requests")
    assert page.status_code == 200
    open_part = page.text.split('<details id="closed">')[0]
    assert _rows(open_part) == [ids["erasure"], ids["restriction"], ids["access"]]
    assert 'class="overdue"' in _row(page.text, ids["erasure"])
    assert _cell(_row(page.text, ids["erasure"]), "subjects") == "customer, email, phone"
    assert 'data-field="names-unreadable"' not in page.text
    detail = made.get(f"/requests/{ids['erasure']}")
    assert detail.status_code == 200
    assert _cell(_category(detail.text, "cdrs"), "held") == "3 hold #7: 3"
    assert "forward to 2 client organisations" in detail.text
    assert re.findall(r'data-evidence="(\d+)"', _category(detail.text, "cdrs"))
    log = _csv(made.get("/requests/export.csv").text)
    assert [row["id"] for row in log] == [str(n) for n in sorted(ids.values())]
    for response in (page, detail):
        _assert_no_identifier(response.text, str(response.url))

    # A role granted before the names' column was (an older `lifecycle grants`): the pages
    # still answer, the names shown as not readable.
    table = "retention_request_subjects"
    with owner.begin() as conn:
        conn.exec_driver_sql(f"REVOKE SELECT (request_id, subject) ON {table} FROM {grantee}")
    with pytest.raises(sa.exc.DBAPIError), reader.connect() as conn:
        conn.execute(sa.select(request_subjects.c.subject))
    page = made.get("/requests")
    assert page.status_code == 200
    assert 'data-field="names-unreadable"' in page.text
    assert _cell(_row(page.text, ids["erasure"]), "subjects") == "–"
    detail = made.get(f"/requests/{ids['erasure']}")
    assert detail.status_code == 200 and "not readable with this role's grants" in detail.text
    _assert_no_identifier(page.text, "/requests")


# -- in chromium, against the real api-server -----------------------------------------------------


@pytest.fixture(scope="module")
def live_requests(api_server, seeded_audit):
    """An overdue erasure and an open access request in the api-server's register, with the
    erasure's results per category (the register and its results only: the seeded trail, which
    test_audit_ui counts, stays as it is). The forwarded category's result is a sparse one (no
    counts but its records): the page must still answer."""
    from lifecycle.stores.sql import create_engine

    engine = create_engine(seeded_audit["url"])
    now = datetime.now(UTC)
    results = {
        "cdrs": steps.Outcome(
            status="erased",
            records=1_234,
            erasable=1_200,
            held=34,
            deleted=1_200,
            held_by_hold={"7": 30, "12": 4},
            verified=True,
            remaining=0,
            reasons=[
                "34 record(s) kept under a hold (hold 12: 4, hold 7: 30)",
                "12 record(s) kept: still active (a running contract, an open ticket)",
            ],
        ).result()
        | {"action": "erase"},
        "lawful_intercept_traffic": steps.Outcome(
            status="kept",
            records=56,
            kept_until="2027-05-01",
            reasons=[
                "ground legal obligation: kept until its own window ends",
                "56 records kept; the last goes by 2027-05-01 (its window)",
            ],
        ).result()
        | {"action": "keep"},
        "customer_call_recordings": {"action": "forward", "status": "forwarded", "records": 5},
    }
    made = []
    for kind, days in (("erasure", 45), ("access", 3)):
        request_id = register_request(
            engine,
            kind=kind,
            identifiers=SUBJECT,
            registered_by="dpo",
            received_at=now - timedelta(days=days),
        )
        with engine.begin() as conn:
            for name, result in results.items() if kind == "erasure" else ():
                conn.execute(
                    request_results.insert().values(
                        request_id=request_id,
                        run_id="manual__2026-11-30T09:00:00.123456+00:00",
                        policy=name,
                        status=result["status"],
                        result=result,
                        clients=CLIENTS if result["status"] == "forwarded" else None,
                        at=now,
                    )
                )
        made.append(request_id)
    engine.dispose()
    return made


def test_the_requests_pages_need_an_airflow_user_allowed_all_runs(api_server, live_requests):
    token = _token(api_server, USER, PASSWORD)
    narrow = _token(api_server, NARROW_USER, NARROW_PASSWORD)
    for path in (
        "/retention/requests",
        f"/retention/requests/{live_requests[0]}",
        "/retention/requests/export.csv",
        "/retention/requests/export-excel.csv",
    ):
        assert httpx.get(api_server["base"] + path).status_code == 401, path
        for bearer, status in ((narrow, 403), (token, 200)):
            response = httpx.get(
                api_server["base"] + path, headers={"Authorization": f"Bearer {bearer}"}
            )
            assert response.status_code == status, (path, response.status_code)
        response = httpx.post(
            api_server["base"] + path, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 405, path


def test_the_requests_pages_in_a_browser(api_server, live_requests):
    import shutil

    from playwright.sync_api import sync_playwright

    overdue, current = live_requests
    width = "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed (.ci/run installs it)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            log_in(page, api_server["base"])
            page.goto(api_server["base"] + "/retention/")
            page.get_by_role("link", name="Data-subject requests").click()
            page.wait_for_url("**/retention/requests")
            row = page.locator(f"tr[data-request='{overdue}']")
            assert row.get_attribute("class") == "overdue"
            badge = row.locator("[data-field='overdue']")
            assert badge.inner_text() == "overdue"
            # Marked by the word, on a red badge that shows (white on no colour would not).
            assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(198, 40, 40)"
            assert page.locator(f"tr[data-request='{current}'] [data-field='overdue']").count() == 0
            assert page.evaluate(width) <= 1280
            _shot(page, "requests")
            row.get_by_role("link", name=str(overdue)).click()
            page.wait_for_url(f"**/retention/requests/{overdue}")
            forwarded = page.locator("tr[data-policy='customer_call_recordings']")
            assert forwarded.locator("[data-field='forward']").inner_text() == (
                "forward to 2 client organisations"
            )
            assert page.evaluate(width) <= 1280
            text = page.content()
            _assert_no_identifier(text, "request page")
            _shot(page, "request")
        finally:
            browser.close()
