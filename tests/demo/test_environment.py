"""The demo's environment: its own policy folder and stores, nothing of the user's, new DAGs
paused as in production; `make env` prints the ports in use; a future --date is refused."""

from __future__ import annotations

import json
import logging
import os
import socket
import warnings
from datetime import date, timedelta
from pathlib import Path

import pytest

from lifecycle.demo import __main__ as demo
from lifecycle.demo import ports
from lifecycle.loader import DEFAULT_POLICY_DIR


def test_new_dags_start_paused_as_in_production(tmp_path):
    env = demo.airflow_environment(tmp_path, "sqlite://", "sqlite://")
    assert env.get("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True") == "True"
    assert "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION" not in demo.demo_environment(9100, 8080)


def test_the_demo_runs_its_own_policy_folder_against_its_own_stores(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path)
    user = {
        "LIFECYCLE_POLICY_DIR": "/srv/policies",
        "AIRFLOW_CONN_TELECOM_DB": "postgres://retention:x@db.internal/telecom",
        "AIRFLOW_CONN_BILLING_DB": "postgres://retention:x@db.internal/billing",
        "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
        "AIRFLOW__SECRETS__BACKEND_KWARGS": '{"connections_file_path": "/srv/conns.json"}',
        "AIRFLOW__WORKERS__SECRETS_BACKEND": "some.Backend",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow@db.internal/airflow",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "HOME": "/home/someone",
    }

    env = demo.demo_process_environment(user, 9123, 8123)

    assert env["LIFECYCLE_POLICY_DIR"] == str(DEFAULT_POLICY_DIR)
    assert env["AIRFLOW_CONN_TELECOM_DB"] == f"sqlite:///{tmp_path / 'telecom.db'}"
    assert env["AIRFLOW_CONN_LIFECYCLE_AUDIT"] == f"sqlite:///{tmp_path / 'audit.db'}"
    for conn in ("AIRFLOW_CONN_RECORDINGS", "AIRFLOW_CONN_ANALYTICS"):
        extra = json.loads(env[conn])["extra"]
        assert extra["endpoint_url"] == "http://127.0.0.1:9123"
    assert "AIRFLOW_CONN_BILLING_DB" not in env
    assert env["AIRFLOW__SECRETS__BACKEND"] == env["AIRFLOW__WORKERS__SECRETS_BACKEND"] == ""
    assert "AIRFLOW__SECRETS__BACKEND_KWARGS" not in env
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(f"sqlite:///{tmp_path}")
    assert env["AIRFLOW__API__PORT"] == "8123"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8123"
    assert env["AIRFLOW__LOGGING__LOGGING_LEVEL"] == "WARNING"  # the rest is kept
    assert env["HOME"] == "/home/someone"


def test_the_demo_s3_secret_is_long_enough_to_be_masked():
    from airflow.sdk._shared.secrets_masker.secrets_masker import SecretsMasker

    password = json.loads(demo.s3_connection_uri("http://127.0.0.1:1"))["password"]
    assert len(password) >= SecretsMasker.min_length_to_mask


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_env_prints_the_ports_of_a_running_make_airflow(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path)
    with _listening_socket() as s3:  # stands for its S3 server
        s3_port = s3.getsockname()[1]
        ports.write_serving(tmp_path, ports.Serving(os.getpid(), s3_port, 8181))
        assert demo.main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"S3 on port {s3_port}, UI on port 8181" in out
    assert f"http://127.0.0.1:{s3_port}" in out
    assert "export AIRFLOW__API__PORT=8181" in out


def test_env_prints_the_configured_ports_when_no_make_airflow_runs(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path)
    # a file left by a killed `make airflow`: its process is gone
    (tmp_path / ports.SERVING_FILE).write_text(
        json.dumps({"pid": 2**22 + 12345, "s3_port": 1, "api_port": 2}), encoding="utf-8"
    )
    monkeypatch.setenv("LIFECYCLE_DEMO_S3_PORT", "9321")
    monkeypatch.delenv("LIFECYCLE_DEMO_API_PORT", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", "postgres://x@db.internal/billing")
    assert demo.main(["env"]) == 0
    out = capsys.readouterr().out
    assert "S3 on port 9321, UI on port 8080" in out
    assert "http://127.0.0.1:9321" in out
    assert "unset AIRFLOW_CONN_BILLING_DB" in out.splitlines()


def test_a_future_date_is_refused_at_once(monkeypatch, capsys):
    def run(_day):
        raise AssertionError("the demo started")

    monkeypatch.setattr(demo, "run", run)
    future = date.today() + timedelta(days=3)
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["run", "--date", future.isoformat()])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--date {future} is in the future" in err
    assert "give today or a past date" in err


def test_quiet_drops_deprecation_warnings_and_repeated_policy_errors(caplog):
    factory = logging.getLogger("lifecycle.factory")
    try:
        with warnings.catch_warnings(record=True) as caught:
            demo.quiet()
            warnings.warn("old", DeprecationWarning, stacklevel=1)
            warnings.warn("x is deprecated; use y", UserWarning, stacklevel=1)
            warnings.warn("a real problem", UserWarning, stacklevel=1)
        assert [str(w.message) for w in caught] == ["a real problem"]
        with caplog.at_level(logging.ERROR, logger="lifecycle.factory"):
            for _ in range(3):
                factory.error("invalid retention policy: %s", "a.yaml: name: missing")
            factory.error("invalid retention policy: %s", "b.yaml: name: missing")
        messages = [r.getMessage() for r in caplog.records if r.name == "lifecycle.factory"]
        assert messages == [
            "invalid retention policy: a.yaml: name: missing",
            "invalid retention policy: b.yaml: name: missing",
        ]
    finally:
        factory.removeFilter(demo._ONCE)
        demo._ONCE.seen.clear()


def test_make_airflow_writes_where_it_serves_and_env_ignores_a_dead_one(tmp_path):
    assert ports.read_serving(tmp_path) is None
    with _listening_socket() as s3:
        serving = ports.Serving(os.getpid(), s3.getsockname()[1], 8080)
        path = ports.write_serving(tmp_path, serving)
        assert path == Path(tmp_path / ports.SERVING_FILE)
        assert ports.read_serving(tmp_path) == serving
    assert ports.read_serving(tmp_path) is None  # its S3 port no longer answers
