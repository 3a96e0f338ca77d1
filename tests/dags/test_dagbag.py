"""DAG integrity: the dags folder parses cleanly into exactly one DAG per policy file, beside
the four data-subject request DAGs and the daily anchor of the audit trail's chain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import CronTriggerTimetable

from lifecycle.loader import DEFAULT_POLICY_DIR
from tests.unit.test_policy import VALID

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "dags"
TASKS = ["extract", "check", "split", "delete", "verify", "record"]
# Built beside the policies' DAGs whatever the policy folder holds.
ALWAYS = {
    "dsr_access",
    "dsr_erasure",
    "dsr_portability",
    "dsr_restriction",
    "retention-chain-anchor",
}


def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


def test_one_dag_per_policy_file_and_no_import_errors():
    bag = dagbag()
    assert bag.import_errors == {}
    expected = {f"retention_{path.stem}" for path in DEFAULT_POLICY_DIR.glob("*.yaml")}
    assert set(bag.dag_ids) == expected | ALWAYS
    assert len(expected) == len(list(DEFAULT_POLICY_DIR.glob("*.yaml")))


@pytest.mark.parametrize(
    "dag_id", sorted(f"retention_{p.stem}" for p in DEFAULT_POLICY_DIR.glob("*.yaml"))
)
def test_dag_shape(dag_id):
    dag = dagbag().dags[dag_id]
    assert [task.task_id for task in dag.topological_sort()] == TASKS
    assert dag.task_dict["split"].upstream_task_ids == {"extract", "check"}
    # The purge is a mapped task: one instance per slice, spread over the workers.
    assert dag.task_dict["delete"].upstream_task_ids == {"extract", "split"}
    assert type(dag.task_dict["delete"]).__name__.endswith("MappedOperator")
    assert dag.task_dict["verify"].upstream_task_ids == {"extract", "delete"}
    assert dag.task_dict["record"].upstream_task_ids == set(TASKS[:-1])
    assert dag.task_dict["record"].trigger_rule == "all_done"
    assert dag.task_dict["record"].outlets[0].name == dag_id
    assert "retention" in dag.tags and {"sql", "s3", "files"} & set(dag.tags)
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.timetable == CronTriggerTimetable("0 0 * * *", timezone="Europe/Amsterdam")
    for task in dag.tasks:
        assert task.retries == 3 and task.retry_exponential_backoff
    assert set(dag.params) == {"dry_run", "max_delete_fraction"}
    assert "Statement: data" in dag.doc_md and "Legal ground" in dag.doc_md
    policy = dag_id.removeprefix("retention_")
    assert f"(/retention/#{policy})" in dag.doc_md  # its row of the audit overview


def test_broken_policies_become_failing_dags_beside_the_valid_ones(tmp_path, monkeypatch):
    (tmp_path / "cdrs.yaml").write_text(VALID, encoding="utf-8")
    (tmp_path / "broken.yaml").write_text(VALID.replace("P6M", "six months"), encoding="utf-8")
    (tmp_path / "copy.yaml").write_text(VALID, encoding="utf-8")
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(tmp_path))

    bag = dagbag()

    assert bag.import_errors == {}
    assert (
        set(bag.dag_ids)
        == {
            "retention_cdrs",
            "retention-invalid-broken",
            "retention-invalid-copy",
        }
        | ALWAYS
    )
    broken = bag.dags["retention-invalid-broken"]
    assert (
        "broken.yaml: retention.period: 'six months' is not an ISO 8601 duration" in broken.doc_md
    )
    assert "invalid-policy" in broken.tags
    assert "is already used by cdrs.yaml" in bag.dags["retention-invalid-copy"].description


def test_odd_file_names_get_distinct_valid_dag_ids(tmp_path, monkeypatch):
    for name in ("my policy (copy).yaml", "my_policy_copy.yaml", "my-policy-copy.yml"):
        (tmp_path / name).write_text("name: [", encoding="utf-8")
    (tmp_path / "invalid_y.yaml").write_text(
        VALID.replace("name: cdrs", "name: invalid_y"), encoding="utf-8"
    )
    (tmp_path / "y.yaml").write_text("name: [", encoding="utf-8")
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(tmp_path))

    bag = dagbag()

    assert bag.import_errors == {}
    assert (
        set(bag.dag_ids)
        == {
            "retention_invalid_y",  # a valid policy is never replaced by a broken file's DAG
            "retention-invalid-y",
            "retention-invalid-my_policy_copy",
            "retention-invalid-my_policy_copy-2",
            "retention-invalid-my_policy_copy-3",
        }
        | ALWAYS
    )


def test_parsing_imports_no_store_driver_or_great_expectations():
    heavy = ["great_expectations", "faker", "psycopg", "pymysql", "boto3", "lifecycle.stores.sql"]
    code = (
        "import json, runpy, sys; runpy.run_path(sys.argv[1]);"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, str(DAGS / "retention.py")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(output.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("kind", ["access", "portability", "erasure", "restriction"])
def test_request_dag_shape(kind):
    dag = dagbag().dags[f"dsr_{kind}"]
    assert [task.task_id for task in dag.topological_sort()] == ["prepare", "handle", "finish"]
    assert type(dag.task_dict["handle"]).__name__.endswith("MappedOperator")  # one per policy
    assert dag.task_dict["finish"].trigger_rule == "all_done"
    # Triggered by hand with the request's id only; never on a schedule.
    assert type(dag.timetable).__name__ == "NullTimetable" and set(dag.params) == {"request_id"}
    assert {"data-subject-request", kind} <= set(dag.tags) and "request_id" in dag.doc_md


def test_the_anchor_dag_runs_daily():
    dag = dagbag().dags["retention-chain-anchor"]
    assert [task.task_id for task in dag.tasks] == ["anchor"]
    assert dag.timetable == CronTriggerTimetable("30 3 * * *", timezone="UTC")
    assert "evidence" in dag.tags and "lifecycle_evidence" in dag.doc_md
