"""The embedded Airflow of this project, shared by the demo and the tests: its environment,
its metadata database, and the S3 connection to a local server. Importing this module imports no
Airflow: the environment must be set before Airflow loads its configuration."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[3]
DEMO_S3_KEY = "demo"
DEMO_S3_SECRET = "demo-not-a-secret"  # noqa: S105 - moto on loopback


def airflow_environment(home: Path, telecom_url: str, audit_url: str) -> dict[str, str]:
    """The environment of an embedded Airflow on this project (the demo and the tests)."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW_CONN_TELECOM_DB": telecom_url,
        "AIRFLOW_CONN_LIFECYCLE_AUDIT": audit_url,
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PROJECT / "plugins"), os.environ.get("PYTHONPATH")])
        ),
    }


def s3_connection_uri(endpoint: str) -> str:
    """An Airflow AWS connection (JSON form) to an S3 endpoint such as moto's or MinIO's."""
    extra = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    return json.dumps(
        {"conn_type": "aws", "login": DEMO_S3_KEY, "password": DEMO_S3_SECRET, "extra": extra}
    )


def evidence_connection_uri(s3_connection: str) -> str:
    """The evidence bucket's connection: the S3 connection (JSON form), naming its bucket."""
    from lifecycle.demo.objects import EVIDENCE

    connection = json.loads(s3_connection)
    connection["extra"] = connection["extra"] | {"bucket": EVIDENCE}
    return json.dumps(connection)


def migrate_metadata_db(home: Path) -> None:
    """`airflow db migrate` once per Airflow home (it is idempotent but costs seconds). A file
    without Airflow's tables (an engine opened it before the migration) is migrated too."""
    database = home / "airflow.db"
    if database.exists() and _migrated(database):
        return
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        env=os.environ.copy(),
    )


def _migrated(database: Path) -> bool:
    import sqlite3

    with contextlib.closing(sqlite3.connect(database)) as conn:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        ).fetchone()
    return found is not None
