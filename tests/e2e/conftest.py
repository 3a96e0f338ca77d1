"""End-to-end runs with `dag.test()`: real DAGs built by the factory, real task execution."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lifecycle.audit import read_runs
from lifecycle.control import ensure_schema
from tests.policies import TEST_STATEMENT, policy_yaml


@dataclass
class Deployment:
    """A policy folder, a telecom store and an audit database wired through connections."""

    policy_dir: Path
    store_url: str
    audit_url: str

    def write_policy(self, name: str, table: str, timestamp: str, **store: Any) -> None:
        """`<name>.yaml`: P6M on `table` of telecom_db, the guard lifted unless `guards` (a YAML
        fragment) says otherwise, no retries; `store` holds the store's other fields."""
        guards = store.pop("guards", "{max_delete_fraction: 1}")
        (self.policy_dir / f"{name}.yaml").write_text(
            policy_yaml(
                name=name,
                title=f"Test {name}",
                statement=TEST_STATEMENT,
                store__table=table,
                store__timestamp=timestamp,
                **{f"store__{key}": value for key, value in store.items()},
                guards=guards,
                retries=0,
                block=("store",),
            ),
            encoding="utf-8",
        )

    def run(
        self,
        dag_id: str,
        logical_date: datetime,
        conf: dict | None = None,
        run_after: datetime | None = None,
    ):
        """One dag.test() run; the same `run_after` again clears and reruns the same run."""
        from lifecycle.factory import build_dags

        dag = build_dags(self.policy_dir)[dag_id]
        return dag.test(logical_date=logical_date, run_conf=conf or {}, run_after=run_after)

    def audit(self, policy: str | None = None) -> list[dict]:
        engine = sa.create_engine(self.audit_url)
        try:
            return read_runs(engine, policy)
        finally:
            engine.dispose()


@pytest.fixture
def deployment(airflow_home, tmp_path, monkeypatch) -> Deployment:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    store_path = tmp_path / "telecom.db"
    audit_path = tmp_path / "audit.db"
    # dag.test() parses the dags folder with this environment, and tasks read these connections.
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(policy_dir))
    monkeypatch.setenv("AIRFLOW_CONN_TELECOM_DB", f"sqlite:///{store_path}")
    monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", f"sqlite:///{audit_path}")
    # The owner's `lifecycle audit-init`: runs never create the control schema themselves.
    audit = sa.create_engine(f"sqlite:///{audit_path}")
    ensure_schema(audit)
    audit.dispose()
    return Deployment(policy_dir, f"sqlite:///{store_path}", f"sqlite:///{audit_path}")


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def interrupted_after_the_second_commit(monkeypatch, delete) -> None:
    """Run `delete()` (a step's try) so that it commits its second batch and dies before the
    deletion ledger hears of it (a worker killed, the control database gone)."""
    from lifecycle.ledger import Journal

    recorded = Journal.after

    def dies_after_the_second_commit(journal, batch, deleted):
        if batch == 2:
            raise ConnectionError("the worker died")
        recorded(journal, batch, deleted)

    monkeypatch.setattr(Journal, "after", dies_after_the_second_commit)
    with pytest.raises(ConnectionError):
        delete()
    monkeypatch.setattr(Journal, "after", recorded)
