"""`make demo` runs the catalogue's policies against the demo's stores, and nothing else.

A user's policy file in the policy folder (another name, another connection, or a catalogue name
on another connection) is skipped: the demo never lifts its mass-deletion guard.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from lifecycle.control import ensure_schema
from lifecycle.demo.__main__ import run_all
from lifecycle.demo.selection import DEMO_POLICIES, select_demo_dags, skip_line
from lifecycle.loader import DEFAULT_POLICY_DIR
from tests.policies import TEST_STATEMENT, policy_yaml

AMS = ZoneInfo("Europe/Amsterdam")


def policy(name: str, conn_id: str, table: str, guards: str = "{max_delete_fraction: 0.2}") -> str:
    return policy_yaml(
        name=name,
        title=f"Test {name}",
        statement=TEST_STATEMENT,
        store__conn_id=conn_id,
        store__table=table,
        guards=guards,
        retries=0,
        block=("store",),
    )


def catalogue_with(tmp_path: Path, **files: str) -> Path:
    """The project's policy folder, copied, with the user's files added (or replacing)."""
    folder = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, folder)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def selection_of(folder: Path):
    from lifecycle.factory import build_dags

    return select_demo_dags(build_dags(folder), folder)


def test_the_catalogue_is_the_demos_selection():
    selection = selection_of(DEFAULT_POLICY_DIR)
    assert sorted(selection.dags) == sorted(f"retention_{name}" for name in DEMO_POLICIES)
    # The statement's fourteen rows, and the 30-day policy of the requests' archives.
    assert len(DEMO_POLICIES) == 15 and "request_exports" in DEMO_POLICIES
    assert selection.skipped == {}
    assert sorted(selection.requests) == [
        "dsr_access",
        "dsr_erasure",
        "dsr_portability",
        "dsr_restriction",
    ]
    assert list(selection.evidence) == ["retention-chain-anchor"]


def test_a_users_policies_beside_the_catalogue_are_skipped(tmp_path):
    folder = catalogue_with(
        tmp_path,
        # another name, another connection: the case
        **{"usage_records.yaml": policy("usage_records", "billing_db", "usage_records")},
        # another name on the demo's connection
        **{"telecom_usage.yaml": policy("telecom_usage", "telecom_db", "usage")},
    )
    # a catalogue name on another connection, in place of the catalogue's file
    (folder / "cdrs.yaml").write_text(policy("cdrs", "billing_db", "cdrs"), encoding="utf-8")

    selection = selection_of(folder)

    demo = {f"retention_{name}" for name in DEMO_POLICIES}
    assert set(selection.dags) == demo - {"retention_cdrs"}
    assert set(selection.skipped) == {
        "retention_usage_records",
        "retention_telecom_usage",
        "retention_cdrs",
    }
    assert "'billing_db'" in selection.skipped["retention_cdrs"]
    assert (
        "'telecom_usage' is not one of the demo's" in selection.skipped["retention_telecom_usage"]
    )
    line = skip_line("retention_usage_records", selection.skipped["retention_usage_records"], "x")
    assert line.startswith("skipping retention_usage_records: not a demo policy")
    assert "airflow dags test retention_usage_records" in line and "dry_run" in line


def test_an_invalid_file_fails_the_demo_only_when_it_is_the_demos(tmp_path):
    folder = catalogue_with(tmp_path, **{"broken.yaml": "name: broken\n"})
    (folder / "voip_ip_log.yaml").write_text("name: voip_ip_log\n", encoding="utf-8")

    selection = selection_of(folder)

    assert "retention-invalid-voip_ip_log" in selection.dags  # runs, fails, fails the demo
    assert "retention_voip_ip_log" not in selection.dags
    assert "retention-invalid-broken" in selection.skipped
    assert "retention-invalid-broken" not in selection.dags


def test_run_all_on_the_selection_deletes_only_in_the_demos_store(
    airflow_home, tmp_path, monkeypatch
):
    """The demo's way: run_all on the selection, first runs with the guard lifted. A user's
    table full of expired rows, with its connection set, keeps every row."""
    old = "2020-01-01 00:00:00.000000"
    new = "2026-11-20 00:00:00.000000"
    demo_store, user_store = tmp_path / "telecom.db", tmp_path / "billing.db"
    for path, table, rows in (
        (demo_store, "cdrs", [(1, old), (2, old), (3, new)]),
        (demo_store, "usage", [(i, old) for i in range(1, 51)]),  # the demo's db, a user's table
        (user_store, "usage_records", [(i, old) for i in range(1, 101)]),
    ):
        with sqlite3.connect(path) as conn:
            conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, started_at TIMESTAMP)")
            conn.executemany(f"INSERT INTO {table} VALUES (?, ?)", rows)
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "cdrs.yaml").write_text(policy("cdrs", "telecom_db", "cdrs"), encoding="utf-8")
    (folder / "usage_records.yaml").write_text(
        policy("usage_records", "billing_db", "usage_records"), encoding="utf-8"
    )
    (folder / "telecom_usage.yaml").write_text(
        policy("telecom_usage", "telecom_db", "usage"), encoding="utf-8"
    )
    (folder / "broken.yaml").write_text("name: broken\n", encoding="utf-8")
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(folder))  # dag.test() parses with it
    monkeypatch.setenv("AIRFLOW_CONN_TELECOM_DB", f"sqlite:///{demo_store}")
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", f"sqlite:///{user_store}")
    monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", audit_url)

    selection = selection_of(folder)
    assert list(selection.dags) == ["retention_cdrs"]
    audit = sa.create_engine(audit_url)
    ensure_schema(audit)  # the demo's own audit-init
    try:
        failed = run_all(selection.dags, audit, datetime(2026, 11, 29, tzinfo=AMS))
    finally:
        audit.dispose()

    assert failed == []
    with sqlite3.connect(demo_store) as conn:
        assert conn.execute("SELECT id FROM cdrs").fetchall() == [(3,)]  # 2 of 3: guard lifted
        assert conn.execute("SELECT count(*) FROM usage").fetchone() == (50,)
    with sqlite3.connect(user_store) as conn:
        assert conn.execute("SELECT count(*) FROM usage_records").fetchone() == (100,)
