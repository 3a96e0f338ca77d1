"""The forecast on the pages, in process: the overview's narrow "Due in" cell per policy (the
counts of its last run, shortest horizon first), an S3 policy's data versions, a run before the
forecast told apart; the policy page's figures and its chart."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.ui.conftest import audit_row, policy

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DUE = {"90": 123456, "7": 12, "30": 1234}


def _cell(html: str, name: str, field: str = "due") -> str:
    row = html.split(f'data-policy="{name}"')[1].split("</tr>")[0]
    return row.split(f'data-field="{field}">')[1].split("</td>")[0]


def _text(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment).split())


def test_the_overview_shows_each_policys_due_records_or_why_not(app_client):
    cdrs, recordings, tickets = (
        policy(n) for n in ("cdrs", "customer_call_recordings", "support_tickets")
    )
    client = app_client(
        [
            audit_row(cdrs, TODAY - timedelta(days=1), due={"7": 1, "30": 2, "90": 3}),
            audit_row(cdrs, TODAY, due=DUE),  # the last run's counts are shown
            audit_row(recordings, TODAY, due={"7": 0, "30": 5, "90": 17}),  # S3: versions
            audit_row(tickets, TODAY, due=None),  # a run written before the forecast
        ]
    )
    html = client.get("/").text

    assert _text(_cell(html, "cdrs")) == "7 d 12 30 d 1,234 90 d 123,456"
    assert [m for m in re.findall(r'data-due="(\w+)"', _cell(html, "cdrs"))] == ["7", "30", "90"]
    assert _text(_cell(html, "customer_call_recordings")) == "7 d 0 30 d 5 90 d 17"
    assert _text(_cell(html, "support_tickets")) == "not counted by its last run"
    # A policy without a run: the cell is there (the columns line up), empty.
    assert _text(html.split('data-policy="internet_lines"')[1].split("</tr>")[0]).count("–") >= 5
    assert "Due in" in html and "(for objects: data versions)" in _text(
        html.split('data-field="due-legend">')[1].split("</span>")[0]
    )


def test_the_policy_page_gives_the_figures_and_charts_them(app_client):
    cdrs = policy("cdrs")
    client = app_client(
        [
            audit_row(cdrs, TODAY - timedelta(days=2), due=None),  # before the forecast: left out
            audit_row(cdrs, TODAY - timedelta(days=1), due={"7": 5, "30": 50, "90": 500}),
            audit_row(cdrs, TODAY, due=DUE),
        ]
    )
    page = client.get("/policies/cdrs").text
    figures = _text(page.split('data-field="due">')[1].split("</dd>")[0])
    assert figures.startswith("12 within 7 d · 1,234 within 30 d · 123,456 within 90 d")
    assert 'src="/charts/cdrs/due.svg"' in page

    response = client.get("/charts/cdrs/due.svg")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    svg = response.text
    assert "Records due to expire" in svg
    for horizon in ("within 7 d", "within 30 d", "within 90 d"):
        assert horizon in svg
    # Two of the three runs counted a forecast: three lines (one a horizon), two points each.
    assert svg.count('aria-roledescription="line mark"') == 3
    assert svg.count('aria-roledescription="point"') == 6


def test_an_object_store_policy_charts_its_forecast_and_an_older_run_says_why_not(app_client):
    recordings = policy("customer_call_recordings")
    client = app_client([audit_row(recordings, TODAY, due={"7": 1, "30": 2, "90": 3})])
    page = client.get("/policies/customer_call_recordings").text
    assert _text(page.split('data-field="due">')[1].split("</dd>")[0]).startswith(
        "1 within 7 d · 2 within 30 d · 3 within 90 d"
    )
    older = app_client([audit_row(recordings, TODAY, due=None)])
    page = older.get("/policies/customer_call_recordings").text
    assert "not counted by its last run" in page.split('data-field="due">')[1].split("</dd>")[0]
    no_forecast = app_client([audit_row(policy("cdrs"), TODAY, due=None)])
    assert "not counted by any run yet" in no_forecast.get("/charts/cdrs/due.svg").text


def test_over_400_runs_the_forecast_is_charted_a_week_a_point(app_client):
    cdrs = policy("cdrs")
    first = TODAY - timedelta(days=419)
    rows = [
        audit_row(cdrs, first + timedelta(days=n), due={"7": n, "30": 2 * n, "90": 3 * n})
        for n in range(420)
    ]
    svg = app_client(rows).get("/charts/cdrs/due.svg").text
    assert "highest of each week" in svg
    assert 3 * 60 <= svg.count('aria-roledescription="point"') <= 3 * 62


def test_the_evidence_page_gives_the_runs_forecast(app_client):
    cdrs, recordings = policy("cdrs"), policy("customer_call_recordings")
    client = app_client(
        [
            audit_row(cdrs, TODAY, due=DUE),
            audit_row(cdrs, TODAY - timedelta(days=1), due=None),
            audit_row(recordings, TODAY, due=None),  # an S3 run before S3 counted a forecast
        ]
    )

    def due(row_id: int) -> str:
        page = client.get(f"/runs/{row_id}").text
        return _text(page.split('data-field="due">')[1].split("</dd>")[0])

    assert due(1).startswith("12 within 7 d · 1,234 within 30 d · 123,456 within 90 d")
    assert due(2) == "not counted by this run"
    assert due(3) == "not counted by this run"
