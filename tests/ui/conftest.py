"""An `airflow api-server` of its own on a free loopback port, over a seeded audit database, with
Airflow's login on (SimpleAuthManager, one read-only `viewer` user), for the browser tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from lifecycle.audit import ensure_schema, read_runs, record_run
from lifecycle.loader import load_policies
from lifecycle.stores.sql import create_engine
from tests.ui.auth import NARROW_USER

PROJECT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "auditor", "an-auditor-password"
NARROW_PASSWORD = "a-narrow-password"
NO_RUN_YET = {"internet_lines", "mobile_subscriptions"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _row(policy, day: datetime, status: str, **figures) -> dict:
    """An audit row as the `record` task writes it (the same function stores it)."""
    store = policy.store
    cutoff = day - timedelta(days=30)
    verified = {"purged": True, "verification_failed": False}.get(status)
    row = {
        "dag_id": f"retention_{policy.name}",
        "run_id": f"scheduled__{day.isoformat()}",
        "attempt": 0,
        "policy": policy.name,
        "title": policy.title,
        "controller": policy.controller,
        "legal_basis": policy.legal_basis,
        "store": f"{store.kind}:{store.conn_id}:{store.location}",
        "period": policy.retention.period,
        "logical_date": day,
        "cutoff": cutoff,
        "status": status,
        "dry_run": status == "dry_run",
        "total": 1000,
        "expired": 100,
        "held": 3,
        "active": 7,
        "anomalies": 0,
        "deleted": 100 if status in ("purged", "verification_failed") else 0,
        "batches": 1,
        "oldest_expired": cutoff - timedelta(days=12),
        "newest_expired": cutoff - timedelta(hours=1),
        "oldest_retained": cutoff + timedelta(days=2),
        "verified": verified,
        "remaining": None if verified is None else (0 if verified else 4),
        "holds": {"7": 3},
        "tenants": {},
        # The forecast (wide figures: the overview's cell must still fit); object stores: none.
        "due": {"7": 1_234, "30": 12_345, "90": 123_456},
        "reasons": ["4 unheld records before the cutoff remain"] if verified is False else [],
        "verification": None
        if verified is None
        else {
            "success": verified,
            "checked": "records past the window, 1 holds excepted",
            "expectations": [
                {
                    "expectation_type": "expect_table_row_count_to_equal",
                    "kwargs": {"value": 0},
                    "result": {"observed_value": 0 if verified else 4},
                    "success": verified,
                }
            ],
        },
        "timings": {"delete": 0.5, "verify": 0.1},
        "started_at": day,
        "finished_at": day + timedelta(minutes=1),
    }
    row.update(figures)
    return row


@pytest.fixture(scope="session")
def seeded_audit(tmp_path_factory) -> dict:
    """Three days of runs for every policy but two; the last run of three policies went wrong."""
    url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'audit.db'}"
    engine = create_engine(url)
    ensure_schema(engine)
    policies = [loaded.policy for loaded in load_policies(PROJECT / "include/policies").policies]
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last_status = {
        "support_tickets": "refused",
        "contact_forms": "verification_failed",
        "voip_ip_log": "dry_run",
    }
    for index, policy in enumerate(policies):
        if policy.name in NO_RUN_YET:
            continue
        for back in (2, 1, 0):
            status = last_status.get(policy.name, "purged") if back == 0 else "purged"
            figures = {"expired": 100 + 10 * index + back, "held": index, "total": 5000 + index}
            if status == "purged":
                figures["deleted"] = figures["expired"]
            record_run(engine, _row(policy, today - timedelta(days=back), status, **figures))
    # A policy whose file was removed a month ago: its runs stay in the trail.
    gone = retired_policy(policies)
    for back in (32, 31, 30):
        record_run(engine, _row(gone, today - timedelta(days=back), "purged", deleted=100))
    runs = read_runs(engine)
    engine.dispose()
    return {"url": url, "policies": policies, "runs": runs, "today": today.date()}


RETIRED = "fax_archive"


def retired_policy(policies):
    """A policy with no file in include/policies: the cdrs policy under another name."""
    (cdrs,) = [p for p in policies if p.name == "cdrs"]
    return cdrs.model_copy(update={"name": RETIRED, "title": "Fax archive"})


@pytest.fixture(scope="session")
def api_server(airflow_home, seeded_audit, tmp_path_factory):
    """`airflow api-server` with the plugin, login required, on a free port; stopped at the end."""
    home = tmp_path_factory.mktemp("ui-airflow")
    shutil.copy(airflow_home / "airflow.db", home / "airflow.db")  # already migrated
    (home / "passwords.json").write_text(json.dumps({USER: PASSWORD, NARROW_USER: NARROW_PASSWORD}))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.ui.auth.OneDagForNarrowAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer,{NARROW_USER}:viewer",
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API_AUTH__JWT_SECRET": "ui-test-secret-" + "x" * 48,
        "AIRFLOW_CONN_LIFECYCLE_AUDIT": seeded_audit["url"],
        "LIFECYCLE_POLICY_DIR": str(PROJECT / "include/policies"),
    }
    log_path = home / "api-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"api-server exited:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"api-server not ready in 120 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"base": base, "log": log_path}
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited (and said why)
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def client_over(engine, monkeypatch, policy_dir: Path = PROJECT / "include/policies"):
    """The audit app in process over `engine` (Airflow's login dependency overridden)."""
    import warnings

    with warnings.catch_warnings():  # Starlette's notice that it prefers httpx2
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from lifecycle.ui import app as ui

    monkeypatch.setattr(ui, "_audit_engine", lambda: engine)
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(policy_dir))
    (login,) = ui.app.router.dependencies
    monkeypatch.setitem(ui.app.dependency_overrides, login.dependency, lambda: None)
    return TestClient(ui.app, raise_server_exceptions=False)


def log_in(page, base: str) -> None:
    """Through Airflow's own login page, as the auditor."""
    page.goto(base + "/")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/" not in url, timeout=30_000)


@pytest.fixture
def app_client(tmp_path, monkeypatch):
    """The audit app in process (Airflow's login dependency overridden), over a SQLite trail and
    a policy folder of the test's choosing: `app_client(rows, policy_dir=...)`."""
    import warnings

    with warnings.catch_warnings():  # Starlette's notice that it prefers httpx2
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from lifecycle.ui import app as ui

    opened = []

    def make(rows: list[dict], policy_dir: Path = PROJECT / "include/policies"):
        url = f"sqlite:///{tmp_path / f'audit-{len(opened)}.db'}"
        engine = create_engine(url)
        ensure_schema(engine)
        for row in rows:
            record_run(engine, row)
        engine.dispose()
        monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", url)
        monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(policy_dir))
        ui._audit_engine.cache_clear()
        (login,) = ui.app.router.dependencies
        monkeypatch.setitem(ui.app.dependency_overrides, login.dependency, lambda: None)
        client = TestClient(ui.app, raise_server_exceptions=False)
        opened.append(client)
        return client

    yield make
    ui._audit_engine().dispose()
    ui._audit_engine.cache_clear()


def policy(name: str, policy_dir: Path = PROJECT / "include/policies"):
    (loaded,) = [p for p in load_policies(policy_dir).policies if p.policy.name == name]
    return loaded.policy


def audit_row(policy, day: datetime, status: str = "purged", **figures) -> dict:
    return _row(policy, day, status, **figures)
