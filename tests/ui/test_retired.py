"""Retired policies (issue 16): runs in the trail, no policy file any more. They keep a section of
the overview and a page with their history; a browser that asks for what is not there gets an
HTML page, a program its JSON.

In process, over SQLite: the app's own routes, Airflow's login overridden (tests/ui/conftest)."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta

from tests.ui.conftest import PROJECT, audit_row, policy, retired_policy

DAY = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 1 November 00:00 in Amsterdam
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def _trail() -> list[dict]:
    cdrs = policy("cdrs")
    gone = retired_policy([cdrs])
    return [
        audit_row(cdrs, DAY, run_id="cdrs_1"),
        *(
            audit_row(gone, DAY - timedelta(days=back), run_id=f"gone_{back}", deleted=back)
            for back in (2, 1, 0)
        ),
    ]


def test_a_retired_policy_has_its_own_overview_section(app_client):
    page = app_client(_trail()).get("/").text
    main = page.split('id="overview"')[1].split("</table>")[0]
    assert "fax_archive" not in main
    section = page.split('id="retired-policies"')[1].split("</table>")[0]
    assert re.findall(r'data-retired="([a-z_]+)"', section) == ["fax_archive"]
    assert 'href="/policies/fax_archive"' in section and "Fax archive" in section
    assert 'data-field="deleted">0<' in section  # its last run: 0 days back, 0 deleted
    assert ">2026-11-01 00:00 CET</time>" in section
    assert "Retired policies (1)" in page
    assert '<option value="fax_archive">fax_archive (retired)</option>' in page


def test_a_retired_policy_s_page_shows_its_runs_and_says_retired(app_client):
    client = app_client(_trail())
    response = client.get("/policies/fax_archive", headers=BROWSER)
    assert response.status_code == 200
    page = response.text
    assert '<span class="badge retired" data-field="state">retired</span>' in page
    assert "No policy file describes <code>fax_archive</code> any more" in page
    assert re.findall(r'<tr data-run="(\d+)"', page) == ["4", "3", "2"]  # newest first
    assert "Runs (3)" in page and "<code>P6M</code>" in page
    for chart in ("deletions", "age"):
        svg = client.get(f"/charts/fax_archive/{chart}.svg")
        assert (svg.status_code, svg.headers["content-type"]) == (200, "image/svg+xml"), chart
    evidence = client.get("/runs/4").text
    assert 'data-field="retired-note"' in evidence
    assert 'data-field="retired-note"' not in client.get("/runs/1").text


def test_a_policy_whose_file_is_invalid_is_not_called_retired(app_client, tmp_path):
    folder = tmp_path / "policies"
    shutil.copytree(PROJECT / "include/policies", folder)
    (folder / "cdrs.yaml").write_text("name: cdrs\n", encoding="utf-8")
    client = app_client(_trail(), policy_dir=folder)
    section = client.get("/").text.split('id="retired-policies"')[1].split("</table>")[0]
    assert re.findall(r'data-retired="([a-z_]+)"', section) == ["cdrs", "fax_archive"]
    assert "its file cdrs.yaml is invalid" in section
    page = client.get("/policies/cdrs").text
    assert '<span class="badge failed" data-field="state">file invalid</span>' in page
    assert 'data-field="state">retired' not in page


def test_a_browser_gets_error_pages_a_program_json(app_client):
    client = app_client(_trail())
    for path, status, detail in (
        ("/policies/never_was", 404, "no policy named &#39;never_was&#39;, and no run"),
        ("/policies/cdrs?page=2", 404, "no page 2 of the runs of cdrs: it has 1"),
        ("/runs/99", 404, "no audit record 99"),
        ("/runs/0", 422, "row_id: not an audit record id"),
        ("/policies/cdrs?page=0", 422, "page: not a page number"),
        ("/export.csv?start=yesterday", 422, "start: not a date"),
        ("/nothing/here", 404, "Not Found"),
    ):
        page = client.get(path, headers=BROWSER)
        assert page.status_code == status, path
        assert page.headers["content-type"] == "text/html; charset=utf-8", path
        assert page.text.startswith("<!doctype html>"), path
        assert detail in page.text, path
        assert 'href="/">Back to the overview</a>' in page.text
        assert page.headers["cache-control"] == "no-store"
        program = client.get(path)  # httpx sends Accept: */*
        assert program.status_code == status, path
        assert program.headers["content-type"] == "application/json", path
        assert set(program.json()) == {"detail"}, path
    titles = {
        "/policies/never_was": "Not found",
        "/runs/0": "Not a valid request",
    }
    for path, title in titles.items():
        text = client.get(path, headers=BROWSER).text
        assert f'data-field="error-title">{title} <span class="muted">(' in text, path
    # A chart's <img> asks for images: it never gets an HTML page.
    image = client.get("/charts/never_was/age.svg", headers={"Accept": "image/avif,image/*"})
    assert (image.status_code, image.headers["content-type"]) == (404, "application/json")
