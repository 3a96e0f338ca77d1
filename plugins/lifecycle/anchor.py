"""The daily anchor of the audit trail's hash chain: DAG `retention-chain-anchor`.

Once a day the chain is walked (`lifecycle.chain.verify`), checked against the head written to
the evidence bucket the day before (a chain rewritten since, head included, shows there and
nowhere else), and, when intact, its head is written there under Object Lock in COMPLIANCE mode
where the bucket has it (`lifecycle.chain.write_anchor`). The evidence bucket is the Airflow
AWS connection `lifecycle_evidence` (its extra `bucket`, and `endpoint_url` for MinIO); where it
is not defined the task is skipped, saying so. A broken chain fails the task (its owners see a
red run) and writes nothing. `lifecycle audit-verify --anchor` does the same by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, CronTriggerTimetable, task

if TYPE_CHECKING:
    import sqlalchemy as sa

    from lifecycle.chain import Verification

log = logging.getLogger(__name__)

ANCHOR_DAG_ID = "retention-chain-anchor"
EVIDENCE_CONN_ID = "lifecycle_evidence"
SCHEDULE = "30 3 * * *"  # daily, after the policies' midnight runs


@dataclass(frozen=True)
class AnchorOutcome:
    ok: bool
    message: str  # places, row ids, hashes and the object's key: never a row's content


def anchor_chain(
    engine: sa.Engine, client: Any, bucket: str, now: datetime, result: Verification | None = None
) -> AnchorOutcome:
    """Check the chain against the head last anchored in `bucket`, then anchor today's (only
    when intact). `result`: the chain's walk, when the caller has just made it."""
    from lifecycle.chain import against_anchor, latest_anchor, verify, write_anchor

    result = result or verify(engine)
    anchored = latest_anchor(client, bucket)
    lost = None if anchored is None else against_anchor(engine, anchored)
    if lost is not None:
        return AnchorOutcome(False, f"chain BROKEN: {lost}")
    if not result.intact:
        return AnchorOutcome(False, f"{result.summary()}; a broken chain is not anchored")
    written = write_anchor(client, bucket, result, now)
    lock = "Object Lock COMPLIANCE" if written.locked else "no Object Lock on this bucket"
    return AnchorOutcome(
        True, f"{result.summary()}; anchored the head in s3://{bucket}/{written.key} ({lock})"
    )


def _anchor() -> str:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from lifecycle.connections import airflow_connection, control_engine
    from lifecycle.stores import StoreConfigError
    from lifecycle.stores.s3 import client_from_connection

    try:
        connection = airflow_connection(EVIDENCE_CONN_ID, "the evidence bucket")
    except StoreConfigError as exc:
        raise AirflowSkipException(
            f"{exc}: define it (an AWS connection with `bucket` in its extra) to anchor the "
            "audit trail's head daily"
        ) from None
    bucket = (connection.extra_dejson or {}).get("bucket")
    if not bucket:
        raise AirflowFailException(
            f"connection {EVIDENCE_CONN_ID!r}: name the `bucket` in its extra"
        )
    client = client_from_connection(connection)
    try:
        with control_engine() as engine:
            outcome = anchor_chain(engine, client, bucket, datetime.now(UTC))
    finally:
        client.close()
    if not outcome.ok:
        raise AirflowFailException(outcome.message)
    log.info("%s", outcome.message)
    return outcome.message


def anchor_dags() -> dict[str, DAG]:
    """`{"retention-chain-anchor": DAG}`, built by the DAG factory."""
    from lifecycle.factory import START_DATE

    with DAG(
        dag_id=ANCHOR_DAG_ID,
        description="Writes the audit trail's verified head to the evidence bucket, daily",
        doc_md=__doc__,
        schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["retention", "evidence"],
    ) as dag:

        @task(task_id="anchor", retries=2)
        def anchor() -> str:
            return _anchor()

        anchor()
    return {dag.dag_id: dag}
