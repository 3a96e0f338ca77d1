"""The compliance report from the audit pages (issue 16): the same report as the CLI's, for a
chosen period, as a PDF to download or a page; bad bounds are a 422 naming the problem."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from pypdf import PdfReader

from tests.ui.conftest import audit_row, policy

IN_Q3 = datetime(2026, 8, 14, 22, tzinfo=UTC)  # 15 August in Amsterdam
AFTER_Q3 = datetime(2026, 9, 30, 22, tzinfo=UTC)  # 1 October in Amsterdam: not in Q3


def _trail() -> list[dict]:
    cdrs = policy("cdrs")
    return [
        audit_row(cdrs, IN_Q3, deleted=1234, run_id="q3"),
        audit_row(cdrs, AFTER_Q3, deleted=7777, run_id="october"),
    ]


def test_the_report_of_a_quarter_downloads_as_a_pdf_with_its_figures(app_client):
    client = app_client(_trail())
    response = client.get("/report.pdf", params={"start": "2026-07-01", "end": "2026-09-30"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == (
        'attachment; filename="retention-report-2026-07-01-2026-09-30.pdf"'
    )
    text = " ".join(
        " ".join(page.extract_text().split())
        for page in PdfReader(io.BytesIO(response.content)).pages
    )
    assert "cdrs" in text and "1,234" in text
    assert "7,777" not in text  # 1 October, local time: the next quarter


def test_the_report_as_a_page_and_its_form(app_client):
    client = app_client(_trail())
    page = client.get("/report.html", params={"start": "2026-07-01", "end": "2026-09-30"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "1,234" in page.text and "7,777" not in page.text
    overview = client.get("/").text
    assert 'action="/report.pdf"' in overview and 'formaction="/report.html"' in overview


def test_bounds_that_make_no_period_are_refused(app_client):
    client = app_client(_trail())
    backwards = client.get("/report.pdf", params={"start": "2026-09-30", "end": "2026-07-01"})
    assert backwards.status_code == 422 and backwards.json()["detail"] == "end is before start"
    missing = client.get("/report.pdf", params={"start": "2026-07-01"})
    assert missing.status_code == 422
    garbage = client.get("/report.html", params={"start": "0", "end": "2026-07-01"})
    assert garbage.status_code == 422
