"""The audit pages in a real browser: Debian's chromium driven by Playwright, against a real
`airflow api-server` with login on. Screenshots go to test-artifacts/."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import timedelta

import httpx
import pytest

from tests.ui.auth import NARROW_DAG, NARROW_USER
from tests.ui.conftest import (
    NARROW_PASSWORD,
    NO_RUN_YET,
    PASSWORD,
    PROJECT,
    RETIRED,
    USER,
    log_in,
)

ARTIFACTS = PROJECT / "test-artifacts"
# As root, in a closed network: no sandbox, no background connections to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ATTENTION = {"support_tickets", "contact_forms", "voip_ip_log", *NO_RUN_YET}
PAGES = [
    "/retention/",
    "/retention/policies/cdrs",
    "/retention/runs/1",
    "/retention/charts/overview.svg",
    "/retention/charts/cdrs/deletions.svg",
    "/retention/export.csv",
    "/retention/export.json?policy=cdrs",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed (.ci/run installs it)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, api_server):
    """A browser session logged in through Airflow's own login page."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    log_in(page, api_server["base"])
    yield page
    context.close()


def _token(api_server, user: str, password: str) -> str:
    response = httpx.post(
        api_server["base"] + "/auth/token", json={"username": user, "password": password}
    )
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def token(api_server) -> str:
    return _token(api_server, USER, PASSWORD)


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"ui-{name}.png", full_page=True)


def _latest(runs: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for run in runs:  # oldest first
        latest[run["policy"]] = run
    return latest


def test_every_page_and_endpoint_requires_an_airflow_user(api_server, token):
    for path in PAGES:
        anonymous = httpx.get(api_server["base"] + path)
        assert anonymous.status_code == 401, (path, anonymous.status_code)
        forged = httpx.get(
            api_server["base"] + path, headers={"Authorization": "Bearer not-a-real-token"}
        )
        assert forged.status_code in (401, 403), (path, forged.status_code)
        signed_in = httpx.get(
            api_server["base"] + path, headers={"Authorization": f"Bearer {token}"}
        )
        assert signed_in.status_code == 200, (path, signed_in.status_code)


def test_a_user_allowed_one_dag_reads_no_audit_page(api_server):
    # Per-DAG permissions (FAB, Keycloak): the trail covers every policy, so reading it needs
    # read access to all DAG runs; naming the one allowed DAG in the query does not help.
    headers = {"Authorization": f"Bearer {_token(api_server, NARROW_USER, NARROW_PASSWORD)}"}
    # 403, not 401: the user signed in (a token was issued), and may not read the trail.
    for path in PAGES:
        for query in ("", f"{'&' if '?' in path else '?'}dag_id={NARROW_DAG}"):
            response = httpx.get(api_server["base"] + path + query, headers=headers)
            assert response.status_code == 403, (path + query, response.status_code)


def test_the_pages_are_read_only(api_server, token):
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/retention/", "/retention/runs/1", "/retention/export.csv"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = httpx.request(method, api_server["base"] + path, headers=headers)
            assert response.status_code == 405, (method, path, response.status_code)


def test_overview_lists_every_policy_with_the_audit_numbers(page, api_server, seeded_audit):
    page.goto(api_server["base"] + "/retention/")
    rows = page.locator("tr[data-policy]")
    names = rows.evaluate_all("rows => rows.map(row => row.dataset.policy)")
    assert sorted(names) == sorted(p.name for p in seeded_audit["policies"])
    latest = _latest(seeded_audit["runs"])
    for policy in seeded_audit["policies"]:
        row = page.locator(f"tr[data-policy='{policy.name}']")
        cells = {
            field: row.locator(f"[data-field='{field}']").inner_text().strip()
            for field in ("last_run", "expired", "held", "deleted")
            if policy.name not in NO_RUN_YET
        }
        if policy.name in NO_RUN_YET:
            assert "no run" in row.locator("[data-field='last_run']").inner_text()
        else:
            run = latest[policy.name]
            assert cells["expired"] == f"{run['expired']:,}"
            assert cells["held"] == f"{run['held']:,}"
            assert cells["deleted"] == f"{run['deleted']:,}"
            assert run["status"].replace("_", " ") in cells["last_run"]
            link = row.locator("[data-field='last_run'] a").get_attribute("href")
            assert link.startswith(f"/dags/retention_{policy.name}/runs/scheduled__")
        stands_out = "attention" in (row.get_attribute("class") or "")
        assert stands_out == (policy.name in ATTENTION), policy.name
    reasons = page.locator("tr[data-policy='contact_forms'] .reasons").inner_text()
    assert "verification failed" in reasons
    assert page.locator("tr[data-policy='voip_ip_log'] [data-field='remaining']").inner_text()
    assert (
        "past"
        in page.locator("tr[data-policy='contact_forms'] [data-field='remaining']").inner_text()
    )
    assert "within" in page.locator("tr[data-policy='cdrs'] [data-field='remaining']").inner_text()
    chart = page.locator("img[src$='charts/overview.svg']")
    assert chart.evaluate("img => img.complete && img.naturalWidth > 100")
    _shot(page, "overview")


def test_a_retired_policy_keeps_its_history_and_errors_are_pages(page, api_server):
    page.goto(api_server["base"] + "/retention/")
    assert page.locator("tr[data-policy='fax_archive']").count() == 0
    row = page.locator(f"#retired-policies tr[data-retired='{RETIRED}']")
    row.get_by_role("link", name=RETIRED).click()
    page.wait_for_url(f"**/retention/policies/{RETIRED}")
    assert page.locator("[data-field='state']").inner_text() == "retired"
    assert page.locator("tr[data-run]").count() == 3
    _shot(page, "retired-policy")
    response = page.goto(api_server["base"] + "/retention/policies/never_was")
    assert response.status == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert page.locator("[data-field='error-title']").inner_text() == "Not found (404)"
    assert "no policy named 'never_was'" in page.locator("[data-field='error-detail']").inner_text()
    _shot(page, "error-404")


def test_the_pages_fit_1280_px(page, api_server, seeded_audit):
    """Airflow's frame cut the 1,427 px overview at 1,400: the overview, a policy's page, an
    evidence page, a retired policy's page and the compliance report must fit 1,280 px without a
    horizontal scroll bar."""
    width = "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
    evidence = _latest(seeded_audit["runs"])["contact_forms"]["id"]
    page.set_viewport_size({"width": 1280, "height": 900})
    widths = {}
    try:
        for name, path in (
            ("overview", "/retention/"),
            ("policy", "/retention/policies/customer_call_recordings"),
            ("evidence", f"/retention/runs/{evidence}"),
            ("retired", f"/retention/policies/{RETIRED}"),
            ("report", "/retention/report.html?start=2020-01-01&end=2030-12-31"),
        ):
            page.goto(api_server["base"] + path)
            page.wait_for_load_state("load")  # the charts, whose width counts too
            widths[name] = page.evaluate(width)
            _shot(page, f"{name}-1280")
        table = page.goto(api_server["base"] + "/retention/") and page.evaluate(
            "() => document.getElementById('overview').getBoundingClientRect().right"
        )
    finally:
        page.set_viewport_size({"width": 1600, "height": 1000})
    assert all(w <= 1280 for w in widths.values()), widths
    assert table <= 1280 - 24  # the table inside the page's padding, not cut by it


def test_the_dashboard_is_in_airflow_navigation(page, api_server):
    page.goto(api_server["base"] + "/")
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Retention audit").click()
    page.wait_for_url("**/plugin/retention")
    frame = page.frame_locator("iframe")
    frame.locator("tr[data-policy='cdrs']").wait_for()
    assert frame.locator("tr[data-policy='cdrs']").count() == 1
    page.wait_for_timeout(500)  # the chart image inside the frame
    _shot(page, "in-airflow")


def test_evidence_page_shows_the_record_and_the_validation_result(page, api_server, seeded_audit):
    run = _latest(seeded_audit["runs"])["contact_forms"]
    page.goto(api_server["base"] + "/retention/")
    page.locator("tr[data-policy='contact_forms']").get_by_role("link", name="evidence").click()
    page.wait_for_url(f"**/retention/runs/{run['id']}")
    record = page.locator("#record")
    assert record.locator("[data-field='expired']").inner_text() == f"{run['expired']:,}"
    assert record.locator("[data-field='held']").inner_text() == f"{run['held']:,}"
    assert "failed" in record.locator("[data-field='verified']").inner_text()
    assert "4 unheld records past the cutoff remain" in record.inner_text()
    assert "expect_table_row_count_to_equal" in page.locator("#validation").inner_text()
    # The seeded run is not in this Airflow: no dead link, the evidence stands on its own.
    assert "no longer in Airflow" in page.locator("[data-field='airflow-run']").inner_text()
    assert '"observed_value": 4' in page.locator("#validation-json").inner_text()
    _shot(page, "evidence")


def test_policy_page_charts_the_runs(page, api_server, seeded_audit):
    page.goto(api_server["base"] + "/retention/policies/cdrs")
    runs = [r for r in seeded_audit["runs"] if r["policy"] == "cdrs"]
    assert page.locator("h2", has_text=f"Runs ({len(runs)})").count() == 1
    for chart in ("deletions", "age", "held"):
        image = page.locator(f"img[src$='/charts/cdrs/{chart}.svg']")
        assert image.evaluate("img => img.complete && img.naturalWidth > 300"), chart
    # Local time with its zone named; UTC on hover. The seeded runs are at 00:00 UTC.
    cutoff = page.locator("tbody tr").first.locator("time").first
    assert cutoff.get_attribute("title").endswith(" 00:00 UTC")
    assert cutoff.inner_text().endswith((" 01:00 CET", " 02:00 CEST"))
    excel = page.get_by_role("link", name="CSV for Excel (;)")
    assert excel.get_attribute("href") == "/retention/export-excel.csv?policy=cdrs"
    _shot(page, "policy")


def test_export_is_the_audit_trail_filtered_by_policy_and_time(page, api_server, seeded_audit):
    today = seeded_audit["today"]
    start = today - timedelta(days=1)
    query = f"policy=cdrs&start={start}&end={today}"
    expected = [
        r
        for r in seeded_audit["runs"]
        if r["policy"] == "cdrs" and r["logical_date"].date() >= start
    ]
    assert len(expected) == 2
    response = page.request.get(f"{api_server['base']}/retention/export.csv?{query}")
    assert response.status == 200
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert [int(r["id"]) for r in rows] == [r["id"] for r in expected]
    assert [int(r["deleted"]) for r in rows] == [r["deleted"] for r in expected]
    assert json.loads(rows[0]["holds"]) == expected[0]["holds"] == {"7": 3}
    everything = page.request.get(f"{api_server['base']}/retention/export.json").json()
    assert len(everything) == len(seeded_audit["runs"])
    assert {r["policy"] for r in everything} == {r["policy"] for r in seeded_audit["runs"]}
    one_day = page.request.get(
        f"{api_server['base']}/retention/export.json?start={today}&end={today}"
    ).json()
    assert {r["logical_date"][:10] for r in one_day} == {str(today)}
    bad = page.request.get(f"{api_server['base']}/retention/export.json?start=yesterday")
    assert bad.status == 422


def test_odd_parameters_are_a_422_from_the_real_server(api_server, token):
    # Through uvicorn and Airflow's mount: a CR/LF or a non-Latin-1 character that reached the
    # Content-Disposition header dropped the connection; a year 9999 end overflowed into a 500.
    headers = {"Authorization": f"Bearer {token}"}
    for path in (
        "/retention/export.csv?policy=../../x",
        "/retention/export.csv?policy=cdrs%0D%0AX-Evil:%201",
        "/retention/export.json?policy=%E6%97%A5",
        "/retention/export.csv?policy=" + "a" * 10_000,
        "/retention/export.json?policy=cdrs%00",
        "/retention/export.csv?start=0001-01-01",
        "/retention/export.csv?end=9999-12-31",
        "/retention/export.json?end=9999-12-31T23:59:59-14:00",
        "/retention/export.json?start=99999-01-01",
        "/retention/export.csv?start=2026-13-01",
        "/retention/policies/cdrs%00",
        # (A line break in the path never reaches the app: Airflow's mount answers 404.)
        "/retention/charts/cdrs%1B%5B2K/age.svg",
        "/retention/runs/-1",
        "/retention/runs/99999999999999999999",
    ):
        response = httpx.get(api_server["base"] + path, headers=headers)
        assert response.status_code == 422, (path[:80], response.status_code)
        assert response.json()["detail"].split(":")[0] in (
            "policy",
            "name",
            "start",
            "end",
            "row_id",
        )
    # The overview's export form, left empty: everything, under a plain file name.
    response = httpx.get(
        api_server["base"] + "/retention/export.csv?policy=&start=&end=", headers=headers
    )
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        'attachment; filename="retention-audit-all-begin-today.csv"'
    )
