"""A busy port never hangs the demo: unset, it takes another; set explicitly, it stops at once
naming the port and its variable. Every call that could hang runs under a harness timeout (a
daemon thread or a subprocess), so a hang fails the test instead of blocking the suite."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from lifecycle.demo import objects, ports

PROJECT = Path(__file__).resolve().parents[2]
HARNESS_TIMEOUT = 120  # seconds: only ever reached by a hang


def within_timeout(call: Callable):
    """call() in a daemon thread: its result, its exception, or a failure if it never returns."""
    results: queue.Queue = queue.Queue()

    def target():
        try:
            results.put((True, call()))
        except BaseException as exc:  # handed to the test
            results.put((False, exc))

    threading.Thread(target=target, daemon=True).start()
    try:
        ok, value = results.get(timeout=HARNESS_TIMEOUT)
    except queue.Empty:
        pytest.fail(f"hung: no return after {HARNESS_TIMEOUT} s", pytrace=False)
    if not ok:
        raise value
    return value


@pytest.fixture
def taken_port():
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def start_s3(default: int):
    return ports.listen(ports.S3_PORT_ENV, default, objects.start_server, "the demo's S3 server")


def test_the_s3_server_takes_another_port_when_the_default_is_taken(
    taken_port, monkeypatch, capsys
):
    monkeypatch.delenv(ports.S3_PORT_ENV, raising=False)
    server = within_timeout(lambda: start_s3(taken_port))
    try:
        assert server.port != taken_port
        s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id="demo",
            aws_secret_access_key="demo-not-a-secret",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="port-check")
        # moto's backend is shared by every server in the process: other tests' buckets too.
        assert "port-check" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    finally:
        server.stop()
    out = capsys.readouterr().out
    assert f"127.0.0.1:{taken_port} is in use" in out
    assert f"127.0.0.1:{server.port} instead" in out


def test_an_explicit_s3_port_that_is_taken_stops_the_demo_at_once(taken_port, monkeypatch):
    monkeypatch.setenv(ports.S3_PORT_ENV, str(taken_port))
    with pytest.raises(ports.PortError) as error:
        within_timeout(lambda: start_s3(ports.DEFAULT_S3_PORT))
    assert f"127.0.0.1:{taken_port}" in str(error.value)
    assert ports.S3_PORT_ENV in str(error.value)


def test_the_ui_takes_another_port_when_the_default_is_taken(taken_port, monkeypatch):
    monkeypatch.delenv(ports.API_PORT_ENV, raising=False)
    port = ports.listen(ports.API_PORT_ENV, taken_port, ports.probe, "the Airflow UI")
    assert port != taken_port
    ports.probe(port)  # free


def test_an_explicit_ui_port_that_is_taken_stops_make_airflow_at_once(taken_port, monkeypatch):
    monkeypatch.setenv(ports.API_PORT_ENV, str(taken_port))
    with pytest.raises(ports.PortError, match=f"127.0.0.1:{taken_port}.*{ports.API_PORT_ENV}"):
        ports.api_port()


def test_a_port_that_is_no_number_is_named(monkeypatch):
    monkeypatch.setenv(ports.S3_PORT_ENV, "ninety-one hundred")
    with pytest.raises(ports.PortError, match=ports.S3_PORT_ENV):
        ports.configured_s3_port()


def _demo(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m lifecycle.demo ...` on a demo folder of its own, under a harness timeout."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_DEMO_")}
    environ |= {
        "LIFECYCLE_DEMO_DIR": str(tmp_path / "demo"),
        "PYTHONPATH": str(PROJECT / "plugins"),
    }
    try:
        return subprocess.run(
            [sys.executable, "-m", "lifecycle.demo", *args],
            env=environ | env,
            capture_output=True,
            text=True,
            timeout=HARNESS_TIMEOUT,
            cwd=PROJECT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(args)}` hung: {exc.stdout!r} {exc.stderr!r}", pytrace=False)


def test_make_demo_with_its_s3_port_taken_fails_at_once(tmp_path, taken_port):
    result = _demo(tmp_path, "run", LIFECYCLE_DEMO_S3_PORT=str(taken_port))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"127.0.0.1:{taken_port}" in result.stderr
    assert "LIFECYCLE_DEMO_S3_PORT" in result.stderr
    assert not (tmp_path / "demo" / "telecom.db").exists()  # stopped before any work


def test_make_airflow_with_its_ui_port_taken_fails_at_once(tmp_path, taken_port):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "telecom.db").touch()  # as after `make demo`
    result = _demo(tmp_path, "airflow", LIFECYCLE_DEMO_API_PORT=str(taken_port))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"127.0.0.1:{taken_port}" in result.stderr
    assert "LIFECYCLE_DEMO_API_PORT" in result.stderr
