"""Times in each policy's zone (issue 16, "Time"): the 29 November run of an Amsterdam policy is
the run of the 29th on every page and in the export, whose day filter is local too.

In process, over SQLite: the app's own routes, Airflow's login overridden (tests/ui/conftest)."""

from __future__ import annotations

import csv
import io
import shutil
from datetime import UTC, datetime

from tests.ui.conftest import PROJECT, audit_row, policy

# Airflow's logical date of the 29 November 00:00 run in Europe/Amsterdam (CET, UTC+1).
AMSTERDAM_29 = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
# P6M back from 29 November 00:00 local: 29 May 00:00 CEST (UTC+2).
CUTOFF = datetime(2026, 5, 28, 22, 0, tzinfo=UTC)
# The 28th's run, a day earlier.
AMSTERDAM_28 = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)


def _trail() -> list[dict]:
    cdrs = policy("cdrs")
    return [
        audit_row(cdrs, AMSTERDAM_28, cutoff=CUTOFF.replace(day=27), run_id="scheduled__28"),
        audit_row(cdrs, AMSTERDAM_29, cutoff=CUTOFF, run_id="scheduled__29"),
    ]


def _csv(text: str, delimiter: str = ",") -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


def test_pages_show_the_policy_s_local_time_with_the_zone_and_utc_on_hover(app_client):
    client = app_client(_trail())
    page = client.get("/policies/cdrs").text
    assert (
        '<time class="nowrap" datetime="2026-05-28T22:00:00+00:00" '
        'title="2026-05-28 22:00 UTC">2026-05-29 00:00 CEST</time>'
    ) in page
    assert 'title="2026-11-28 23:00 UTC"' in page and ">2026-11-29 00:00 CET</a>" in page
    assert "2026-11-28 23:00 CET" not in page and "(UTC)" not in page
    assert 'data-field="timezone">Europe/Amsterdam' in page

    evidence = client.get("/runs/2").text
    assert 'run of <span data-field="run-day">2026-11-29</span>' in evidence
    assert ">2026-11-29 00:00 CET</" in evidence and "2026-11-28 23:00 UTC" in evidence

    overview = client.get("/").text
    assert ">2026-11-29 00:00 CET</a>" in overview
    assert ">2026-05-29 00:00 CEST</time>" in overview


def test_a_policy_in_another_zone_reads_in_its_own(app_client, tmp_path):
    folder = tmp_path / "policies"
    shutil.copytree(PROJECT / "include/policies", folder)
    text = (folder / "cdrs.yaml").read_text(encoding="utf-8")
    (folder / "cdrs.yaml").write_text(text + "timezone: America/New_York\n", encoding="utf-8")
    client = app_client(_trail(), policy_dir=folder)
    page = client.get("/policies/cdrs").text
    assert ">2026-11-28 18:00 EST</a>" in page  # 23:00 UTC is 18:00 in New York
    assert 'data-field="timezone">America/New_York' in page
    (_, last) = _csv(client.get("/export.csv", params={"policy": "cdrs"}).text)
    assert (last["timezone"], last["logical_date_local"]) == (
        "America/New_York",
        "2026-11-28T18:00:00-05:00",
    )


def test_the_export_has_local_columns_beside_the_utc_ones(app_client):
    client = app_client(_trail())
    response = client.get("/export.csv", params={"policy": "cdrs"})
    header = response.text.splitlines()[0].split(",")
    at = header.index("logical_date")
    assert header[at - 1 : at + 4] == [
        "timezone",
        "logical_date",
        "logical_date_local",
        "cutoff",
        "cutoff_local",
    ]
    (_, last) = _csv(response.text)
    assert last["logical_date"] == "2026-11-28T23:00:00+00:00"
    assert last["logical_date_local"] == "2026-11-29T00:00:00+01:00"
    assert last["cutoff_local"] == "2026-05-29T00:00:00+02:00"
    assert last["oldest_expired_local"].endswith("+02:00")  # in May: summer time
    (_, record) = client.get("/export.json", params={"policy": "cdrs"}).json()
    assert (record["timezone"], record["logical_date_local"]) == (
        "Europe/Amsterdam",
        "2026-11-29T00:00:00+01:00",
    )


def test_the_export_filters_on_the_policy_s_local_days(app_client):
    client = app_client(_trail())

    def run_ids(path: str = "/export.csv", **params: str) -> list[str]:
        return [row["run_id"] for row in _csv(client.get(path, params=params).text)]

    # The UTC filter missed the 29th's run (it starts at 23:00 UTC on the 28th).
    assert run_ids(policy="cdrs", start="2026-11-29", end="2026-11-29") == ["scheduled__29"]
    assert run_ids(policy="cdrs", start="2026-11-28", end="2026-11-28") == ["scheduled__28"]
    # All policies: Amsterdam's days unless `tz` says otherwise.
    assert run_ids(start="2026-11-29", end="2026-11-29") == ["scheduled__29"]
    assert run_ids(start="2026-11-28", end="2026-11-28", tz="UTC") == ["scheduled__29"]
    assert run_ids(start="2026-11-27", end="2026-11-28", tz="UTC") == [
        "scheduled__28",
        "scheduled__29",
    ]
    # In Tokyo the 29th's run is at 08:00 on the 29th: past a filter ending on the 28th.
    assert run_ids(policy="cdrs", end="2026-11-28", tz="Asia/Tokyo") == ["scheduled__28"]
    empty = client.get("/export.csv", params={"start": "", "end": "", "tz": ""})
    assert len(_csv(empty.text)) == 2


def test_a_timezone_that_is_not_one_is_a_422_naming_tz(app_client):
    client = app_client(_trail())
    for zone in ("Mars/Olympus", "localtime", "../etc/passwd", "Europe/Amsterdam\x00", "x" * 500):
        response = client.get("/export.csv", params={"tz": zone})
        assert response.status_code == 422, zone
        assert response.json() == {
            "detail": "tz: not an IANA timezone (example: Europe/Amsterdam); "
            "leave it empty for the policy's"
        }
