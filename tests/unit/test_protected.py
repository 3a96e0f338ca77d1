"""Never a purge target: the control database's tables, Airflow's metadata, system catalogs.

Refused on the name (validation, grants) and on the resolved database at run time.
"""

from __future__ import annotations

import sys

import pytest

from lifecycle.grants import TableGrant, grant_statements, required_grants
from lifecycle.loader import DEFAULT_POLICY_DIR, load_policies
from lifecycle.protected import (
    AIRFLOW_METADATA_TABLES,
    CONTROL_TABLES,
    ProtectedTableError,
    airflow_metadata_url,
    check_purge_target,
    protected_table_problem,
)
from tests.policies import make_policy

PROTECTED = [
    "retention_audit",
    "retention_holds",
    "RETENTION_HOLDS",
    "audit.retention_audit",
    "dag_run",
    "public.xcom",
    "Task_Instance",
    "alembic_version",
    "_airflow_moved__3_0__dag_run",
    "pg_catalog.pg_class",
    "PG_CATALOG.pg_authid",
    "pg_class",
    "pg_toast.pg_toast_2619",
    "pg_temp_3.scratch",
    "information_schema.tables",
    "mysql.user",
    "performance_schema.threads",
    "sys.objects",
    "sqlite_master",
    "main.sqlite_sequence",
]
ALLOWED = [
    "cdrs",
    "billing.usage_records",
    "retention_audit_archive",
    "audit_log",
    "dag_runs_export",
    "billing.pg_settings_copy",
    "my_sqlite_table",
]


# -- the lists stay true to what they protect ----------------------------------------------------


def test_control_tables_are_the_control_databases_tables():
    import lifecycle.holds  # registers retention_holds on the audit metadata
    from lifecycle.audit import metadata

    assert lifecycle.holds.holds.metadata is metadata
    assert set(CONTROL_TABLES) == set(metadata.tables)


def test_airflow_metadata_tables_are_the_installed_airflows():
    # Fails after an Airflow upgrade that adds or drops a table until the literal follows.
    import airflow.models
    from airflow.models.base import Base

    airflow.models.import_all_models()
    assert set(AIRFLOW_METADATA_TABLES) == set(Base.metadata.tables) | {"alembic_version"}


# -- by name: validation and grants ---------------------------------------------------------------


def test_the_audit_trail_is_refused_with_a_message_for_the_author():
    assert protected_table_problem("retention_audit") == (
        "'retention_audit' is the retention audit trail (the control database): "
        "it is never a purge target"
    )
    assert "holds" in protected_table_problem("retention_holds")
    assert "hash chain" in protected_table_problem("audit.retention_chain")
    assert "Airflow's metadata" in protected_table_problem("dag_run")
    assert "system schema 'pg_catalog'" in protected_table_problem("pg_catalog.pg_class")
    assert "SQLite's internal" in protected_table_problem("sqlite_master")


@pytest.mark.parametrize("table", PROTECTED)
def test_protected_tables_are_refused_by_name(table):
    problem = protected_table_problem(table)
    assert problem is not None
    assert repr(table) in problem and "never a purge target" in problem


@pytest.mark.parametrize("table", ALLOWED)
def test_other_tables_are_not(table):
    assert protected_table_problem(table) is None


def test_a_policy_that_escaped_validation_gets_no_grants():
    valid = make_policy()
    for table in CONTROL_TABLES:
        # model_copy does not validate: as a policy built with model_construct, or by a version
        # that had no such validation.
        store = valid.store.model_copy(update={"conn_id": "lifecycle_audit", "table": table})
        policy = valid.model_copy(update={"store": store})
        with pytest.raises(ValueError, match=rf"policy 'cdrs': store.table: '{table}' is the"):
            required_grants([valid, policy])


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "mariadb"])
@pytest.mark.parametrize(
    "grant",
    [
        TableGrant("retention_audit", ("DELETE", "SELECT")),
        TableGrant("retention_holds", ("DELETE",)),
        TableGrant("audit.retention_holds", ("SELECT", "delete")),
        TableGrant("dag_run", ("ALL",)),
        TableGrant("pg_catalog.pg_authid", ("DELETE",)),
    ],
)
def test_grant_statements_never_give_delete_on_a_protected_table(dialect, grant):
    with pytest.raises(ValueError, match=rf"DELETE on '{grant.table}' refused"):
        grant_statements(dialect, "retention", [TableGrant("cdrs", ("DELETE",)), grant])


def test_the_control_tables_keep_their_read_and_append_grants():
    statements = grant_statements(
        "postgresql",
        "retention",
        [TableGrant("retention_audit", ("INSERT",)), TableGrant("retention_holds", ("SELECT",))],
    )
    assert "GRANT INSERT ON retention_audit TO retention" in statements
    assert "GRANT SELECT ON retention_holds TO retention" in statements


def test_the_catalogue_gets_no_delete_on_a_protected_table():
    result = load_policies(DEFAULT_POLICY_DIR)
    assert not result.errors and result.policies
    grants = required_grants(loaded.policy for loaded in result.policies)
    deletable = {
        g.table
        for table_grants in grants.values()
        for g in table_grants
        if "DELETE" in g.privileges
    }
    assert deletable and not [t for t in deletable if protected_table_problem(t)]
    for conn_id, table_grants in grants.items():
        assert grant_statements("postgresql", "retention", table_grants), conn_id


# -- at run time: the resolved database ---------------------------------------------------------


def refused(store_url, table, *, control_url=None, airflow_url=None) -> str | None:
    try:
        check_purge_target(store_url, table, control_url=control_url, airflow_url=airflow_url)
    except ProtectedTableError as exc:
        assert isinstance(exc, ValueError)
        return str(exc)
    return None


def test_a_control_table_in_the_control_sqlite_file_is_refused_however_spelled(
    tmp_path, monkeypatch
):
    (tmp_path / "sub").mkdir()
    control = tmp_path / "audit.db"
    control.touch()
    (tmp_path / "link.db").symlink_to(control)
    monkeypatch.chdir(tmp_path / "sub")
    control_url = f"sqlite:///{control}"
    spellings = [
        control_url,
        "sqlite:///../audit.db",
        f"sqlite:///{tmp_path}/sub/../audit.db",
        f"sqlite:///{tmp_path / 'link.db'}",
        f"sqlite:///file:{control}?mode=ro&uri=true",
    ]
    for store_url in spellings:
        for table in ("retention_audit", "Retention_Holds", "main.retention_holds"):
            problem = refused(store_url, table, control_url=control_url)
            assert problem is not None, (store_url, table)
            assert "the control database" in problem and str(control) in problem
        assert refused(store_url, "cdrs", control_url=control_url) is None


def test_a_control_table_name_in_another_database_is_not_the_control_database(tmp_path):
    control_url = f"sqlite:///{tmp_path / 'audit.db'}"
    assert (
        refused(f"sqlite:///{tmp_path / 'telecom.db'}", "retention_audit", control_url=control_url)
        is None
    )
    assert refused("sqlite://", "retention_audit", control_url="sqlite://") is None  # in memory
    assert (
        refused(
            "postgresql+psycopg://retention@db:5432/telecom",
            "retention_holds",
            control_url="postgresql://owner@db:5432/audit",
        )
        is None
    )
    assert refused("mysql+pymysql://r@db/telecom", "retention_audit", control_url=None) is None


@pytest.mark.parametrize(
    "store_url",
    [
        "postgresql+psycopg://retention:s3cret@localhost/audit",
        "postgresql+psycopg://retention:s3cret@127.0.0.1:5432/audit",
        "postgresql://retention:s3cret@[::1]/AUDIT",
        "postgres://retention:s3cret@127.0.0.2/audit",
        "postgresql+psycopg://retention:s3cret@/audit?host=/var/run/postgresql",
    ],
)
def test_postgres_localhost_spellings_and_the_default_port_are_one_database(store_url):
    control_url = "postgresql+psycopg2://owner:other@127.0.0.1:5432/audit"
    problem = refused(store_url, "retention_audit", control_url=control_url)
    assert problem is not None and "postgresql://localhost:5432/audit" in problem
    assert "s3cret" not in problem and "other" not in problem


def test_another_port_host_or_database_on_postgres_is_another_database():
    control_url = "postgresql://owner@localhost/audit"
    for store_url in (
        "postgresql://r@localhost:5433/audit",
        "postgresql://r@db.internal/audit",
        "postgresql://r@localhost/telecom",
        "mysql://r@localhost/audit",
    ):
        assert refused(store_url, "retention_audit", control_url=control_url) is None, store_url


def test_mysql_schemas_are_databases():
    control_url = "mysql+pymysql://owner@db/audit"
    assert refused(
        "mariadb+pymysql://r@db:3306/telecom", "audit.retention_audit", control_url=control_url
    )
    assert (
        refused("mysql+pymysql://r@db/audit", "telecom.retention_audit", control_url=control_url)
        is None
    )
    assert "system database 'mysql'" in refused("mysql+pymysql://r@db/mysql", "user")


def test_an_airflow_metadata_table_in_airflows_database_is_refused():
    airflow_url = "postgresql+psycopg://airflow:pw@postgres:5432/airflow"
    for table in ("dag_run", "xcom", "public.task_instance", "_airflow_moved__2_9__xcom"):
        problem = refused("postgresql://r@postgres/airflow", table, airflow_url=airflow_url)
        assert problem is not None and "Airflow's metadata" in problem, table
    # The same names elsewhere, and another table in Airflow's database, are no concern here.
    assert refused("postgresql://r@postgres/telecom", "log", airflow_url=airflow_url) is None
    assert refused("postgresql://r@postgres/airflow", "cdrs", airflow_url=airflow_url) is None
    # A control table name in Airflow's database is not the control database.
    assert (
        refused(
            "postgresql://r@postgres/airflow",
            "retention_audit",
            control_url="postgresql://r@postgres/audit",
            airflow_url=airflow_url,
        )
        is None
    )


@pytest.mark.parametrize(
    ("store_url", "table"),
    [
        ("postgresql://r@db/telecom", "pg_catalog.pg_class"),
        ("postgresql://r@db/telecom", "information_schema.tables"),
        ("postgresql://r@db/telecom", "pg_toast.pg_toast_2619"),
        ("postgresql://r@db/telecom", "pg_authid"),
        ("mysql://r@db/telecom", "performance_schema.threads"),
        ("mysql://r@db/telecom", "mysql.user"),
        ("mysql://r@db/telecom", "sys.sys_config"),
        ("mysql://r@db/information_schema", "tables"),
        ("mysql://r@db/performance_schema", "threads"),
        ("sqlite:///telecom.db", "sqlite_master"),
        ("sqlite://", "sqlite_sequence"),
    ],
)
def test_system_catalogs_are_refused_in_any_database(store_url, table):
    problem = refused(store_url, table)
    assert problem is not None and problem.startswith(repr(table))
    assert "never a purge target" in problem


def test_the_airflow_metadata_url_is_read_from_airflows_configuration(monkeypatch):
    import airflow.sdk.configuration  # Airflow set up first, on the tests' own metadata DB

    assert airflow_metadata_url() == airflow.sdk.configuration.conf.get(
        "database", "sql_alchemy_conn"
    )
    url = "postgresql+psycopg://airflow:pw@postgres:5432/airflow"
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", url)
    assert airflow_metadata_url() == url
    monkeypatch.setitem(sys.modules, "airflow.sdk.configuration", None)  # Airflow not installed
    assert airflow_metadata_url() is None
