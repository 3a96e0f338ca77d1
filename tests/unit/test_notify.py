"""Alerts: the message, its bounds, the webhook's URL, the fallback that quotes no exception
text, and the deadline arithmetic of the watchdog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from lifecycle.notify import Alert, RunAlert, alert_of, owner_notifiers, webhook_url
from lifecycle.watchdog import deadline, overdue

EVIDENCE = "http://airflow.example.com/retention/runs/7"


def test_the_message_names_policy_status_reasons_and_evidence():
    alert = Alert("cdrs", "refused", ("3 of 6 records would be deleted",), EVIDENCE)
    assert alert.subject == "[retention] cdrs: run refused, nothing deleted"
    assert alert.text().splitlines()[2:] == [
        "Policy: cdrs",
        "Status: refused",
        "Reason: 3 of 6 records would be deleted",
        f"Evidence: {EVIDENCE}",
    ]
    assert f'<a href="{EVIDENCE}">' in alert.html()
    assert alert.payload()["reasons"] == ["3 of 6 records would be deleted"]


def test_values_are_escaped_and_bounded():
    alert = Alert("cdrs", "failed", ("<b>x</b>", *["y" * 900] * 12), EVIDENCE)
    assert "<b>" not in alert.html() and "&lt;b&gt;" in alert.html()
    assert len(alert.reasons) == 11 and alert.reasons[-1].startswith("... and 3 more")
    assert max(len(reason) for reason in alert.reasons) == 500


def test_an_unknown_failure_is_named_by_its_type_never_its_text():
    error = ValueError("INSERT ... VALUES ('Jansen', '06-12345678')")
    context = {"exception": error, "dag_run": SimpleNamespace(dag_id="retention_cdrs", run_id="r")}
    alert = alert_of(context)
    assert (alert.policy, alert.status) == ("cdrs", "failed")
    assert "ValueError" in alert.reasons[0] and "Jansen" not in alert.text()
    assert alert.evidence.endswith("/retention/policies/cdrs")


def test_a_refused_run_carries_its_alert_in_the_failure():
    alert = Alert("cdrs", "refused", ("guard",), EVIDENCE)
    assert alert_of({"exception": RunAlert(alert)}) is alert
    assert str(RunAlert(alert)) == "cdrs: run refused: guard"


@pytest.mark.parametrize(
    ("conn_type", "host", "port", "schema", "url"),
    [
        (
            "http",
            "https://chat.example.com/hooks/a",
            None,
            None,
            "https://chat.example.com/hooks/a",
        ),
        ("http", "127.0.0.1", 8000, "hooks/a", "http://127.0.0.1:8000/hooks/a"),
        (
            "https",
            "chat.example.com",
            None,
            "services/T/B",
            "https://chat.example.com/services/T/B",
        ),
    ],
)
def test_the_webhook_url_comes_from_the_connection(conn_type, host, port, schema, url):
    connection = SimpleNamespace(
        conn_id="chat", conn_type=conn_type, host=host, port=port, schema=schema
    )
    assert webhook_url(connection) == url


def test_a_webhook_connection_without_an_http_url_is_refused():
    connection = SimpleNamespace(conn_id="chat", conn_type="http", host="file:///etc/passwd")
    with pytest.raises(ValueError, match="no http"):
        webhook_url(connection)


def test_owners_get_one_notifier_per_channel(make_policy):
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    both = make_policy(owners={"email": ["a@example.com"], "webhook_conn_id": "chat"}).owners
    kinds = [type(n).__name__ for n in owner_notifiers(both)]
    assert kinds == ["EmailNotifier", "WebhookNotifier"]
    assert isinstance(owner_notifiers(both)[0], SmtpNotifier)


def test_a_daily_policy_is_due_26_hours_after_its_last_scheduled_run(make_policy):
    policy = make_policy(owners={"email": ["a@example.com"]})  # midnight, Europe/Amsterdam
    verified = datetime(2026, 6, 1, 22, 3, tzinfo=UTC)  # the run of 2 June 00:00 CEST, ended
    due = deadline(policy, verified)
    assert due == datetime(2026, 6, 3, 0, 0, tzinfo=UTC)  # 3 June 02:00 CEST
    assert due - datetime(2026, 6, 1, 22, 0, tzinfo=UTC) == timedelta(hours=26)
    assert overdue(policy, verified, verified, due - timedelta(seconds=1)) is None
    spell = overdue(policy, verified, verified, due)
    assert spell is not None and spell.deadline == due


def test_grace_hours_and_a_policy_never_verified(make_policy):
    policy = make_policy(owners={"email": ["a@example.com"], "grace_hours": 5})
    seen = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert deadline(policy, seen) == datetime(2026, 6, 2, 3, 0, tzinfo=UTC)  # midnight CEST + 5 h
    spell = overdue(policy, None, seen, datetime(2026, 6, 2, 3, 0, tzinfo=UTC))
    assert spell is not None
    assert "no verified run on record" in spell.alert(policy.timezone, None).text()
