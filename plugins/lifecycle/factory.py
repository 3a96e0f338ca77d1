"""The DAG factory: one daily DAG `retention_<name>` per policy file.

This module runs at DAG parse time, so it imports only the policy model and the Task SDK: the
stores, SQLAlchemy and Great Expectations are imported inside the tasks.

    extract -> check -> delete -> verify -> record

`record` runs whatever happened upstream (trigger rule all_done), writes the audit row and then
fails the run if anything went wrong, so refused and failed runs are audited and still show red.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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

from lifecycle.loader import LoadResult, PolicyError, load_policies
from lifecycle.payloads import CheckDecision, Extracted, VerificationResult
from lifecycle.policy import Policy
from lifecycle.ui import URL_PREFIX

log = logging.getLogger(__name__)

START_DATE = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
}


def policy_asset(policy: Policy) -> Asset:
    """Every policy its own asset: two DAGs declaring one URI would make Airflow mark one of
    them inactive, and that DAG's purges would leave no asset events."""
    store = policy.store
    return Asset(
        name=policy.dag_id,
        uri=f"retention://{store.conn_id}/{store.asset_path()}?policy={policy.name}",
        group="retention",
    )


def _retention_text(policy: Policy) -> str:
    retention = policy.retention
    text = f"`{retention.period}` {policy.store.time_doc(retention)}, in {policy.timezone}"
    if retention.per_tenant is not None:
        text += (
            f"; per client organisation (`{retention.per_tenant.column or '<prefix><tenant>/'}`), "
            "from "
            f"`{retention.per_tenant.table}`, `{retention.period}` by default"
        )
    return text


def _audit_pages() -> str:
    """Where the audit pages are, as a path from the host: Airflow may be served under a
    subpath of its `[api] base_url`."""
    from airflow.sdk.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/") + URL_PREFIX


def render_doc(policy: Policy, path: Path) -> str:
    audit = _audit_pages()
    store = policy.store
    guards = policy.guards
    rows = [
        ("Statement: service", policy.statement.service),
        ("Statement: data", policy.statement.data),
        ("Statement: retention", policy.statement.retention),
        ("Period", _retention_text(policy)),
        ("Controller", policy.controller),
        ("Legal ground", policy.legal_basis.replace("_", " ")),
        ("Store", f"{store.kind} `{store.location}` via connection `{store.conn_id}`"),
        *store.doc_rows(),
        ("Hold subjects", store.subjects_doc()),
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
        f"Enforces the privacy statement's promise: records past **{policy.retention.period}** "
        "are deleted every day unless held, the deletion is verified with Great Expectations "
        f"and audited.\n\n| | |\n|---|---|\n{table}\n\n"
        "Params: `dry_run` stops after the check and records what would have been deleted; "
        "`max_delete_fraction` overrides the guard for one run.\n\n"
        f"Audit: [this policy in the retention overview]({audit}/#{policy.name}) · "
        f"[its runs and charts]({audit}/policies/{policy.name})\n"
    )


# -- the tasks' Airflow side: the work itself is in lifecycle.steps ---------------------------


def _run() -> Any:
    from lifecycle.steps import Run

    context = get_current_context()
    dag_run = context["dag_run"]
    params = context["params"]
    return Run(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        attempt=dag_run.clear_number or 0,
        # A manual run may have no logical date: it then runs "as of" its run_after.
        logical_date=dag_run.logical_date or dag_run.run_after,
        started_at=dag_run.start_date,
        dry_run=bool(params.get("dry_run")),
        max_delete_fraction=params.get("max_delete_fraction"),
    )


@contextmanager
def _no_retry_for_what_retries_cannot_fix(path: Path) -> Iterator[None]:
    """A policy that does not match its store, a missing connection, a bad client setting, or a
    purge that found more than was approved will not heal by retrying: fail at once, naming the
    policy file. The message (names, counts and settings, never a record) also goes to XCom,
    so that the audit row says why."""
    from lifecycle.errors import PermanentError
    from lifecycle.stores import StoreConfigError
    from lifecycle.tenants import TenantSettingsError

    try:
        yield
    except (StoreConfigError, TenantSettingsError) as exc:
        _push_failure(f"{path.name}: {exc}")
        raise AirflowFailException(f"{path}: {exc}") from None
    except PermanentError as exc:  # a purge limit, a missing approval
        _push_failure(str(exc))
        raise AirflowFailException(str(exc)) from None


def _push_failure(message: str) -> None:
    get_current_context()["ti"].xcom_push(key="failure", value=message)


FAILING_STEPS = ("extract", "check", "split", "delete", "verify")


def _failures(ti: Any) -> list[str]:
    found = []
    for step in FAILING_STEPS:
        pulled = ti.xcom_pull(task_ids=step, key="failure")
        for message in pulled if isinstance(pulled, list) else [pulled]:
            if message and message not in found:
                found.append(message)
    return found


def _check(
    policy: Policy, path: Path, extracted: dict[str, Any], conflict: str | None = None
) -> dict[str, Any]:
    from lifecycle import steps

    with _no_retry_for_what_retries_cannot_fix(path):  # a control table missing, say
        decision = steps.check(policy, _run(), extracted, refusals=(conflict,) if conflict else ())
    # Pushed before failing or skipping, so that record can audit a refusal or a dry run.
    get_current_context()["ti"].xcom_push(key="decision", value=decision)
    verdict = CheckDecision.from_json(decision)
    if verdict.outcome == "refused":
        raise AirflowFailException(f"{policy.name}: refused: " + "; ".join(verdict.reasons))
    if verdict.outcome == "dry_run":
        expired = Extracted.from_json(extracted).plan.expired
        log.info("%s: dry run, %d records would be deleted", policy.name, expired)
        raise AirflowSkipException("dry run: nothing deleted")
    return decision


def _verify(policy: Policy, extracted: dict[str, Any]) -> dict[str, Any]:
    from lifecycle import steps

    result = steps.verify(policy, _run(), extracted)
    get_current_context()["ti"].xcom_push(key="verification", value=result)
    verdict = VerificationResult.from_json(result)
    if not verdict.success:
        raise AirflowFailException(
            f"{policy.name}: verification failed: {verdict.remaining} unheld records past the "
            "window remain"
        )
    return result


def _record(policy: Policy, asset: Asset) -> None:
    from lifecycle import steps

    context = get_current_context()
    ti = context["ti"]
    row = steps.record(
        policy,
        _run(),
        extracted=ti.xcom_pull(task_ids="extract"),
        decision=ti.xcom_pull(task_ids="check", key="decision"),
        slices=ti.xcom_pull(task_ids="split"),
        purges=ti.xcom_pull(task_ids="delete"),
        verification=ti.xcom_pull(task_ids="verify", key="verification"),
        failures=_failures(ti),
    )
    counts = {
        name: row[name]
        for name in ("status", "cutoff", "expired", "held", "deleted", "verified", "attempt")
    } | {"slices": row["shards"]}  # the audit column keeps its first name
    context["outlet_events"][asset].extra = {"policy": policy.name, **counts}
    log.info("%s: audited %s", policy.name, counts)
    if row["status"] not in ("purged", "dry_run"):
        from lifecycle.notify import Alert, RunAlert, evidence_url

        # Fails the task; the owners' notifiers (on_failure_callback) send what it carries.
        raise RunAlert(
            Alert(
                policy=policy.name,
                status=row["status"],
                reasons=tuple(row["reasons"] or ()),
                evidence=evidence_url(policy.name, row["dag_id"], row["run_id"], row["attempt"]),
                extra={"Run": row["run_id"]},
            )
        )


# -- DAGs -------------------------------------------------------------------------------------


def _owner_notifiers(policy: Policy) -> list[Any]:
    """The owners' notifiers, called when `record` fails (a refused, failed or unverified run,
    or no audit row): lifecycle.notify, with the SMTP provider, imported only for policies with
    owners."""
    if policy.owners is None:
        return []
    from lifecycle.notify import owner_notifiers

    return list(owner_notifiers(policy.owners))


def _dag_arguments(policy: Policy, path: Path) -> dict[str, Any]:
    """What the policy's DAG is, as Airflow shows it: schedule, doc, tags, run parameters."""
    return {
        "dag_id": policy.dag_id,
        "description": f"{policy.title}: keep {policy.retention.period} "
        f"({policy.statement.service})",
        "doc_md": render_doc(policy, path),
        "schedule": CronTriggerTimetable(policy.schedule, timezone=policy.timezone),
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "default_args": DEFAULT_ARGS | {"retries": policy.retries},
        "tags": ["retention", policy.store.kind, policy.controller, *policy.tags],
        "params": {
            "dry_run": Param(False, type="boolean", description="Stop after the check."),
            "max_delete_fraction": Param(
                None,
                type=["null", "number"],
                minimum=0,
                maximum=1,
                description="Override guards.max_delete_fraction for this run only.",
            ),
        },
    }


def build_dag(policy: Policy, path: Path, conflict: str | None = None) -> DAG:
    """The policy's DAG. `conflict`: another policy covers the same records (validate reports
    it); every run of both is then refused with that message, so neither deletes what the
    other keeps, and neither DAG vanishes."""
    asset = policy_asset(policy)
    with DAG(**_dag_arguments(policy, path)) as dag:

        @task(task_id="extract")
        def extract() -> dict[str, Any]:
            from lifecycle import steps

            with _no_retry_for_what_retries_cannot_fix(path):
                return steps.extract(policy, _run())

        @task(task_id="check")
        def check(extracted: dict[str, Any]) -> dict[str, Any]:
            return _check(policy, path, extracted, conflict)

        @task(task_id="split")
        def split(extracted: dict[str, Any], decision: dict[str, Any]) -> list[dict[str, Any]]:
            from lifecycle import steps

            with _no_retry_for_what_retries_cannot_fix(path):
                return steps.split(policy, _run(), extracted, decision)

        # One mapped task per slice: the slices spread over the workers.
        @task(
            task_id="delete",
            map_index_template="slice {{ task.op_kwargs['slice_task']['index'] }}",
        )
        def delete(extracted: dict[str, Any], slice_task: dict[str, Any]) -> dict[str, Any]:
            from lifecycle import steps

            try_number = get_current_context()["ti"].try_number
            with _no_retry_for_what_retries_cannot_fix(path):
                return steps.delete(policy, _run(), extracted, slice_task, try_number=try_number)

        @task(task_id="verify")
        def verify(extracted: dict[str, Any]) -> dict[str, Any]:
            with _no_retry_for_what_retries_cannot_fix(path):
                return _verify(policy, extracted)

        @task(
            task_id="record",
            trigger_rule=TriggerRule.ALL_DONE,
            outlets=[asset],
            on_failure_callback=_owner_notifiers(policy),
        )
        def record() -> None:
            _record(policy, asset)

        # XComArgs, which TaskFlow resolves to the tasks' dicts at run time (typed Any here).
        extracted: Any = extract()
        decision: Any = check(extracted)
        slices = split(extracted, decision)
        purged = delete.partial(extracted=extracted).expand(slice_task=slices)
        verified = verify(extracted)
        purged >> verified
        [extracted, decision, slices, purged, verified] >> record()
    return dag


def build_invalid_policy_dag(error: PolicyError, dag_id: str) -> DAG:
    """A broken policy file becomes a DAG that fails with the validation message: it never
    disappears silently, and it never takes the valid policies' DAGs down with it."""
    message = error.message
    with DAG(
        dag_id=dag_id,
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


def invalid_dag_id(path: Path, taken: set[str]) -> str:
    """`retention-invalid-<file>`: the dash keeps it apart from every valid `retention_<name>`
    (policy names have none), and a counter from another broken file of a similar name."""
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", path.stem).strip("_") or "policy"
    dag_id = f"retention-invalid-{stem}"[:240]
    candidate, number = dag_id, 2
    while candidate in taken:
        candidate, number = f"{dag_id}-{number}", number + 1
    return candidate


_REPORTED: set[str] = set()


def build_dags(directory: Path | None = None) -> dict[str, DAG]:
    """Every policy's DAG; a broken policy becomes a failing DAG, never an import error that
    would take the other DAGs down with it."""
    result = load_policies(directory)
    dags: dict[str, DAG] = {}
    errors = list(result.errors)
    for loaded in result.policies:
        try:
            conflict = result.conflict_for(loaded.policy.name)
            dags[loaded.policy.dag_id] = build_dag(loaded.policy, loaded.path, conflict)
        except Exception as exc:  # whatever Airflow refuses, reported per file
            errors.append(PolicyError(loaded.path, (f"(file): Airflow refused the DAG: {exc}",)))
    for error in errors:
        if error.message not in _REPORTED:  # once per process: dag.test() parses at every run
            _REPORTED.add(error.message)
            log.error("invalid retention policy: %s", error.message)
        dag = build_invalid_policy_dag(error, invalid_dag_id(error.path, set(dags)))
        dags[dag.dag_id] = dag
    return dags | _watchdog(result, directory) | _requests(result) | _anchor()


def _watchdog(result: LoadResult, directory: Path | None) -> dict[str, DAG]:
    """The overdue-policy watchdog where a policy names owners (lifecycle.watchdog), from the
    policies loaded once; a failure here never takes the policies' DAGs down."""
    from lifecycle.watchdog import watchdog_dags

    try:
        return watchdog_dags([loaded.policy for loaded in result.policies], directory)
    except Exception as exc:
        log.error("retention watchdog not built: %s", type(exc).__name__)
        return {}


def _requests(result: LoadResult) -> dict[str, DAG]:
    """The data-subject request DAGs (lifecycle.requests.dags), over the valid policies; a
    failure here never takes the policies' DAGs down."""
    from lifecycle.requests.dags import request_dags

    try:
        return request_dags([loaded.policy for loaded in result.policies])
    except Exception as exc:
        log.error("data-subject request DAGs not built: %s", type(exc).__name__)
        return {}


def _anchor() -> dict[str, DAG]:
    """The daily anchor of the audit trail's hash chain (lifecycle.anchor)."""
    from lifecycle.anchor import anchor_dags

    try:
        return anchor_dags()
    except Exception as exc:
        log.error("chain anchor DAG not built: %s", type(exc).__name__)
        return {}
