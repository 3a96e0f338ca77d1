"""Airflow connections, resolved inside tasks (never at DAG parse time) into SQLAlchemy engines
and boto3 clients, disposed on exit. The tasks, the CLI and the audit UI all come here.

A connection that is not defined is a configuration error (`StoreConfigError`): it fails a task
at once, naming the connection, instead of being retried for minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

AUDIT_CONN_ID = "lifecycle_audit"


def airflow_connection(conn_id: str, field: str = "store.conn_id") -> Any:
    """The Airflow connection `conn_id`; `field` names the setting that asked for it."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from lifecycle.stores import StoreConfigError

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise StoreConfigError(
            f"{field}: connection {conn_id!r} is not defined (set AIRFLOW_CONN_"
            f"{conn_id.upper()}, create it in the UI or in your secrets backend)"
        ) from None


def sql_url(conn_id: str, field: str = "store.conn_id") -> sa.URL:
    from lifecycle.stores.sql import url_from_connection

    return url_from_connection(airflow_connection(conn_id, field))


def new_engine(conn_id: str, field: str = "store.conn_id") -> sa.Engine:
    """An engine the caller disposes (the audit UI keeps one for the process)."""
    from lifecycle.stores.sql import create_engine

    return create_engine(sql_url(conn_id, field))


@contextmanager
def sql_engine(conn_id: str, field: str = "store.conn_id") -> Iterator[sa.Engine]:
    """An engine for the duration of a block, its pool disposed on exit."""
    engine = new_engine(conn_id, field)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def control_engine(conn_id: str = AUDIT_CONN_ID) -> Iterator[sa.Engine]:
    """The control database: the audit trail, the holds and the deletion ledger."""
    with sql_engine(conn_id, "the audit connection") as engine:
        yield engine


@contextmanager
def s3_client(conn_id: str, field: str = "store.conn_id") -> Iterator[Any]:
    """A boto3 S3 client for an Airflow AWS connection, closed on exit."""
    from lifecycle.stores.s3 import client_from_connection

    client = client_from_connection(airflow_connection(conn_id, field))
    try:
        yield client
    finally:
        client.close()
