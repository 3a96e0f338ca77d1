"""Least-privilege grants for the retention jobs' database role, derived from the policy files.

The jobs read and delete in each SQL policy's table, only read the tables they consult (the event
table of `from_event`, the link tables of `store.subjects`, the settings table of `per_tenant`,
the holds) and only append to the audit trail. Nothing else: no TRUNCATE, no DDL, and UPDATE on
the one-row head of the trail's hash chain (`retention_chain`), which a run locks and moves as it
chains its row (lifecycle.chain), and the data-subject requests' register and results, which a
request run completes; the trail itself stays unreadable to the role. It may place a hold (a
request's restriction), never release one.
The statements come from the loaded policies, so a new policy file needs no second list kept by
hand: rerun `lifecycle grants`.

The schema (audit trail and holds) is created by the owner (`lifecycle audit-init`), never by
the role. PostgreSQL 15 and later give PUBLIC no CREATE on the public schema; on older servers
revoke it (`REVOKE CREATE ON SCHEMA public FROM PUBLIC`).

DELETE is never granted on the control database's tables, Airflow's metadata or a system
catalog (lifecycle.protected), even for a policy that escaped validation (built with
`Policy.model_construct`, or loaded by an older version): the grants are the last guard.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from lifecycle.connections import AUDIT_CONN_ID
from lifecycle.control import (
    chain_head,
    holds,
    ledger,
    request_results,
    request_subjects,
    requests,
    runs,
)
from lifecycle.fields import IDENTIFIER_PATTERN
from lifecycle.policy import Policy
from lifecycle.protected import protected_table_problem
from lifecycle.stores.config import REMOVE_RESIDUE

READ, DELETE, APPEND, MOVE = "SELECT", "DELETE", "INSERT", "UPDATE"
# What grant_statements never gives on a protected table.
_DELETING = {DELETE, "ALL", "ALL PRIVILEGES", REMOVE_RESIDUE, "DELETE HISTORY", "MAINTAIN"}
DIALECTS = {"postgresql": postgresql.dialect, "mysql": mysql.dialect, "mariadb": mysql.dialect}
# `store.residue: remove` needs one right on the policy's table: VACUUM on PostgreSQL (the
# MAINTAIN privilege, PostgreSQL 17+; before 17 only the table's owner may VACUUM, and no grant
# gives that alone), DELETE HISTORY on MariaDB's system-versioned tables.
_RESIDUE_PRIVILEGE = {"postgresql": "MAINTAIN", "mysql": "DELETE HISTORY"}
_MAINTAIN_SINCE = 17
ServerVersion = tuple[int | str, ...] | None  # SQLAlchemy's server_version_info


def _lacks_maintain(dialect_name: str, server_version: ServerVersion) -> bool:
    """A PostgreSQL server known to be older than 17 (no MAINTAIN privilege)."""
    if dialect_name != "postgresql" or not server_version:
        return False
    major = server_version[0]
    return isinstance(major, int) and major < _MAINTAIN_SINCE


@dataclass(frozen=True)
class TableGrant:
    """The privileges the role needs on one table (`name` or `schema.name`)."""

    table: str
    privileges: tuple[str, ...]

    @property
    def schema(self) -> str | None:
        schema, _, _ = self.table.rpartition(".")
        return schema or None

    @property
    def name(self) -> str:
        return self.table.rpartition(".")[2]


def required_grants(
    policies: Iterable[Policy], audit_conn_id: str = AUDIT_CONN_ID
) -> dict[str, list[TableGrant]]:
    """connection id -> the grants the role needs in that connection's database."""
    needs: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for policy in policies:
        store, retention = policy.store, policy.retention
        try:
            store_needs = store.grants(policy)
        except ValueError as exc:
            raise ValueError(f"policy {policy.name!r}: {exc}; no grants made") from None
        for conn_id, tables in store_needs.items():
            for table, privileges in tables.items():
                needs[conn_id][table] |= privileges
        if retention.per_tenant is not None:
            settings = retention.per_tenant
            needs[settings.conn_id or store.conn_id][settings.table].add(READ)
    needs[audit_conn_id][holds.name].add(READ)
    needs[audit_conn_id][runs.name].add(APPEND)
    # The deletion ledger: appended batch by batch, read back by retries and later runs to
    # reconcile (counts only, no personal data).
    needs[audit_conn_id][ledger.name] |= {READ, APPEND}
    # The chain's head: locked (UPDATE, SELECT ... FOR UPDATE), read and moved by each row.
    needs[audit_conn_id][chain_head.name] |= {READ, MOVE}
    # Data-subject requests (lifecycle.requests): the register read and its outcome written, the
    # identifiers read (in the task's memory only), each category's result written (a retry
    # replaces its own), and restriction holds placed. A hold only ever keeps records: placing
    # one is the safe direction; releasing one (UPDATE) stays the privacy officer's.
    needs[audit_conn_id][requests.name] |= {READ, MOVE}
    needs[audit_conn_id][request_subjects.name].add(READ)
    needs[audit_conn_id][request_results.name] |= {READ, APPEND, MOVE}
    needs[audit_conn_id][holds.name].add(APPEND)
    return {
        conn_id: [
            TableGrant(table, tuple(sorted(privileges)))
            for table, privileges in sorted(tables.items())
        ]
        for conn_id, tables in sorted(needs.items())
    }


def reader_grants(audit_conn_id: str = AUDIT_CONN_ID) -> dict[str, list[TableGrant]]:
    """The audit UI's role (the API server's connection): it reads the audit trail and the
    deletion ledger (counts and batch bounds; a run's row adds the batches a later run
    settled for it) and the head of the hash chain (to verify it against), nothing else; not
    the holds, whose values are personal data."""
    return {
        audit_conn_id: [
            TableGrant(runs.name, (READ,)),
            TableGrant(ledger.name, (READ,)),
            TableGrant(chain_head.name, (READ,)),
            # The requests' register and per-category results (counts, statuses), and which
            # identifiers a request has (their names, for the requests page): never a value.
            TableGrant(requests.name, (READ,)),
            TableGrant(request_results.name, (READ,)),
            TableGrant(request_subjects.name, (f"{READ} (request_id, subject)",)),
        ]
    }


def check_role(role: str) -> str:
    if not re.match(IDENTIFIER_PATTERN, role):
        raise ValueError(f"role: {role!r} is not a plain identifier (letters, digits and _)")
    return role


def _sequence_of(table: sa.Table) -> str:
    """PostgreSQL's name for the sequence of a SERIAL key (INSERT takes its nextval)."""
    (key,) = table.primary_key.columns
    return f"{table.name}_{key.name}_seq"[:63]


def residue_not_grantable(
    dialect_name: str, grants: list[TableGrant], server_version: ServerVersion
) -> list[str]:
    """The tables whose `store.residue: remove` no grant can serve on this server (PostgreSQL
    before 17: VACUUM is the owner's alone); their runs report the residue as not removed."""
    if not _lacks_maintain(dialect_name, server_version):
        return []
    return [grant.table for grant in grants if REMOVE_RESIDUE in grant.privileges]


def _sql_privileges(
    dialect_name: str, privileges: tuple[str, ...], server_version: ServerVersion
) -> tuple[str, ...]:
    """The grant's privileges as the database names them (REMOVE_RESIDUE translated, or left
    out where the server has no privilege for it)."""
    named = [p for p in privileges if p != REMOVE_RESIDUE]
    if REMOVE_RESIDUE in privileges and not _lacks_maintain(dialect_name, server_version):
        named.append(_RESIDUE_PRIVILEGE["mysql" if dialect_name == "mariadb" else dialect_name])
    return tuple(sorted(named))


def grant_statements(
    dialect_name: str,
    role: str,
    grants: list[TableGrant],
    database: str | None = None,
    server_version: ServerVersion = None,
) -> list[str]:
    """The statements that give `role` exactly `grants` (run them as the tables' owner).

    PostgreSQL: everything the role held on tables and sequences of the schemas concerned is
    revoked first, in the same transaction, so a removed policy leaves no privilege behind.
    MySQL/MariaDB: grants only (its REVOKE cannot be scoped to one database's tables).
    `store.residue: remove` becomes MAINTAIN on PostgreSQL (17+; on an older `server_version`
    nothing: see `residue_not_grantable`) and DELETE HISTORY on MariaDB.
    """
    if dialect_name not in DIALECTS:
        raise ValueError(f"no grants for {dialect_name!r} (supported: {', '.join(DIALECTS)})")
    role = check_role(role)
    for grant in grants:
        problem = protected_table_problem(grant.table)
        if problem is not None and _DELETING & {p.upper() for p in grant.privileges}:
            raise ValueError(f"DELETE on {grant.table!r} refused: {problem}")
    quote = DIALECTS[dialect_name]().identifier_preparer.quote
    grantee = quote(role) if dialect_name == "postgresql" else f"'{role}'"

    def table_name(grant: TableGrant) -> str:
        return ".".join(quote(part) for part in (grant.schema, grant.name) if part)

    statements: list[str] = []
    if dialect_name == "postgresql":
        schemas = sorted({grant.schema or "public" for grant in grants})
        for schema in schemas:
            statements.append(f"REVOKE ALL ON ALL TABLES IN SCHEMA {quote(schema)} FROM {grantee}")
            statements.append(
                f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {quote(schema)} FROM {grantee}"
            )
        if database:
            statements.append(f"GRANT CONNECT ON DATABASE {quote(database)} TO {grantee}")
        statements += [
            f"GRANT USAGE ON SCHEMA {quote(schema)} TO {grantee}"
            for schema in schemas
            if schema != "public"
        ]
    for grant in grants:
        privileges = _sql_privileges(dialect_name, grant.privileges, server_version)
        statements.append(f"GRANT {', '.join(privileges)} ON {table_name(grant)} TO {grantee}")
        appended = {runs.name: runs, ledger.name: ledger, holds.name: holds}.get(grant.name)
        if dialect_name == "postgresql" and APPEND in grant.privileges and appended is not None:
            sequence = ".".join(quote(p) for p in (grant.schema, _sequence_of(appended)) if p)
            statements.append(f"GRANT USAGE ON SEQUENCE {sequence} TO {grantee}")
    return statements


def policies_by_connection(policies: Iterable[Policy]) -> dict[str, list[Policy]]:
    """connection id -> the policies whose store it reaches (for `owner_statements`)."""
    found: dict[str, list[Policy]] = defaultdict(list)
    for policy in policies:
        found[policy.store.conn_id].append(policy)
    return dict(found)


def owner_statements(
    policies: Iterable[Policy], dialect_name: str, role: str
) -> dict[str, list[str]]:
    """table -> what its owner runs for `role` beyond table grants, as each store kind asks
    (PostgreSQL: a SQL policy's partition drop function, `store.partitions: drop`)."""
    found: dict[str, list[str]] = defaultdict(list)
    for policy in policies:
        asked = policy.store.owner_statements(policy, dialect_name, check_role(role))
        for table, statements in asked.items():
            found[table] += statements
    return dict(found)


def apply_grants(
    engine: sa.Engine, role: str, grants: list[TableGrant], policies: Iterable[Policy] = ()
) -> list[str]:
    """Run the statements on `engine` (connected as the owner) in one transaction; returns the
    tables that do not exist (yet) and so got no grant. `policies`: those of this database,
    whose `owner_statements` run too, for the tables that exist."""
    from lifecycle.stores.sql_partitions import run_ddl

    inspector = sa.inspect(engine)
    present = [g for g in grants if inspector.has_table(g.name, schema=g.schema)]
    missing = [g.table for g in grants if g not in present]
    statements = grant_statements(
        engine.dialect.name,
        role,
        present,
        engine.url.database,
        server_version=engine.dialect.server_version_info,
    )
    present_tables = {g.table for g in present}
    owned = owner_statements(policies, engine.dialect.name, role)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
        for table, extra in sorted(owned.items()):
            for statement in extra if table in present_tables else ():
                run_ddl(conn, statement)
    return missing
