"""The DAG factory: one daily DAG `retention_<name>` per policy file.

This module runs at DAG parse time, so it imports only the policy model and the Task SDK: the
stores, SQLAlchemy and Great Expectations are imported inside the tasks.

    extract -> check -> delete -> verify -> record

`record` runs whatever happened upstream (trigger rule all_done), writes the audit row and then
fails the run if anything went wrong, so refused and failed runs are audited and still show red.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import (
    DAG,
    Asset,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from lifecycle.loader import PolicyError, load_policies
from lifecycle.policy import Policy

log = logging.getLogger(__name__)

START_DATE = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
}


def policy_asset(policy: Policy) -> Asset:
    store = policy.store
    return Asset(
        name=policy.dag_id,
        uri=f"retention://{store.conn_id}/{store.table}",
        group="retention",
    )


def render_doc(policy: Policy, path: Path) -> str:
    store = policy.store
    guards = policy.guards
    rows = [
        ("Statement: service", policy.statement.service),
        ("Statement: data", policy.statement.data),
        ("Statement: retention", policy.statement.retention),
        ("Period", f"`{policy.retention.period}`, from `{store.timestamp}`, in {policy.timezone}"),
        ("Controller", policy.controller),
        ("Legal ground", policy.legal_basis.replace("_", " ")),
        ("Store", f"{store.kind} `{store.table}` via connection `{store.conn_id}`"),
        ("Key", f"`{store.key}`, {store.batch_size} rows per batch"),
        ("NULL timestamp", store.null_timestamp),
        (
            "Guards",
            f"max_delete_fraction {guards.max_delete_fraction:g}, max_delete_rows "
            f"{guards.max_delete_rows if guards.max_delete_rows is not None else 'none'}, "
            f"min_period {guards.min_period}",
        ),
        ("Policy file", f"`{path.name}`"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    description = f"\n{policy.description}\n" if policy.description else ""
    return (
        f"# {policy.title}\n{description}\n"
        f"Enforces the privacy statement's promise: records older than "
        f"**{policy.retention.period}** are deleted every day, the deletion is verified with "
        f"Great Expectations and audited.\n\n| | |\n|---|---|\n{table}\n\n"
        "Params: `dry_run` stops after the check and records what would have been deleted; "
        "`max_delete_fraction` overrides the guard for one run.\n"
    )


# -- what the tasks do (imports of heavy modules stay inside) ---------------------------------


def _open_store(policy: Policy):
    from airflow.sdk import BaseHook

    from lifecycle.stores import open_store

    return open_store(policy.store, BaseHook.get_connection(policy.store.conn_id))


def _cutoff(policy: Policy, context: dict[str, Any]) -> datetime:
    from lifecycle.periods import compute_cutoff

    dag_run = context["dag_run"]
    # A manual run may have no logical date: it then runs "as of" its run_after.
    instant = dag_run.logical_date or dag_run.run_after
    return compute_cutoff(instant, policy.retention.period, policy.timezone)


def _extract(policy: Policy) -> dict[str, Any]:
    context = get_current_context()
    cutoff = _cutoff(policy, context)
    with _open_store(policy) as store:
        plan = store.plan(cutoff)
    log.info(
        "%s: cutoff %s; %d of %d records expired, %d held, %d active, %d without timestamp",
        policy.name,
        cutoff.isoformat(),
        plan.expired,
        plan.total,
        plan.held,
        plan.active,
        plan.anomalies,
    )
    return {"cutoff": cutoff.isoformat(), "plan": plan.to_dict()}


def _check(policy: Policy, extracted: dict[str, Any]) -> dict[str, Any]:
    from lifecycle.guards import check
    from lifecycle.stores import Plan

    context = get_current_context()
    params = context["params"]
    decision = check(
        policy,
        Plan(**extracted["plan"]),
        datetime.fromisoformat(extracted["cutoff"]),
        wall_clock=datetime.now().astimezone(),
        dry_run=bool(params.get("dry_run")),
        max_delete_fraction=params.get("max_delete_fraction"),
    )
    result = decision.to_dict()
    context["ti"].xcom_push(key="decision", value=result)
    for warning in decision.warnings:
        log.warning("%s: %s", policy.name, warning)
    if not decision.approved:
        raise AirflowFailException(f"{policy.name}: refused: " + "; ".join(decision.reasons))
    if decision.dry_run:
        log.info(
            "%s: dry run, %d records would be deleted", policy.name, extracted["plan"]["expired"]
        )
        raise AirflowSkipException("dry run: nothing deleted")
    return result


def _delete(policy: Policy, extracted: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    cutoff = datetime.fromisoformat(extracted["cutoff"])
    with _open_store(policy) as store:
        result = store.purge(cutoff, approved=decision["approved_records"])
    return result.to_dict()


def _verify(policy: Policy, extracted: dict[str, Any]) -> dict[str, Any]:
    cutoff = datetime.fromisoformat(extracted["cutoff"])
    with _open_store(policy) as store:
        verification = store.verify(cutoff)
    result = verification.to_dict()
    get_current_context()["ti"].xcom_push(key="verification", value=result)
    if not verification.success:
        raise AirflowFailException(
            f"{policy.name}: verification failed: {verification.remaining} unheld records "
            "before the cutoff remain"
        )
    return result


def _record(policy: Policy, asset: Asset) -> None:
    from airflow.sdk import BaseHook

    from lifecycle.audit import AUDIT_CONN_ID, audit_row, record_run
    from lifecycle.stores.sql import create_engine, url_from_connection

    context = get_current_context()
    ti = context["ti"]
    dag_run = context["dag_run"]
    row = audit_row(
        policy,
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        attempt=dag_run.clear_number or 0,
        logical_date=dag_run.logical_date or dag_run.run_after,
        dry_run=bool(context["params"].get("dry_run")),
        extracted=ti.xcom_pull(task_ids="extract"),
        decision=ti.xcom_pull(task_ids="check", key="decision"),
        purged=ti.xcom_pull(task_ids="delete"),
        verification=ti.xcom_pull(task_ids="verify", key="verification"),
        started_at=dag_run.start_date,
    )
    engine = create_engine(url_from_connection(BaseHook.get_connection(AUDIT_CONN_ID)))
    try:
        record_run(engine, row)
    finally:
        engine.dispose()
    counts = {
        name: row[name]
        for name in ("status", "cutoff", "expired", "held", "deleted", "verified", "attempt")
    }
    context["outlet_events"][asset].extra = {"policy": policy.name, **counts}
    log.info("%s: audited %s", policy.name, counts)
    if row["status"] not in ("purged", "dry_run"):
        raise AirflowFailException(
            f"{policy.name}: run {row['status']}: {'; '.join(row['reasons'])}"
        )


# -- DAGs -------------------------------------------------------------------------------------


def build_dag(policy: Policy, path: Path) -> DAG:
    asset = policy_asset(policy)
    with DAG(
        dag_id=policy.dag_id,
        description=f"{policy.title}: keep {policy.retention.period} ({policy.statement.service})",
        doc_md=render_doc(policy, path),
        schedule=CronTriggerTimetable(policy.schedule, timezone=policy.timezone),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS | {"retries": policy.retries},
        tags=["retention", policy.store.kind, policy.controller, *policy.tags],
        params={
            "dry_run": Param(False, type="boolean", description="Stop after the check."),
            "max_delete_fraction": Param(
                None,
                type=["null", "number"],
                minimum=0,
                maximum=1,
                description="Override guards.max_delete_fraction for this run only.",
            ),
        },
    ) as dag:

        @task(task_id="extract")
        def extract() -> dict[str, Any]:
            return _extract(policy)

        @task(task_id="check")
        def check(extracted: dict[str, Any]) -> dict[str, Any]:
            return _check(policy, extracted)

        @task(task_id="delete")
        def delete(extracted: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
            return _delete(policy, extracted, decision)

        @task(task_id="verify")
        def verify(extracted: dict[str, Any], purged: dict[str, Any]) -> dict[str, Any]:
            return _verify(policy, extracted)

        @task(task_id="record", trigger_rule=TriggerRule.ALL_DONE, outlets=[asset])
        def record() -> None:
            _record(policy, asset)

        extracted = extract()
        decision = check(extracted)
        purged = delete(extracted, decision)
        verified = verify(extracted, purged)
        [extracted, decision, purged, verified] >> record()
    return dag


def build_invalid_policy_dag(error: PolicyError) -> DAG:
    """A broken policy file becomes a DAG that fails with the validation message: it never
    disappears silently, and it never takes the valid policies' DAGs down with it."""
    message = error.message
    with DAG(
        dag_id=f"retention_invalid_{error.path.stem.replace('-', '_').replace('.', '_')}",
        description=f"INVALID policy file {error.path.name}: {error.problems[0]}"[:1000],
        doc_md=f"# Invalid policy file `{error.path.name}`\n\n```\n{message}\n```\n\n"
        "Nothing is deleted for this file until it is fixed. Check with "
        "`python -m lifecycle validate`.",
        schedule=CronTriggerTimetable("0 0 * * *", timezone="Europe/Amsterdam"),
        start_date=START_DATE,
        catchup=False,
        tags=["retention", "invalid-policy"],
    ) as dag:

        @task(task_id="report_invalid_policy", retries=0)
        def report_invalid_policy() -> None:
            raise AirflowFailException(message)

        report_invalid_policy()
    return dag


def build_dags(directory: Path | None = None) -> dict[str, DAG]:
    result = load_policies(directory)
    dags = {
        loaded.policy.dag_id: build_dag(loaded.policy, loaded.path) for loaded in result.policies
    }
    for error in result.errors:
        log.error("invalid retention policy: %s", error.message)
        dag = build_invalid_policy_dag(error)
        dags[dag.dag_id] = dag
    return dags
