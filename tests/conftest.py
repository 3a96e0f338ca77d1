"""Session-wide test setup: one Airflow home and metadata DB, and the real database servers.

PostgreSQL and MariaDB are expected at 127.0.0.1 (override with LIFECYCLE_TEST_POSTGRES_URL and
LIFECYCLE_TEST_MARIADB_URL). A test that needs one fails when it is missing; it never skips.

Every test is marked with what it needs beyond Python and SQLite files (`postgresql`, `mariadb`,
`s3`, `airflow`, `browser`, `cluster`, registered in pyproject.toml), from its fixtures and its
folder, so that `make test-fast` can select the others; nothing is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "plugins"))

POSTGRES_URL = os.environ.get(
    "LIFECYCLE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "LIFECYCLE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
ARTIFACTS = PROJECT / "test-artifacts"


def pytest_configure(config):
    # Airflow reads its configuration at import: set the home before any test module imports it.
    from tests.airflow_env import airflow_environment

    home = Path(tempfile.mkdtemp(prefix="lifecycle-airflow-"))
    os.environ.update(
        airflow_environment(
            home, "sqlite:///" + str(home / "unset.db"), "sqlite:///" + str(home / "audit.db")
        )
    )
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"


# What a test needs, from the fixtures it uses (directly or through other fixtures)...
FIXTURE_MARKERS = {
    "postgres_url": "postgresql",
    "mariadb_url": "mariadb",
    "s3_endpoint": "s3",
    "s3_connection": "s3",
    "airflow_home": "airflow",
    "deployment": "airflow",
}
# ... from the server of its `sql_url` parameter ...
SQL_URL_MARKERS = {"postgresql": "postgresql", "mariadb": "mariadb"}
# ... and from its folder under tests/.
FOLDER_MARKERS = {
    "e2e": ("airflow",),
    "dags": ("airflow",),
    "ui": ("browser",),
    "cluster": ("cluster",),
}


def needs(item: pytest.Item) -> set[str]:
    """The markers of what `item` needs (see FIXTURE_MARKERS and FOLDER_MARKERS)."""
    marks = {
        FIXTURE_MARKERS[name]
        for name in getattr(item, "fixturenames", ())
        if name in FIXTURE_MARKERS
    }
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("sql_url") in SQL_URL_MARKERS:
        marks.add(SQL_URL_MARKERS[callspec.params["sql_url"]])
    if item.path.is_relative_to(PROJECT / "tests"):
        folder = item.path.relative_to(PROJECT / "tests").parts[0]
        marks.update(FOLDER_MARKERS.get(folder, ()))
    return marks


def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in sorted(needs(item)):
            item.add_marker(mark)


@pytest.fixture
def make_policy():
    """tests.policies.make_policy: a validated test policy, the shared base with overrides."""
    from tests.policies import make_policy

    return make_policy


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """A migrated metadata DB, once per session (the first dag.test() costs ~10 s)."""
    from tests.airflow_env import migrate_metadata_db

    home = Path(os.environ["AIRFLOW_HOME"])
    migrate_metadata_db(home)
    return home


def _reachable(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"database server not reachable at {engine.url!r}: {exc.orig}", pytrace=False)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _reachable(POSTGRES_URL)


@pytest.fixture(scope="session")
def mariadb_url() -> str:
    return _reachable(MARIADB_URL)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def sql_url(request, tmp_path) -> str:
    """The same test on SQLite, PostgreSQL and MariaDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue(
        "postgres_url" if request.param == "postgresql" else "mariadb_url"
    )


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on loopback, for the whole session: a real HTTP endpoint, real boto3."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_connection(s3_endpoint):
    """The Airflow AWS connection to that server (what a policy's conn_id resolves to)."""
    from airflow.sdk import Connection

    return Connection(
        conn_id="recordings",
        conn_type="aws",
        login="testing",
        password="testing",
        extra=json.dumps({"endpoint_url": s3_endpoint, "region_name": "us-east-1"}),
    )
