"""The deadline watchdog: DAG `retention-watchdog`, hourly, alerts the owners of a policy that has
no verified run by its deadline, even when no run started at all (the policy's DAG paused, its
runs never scheduled).

Airflow 3.3's deadline alerts (`DeadlineAlert`) do not fit: each is created with a DAG run (from
its logical date or its queue time), so a run that never starts never has a deadline to miss.
The watchdog reads the audit trail instead.

A policy's deadline: the first run of its schedule after its last verified run (status `purged`,
verified), plus `owners.grace_hours`: 26 h after the previous midnight for a daily policy with
the default 2 h. A policy never verified counts from when the watchdog first saw it. The owners
hear of it once per overdue spell: the spell is named by its deadline, kept in the Airflow
Variable `retention_watchdog` with when each policy was first seen, and ends with a verified run.

The DAG exists only where some valid policy names owners (nobody to alert otherwise); the task
reads the policies again when it runs. Its id has a dash, which no `retention_<name>` has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from airflow.sdk import DAG, CronTriggerTimetable, task

if TYPE_CHECKING:
    import sqlalchemy as sa

    from lifecycle.notify import Alert
    from lifecycle.policy import Policy

log = logging.getLogger(__name__)

WATCHDOG_DAG_ID = "retention-watchdog"
STATE_VARIABLE = "retention_watchdog"
SCHEDULE = "15 * * * *"  # hourly, off the policies' midnight


@dataclass(frozen=True)
class Overdue:
    """A policy past its deadline, and what its owners are told."""

    policy: str
    deadline: datetime
    since: datetime | None  # the last verified run's end; None: never verified

    def alert(self, zone: str, last_status: str | None) -> Alert:
        from lifecycle.notify import Alert, policy_url

        local = self.deadline.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
        verified = (
            f"last verified run ended {self.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
            if self.since is not None
            else "no verified run on record"
        )
        reasons = [f"no verified run by the deadline {local}; {verified}"]
        if last_status is not None:
            reasons.append(f"latest run: {last_status}")
        return Alert(
            policy=self.policy,
            status="overdue",
            reasons=tuple(reasons),
            evidence=policy_url(self.policy),
            extra={"Deadline": self.deadline.astimezone(UTC).isoformat()},
        )


def deadline(policy: Policy, since: datetime) -> datetime:
    """The first scheduled run of `policy` after `since`, plus its grace."""
    from croniter import croniter

    grace = policy.owners.grace_hours if policy.owners is not None else 2
    start = since.astimezone(ZoneInfo(policy.timezone))
    following: datetime = croniter(policy.schedule, start).get_next(datetime)
    return following.astimezone(UTC) + timedelta(hours=grace)


def overdue(
    policy: Policy, verified: datetime | None, first_seen: datetime, now: datetime
) -> Overdue | None:
    """The policy's overdue spell at `now`, if it is in one."""
    due = deadline(policy, verified if verified is not None else first_seen)
    return Overdue(policy.name, due, verified) if due <= now else None


def last_verified(engine: sa.Engine) -> dict[str, datetime]:
    """Each policy's last verified run: when it ended (its logical date where no end is
    recorded). Read only."""
    import sqlalchemy as sa

    from lifecycle.control import runs

    ended = sa.func.max(sa.func.coalesce(runs.c.finished_at, runs.c.logical_date))
    query = (
        sa.select(runs.c.policy, ended)
        .where(runs.c.status == "purged", runs.c.verified.is_(True))
        .group_by(runs.c.policy)
    )
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(runs.name):
            return {}
        rows = conn.execute(query).all()
    return {
        policy: value if value.tzinfo else value.replace(tzinfo=UTC)
        for policy, value in rows
        if value is not None
    }


def check(policies: list[Policy], state: dict[str, Any], now: datetime) -> list[Alert]:
    """The alerts due now, once per overdue spell; `state` is updated in place (first seen,
    the spell notified) and the caller saves it once the alerts went out."""
    from lifecycle.audit import latest_runs
    from lifecycle.connections import control_engine

    with control_engine() as engine:
        verified = last_verified(engine)
        latest = latest_runs(engine)
    alerts = []
    for policy in policies:
        entry = state.setdefault(policy.name, {"seen": now.isoformat(), "notified": None})
        spell = overdue(
            policy, verified.get(policy.name), datetime.fromisoformat(entry["seen"]), now
        )
        if spell is None:
            entry["notified"] = None  # the spell, if any, is over
            continue
        if entry["notified"] == spell.deadline.isoformat():
            continue  # already told
        last = latest.get(policy.name)
        alerts.append(spell.alert(policy.timezone, last["status"] if last else None))
    for name in set(state) - {policy.name for policy in policies}:
        del state[name]  # a retired policy
    return alerts


def _watch(directory: str | None, now: datetime | None = None) -> list[str]:
    """The watchdog task: the alerts it sent, by policy."""
    from airflow.sdk import Variable, get_current_context
    from airflow.sdk.exceptions import AirflowFailException

    from lifecycle.loader import load_policies
    from lifecycle.notify import owner_notifiers

    policies = {
        loaded.policy.name: loaded.policy
        for loaded in load_policies(Path(directory) if directory else None).policies
        if loaded.policy.owners is not None
    }
    state: dict[str, Any] = Variable.get(STATE_VARIABLE, default={}, deserialize_json=True)
    alerts = check(list(policies.values()), state, now or datetime.now(UTC))
    context, sent, failed = get_current_context(), [], []
    for alert in alerts:
        owners = policies[alert.policy].owners
        assert owners is not None  # only policies with owners are watched
        try:
            for notifier in owner_notifiers(owners, alert):
                notifier(context)
        except Exception as exc:  # the next hour tries again: the spell stays unnotified
            log.error("%s: overdue alert not sent (%s)", alert.policy, type(exc).__name__)
            failed.append(alert.policy)
            continue
        state[alert.policy]["notified"] = alert.extra["Deadline"]
        sent.append(alert.policy)
    Variable.set(STATE_VARIABLE, state, serialize_json=True)
    log.info("watchdog: %d policies watched, overdue alerts sent for %s", len(policies), sent)
    if failed:
        raise AirflowFailException(f"overdue alerts not sent for {', '.join(failed)}")
    return sent


def build_watchdog(directory: Path | None = None) -> dict[str, DAG]:
    """The watchdog of the policy folder's policies (see `watchdog_dags`)."""
    from lifecycle.loader import load_policies

    policies = [loaded.policy for loaded in load_policies(directory).policies]
    return watchdog_dags(policies, directory)


def watchdog_dags(policies: list[Policy], directory: Path | None = None) -> dict[str, DAG]:
    """`{"retention-watchdog": DAG}` where a valid policy names owners, else nothing. Built by
    the DAG factory from the policies it has loaded already (one load per parse)."""
    from lifecycle.factory import START_DATE

    if not any(policy.owners for policy in policies):
        return {}
    folder = str(directory) if directory is not None else None
    with DAG(
        dag_id=WATCHDOG_DAG_ID,
        description="Alerts the owners of a policy with no verified run by its deadline",
        doc_md=__doc__,
        schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,  # the safety net runs from the start
        tags=["retention", "watchdog"],
    ) as dag:

        @task(task_id="watch", retries=0)
        def watch() -> list[str]:
            return _watch(folder)

        watch()
    return {dag.dag_id: dag}
