"""The request DAGs, one per kind, built by the DAG factory from the policies it loaded:

    prepare -> handle (mapped: one task per policy) -> finish

Triggered by hand (the UI's trigger form, or `airflow dags trigger dsr_erasure --conf
'{"request_id": 7}'`) with the request's id only: Airflow keeps a run's conf in its metadata
database and shows it in its UI, so the identifiers never go there. This module runs at parse
time: the work is in `lifecycle.requests.steps`, imported inside the tasks.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from lifecycle.policy import Policy
from lifecycle.requests import KINDS, dag_id_of

TITLES = {
    "access": "Access (inzage): the subject's records, category by category, in an archive",
    "portability": "Portability (overdracht): the records processed for the contract or with "
    "consent, as CSV and JSON",
    "erasure": "Erasure (verwijdering): the subject's records deleted where no legal "
    "obligation, hold, running contract or client controller keeps them",
    "restriction": "Restriction (beperking): a restriction hold on the subject in every "
    "category that maps it, until the request is decided",
}


def _run(kind: str) -> Any:
    from lifecycle.requests.steps import RequestRun

    context = get_current_context()
    dag_run = context["dag_run"]
    request_id = context["params"].get("request_id")
    if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 1:
        raise AirflowFailException("request_id: trigger the DAG with the request's number")
    return RequestRun(
        request_id=request_id,
        kind=kind,
        run_id=dag_run.run_id,
        attempt=dag_run.clear_number or 0,
        logical_date=dag_run.logical_date or dag_run.run_after,
        started_at=dag_run.start_date,
    )


def _doc(kind: str, policies: list[Policy]) -> str:
    return (
        f"# {TITLES[kind]}\n\n"
        'Trigger with the request\'s id (`{"request_id": 7}`), never its identifiers: register '
        "the request first with `python -m lifecycle requests register`. Each policy's part runs "
        f"as one mapped `handle` task ({len(policies)} policies), leaves an audit row (counts, "
        "exceptions with their ground, verification: no identifier) and its result in the "
        "register; `finish` writes the request's outcome. See `lifecycle requests show <id>`.\n"
    )


def build_request_dag(kind: str, policies: list[Policy]) -> DAG:
    by_name = {policy.name: policy for policy in policies}
    with DAG(
        dag_id=dag_id_of(kind),
        description=TITLES[kind],
        doc_md=_doc(kind, policies),
        schedule=None,
        catchup=False,
        tags=["data-subject-request", kind],
        default_args={"owner": "privacy-office", "retries": 0},
        params={
            "request_id": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="The request's number in the register (lifecycle requests list).",
            )
        },
    ) as dag:

        @task(task_id="prepare")
        def prepare() -> list[dict[str, Any]]:
            from lifecycle.requests.register import RequestError
            from lifecycle.requests.steps import prepare as prepare_request

            try:
                return prepare_request(_run(kind), policies)
            except RequestError as exc:
                raise AirflowFailException(str(exc)) from None

        @task(task_id="handle", map_index_template="{{ task.op_kwargs['item']['policy'] }}")
        def handle(item: dict[str, Any]) -> dict[str, Any]:
            from lifecycle.errors import PermanentError
            from lifecycle.requests.register import RequestError
            from lifecycle.requests.steps import handle as handle_category
            from lifecycle.stores import StoreConfigError

            try_number = get_current_context()["ti"].try_number
            try:
                return handle_category(by_name[item["policy"]], _run(kind), try_number=try_number)
            except (RequestError, StoreConfigError, PermanentError) as exc:
                raise AirflowFailException(f"{item['policy']}: {exc}") from None

        @task(task_id="finish", trigger_rule=TriggerRule.ALL_DONE)
        def finish(items: list[dict[str, Any]] | None) -> dict[str, Any]:
            from lifecycle.requests.steps import finish as finish_request

            if items is None:  # prepare refused the request: nothing was done, nothing to add
                raise AirflowFailException("the request was refused before any category ran")
            outcome = finish_request(_run(kind), items)
            if outcome["status"] == "failed":
                raise AirflowFailException(
                    f"request {outcome['request_id']}: a category failed or did not run: "
                    "see the request's result and run it again"
                )
            return outcome

        items: Any = prepare()
        handled = handle.expand(item=items)
        handled >> finish(items)
    return dag


def request_dags(policies: list[Policy]) -> dict[str, DAG]:
    return {dag_id_of(kind): build_request_dag(kind, policies) for kind in KINDS}
