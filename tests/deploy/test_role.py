"""The jobs' least-privilege role on the real PostgreSQL at 127.0.0.1 (fails when it is missing).

Two throwaway databases, as docker-compose.yml has them (the telecom store, the audit trail),
owned by a throwaway owner. The owner creates the policy tables and, with `lifecycle audit-init`,
the audit schema, then applies `lifecycle grants --apply` to a throwaway role. Whole runs then go
through Airflow (`dag.test()`) logged in as that role: the purge, the verification and the audit
row must work, and everything else must be refused. Everything is dropped at the end.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from lifecycle import cli
from lifecycle.audit import read_runs, record_run
from lifecycle.chain import row_hash, verify
from lifecycle.grants import required_grants
from lifecycle.holds import place_hold
from lifecycle.loader import DEFAULT_POLICY_DIR, load_policies
from tests.e2e.conftest import Deployment, task_states
from tests.policies import DROP, TEST_STATEMENT, policy_yaml
from tests.stores.test_sql import make_table, survivors

AMS = ZoneInfo("Europe/Amsterdam")
LOGICAL_DATE = datetime(2026, 11, 29, tzinfo=AMS)
CUTOFF = datetime(2026, 5, 29, tzinfo=AMS).astimezone(UTC)  # P6M before, at local midnight
ONE_US = timedelta(microseconds=1)
EVENT_TIMES = [CUTOFF - timedelta(days=40), CUTOFF - ONE_US, CUTOFF, CUTOFF + timedelta(days=3)]
INSUFFICIENT_PRIVILEGE = "42501"

CONTACTS_POLICY = policy_yaml(
    name="contacts",
    title="Test contacts",
    statement=TEST_STATEMENT | {"retention": "Tot einde dienst"},
    retention={
        "period": "P0D",
        "from_event": {
            "table": "contracts",
            "subject": "customer_id",
            "key": "customer_id",
            "timestamp": "ended_at",
        },
    },
    store__table="contacts",
    store__timestamp=DROP,
    store__subjects={"customer": "customer_id"},
    guards={"max_delete_fraction": 1},
    retries=0,
)


@dataclass
class Cluster:
    """A server with an owner, the jobs' role and the two databases the stack uses."""

    admin_url: sa.URL
    suffix: str
    password: str

    @property
    def owner(self) -> str:
        return f"lifecycle_owner_{self.suffix}"

    @property
    def role(self) -> str:
        return f"retention_{self.suffix}"

    def database(self, kind: str) -> str:
        return f"{kind}_{self.suffix}"

    def url(self, user: str, kind: str) -> sa.URL:
        return self.admin_url.set(
            username=user, password=self.password, database=self.database(kind)
        )

    def airflow_uri(self, user: str, kind: str) -> str:
        url = self.url(user, kind)
        return f"postgres://{user}:{self.password}@{url.host}:{url.port or 5432}/{url.database}"


@pytest.fixture
def cluster(postgres_url):
    admin_url = sa.make_url(postgres_url)
    cluster = Cluster(admin_url, secrets.token_hex(4), secrets.token_hex(16))
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    databases = [cluster.database(kind) for kind in ("telecom", "audit")]
    try:
        with admin.connect() as conn:
            for user in (cluster.owner, cluster.role):
                conn.exec_driver_sql(f"CREATE ROLE {user} LOGIN PASSWORD '{cluster.password}'")
            for database in databases:
                conn.exec_driver_sql(f"CREATE DATABASE {database} OWNER {cluster.owner}")
                # As in docker-compose: the role connects only where its grants say so.
                conn.exec_driver_sql(f"REVOKE CONNECT ON DATABASE {database} FROM PUBLIC")
        yield cluster
    finally:
        with admin.connect() as conn:
            for database in databases:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {cluster.role}, {cluster.owner}")
        admin.dispose()


def seed_contacts(engine: sa.Engine) -> None:
    """Contacts of clients whose contracts ended before the run (1, 2), run on (3), end after
    the run (4) or who have none (5)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE contracts (id int PRIMARY KEY, customer_id int, ended_at timestamptz)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE contacts (id int PRIMARY KEY, customer_id int, name text)"
        )
        conn.exec_driver_sql(
            "INSERT INTO contracts VALUES (1, 1, '2026-01-01'), (2, 2, '2026-01-01'), "
            "(3, 3, NULL), (4, 4, '2026-12-31')"
        )
        conn.exec_driver_sql(
            "INSERT INTO contacts VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'c'), (4, 3, 'd'), "
            "(5, 4, 'e'), (6, 5, 'f')"
        )


def contact_ids(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT id FROM contacts ORDER BY id").scalars())


def table_privileges(engine: sa.Engine, role: str) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT table_name, privilege_type FROM information_schema.table_privileges "
                "WHERE grantee = :role"
            ),
            {"role": role},
        )
        return {(table, privilege) for table, privilege in rows}


def connect_as(monkeypatch, cluster, user: str, audit_db: str = "audit") -> None:
    """The Airflow connections of the store and the audit trail, logged in as `user`."""
    monkeypatch.setenv("AIRFLOW_CONN_TELECOM_DB", cluster.airflow_uri(user, "telecom"))
    monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", cluster.airflow_uri(user, audit_db))


def refusal(engine: sa.Engine, statement: str) -> str | None:
    """The SQLSTATE the role gets for `statement`; None if it was allowed (rolled back)."""
    with engine.connect() as conn:
        try:
            conn.exec_driver_sql(statement)
        except sa.exc.DBAPIError as exc:
            return exc.orig.sqlstate
        finally:
            conn.rollback()
    return None


def contacts_deployment(cluster: Cluster, owner_telecom: sa.Engine, tmp_path) -> Deployment:
    """The contacts and their contracts (`seed_contacts`), and a policy folder with the
    contacts policy, on the cluster's databases as their owner."""
    seed_contacts(owner_telecom)
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "contacts.yaml").write_text(CONTACTS_POLICY, encoding="utf-8")
    return Deployment(
        policy_dir,
        cluster.url(cluster.owner, "telecom").render_as_string(hide_password=False),
        cluster.url(cluster.owner, "audit").render_as_string(hide_password=False),
    )


def test_grants_come_from_the_catalogue_policies():
    result = load_policies(DEFAULT_POLICY_DIR)
    assert not result.errors
    grants = required_grants(loaded.policy for loaded in result.policies)

    telecom = {grant.table: grant.privileges for grant in grants["telecom_db"]}
    sql_tables = {p.policy.store.table for p in result.policies if p.policy.store.kind == "sql"}
    assert {t for t, privileges in telecom.items() if privileges == ("DELETE", "SELECT")} == (
        sql_tables
    )
    # Read only: the contracts the "until end of service" policies wait for, and the periods
    # clients set (read for an S3 policy through the telecom connection).
    assert telecom["contracts"] == ("SELECT",)
    assert telecom["client_retention_settings"] == ("SELECT",)
    # The subscribers through which call records and IP logs reach their customer.
    assert telecom["subscribers"] == ("SELECT",)
    assert set(telecom) == sql_tables | {"contracts", "client_retention_settings", "subscribers"}
    audit = {grant.table: grant for grant in grants["lifecycle_audit"]}
    assert audit["retention_audit"].privileges == ("INSERT",)
    assert audit["retention_holds"].privileges == ("INSERT", "SELECT")  # placed, not released
    assert audit["retention_request_subjects"].privileges == ("SELECT",)
    # The hash chain's one-row head: locked, read and moved as each row is chained.
    assert audit["retention_chain"].privileges == ("SELECT", "UPDATE")
    assert set(grants) == {"telecom_db", "lifecycle_audit"}  # S3 connections take no SQL grant


def test_printed_grants_hold_no_privilege_beyond_the_policies(capsys):
    assert cli.main(["grants", "--role", "retention"]) == 0
    printed = capsys.readouterr().out
    assert "GRANT DELETE, SELECT ON cdrs TO retention;" in printed
    assert "GRANT SELECT ON contracts TO retention;" in printed
    assert "GRANT INSERT ON retention_audit TO retention;" in printed
    assert "GRANT USAGE ON SEQUENCE retention_audit_id_seq TO retention;" in printed
    # UPDATE on the hash chain's head (lifecycle.chain) and on what a request run completes
    # (lifecycle.requests), nowhere else: never on the trail, the holds or the ledger.
    assert [line for line in printed.splitlines() if "UPDATE" in line] == [
        "GRANT SELECT, UPDATE ON retention_chain TO retention;",
        "GRANT INSERT, SELECT, UPDATE ON retention_request_results TO retention;",
        "GRANT SELECT, UPDATE ON retention_requests TO retention;",
    ]
    for forbidden in ("TRUNCATE", "CREATE", "GRANT ALL", "REFERENCES", "TRIGGER"):
        assert forbidden not in printed
    assert cli.main(["grants", "--role", "retention; DROP TABLE cdrs"]) == 1


def test_a_connection_that_cannot_be_reached_keeps_no_other_grant_back(
    cluster, tmp_path, monkeypatch, capsys
):
    owner_telecom = sa.create_engine(cluster.url(cluster.owner, "telecom"))
    try:
        make_table(owner_telecom, "events", EVENT_TIMES)
        policy_dir = tmp_path / "policies"
        policy_dir.mkdir()
        deployment = Deployment(policy_dir, "", "")
        deployment.write_policy("events", "events", "seen_at")
        (policy_dir / "billing.yaml").write_text(
            (policy_dir / "events.yaml")
            .read_text()
            .replace("name: events", "name: billing")
            .replace("conn_id: telecom_db", "conn_id: billing_db")
        )
        monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(policy_dir))
        connect_as(monkeypatch, cluster, cluster.owner)
        monkeypatch.delenv("AIRFLOW_CONN_BILLING_DB", raising=False)

        assert cli.main(["grants", "--role", cluster.role, "--apply"]) == 1

        output = capsys.readouterr()
        assert "billing_db: no grants" in output.err
        assert f"telecom_db: {cluster.role} granted on 1 tables" in output.out
        # audit-init has not run here: no audit tables, so nothing granted there, and said so.
        assert "lifecycle_audit: table retention_audit does not exist" in output.err
        assert table_privileges(owner_telecom, cluster.role) == {
            ("events", "SELECT"),
            ("events", "DELETE"),
        }
    finally:
        owner_telecom.dispose()


def test_the_role_purges_and_audits_and_may_do_nothing_else(
    cluster, airflow_home, tmp_path, monkeypatch, capsys
):
    owner_telecom = sa.create_engine(cluster.url(cluster.owner, "telecom"))
    owner_audit = sa.create_engine(cluster.url(cluster.owner, "audit"))
    role_telecom = sa.create_engine(cluster.url(cluster.role, "telecom"))
    role_audit = sa.create_engine(cluster.url(cluster.role, "audit"))
    engines = (owner_telecom, owner_audit, role_telecom, role_audit)
    try:
        events = make_table(owner_telecom, "events", EVENT_TIMES)
        deployment = contacts_deployment(cluster, owner_telecom, tmp_path)
        deployment.write_policy("events", "events", "seen_at")
        monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(deployment.policy_dir))

        # The init service's part, logged in as the owner.
        connect_as(monkeypatch, cluster, cluster.owner)
        assert cli.main(["audit-init"]) == 0
        assert cli.main(["grants", "--role", cluster.role, "--apply"]) == 0
        assert "granted on 7 tables" in capsys.readouterr().out
        hold = place_hold(
            owner_audit,
            scope="contacts",
            subject="customer",
            value="2",
            reason="legal_hold",
            placed_by="po",
        )

        assert table_privileges(owner_telecom, cluster.role) == {
            ("events", "SELECT"),
            ("events", "DELETE"),
            ("contacts", "SELECT"),
            ("contacts", "DELETE"),
            ("contracts", "SELECT"),
        }
        assert table_privileges(owner_audit, cluster.role) == {
            ("retention_audit", "INSERT"),
            ("retention_holds", "SELECT"),
            ("retention_holds", "INSERT"),  # a request's restriction: placed, never released
            ("retention_requests", "SELECT"),  # a request run reads its request
            ("retention_requests", "UPDATE"),  # and writes its outcome
            ("retention_request_subjects", "SELECT"),  # the identifiers, in memory only
            ("retention_request_results", "SELECT"),  # each category's result
            ("retention_request_results", "INSERT"),
            ("retention_request_results", "UPDATE"),  # a retry replaces its own
            ("retention_ledger", "INSERT"),  # the deletion ledger: appended batch by batch,
            ("retention_ledger", "SELECT"),  # read back to reconcile
            ("retention_chain", "SELECT"),  # the hash chain's head: locked and moved
            ("retention_chain", "UPDATE"),
        }

        # The jobs' part, logged in as the role.
        connect_as(monkeypatch, cluster, cluster.role)
        runs = {
            name: deployment.run(f"retention_{name}", LOGICAL_DATE)
            for name in ("events", "contacts")
        }

        for name, dag_run in runs.items():
            assert str(dag_run.state) == "success", (name, task_states(dag_run))
        assert survivors(owner_telecom, events) == EVENT_TIMES[2:]
        assert contact_ids(owner_telecom) == [3, 4, 5, 6]  # held, running, ends later, none
        (events_row,) = deployment.audit("events")
        assert (events_row["status"], events_row["expired"], events_row["deleted"]) == (
            "purged",
            2,
            2,
        )
        assert (events_row["verified"], events_row["remaining"]) == (True, 0)
        (contacts_row,) = deployment.audit("contacts")
        assert (contacts_row["status"], contacts_row["deleted"], contacts_row["held"]) == (
            "purged",
            2,
            1,
        )
        assert contacts_row["holds"] == {str(hold): 1}
        assert contacts_row["verified"] is True

        role_engines = {"telecom": role_telecom, "audit": role_audit}
        forbidden = [
            ("telecom", "UPDATE events SET payload = 'changed'"),
            ("telecom", "INSERT INTO events (id, seen_at, payload) VALUES (99, now(), 'new')"),
            ("telecom", "TRUNCATE events"),
            ("telecom", "DELETE FROM contracts"),
            ("telecom", "UPDATE contracts SET ended_at = NULL"),
            ("telecom", "CREATE TABLE extra (id int)"),
            ("audit", "UPDATE retention_audit SET status = 'failed'"),
            ("audit", "DELETE FROM retention_audit"),
            ("audit", "SELECT id FROM retention_audit"),  # append-only: not the jobs' to read
            ("audit", "UPDATE retention_holds SET released_at = now()"),
            ("audit", "DELETE FROM retention_holds"),
            ("audit", "DELETE FROM retention_requests"),
            ("audit", "UPDATE retention_request_subjects SET value = 'x'"),
            ("audit", "CREATE TABLE extra (id int)"),
            ("audit", "UPDATE retention_audit SET row_hash = prev_hash"),
            ("audit", "DELETE FROM retention_chain"),
            ("audit", "INSERT INTO retention_chain (id, seq, row_hash) VALUES (2, 0, 'x')"),
        ]  # fmt: skip
        outcomes = {(db, sql): refusal(role_engines[db], sql) for db, sql in forbidden}
        assert outcomes == dict.fromkeys(forbidden, INSUFFICIENT_PRIVILEGE)
        # What it may do, it does: the check above fails for the right reason, not a typo.
        assert refusal(role_telecom, "DELETE FROM events WHERE id = -1") is None
        assert refusal(role_audit, "SELECT id FROM retention_holds") is None
        assert refusal(role_audit, "SELECT seq FROM retention_chain FOR UPDATE") is None
        # The rows the role wrote are chained, without its reading the trail.
        chain = verify(owner_audit)
        assert chain.intact and chain.checked == 2, chain.summary()

        # After an upgrade, before `audit-init` adds a new column: the role may not ALTER, so
        # the run's row is written without it and says so; the evidence is not lost.
        with owner_audit.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE retention_audit DROP COLUMN shards")
        late = {k: v for k, v in events_row.items() if k != "id"}
        late |= {"run_id": "after-upgrade", "shards": 2, "reasons": []}
        assert record_run(role_audit, late) is True
        (written,) = [r for r in read_runs(owner_audit) if r["run_id"] == "after-upgrade"]
        assert written["shards"] is None and written["deleted"] == late["deleted"]
        assert written["reasons"] == [
            "audit schema outdated, not recorded: shards (run `lifecycle audit-init`)"
        ]
        # Chained, and hashed as stored: without the column. (Dropping it altered the rows
        # that had a value there, and the chain says so.)
        assert written["row_hash"] is not None and row_hash(written) == written["row_hash"]
        assert verify(owner_audit).broken.kind == "altered"
        connect_as(monkeypatch, cluster, cluster.owner)
        assert cli.main(["audit-init"]) == 0  # as the owner: the column is back
        assert "shards" in {
            c["name"] for c in sa.inspect(owner_audit).get_columns("retention_audit")
        }

        # The audit UI's role: the same grants machinery, reading the trail and nothing else.
        assert cli.main(["grants", "--role", cluster.role, "--audit-reader", "--apply"]) == 0
        assert table_privileges(owner_audit, cluster.role) == {
            ("retention_audit", "SELECT"),
            ("retention_ledger", "SELECT"),  # a row adds what a later run settled for it
            ("retention_chain", "SELECT"),  # the hash chain's head, to verify against
            ("retention_requests", "SELECT"),  # the requests' register and results:
            ("retention_request_results", "SELECT"),  # counts and statuses
        }
        assert verify(role_audit) == verify(owner_audit)  # the UI's role walks it too
        assert refusal(role_audit, "SELECT policy, deleted FROM retention_audit") is None
        assert [r["run_id"] for r in read_runs(role_audit)] == [
            r["run_id"] for r in read_runs(owner_audit)
        ]
        assert refusal(role_audit, "SELECT value FROM retention_holds") == INSUFFICIENT_PRIVILEGE
        assert (
            refusal(role_audit, "SELECT value FROM retention_request_subjects")
            == INSUFFICIENT_PRIVILEGE
        )
        assert refusal(role_audit, "DELETE FROM retention_audit") == INSUFFICIENT_PRIVILEGE
    finally:
        for engine in engines:
            engine.dispose()


def test_connections_to_one_database_are_granted_together(cluster, tmp_path, monkeypatch, capsys):
    # The store and the audit trail in one database: one pass, or the second connection's
    # revoke-then-grant would take back what the first granted.
    owner = sa.create_engine(cluster.url(cluster.owner, "telecom"))
    try:
        make_table(owner, "events", EVENT_TIMES)
        policy_dir = tmp_path / "policies"
        policy_dir.mkdir()
        Deployment(policy_dir, "", "").write_policy("events", "events", "seen_at")
        monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(policy_dir))
        connect_as(monkeypatch, cluster, cluster.owner, audit_db="telecom")
        assert cli.main(["audit-init"]) == 0

        assert cli.main(["grants", "--role", cluster.role, "--apply"]) == 0

        assert "lifecycle_audit, telecom_db: " in capsys.readouterr().out
        assert table_privileges(owner, cluster.role) == {
            ("events", "SELECT"),
            ("events", "DELETE"),
            ("retention_audit", "INSERT"),
            ("retention_holds", "SELECT"),
            ("retention_holds", "INSERT"),
            ("retention_ledger", "INSERT"),
            ("retention_ledger", "SELECT"),
            ("retention_chain", "SELECT"),
            ("retention_chain", "UPDATE"),
            ("retention_requests", "SELECT"),
            ("retention_requests", "UPDATE"),
            ("retention_request_subjects", "SELECT"),
            ("retention_request_results", "SELECT"),
            ("retention_request_results", "INSERT"),
            ("retention_request_results", "UPDATE"),
        }
    finally:
        owner.dispose()


def test_the_role_answers_requests_and_may_place_but_never_release_a_hold(
    cluster, airflow_home, tmp_path, monkeypatch, capsys
):
    """Data-subject requests run as the jobs' role on PostgreSQL: an erasure deletes what it
    may (customer 2's contacts: contract ended) and keeps the running contract's (customer 3),
    a restriction places its holds; releasing them is the privacy officer's (the owner's)."""
    from lifecycle.requests.register import decide_request, get_request, register_request

    owner_telecom = sa.create_engine(cluster.url(cluster.owner, "telecom"))
    owner_audit = sa.create_engine(cluster.url(cluster.owner, "audit"))
    role_audit = sa.create_engine(cluster.url(cluster.role, "audit"))
    try:
        deployment = contacts_deployment(cluster, owner_telecom, tmp_path)
        monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(deployment.policy_dir))
        connect_as(monkeypatch, cluster, cluster.owner)
        assert cli.main(["audit-init"]) == 0
        assert cli.main(["grants", "--role", cluster.role, "--apply"]) == 0
        erasures = [
            register_request(
                owner_audit, kind="erasure", identifiers={"customer": c}, registered_by="po"
            )
            for c in ("2", "3")
        ]
        restriction = register_request(
            owner_audit, kind="restriction", identifiers={"customer": "4"}, registered_by="po"
        )

        connect_as(monkeypatch, cluster, cluster.role)
        for request_id in erasures:
            run = deployment.run("dsr_erasure", LOGICAL_DATE, conf={"request_id": request_id})
            assert str(run.state) == "success", task_states(run)
        run = deployment.run("dsr_restriction", LOGICAL_DATE, conf={"request_id": restriction})
        assert str(run.state) == "success", task_states(run)

        assert contact_ids(owner_telecom) == [1, 2, 4, 5, 6]  # customer 2's contact 3 is gone
        rows = {
            (row["request_id"], row["policy"]): row
            for row in read_runs(owner_audit)
            if row["request_id"] is not None
        }
        gone, running = rows[(erasures[0], "contacts")], rows[(erasures[1], "contacts")]
        assert (gone["status"], gone["deleted"], gone["verified"]) == ("erased", 1, True)
        assert (running["status"], running["deleted"], running["active"]) == ("erased", 0, 1)
        assert get_request(owner_audit, restriction).status == "answered"
        with owner_audit.connect() as conn:
            placed = conn.exec_driver_sql(
                "SELECT scope, subject, reason FROM retention_holds WHERE request_id = %s "
                "AND released_at IS NULL",
                (restriction,),
            ).all()
        assert [tuple(row) for row in placed] == [("contacts", "customer", "restriction")]
        assert refusal(role_audit, "UPDATE retention_holds SET released_at = now()") == (
            INSUFFICIENT_PRIVILEGE
        )
        assert verify(owner_audit).intact
        # Deciding is the privacy officer's, as the owner: the restriction is released.
        assert (
            len(decide_request(owner_audit, restriction, decision="granted", decided_by="po")) == 1
        )
    finally:
        for engine in (owner_telecom, owner_audit, role_audit):
            engine.dispose()


def test_residue_removal_before_postgresql_17_is_not_granted_and_said_so(
    cluster, tmp_path, monkeypatch, capsys
):
    """`store.residue: remove` on PostgreSQL needs VACUUM: MAINTAIN from 17, the table's owner
    before. On an older server the role gets nothing more than for a reporting policy, and the
    command says why (the runs then report the residue as not removed)."""
    owner = sa.create_engine(cluster.url(cluster.owner, "telecom"))
    try:
        with owner.connect() as conn:
            major = int(conn.exec_driver_sql("SHOW server_version_num").scalar()) // 10000
        make_table(owner, "events", EVENT_TIMES)
        policy_dir = tmp_path / "policies"
        policy_dir.mkdir()
        Deployment(policy_dir, "", "").write_policy("events", "events", "seen_at", residue="remove")
        monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(policy_dir))
        connect_as(monkeypatch, cluster, cluster.owner, audit_db="telecom")

        assert cli.main(["grants", "--role", cluster.role, "--apply"]) == 0

        err = capsys.readouterr().err
        events = {p for t, p in table_privileges(owner, cluster.role) if t == "events"}
        if major < 17:
            assert events == {"SELECT", "DELETE"}
            assert (
                "table events: store.residue: remove needs VACUUM, which before PostgreSQL 17 "
                "only the table's owner may run (no grant gives it alone): not granted" in err
            )
        else:
            assert events == {"SELECT", "DELETE", "MAINTAIN"}
            assert "store.residue" not in err
    finally:
        owner.dispose()
