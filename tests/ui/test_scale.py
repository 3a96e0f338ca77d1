"""Three years of daily runs for every policy (about 15,000 audit rows, tests/ui/scale.py) on
SQLite, PostgreSQL and MariaDB: the overview, a policy's paginated runs and the export still
answer, and answer right. How fast is benchmarks/ui_pages.py's to say (no timed assertion here).

Each server gets a database of its own (`lifecycle_ui_scale`): the shared `test` database's
audit table belongs to the other tests."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from lifecycle.control import metadata
from lifecycle.loader import load_policies
from lifecycle.stores.sql import create_engine
from tests.ui.conftest import PROJECT, client_over, policy
from tests.ui.scale import DAYS, LAST_DAY, scale_row, seed

DATABASE = "lifecycle_ui_scale"
POLICIES = 15  # include/policies: the statement's fourteen rows and the requests' archives


def _own_database(url: str) -> sa.URL:
    """`url` with a database of this test's own, created on the server if missing."""
    server = sa.make_url(url)
    engine = create_engine(server)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if server.get_backend_name() == "postgresql":
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": DATABASE}
            )
            if not exists:
                conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
        else:
            conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {DATABASE}"))
    engine.dispose()
    return server.set(database=DATABASE)


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def scale_engine(request, tmp_path_factory):
    if request.param == "sqlite":
        url = sa.make_url(f"sqlite:///{tmp_path_factory.mktemp('scale') / 'audit.db'}")
    else:
        fixture = {"postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param]
        url = _own_database(request.getfixturevalue(fixture))
    engine = create_engine(url)
    metadata.drop_all(engine)  # a run interrupted before its teardown
    rows = seed(engine)
    assert rows == POLICIES * DAYS
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def client(scale_engine, monkeypatch):
    return client_over(scale_engine, monkeypatch)


def test_the_overview_shows_each_policy_s_last_run(client):
    page = client.get("/")
    assert page.status_code == 200
    rows = re.findall(r'<tr id="(\w+)" data-policy="\1"', page.text)
    assert len(rows) == POLICIES
    for name in rows:
        last = scale_row(policy(name), LAST_DAY, DAYS - 1)
        row = page.text.split(f'data-policy="{name}"')[1].split("</tr>")[0]
        assert ">2026-11-29 00:00 CET</a>" in row, name
        assert f'data-field="expired">{last["expired"]:,}<' in row, name
        assert f'data-field="deleted">{last["deleted"]:,}<' in row, name
    assert "Retired policies" not in page.text


def test_a_policy_page_pages_three_years_of_runs(client):
    first = client.get("/policies/cdrs")
    assert first.status_code == 200
    assert "Runs (1,096)" in first.text
    assert "page 1 of 11 (newest first)" in first.text
    assert '<a rel="next" href="?page=2#runs">' in first.text and 'rel="prev"' not in first.text
    ids_1 = [int(i) for i in re.findall(r'<tr data-run="(\d+)"', first.text)]
    assert len(ids_1) == 100
    days = re.findall(r">(\d{4}-\d\d-\d\d) 00:00 CES?T</a>", first.text)
    assert days[0] == str(LAST_DAY) and days[99] == str(LAST_DAY - timedelta(days=99))
    second = client.get("/policies/cdrs", params={"page": 2}).text
    ids_2 = [int(i) for i in re.findall(r'<tr data-run="(\d+)"', second)]
    assert len(ids_2) == 100 and not set(ids_1) & set(ids_2)
    assert re.findall(r">(\d{4}-\d\d-\d\d) 00:00 CES?T</a>", second)[0] == str(
        LAST_DAY - timedelta(days=100)
    )
    last = client.get("/policies/cdrs", params={"page": 11}).text
    assert len(re.findall(r'<tr data-run="', last)) == DAYS - 1000
    oldest = re.findall(r">(\d{4}-\d\d-\d\d) 00:00 CES?T</a>", last)[-1]
    assert oldest == str(LAST_DAY - timedelta(days=DAYS - 1))
    assert 'rel="next"' not in last and '<a rel="prev" href="?page=10#runs">' in last
    assert client.get("/policies/cdrs", params={"page": 12}).status_code == 404


def test_the_export_streams_the_whole_trail_and_filters_by_local_days(client):
    everything = client.get("/export.csv")
    assert everything.status_code == 200
    rows = list(csv.DictReader(io.StringIO(everything.text, newline="")))
    assert len(rows) == POLICIES * DAYS
    assert len({row["id"] for row in rows}) == len(rows)
    # November 2026, in Amsterdam: 30 runs of cdrs, the 1st's included (31 Oct 23:00 UTC).
    month = client.get("/export.csv", params={"policy": "cdrs", "start": "2026-11-01"}).text
    local_days = [row["logical_date_local"][:10] for row in csv.DictReader(io.StringIO(month))]
    assert local_days == [f"2026-11-{day:02}" for day in range(1, 30)]
    json_rows = client.get("/export.json", params={"start": "2026-11-29"}).json()
    names = [loaded.policy.name for loaded in load_policies(PROJECT / "include/policies").policies]
    assert sorted(row["policy"] for row in json_rows) == sorted(names)


def test_the_charts_draw_three_years(client):
    for chart in ("deletions", "age", "held"):
        svg = client.get(f"/charts/cdrs/{chart}.svg")
        assert svg.status_code == 200, chart
        assert "Jan 2025" in svg.text, chart
    assert client.get("/charts/overview.svg").status_code == 200
