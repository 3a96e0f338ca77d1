"""Alerts end to end: a refused run and an overdue policy reach their owners through a real SMTP
server on loopback (aiosmtpd) and a real HTTP webhook; the messages name the policy, the status,
the reason and the evidence link, and never a record."""

from __future__ import annotations

import email
import email.policy
import html
import json
import socket
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from lifecycle.audit import record_run
from tests.e2e.conftest import task_states
from tests.e2e.test_runs import LOGICAL_DATE, TIMESTAMPS
from tests.policies import TEST_STATEMENT, policy_yaml
from tests.stores.test_sql import make_table

SECRET = "Jansen 06-12345678"  # a record's value: never in an alert
BASE_URL = "http://airflow.example.com:8080"
OWNERS = ["dpo@example.com", "data-engineering@example.com"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp(monkeypatch):
    """A real SMTP server on loopback, `smtp_default` pointing at it; yields the messages."""
    from aiosmtpd.controller import Controller

    received: list[tuple[list[str], email.message.EmailMessage]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            received.append((list(envelope.rcpt_tos), message))
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    extra = {"disable_ssl": True, "disable_tls": True, "from_email": "retention@example.com"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra}),
    )
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    yield received
    controller.stop()


@pytest.fixture
def webhook(monkeypatch):
    """A chat webhook on loopback (connection `chat_alerts`); yields the JSON bodies posted."""
    posted: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_CHAT_ALERTS", f"http://127.0.0.1:{server.server_address[1]}/hooks/retention"
    )
    yield posted
    server.shutdown()
    server.server_close()


def write_policy(deployment, name: str, owners: str, **fields) -> None:
    (deployment.policy_dir / f"{name}.yaml").write_text(
        policy_yaml(
            name=name,
            title=f"Test {name}",
            statement=TEST_STATEMENT,
            store__table="events",
            store__timestamp="seen_at",
            retries=0,
            owners=owners,
            **fields,
        ),
        encoding="utf-8",
    )


def refused_run(deployment, owners: str):
    """A run refused by its guard (3 of 6 records, more than 0.25), the expired rows holding
    `SECRET`."""
    engine = sa.create_engine(deployment.store_url)
    table = make_table(engine, "events", TIMESTAMPS)
    with engine.begin() as conn:
        conn.execute(sa.update(table).values(payload=SECRET))
    engine.dispose()
    write_policy(deployment, "events", owners, guards="{max_delete_fraction: 0.25}")
    return deployment.run("retention_events", LOGICAL_DATE)


def body_of(message) -> str:
    return html.unescape(message.get_body(("html", "plain")).get_content())


def test_a_refused_run_mails_its_owners_the_policy_status_reason_and_evidence(deployment, smtp):
    dag_run = refused_run(deployment, "{email: [dpo@example.com, data-engineering@example.com]}")

    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["record"] == "failed"  # the run stays red
    (row,) = deployment.audit("events")
    assert row["status"] == "refused"
    (recipients, message) = smtp[-1]
    assert len(smtp) == 1
    assert recipients == OWNERS
    assert message["To"] == ", ".join(OWNERS)
    assert message["From"] == "retention@example.com"
    assert message["Subject"] == "[retention] events: run refused, nothing deleted"
    body = body_of(message)
    assert "Policy: events" in body and "Status: refused" in body
    assert "3 of 6 records (50.0%) would be deleted, more than max_delete_fraction 0.25" in body
    assert f"{BASE_URL}/retention/runs/{row['id']}" in body
    assert f'href="{BASE_URL}/retention/runs/{row["id"]}"' in message.get_body().get_content()
    assert SECRET not in message.as_string() and "Jansen" not in body


def test_a_refused_run_posts_to_the_chat_webhook(deployment, webhook):
    dag_run = refused_run(deployment, "{webhook_conn_id: chat_alerts}")

    assert str(dag_run.state) == "failed"
    (posted,) = webhook
    (row,) = deployment.audit("events")
    assert (posted["policy"], posted["status"]) == ("events", "refused")
    assert "more than max_delete_fraction 0.25" in posted["reasons"][0]
    assert posted["evidence"].endswith(f"/retention/runs/{row['id']}")
    assert "events" in posted["text"] and posted["evidence"] in posted["text"]
    assert SECRET not in json.dumps(posted)


def test_a_clean_run_alerts_nobody(deployment, smtp):
    engine = sa.create_engine(deployment.store_url)
    make_table(engine, "events", TIMESTAMPS)
    engine.dispose()
    write_policy(
        deployment, "events", "{email: [dpo@example.com]}", guards="{max_delete_fraction: 1}"
    )

    assert str(deployment.run("retention_events", LOGICAL_DATE).state) == "success"
    assert smtp == []


@pytest.fixture
def watchdog_state(airflow_home):
    """A fresh watchdog state (the Airflow Variable) for each test."""
    from airflow.models.variable import Variable

    from lifecycle.watchdog import STATE_VARIABLE

    Variable.delete(STATE_VARIABLE)
    yield
    Variable.delete(STATE_VARIABLE)


def audit_row(policy: str, ended: datetime, status: str = "purged") -> dict:
    return {
        "dag_id": f"retention_{policy}",
        "run_id": f"scheduled__{ended.isoformat()}",
        "attempt": 0,
        "policy": policy,
        "title": f"Test {policy}",
        "controller": "provider",
        "legal_basis": "contract",
        "store": "sql:telecom_db:events",
        "period": "P6M",
        "status": status,
        "dry_run": False,
        "verified": status == "purged",
        "logical_date": ended - timedelta(minutes=5),
        "finished_at": ended,
        "reasons": [],
    }


def test_an_overdue_policy_alerts_its_owners_once_even_with_no_run(
    deployment, smtp, webhook, watchdog_state
):
    from lifecycle.watchdog import WATCHDOG_DAG_ID, build_watchdog

    owners = "{email: [dpo@example.com], webhook_conn_id: chat_alerts}"
    write_policy(deployment, "events", owners)  # verified three days ago, nothing since
    write_policy(deployment, "fresh", owners)  # verified an hour ago
    write_policy(deployment, "unwatched", "null")  # no owners: not watched
    now = datetime.now(UTC)
    engine = sa.create_engine(deployment.audit_url)
    record_run(engine, audit_row("events", now - timedelta(days=3)))
    record_run(engine, audit_row("unwatched", now - timedelta(days=3)))
    record_run(engine, audit_row("fresh", now - timedelta(hours=1)))
    engine.dispose()

    dag = build_watchdog(deployment.policy_dir)[WATCHDOG_DAG_ID]
    first = dag.test()
    dag.test(logical_date=datetime.now(UTC) + timedelta(hours=1))  # an hour later: no repeat

    assert str(first.state) == "success"
    (recipients, message) = smtp[0]
    assert len(smtp) == 1 and recipients == ["dpo@example.com"]
    assert message["Subject"] == "[retention] events: no verified run by its deadline"
    body = body_of(message)
    assert "Status: overdue" in body and "Policy: events" in body
    assert "no verified run by the deadline" in body and "last verified run ended" in body
    assert f"{BASE_URL}/retention/policies/events" in body
    (posted,) = webhook
    assert (posted["policy"], posted["status"]) == ("events", "overdue")


def test_the_watchdog_exists_only_where_a_policy_has_owners(deployment):
    from lifecycle.factory import build_dags
    from lifecycle.watchdog import build_watchdog

    def built() -> list[str]:  # beside the request DAGs and the chain's anchor, always built
        return sorted(
            dag_id
            for dag_id in build_dags(deployment.policy_dir)
            if not dag_id.startswith("dsr_") and dag_id != "retention-chain-anchor"
        )

    write_policy(deployment, "events", "null")
    assert build_watchdog(deployment.policy_dir) == {}
    assert built() == ["retention_events"]
    write_policy(deployment, "events", "{email: [dpo@example.com]}")
    dag = build_watchdog(deployment.policy_dir)["retention-watchdog"]
    assert dag.catchup is False and not dag.is_paused_upon_creation
    # The DAG file's one factory builds it beside the policies' DAGs, from the same load.
    assert built() == ["retention-watchdog", "retention_events"]
