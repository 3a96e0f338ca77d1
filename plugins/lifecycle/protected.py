"""Tables that are never a purge target: the control database's, Airflow's metadata, catalogs.

A policy on `retention_audit` would delete the evidence of earlier runs, one on
`retention_holds` would delete the legal holds that protect other records, one on Airflow's
metadata (`dag_run`, `xcom`, ...) or on a system catalog would corrupt the platform. These are
refused three times, each guard independent of the others:

- by validation, on the name alone (`protected_table_problem`): the policy file never becomes a
  DAG, whatever database its connection points to on the day;
- at run time, on the resolved database (`check_purge_target`): a connection id can be renamed
  or pointed elsewhere, so the store's URL is compared with the control database's and Airflow's,
  never the connection ids;
- by the grants generator (lifecycle.grants), which never grants DELETE on these names.

Plain Python, no heavy import at module import: the policy model uses it at DAG parse time.
SQLAlchemy is imported inside the run-time functions only.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa

# The control database (connection `lifecycle_audit`): lifecycle.audit.metadata's tables. A
# literal so that importing this module imports no SQLAlchemy model; a unit test keeps it equal
# to the metadata.
CONTROL_TABLES: tuple[str, ...] = (
    "retention_audit",
    "retention_holds",
    "retention_ledger",
    "retention_chain",
    "retention_requests",
    "retention_request_subjects",
    "retention_request_results",
)
_CONTROL_ROLES = {
    "retention_audit": "the retention audit trail",
    "retention_holds": "the table of legal holds, restrictions and disputes",
    "retention_ledger": "the deletion ledger",
    "retention_chain": "the head of the audit trail's hash chain",
    "retention_requests": "the register of data-subject requests",
    "retention_request_subjects": "the identifiers of data-subject requests",
    "retention_request_results": "the per-category results of data-subject requests",
}

# Airflow 3.3's metadata tables (airflow.models.base.Base.metadata after
# airflow.models.import_all_models()) and its migrations' version table. A literal for the same
# reason; a unit test compares it with the installed Airflow, so an upgrade that adds a table
# fails the test until the table is listed here.
AIRFLOW_METADATA_TABLES: frozenset[str] = frozenset(
    {
        "alembic_version",
        "asset",
        "asset_active",
        "asset_alias",
        "asset_alias_asset",
        "asset_alias_asset_event",
        "asset_dag_run_queue",
        "asset_event",
        "asset_partition_dag_run",
        "asset_state_store",
        "asset_watcher",
        "backfill",
        "backfill_dag_run",
        "callback",
        "connection",
        "connection_test_request",
        "dag",
        "dag_bundle",
        "dag_bundle_team",
        "dag_code",
        "dag_favorite",
        "dag_owner_attributes",
        "dag_priority_parsing_request",
        "dag_run",
        "dag_run_note",
        "dag_schedule_asset_alias_reference",
        "dag_schedule_asset_name_reference",
        "dag_schedule_asset_reference",
        "dag_schedule_asset_uri_reference",
        "dag_tag",
        "dag_version",
        "dag_warning",
        "dagrun_asset_event",
        "deadline",
        "deadline_alert",
        "hitl_detail",
        "hitl_detail_history",
        "import_error",
        "job",
        "log",
        "log_template",
        "partitioned_asset_key_log",
        "rendered_task_instance_fields",
        "revoked_token",
        "serialized_dag",
        "slot_pool",
        "task_inlet_asset_reference",
        "task_instance",
        "task_instance_history",
        "task_instance_note",
        "task_map",
        "task_outlet_asset_reference",
        "task_reschedule",
        "task_state_store",
        "team",
        "trigger",
        "variable",
        "xcom",
    }
)
# Where `airflow db migrate` moves rows it cannot migrate (airflow.utils.db).
AIRFLOW_MOVED_PREFIX = "_airflow_moved"

# Catalog schemas of PostgreSQL, MySQL/MariaDB and SQL Server. PostgreSQL reserves every schema
# name starting with pg_ (pg_temp_N, pg_toast_temp_N), and searches pg_catalog before the
# search_path, so an unqualified pg_* name can be a catalog too.
SYSTEM_SCHEMAS: frozenset[str] = frozenset(
    {"pg_catalog", "information_schema", "pg_toast", "mysql", "performance_schema", "sys"}
)
POSTGRES_RESERVED_PREFIX = "pg_"
SQLITE_INTERNAL_PREFIX = "sqlite_"  # sqlite_master, sqlite_sequence, sqlite_stat1, ...

NEVER = "it is never a purge target"
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433, "oracle": 1521}
_BACKEND_ALIASES = {"postgres": "postgresql", "mariadb": "mysql"}  # one server protocol each
_LOCAL_HOSTS = {"", "localhost", "localhost.localdomain", "ip6-localhost"}


class ProtectedTableError(ValueError):
    """A purge aimed at the control database, Airflow's metadata or a system catalog."""


def _split(table: str) -> tuple[str | None, str]:
    """(schema or None, name), both case-folded: SQL names compare case-insensitively here, so
    `Retention_Audit` cannot slip past (a refused name too many is the safe side)."""
    schema, _, name = table.strip().casefold().rpartition(".")
    return schema or None, name


def _system_catalog_problem(table: str) -> str | None:
    schema, name = _split(table)
    if schema is not None and (schema in SYSTEM_SCHEMAS or schema.startswith("pg_")):
        return f"{table!r} is in the system schema {schema!r} (a database catalog): {NEVER}"
    if name.startswith(SQLITE_INTERNAL_PREFIX):
        return f"{table!r} is one of SQLite's internal tables: {NEVER}"
    if schema is None and name.startswith(POSTGRES_RESERVED_PREFIX):
        return (
            f"{table!r} names a PostgreSQL system catalog (pg_catalog is searched first for "
            f"unqualified pg_* names): {NEVER}"
        )
    return None


def _control_problem(table: str) -> str | None:
    name = _split(table)[1]
    if name not in CONTROL_TABLES:
        return None
    return f"{table!r} is {_CONTROL_ROLES.get(name, 'a table')} (the control database): {NEVER}"


def _airflow_problem(table: str) -> str | None:
    name = _split(table)[1]
    if name not in AIRFLOW_METADATA_TABLES and not name.startswith(AIRFLOW_MOVED_PREFIX):
        return None
    return (
        f"{table!r} is one of Airflow's metadata tables: {NEVER} (Airflow's own records are "
        "cleaned with `airflow db clean`)"
    )


def protected_table_problem(table: str) -> str | None:
    """What is wrong with `table` (a policy's `store.table`, `name` or `schema.name`) as a
    purge target, for the policy's author; None when it may be one.

    Decided on the name alone, so the policy is refused wherever its connection points today
    (a connection can be repointed without touching the policy): a business table that happens
    to carry one of these names is refused too, the safe side of the trade.
    """
    return _system_catalog_problem(table) or _control_problem(table) or _airflow_problem(table)


# -- run time: the resolved databases -------------------------------------------------------------


@dataclass(frozen=True)
class _Database:
    """Where a URL's tables live: backend, host, port and database name, normalised so that
    two spellings of one database compare equal; for SQLite the file's real path."""

    backend: str
    host: str
    port: int | None
    name: str | None


def _host(url: sa.URL) -> str:
    """localhost, 127.0.0.0/8, ::1 and a Unix socket (no host, or a socket directory in the
    query as libpq allows) are all this machine."""
    host = (url.host or str(url.query.get("host") or "")).strip().strip("[]").casefold()
    if host in _LOCAL_HOSTS or host.startswith("/"):
        return "localhost"
    try:
        return "localhost" if ipaddress.ip_address(host).is_loopback else host
    except ValueError:
        return host


def _sqlite_path(database: str | None) -> str | None:
    """The file's real path (symlinks and relative spellings resolved against the working
    directory, as SQLite opens it); None for an in-memory database, which nothing shares."""
    if not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a URI filename (`?uri=true`)
        database = database[len("file:") :].partition("?")[0]
        if not database or database == ":memory:":
            return None
    return os.path.realpath(os.path.expanduser(database))


def _database(url: sa.URL | str, schema: str | None = None) -> _Database | None:
    """The database `url` reaches; on MySQL/MariaDB a schema is a database, so `schema`
    (the table's qualifier) overrides the URL's. None when it is a private in-memory one."""
    import sqlalchemy as sa

    url = sa.make_url(url)
    backend = url.get_backend_name()
    backend = _BACKEND_ALIASES.get(backend, backend)
    if backend == "sqlite":
        path = _sqlite_path(url.database)
        return None if path is None else _Database("sqlite", "", None, path)
    port = url.port or url.query.get("port") or DEFAULT_PORTS.get(backend)
    name = schema if backend == "mysql" and schema else url.database
    if isinstance(port, tuple):  # `?port=..&port=..`: refused as int() of it always was
        raise TypeError(f"{backend} URL: more than one port in its query")
    return _Database(
        backend, _host(url), int(port) if port else None, name.casefold() if name else None
    )


def _describe(database: _Database) -> str:
    """The database without credentials, for the error message."""
    if database.backend == "sqlite":
        return f"sqlite file {database.name}"
    return f"{database.backend}://{database.host}:{database.port}/{database.name}"


def check_purge_target(
    store_url: sa.URL | str,
    table: str,
    *,
    control_url: sa.URL | str | None,
    airflow_url: sa.URL | str | None,
) -> None:
    """Refuse (ProtectedTableError) to purge `table` through `store_url` when it is a system
    catalog (in any database), or a control table in the control database (`control_url`), or
    an Airflow metadata table in Airflow's metadata database (`airflow_url`, see
    `airflow_metadata_url`). None for a URL means "not known here": that comparison is skipped.

    Compares resolved databases, not connection ids: a policy whose connection was repointed at
    the control database after validation is caught here, and a business table that shares a
    name with a control table in another database is not.
    """
    store = _database(store_url, _split(table)[0])
    problem = _system_catalog_problem(table)
    if problem is None and store is not None:
        problem = _in_protected_database(table, store, control_url, airflow_url)
    if problem is not None:
        raise ProtectedTableError(problem)


def _in_protected_database(
    table: str, store: _Database, control_url: sa.URL | str | None, airflow_url: sa.URL | str | None
) -> str | None:
    """The problem with `table` in the store's resolved database: a MySQL/MariaDB system
    database, or the control (Airflow's) database when the table is a control (Airflow) one."""
    if store.backend == "mysql" and store.name in SYSTEM_SCHEMAS:
        return f"{table!r} is in the system database {store.name!r}: {NEVER}"
    for url, check in ((control_url, _control_problem), (airflow_url, _airflow_problem)):
        problem = check(table)
        if url is not None and problem is not None and _database(url) == store:
            return f"{problem}; the store's database is {_describe(store)}"
    return None


def airflow_metadata_url() -> str | None:
    """Airflow's metadata database URL (`[database] sql_alchemy_conn`, with its _cmd/_secret
    variants), read when asked: importing Airflow's configuration is not free, and this module
    is imported at DAG parse time. None when Airflow is not installed or the option is unset;
    any other failure (a broken configuration) is raised, not taken for "no Airflow here"."""
    try:
        from airflow.sdk.configuration import conf
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] == "airflow":
            return None
        raise
    return conf.get("database", "sql_alchemy_conn", fallback=None) or None
