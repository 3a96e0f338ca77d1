"""A real Celery cluster on this machine, built once per module.

`airflow scheduler`, `airflow dag-processor`, `airflow api-server` and two `airflow celery
worker`s, each in its own session with its log in the cluster's directory, on the PostgreSQL
(metadata, Celery results, the telecom store and the audit trail: throwaway databases) and
Redis (broker) servers at 127.0.0.1. They fail the tests when missing; nothing skips.

The deployment is the project's own: dags/ and plugins/ as they are, policies in a folder named
by LIFECYCLE_POLICY_DIR, stores reached through AIRFLOW_CONN_* connections, and the REST API
behind the SimpleAuthManager with a configured user. Two settings exist for the test's speed
only: a short task heartbeat timeout, so that a killed worker's task is detected in seconds,
and a cluster policy (airflow_local_settings.py) giving every task a short retry delay, because
the DAGs' own delay is a minute and policy files have no field for it.

Every process the fixture starts is stopped at the end, whatever happened: SIGTERM to each
session, then SIGKILL to whatever is left in it (a task runner sits in its own process group,
so signalling the group alone would miss it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil
import pytest
import sqlalchemy as sa

from lifecycle.control import ensure_schema
from tests.conftest import POSTGRES_URL
from tests.policies import policy_yaml

REDIS_URL = os.environ.get("LIFECYCLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
META_DB = "retention_cluster_meta"
STORE_DB = "retention_cluster_store"  # the telecom tables and the audit trail
HEARTBEAT_TIMEOUT = 10  # seconds without a heartbeat before a running task counts as lost
RETRY_DELAY = 2  # seconds, set on every task by the cluster policy
START_TIMEOUT = 120.0
WORKERS = ("worker-a", "worker-b")
ADMIN = "admin"
# Triggered runs only: this schedule's next run is on a 29 February after the DAGs' start
# date, so the scheduler never adds a run of its own. (With the catalogue's daily schedule and
# catchup off, an unpaused DAG gets a run for the latest midnight at once, which would purge
# with another cutoff next to the test's run.)
NO_SCHEDULED_RUNS = "0 0 29 2 *"


@dataclass(frozen=True)
class PolicySpec:
    name: str
    table: str
    batch_size: int

    @property
    def dag_id(self) -> str:
        return f"retention_{self.name}"

    def yaml(self) -> str:
        return policy_yaml(
            name=self.name,
            title=f"Cluster test {self.name}",
            schedule=f"'{NO_SCHEDULED_RUNS}'",
            store__table=self.table,
            store__batch_size=self.batch_size,
            store__subjects={"subscriber": "subscriber_id"},
            guards={"max_delete_fraction": 1},
            retries=2,
            block=("store",),
        )


BASIC = PolicySpec("cluster_calls", "cluster_calls", batch_size=250)
SLOW = PolicySpec("cluster_slow_calls", "cluster_slow_calls", batch_size=100)
POLICIES = (BASIC, SLOW)

LOCAL_SETTINGS = f'''"""Cluster policy of the test cluster: quick retries (DAGs wait a minute)."""

from datetime import timedelta


def task_policy(task):
    task.retry_delay = timedelta(seconds={RETRY_DELAY})
'''


class ClusterError(AssertionError):
    """The cluster did not come up, or a wait ran out: the message carries the logs."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_members(sid: int) -> list[psutil.Process]:
    """Every live process of a session: the process started there and all its descendants,
    including task runners in process groups of their own and orphans reparented to init."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid:
                members.append(process)
        except (ProcessLookupError, PermissionError):
            continue
    return members


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie waits for its parent to reap it: it runs no more)."""
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def _wait_until_gone(processes: list[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while running(processes) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_all(processes: list[psutil.Process], sig: signal.Signals) -> None:
    for process in processes:
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError:
            continue


def _connection_uri(url: sa.URL) -> str:
    """An Airflow connection URI (`postgres://`) for a SQLAlchemy URL."""
    auth = quote(url.username or "", safe="")
    if url.password:
        auth += ":" + quote(str(url.password), safe="")
    return f"postgres://{auth}@{url.host or '127.0.0.1'}:{url.port or 5432}/{url.database}"


def _recreate_database(admin: sa.Engine, name: str) -> None:
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))


def _reachable_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis not reachable at {url}: {exc}", pytrace=False)
    client.flushdb()  # no message or unacked task of an earlier run
    client.close()


@dataclass
class Cluster:
    directory: Path
    env: dict[str, str] = field(repr=False)
    api_url: str
    store_url: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)
    client: httpx.Client | None = field(default=None, repr=False)
    expected_dead: set[str] = field(default_factory=set)  # killed on purpose

    # -- processes ----------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        airflow = Path(sys.executable).with_name("airflow")
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [str(airflow), *args],
                env=self.env | (env or {}),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                start_new_session=True,
            )

    def members(self, name: str) -> list[psutil.Process]:
        return _session_members(self.processes[name].pid)

    def freeze(self, name: str) -> set[int]:
        """SIGSTOP a component and everything it started; the pids frozen."""
        members = self.members(name)
        _signal_all(members, signal.SIGSTOP)
        return {p.pid for p in members}

    def thaw(self, name: str) -> None:
        _signal_all(self.members(name), signal.SIGCONT)

    def kill(self, name: str) -> list[psutil.Process]:
        """SIGKILL a component and everything it started (a crashed machine, not a shutdown)."""
        members = self.members(name)
        self.expected_dead.add(name)
        _signal_all(members, signal.SIGKILL)
        self.processes[name].wait(timeout=10)
        _wait_until_gone(members, timeout=10)
        return members

    def stop(self) -> None:
        """SIGTERM every session, SIGKILL what is left of them after 15 s."""
        for process in self.processes.values():
            members = _session_members(process.pid)
            _signal_all(members, signal.SIGTERM)
            _signal_all(members, signal.SIGCONT)  # a frozen process acts on it only when woken
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for name, process in self.processes.items():
            leftovers = running(_session_members(process.pid))
            if leftovers:
                print(f"cluster: {name}: {len(leftovers)} processes killed", file=sys.stderr)
                _signal_all(leftovers, signal.SIGKILL)
                _wait_until_gone(leftovers, timeout=10)
            process.wait(timeout=10)
        if self.client is not None:
            self.client.close()

    def worker_of(self, pid: int) -> str | None:
        """The Celery worker whose session holds this process (a task runner's pid)."""
        try:
            sid = os.getsid(pid)
        except ProcessLookupError:
            return None
        return next((w for w in WORKERS if self.processes[w].pid == sid), None)

    def logs(self, lines: int = 60) -> str:
        """The tail of every component's log, for failure messages."""
        parts = []
        for name in self.processes:
            text = [
                line
                for line in self.log_path(name).read_text(errors="replace").splitlines()
                if "[http.access]" not in line  # the API server's access log drowns the rest
            ]
            parts.append(f"----- {name} (last {lines} lines) -----\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def task_logs(self, dag_id: str, run_id: str, lines: int = 40) -> str:
        folder = self.directory / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        parts = []
        for path in sorted(folder.rglob("*.log")) if folder.exists() else []:
            text = path.read_text(errors="replace").splitlines()
            parts.append(f"----- {path.relative_to(folder)} -----\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or f"(no task logs under {folder})"

    def wait_for(
        self, what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5
    ) -> Any:
        """Poll until probe() returns something truthy; fail with the logs when time runs out
        or a component died."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            if dead and not all(n in self.expected_dead for n in dead):
                raise ClusterError(f"waiting for {what}: {dead} exited\n{self.logs()}")
            try:
                result = probe()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                last_error, result = exc, None
            if result:
                return result
            time.sleep(interval)
        raise ClusterError(
            f"{what}: not after {timeout:.0f} s (last error: {last_error!r})\n{self.logs()}"
        )

    # -- REST API -----------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        assert self.client is not None, "not logged in"
        return self.client.request(method, path, **kwargs)

    def get(self, path: str, **kwargs) -> Any:
        response = self.api("GET", path, **kwargs)
        response.raise_for_status()
        return response.json()

    def trigger(self, dag_id: str, run_id: str, logical_date: str, conf: dict | None = None):
        response = self.api(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": logical_date, "conf": conf or {}},
        )
        assert response.status_code == 200, response.text
        return response.json()

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        def finished() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        try:
            return self.wait_for(f"run {run_id} of {dag_id} to finish", finished, timeout, 1.0)
        except ClusterError as exc:
            raise ClusterError(f"{exc}\n{self.describe(dag_id, run_id)}") from None

    def describe(self, dag_id: str, run_id: str) -> str:
        """Task states and task logs of a run, for failure messages."""
        try:
            states = {
                (ti["task_id"], ti["map_index"]): (ti["state"], ti["try_number"])
                for ti in self.task_instances(dag_id, run_id)
            }
        except httpx.HTTPError as exc:
            states = {("?", -1): (repr(exc), 0)}
        return f"task instances: {states}\n{self.task_logs(dag_id, run_id)}"

    # -- Celery -------------------------------------------------------------------------------

    def _celery(self):
        from celery import Celery

        return Celery(broker=self.env["AIRFLOW__CELERY__BROKER_URL"])

    def celery_ping(self, timeout: float = 2.0) -> set[str]:
        """Names of the workers answering a broadcast ping through the broker in `timeout`."""
        app = self._celery()
        try:
            replies = app.control.ping(timeout=timeout) or []
        finally:
            app.close()
        return {name.split("@")[0] for reply in replies for name in reply}

    def celery_stats(self, workers: int) -> dict[str, dict]:
        """`celery inspect stats` of the live workers (waits for `workers` replies, or 5 s)."""
        app = self._celery()
        try:
            stats = app.control.inspect(timeout=5.0, limit=workers).stats() or {}
        finally:
            app.close()
        return {name.split("@")[0]: info for name, info in stats.items()}


def _environment(directory: Path, api_port: int, meta_url: sa.URL, store_url: sa.URL) -> dict:
    from tests.airflow_env import airflow_environment

    home = directory / "airflow"
    policies = directory / "policies"
    api_url = f"http://127.0.0.1:{api_port}"
    meta = meta_url.render_as_string(hide_password=False)
    store = _connection_uri(store_url)
    venv_bin = str(Path(sys.executable).parent)
    # Nothing of the test process's own Airflow setup (tests/conftest.py) leaks in.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return (
        inherited
        | airflow_environment(home, store, store)
        | {
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "LIFECYCLE_POLICY_DIR": str(policies),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": meta,  # psycopg 3 is async too
            "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{meta}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "lifecycle.worker.CELERY_CONFIG",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(directory / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
    )


def _prepare(directory: Path) -> None:
    (directory / "airflow" / "config").mkdir(parents=True)
    (directory / "airflow" / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    policies = directory / "policies"
    policies.mkdir()
    for spec in POLICIES:
        (policies / f"{spec.name}.yaml").write_text(spec.yaml(), encoding="utf-8")


def _login(cluster: Cluster, password: str) -> None:
    response = httpx.post(
        f"{cluster.api_url}/auth/token",
        json={"username": ADMIN, "password": password},
        timeout=30,
    )
    assert response.status_code == 201, f"login refused: {response.status_code} {response.text}"
    token = response.json()["access_token"]
    cluster.client = httpx.Client(
        base_url=cluster.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _healthy(cluster: Cluster) -> bool:
    health = httpx.get(f"{cluster.api_url}/api/v2/monitor/health", timeout=5).json()
    return (
        health["metadatabase"]["status"] == "healthy"
        and health["scheduler"]["status"] == "healthy"
        and (health.get("dag_processor") or {}).get("status") == "healthy"
    )


def _dag_ready(cluster: Cluster, dag_id: str) -> bool:
    response = cluster.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
    return response.status_code == 200 and response.json()["is_paused"] is False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_url) -> Iterator[Cluster]:
    started = time.monotonic()
    directory = tmp_path_factory.mktemp("cluster")
    base = sa.make_url(POSTGRES_URL)
    meta_url, store_url = base.set(database=META_DB), base.set(database=STORE_DB)
    admin = sa.create_engine(base)
    try:
        _recreate_database(admin, META_DB)
        _recreate_database(admin, STORE_DB)
    finally:
        admin.dispose()
    control = sa.create_engine(store_url)
    try:
        ensure_schema(control)  # the owner's `lifecycle audit-init`: runs never create it
    finally:
        control.dispose()
    _reachable_redis(REDIS_URL)
    _prepare(directory)
    password = secrets.token_urlsafe(16)
    (directory / "passwords.json").write_text(json.dumps({ADMIN: password}))

    api_port = _free_port()
    env = _environment(directory, api_port, meta_url, store_url)
    cluster = Cluster(
        directory=directory,
        env=env,
        api_url=f"http://127.0.0.1:{api_port}",
        store_url=store_url.render_as_string(hide_password=False),
    )
    try:
        migrate = subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
            env=env,
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if migrate.returncode != 0:
            raise ClusterError(f"airflow db migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
        cluster.start("api-server", "api-server")
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        for worker in WORKERS:
            cluster.start(
                worker,
                "celery",
                "worker",
                "--celery-hostname",
                f"{worker}@%h",
                "--concurrency",
                "1",
                env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port())},
            )
        cluster.wait_for("the API server, scheduler and dag-processor", lambda: _healthy(cluster),
                         START_TIMEOUT)  # fmt: skip
        _login(cluster, password)
        for spec in POLICIES:
            cluster.wait_for(f"DAG {spec.dag_id}", lambda s=spec: _dag_ready(cluster, s.dag_id),
                             START_TIMEOUT)  # fmt: skip
        cluster.wait_for(
            f"Celery workers {WORKERS}",
            lambda: cluster.celery_ping() >= set(WORKERS),
            START_TIMEOUT,
        )
        print(f"cluster up in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        cluster.stop()
        print(f"cluster stopped; {time.monotonic() - started:.1f} s since the start")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed cluster test shows the tail of every component's log."""
    report = yield
    cluster = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
    if report.failed and call.when == "call" and isinstance(cluster, Cluster):
        report.sections.append(("cluster logs", cluster.logs()))
    return report
