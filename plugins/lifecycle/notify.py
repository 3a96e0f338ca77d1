"""Alerts to a policy's owners, through Airflow's notifiers: the SMTP provider's `SmtpNotifier`
for e-mail and `WebhookNotifier` (ours) for a chat webhook.

An alert says which policy, what status, why (the audit row's reasons: counts, dates and
settings) and where the evidence is (a link to the run's evidence page, or the policy's page).
It never carries a record: it is built from the audit row's status and reasons only, and a
failure it knows nothing about is named by its exception type, never its text (a database error
can quote a row).

The record task raises `RunAlert` (an AirflowFailException) when a run is refused, failed or
failed verification; its `on_failure_callback` notifiers read the alert from the exception in
the callback's context. The watchdog (lifecycle.watchdog) hands its alert to the notifiers.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk.bases.notifier import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from lifecycle.ui import URL_PREFIX

if TYPE_CHECKING:
    from lifecycle.policy import Owners

log = logging.getLogger(__name__)

MAX_REASONS = 10
MAX_REASON_LENGTH = 500
WEBHOOK_TIMEOUT = 10  # seconds
STATUS_TEXT = {
    "refused": "run refused, nothing deleted",
    "failed": "run failed",
    "verification_failed": "verification failed: records past the window remain",
    "overdue": "no verified run by its deadline",
}


@dataclass(frozen=True)
class Alert:
    """What the owners are told: the policy, the status, the reasons, the evidence link."""

    policy: str
    status: str
    reasons: tuple[str, ...] = ()
    evidence: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # e.g. the run id, the deadline

    def __post_init__(self) -> None:
        bounded = tuple(reason[:MAX_REASON_LENGTH] for reason in self.reasons[:MAX_REASONS])
        if len(self.reasons) > MAX_REASONS:
            bounded += (f"... and {len(self.reasons) - MAX_REASONS} more (see the evidence)",)
        object.__setattr__(self, "reasons", bounded)

    @property
    def subject(self) -> str:
        return f"[retention] {self.policy}: {STATUS_TEXT.get(self.status, self.status)}"

    def lines(self) -> list[str]:
        lines = [f"Policy: {self.policy}", f"Status: {self.status}"]
        lines += [f"{name}: {value}" for name, value in self.extra.items()]
        lines += [f"Reason: {reason}" for reason in self.reasons] or ["Reason: (none given)"]
        lines.append(f"Evidence: {self.evidence}")
        return lines

    def text(self) -> str:
        return "\n".join([self.subject, "", *self.lines()])

    def html(self) -> str:
        """The e-mail body: every value escaped, the evidence a link."""
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.lines()[:-1])
        link = html.escape(self.evidence, quote=True)
        return (
            f"<p>{html.escape(self.subject)}</p><ul>{items}</ul>"
            f'<p>Evidence: <a href="{link}">{link}</a></p>'
        )

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON: `text` for chat tools (Slack, Mattermost, Teams' incoming
        webhooks read it), the fields for anything that parses them."""
        return {
            "text": self.text(),
            "policy": self.policy,
            "status": self.status,
            "reasons": list(self.reasons),
            "evidence": self.evidence,
            **self.extra,
        }


class RunAlert(AirflowFailException):
    """The record task's failure when a run was refused, failed or failed verification: the
    task fails as before, and its failure notifiers find the alert here."""

    def __init__(self, alert: Alert) -> None:
        super().__init__(f"{alert.policy}: run {alert.status}: {'; '.join(alert.reasons)}")
        self.alert = alert


# -- links to the evidence ---------------------------------------------------------------------


def audit_url(path: str = "") -> str:
    """An absolute link into the audit pages where Airflow's `[api] base_url` is set (a mail
    client needs the host), else the path from the host."""
    from airflow.sdk.configuration import conf

    base = urlsplit(conf.get("api", "base_url", fallback="") or "")
    root = f"{base.scheme}://{base.netloc}" if base.scheme and base.netloc else ""
    return root + base.path.rstrip("/") + URL_PREFIX + path


def policy_url(policy: str) -> str:
    return audit_url(f"/policies/{policy}")


def evidence_url(policy: str, dag_id: str, run_id: str, attempt: int) -> str:
    """The evidence page of the run attempt's audit row; the policy's page when the row cannot
    be found (the trail unreachable)."""
    import sqlalchemy as sa

    from lifecycle.connections import control_engine
    from lifecycle.control import runs

    query = sa.select(sa.func.max(runs.c.id)).where(
        runs.c.dag_id == dag_id, runs.c.run_id == run_id, runs.c.attempt == attempt
    )
    try:
        with control_engine() as engine, engine.connect() as conn:
            row_id = conn.execute(query).scalar()
    except Exception as exc:  # the alert goes out anyway, with the policy's page
        log.warning("%s: no evidence row id for the alert (%s)", policy, type(exc).__name__)
        row_id = None
    return audit_url(f"/runs/{row_id}") if row_id is not None else policy_url(policy)


def alert_of(context: Any) -> Alert:
    """The alert of a failed record task, from its failure callback's context."""
    error = context.get("exception")
    if isinstance(error, RunAlert):
        return error.alert
    dag_run = context.get("dag_run")
    dag_id = getattr(dag_run, "dag_id", "") or ""
    policy = dag_id.removeprefix("retention_") or "unknown"
    return Alert(
        policy=policy,
        status="failed",
        reasons=(
            f"the run's audit row could not be written (record: {type(error).__name__}); "
            "see the task log",
        ),
        evidence=policy_url(policy),
        extra={"Run": str(getattr(dag_run, "run_id", ""))},
    )


# -- the notifiers -----------------------------------------------------------------------------


class EmailNotifier(SmtpNotifier):
    """The SMTP provider's notifier, its subject and body the alert's. They are set when it
    sends, never rendered as templates: a reason is data, not Jinja."""

    # The provider types its tuple by its length: ours is shorter on purpose.
    template_fields = ("from_email", "to", "smtp_conn_id")  # type: ignore[assignment]

    def __init__(
        self, to: list[str], smtp_conn_id: str | None = None, alert: Alert | None = None
    ) -> None:
        super().__init__(to=list(to), smtp_conn_id=smtp_conn_id, from_email=_sender())
        self.alert = alert

    def notify(self, context: Any) -> None:
        alert = self.alert or alert_of(context)
        self.subject = alert.subject
        self.html_content = alert.html()
        super().notify(context)
        log.info("%s: %s alert mailed to %s", alert.policy, alert.status, self.to)


def _sender() -> str | None:
    """`[email] from_email` of Airflow's configuration; None: the SMTP connection's."""
    from airflow.sdk.configuration import conf

    return conf.get("email", "from_email", fallback=None) or None


class WebhookNotifier(BaseNotifier):
    """Posts the alert as JSON to a chat webhook: the URL is the Airflow connection's host
    (`{"conn_type": "http", "host": "https://chat.example.com/hooks/..."}`), or is made of its
    type (http or https), host, port and schema (the path), as an `http://host:port/path`
    connection URI gives them. A password is sent as a bearer token."""

    template_fields = ("conn_id",)

    def __init__(self, conn_id: str, alert: Alert | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.alert = alert

    def notify(self, context: Any) -> None:
        import httpx

        from lifecycle.connections import airflow_connection

        alert = self.alert or alert_of(context)
        connection = airflow_connection(self.conn_id, "owners.webhook_conn_id")
        headers = {"Authorization": f"Bearer {connection.password}"} if connection.password else {}
        response = httpx.post(
            webhook_url(connection), json=alert.payload(), headers=headers, timeout=WEBHOOK_TIMEOUT
        )
        response.raise_for_status()
        status = response.status_code
        log.info("%s: %s alert posted to %s (%d)", alert.policy, alert.status, self.conn_id, status)


def webhook_url(connection: Any) -> str:
    """The webhook's URL from its connection: http or https only."""
    host = str(connection.host or "")
    if "://" in host:
        url = host
    else:
        scheme = "http" if connection.conn_type == "http" else "https"
        port = f":{connection.port}" if connection.port else ""
        url = f"{scheme}://{host}{port}/{(connection.schema or '').lstrip('/')}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"owners.webhook_conn_id: connection {connection.conn_id!r} gives no http(s) URL"
        )
    return url


def owner_notifiers(owners: Owners, alert: Alert | None = None) -> list[BaseNotifier]:
    """The owners' notifiers: e-mail and/or webhook. Without `alert`, each reads it from the
    failure callback's context."""
    notifiers: list[BaseNotifier] = []
    if owners.email:
        notifiers.append(EmailNotifier(owners.email, owners.smtp_conn_id, alert))
    if owners.webhook_conn_id is not None:
        notifiers.append(WebhookNotifier(owners.webhook_conn_id, alert))
    return notifiers
