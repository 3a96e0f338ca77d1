"""Which DAGs the demo runs: the catalogue's own policies against the demo's own stores only.

`make demo` lifts the mass-deletion guard on a policy's first run. It must never do that to a
user's policy that happens to sit in include/policies: a DAG runs in the demo only when its
policy is one of the catalogue's (the statement's fourteen rows and the requests' archives) AND
its store is one of the demo's connections (which the demo points at its own SQLite database,
S3 server and export folder). Every other DAG is skipped with a line saying how to run it by
hand. An invalid policy file's DAG runs (and fails the demo) only when the file is one of the
catalogue's. The data-subject request DAGs are run apart, each on a request of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The catalogue (include/policies/, README "The catalogue").
DEMO_POLICIES = (
    "cdrs",
    "lawful_intercept_traffic",
    "voip_ip_log",
    "support_tickets",
    "contact_forms",
    "org_contacts",
    "service_addresses",
    "billing_names",
    "internet_lines",
    "voip_accounts",
    "mobile_subscriptions",
    "support_call_recordings",
    "customer_call_recordings",
    "web_analytics",
    # Not a statement row: the archives of access and portability requests (30 days).
    "request_exports",
)
# The connections the demo defines, to its SQLite telecom database and its moto S3 server.
DEMO_CONNECTIONS = ("telecom_db", "recordings", "analytics", "lifecycle_exports")
DEMO_FILES = frozenset(f"{name}.yaml" for name in DEMO_POLICIES)


@dataclass(frozen=True)
class Selection:
    dags: dict  # dag_id -> DAG, the demo runs these
    skipped: dict[str, str]  # dag_id -> why, and how to run it by hand
    # The data-subject request DAGs (dsr_<kind>): the demo triggers each once, with a request
    # of its own on a demo customer (lifecycle.demo.requests).
    requests: dict = field(default_factory=dict)
    # The daily anchor of the audit trail's chain: the demo runs it last, on its own bucket.
    evidence: dict = field(default_factory=dict)


def _invalid_file(dag) -> str | None:
    """The file an invalid-policy DAG stands for (the factory names it in the description)."""
    prefix = "INVALID policy file "
    description = dag.description or ""
    if "invalid-policy" not in (dag.tags or ()) or not description.startswith(prefix):
        return None
    return description.removeprefix(prefix).split(": ", 1)[0]


def select_demo_dags(dags: dict, directory: Path) -> Selection:
    """Split the DAGs built from `directory` into the demo's and the others."""
    from lifecycle.loader import load_policies

    stores = {
        loaded.policy.dag_id: (loaded.policy.name, loaded.policy.store.conn_id)
        for loaded in load_policies(directory).policies
    }
    from lifecycle.requests import KINDS, dag_id_of

    request_dags = {dag_id_of(kind) for kind in KINDS}
    selected: dict = {}
    skipped: dict[str, str] = {}
    from lifecycle.anchor import ANCHOR_DAG_ID

    requests: dict = {}
    evidence: dict = {}
    for dag_id, dag in sorted(dags.items()):
        if dag_id in request_dags:
            requests[dag_id] = dag
            continue
        if dag_id == ANCHOR_DAG_ID:
            evidence[dag_id] = dag
            continue
        if dag_id in stores:
            name, conn_id = stores[dag_id]
            if name not in DEMO_POLICIES:
                skipped[dag_id] = f"policy {name!r} is not one of the demo's"
            elif conn_id not in DEMO_CONNECTIONS:
                skipped[dag_id] = (
                    f"its store is the connection {conn_id!r}, not one of the demo's "
                    f"({', '.join(DEMO_CONNECTIONS)})"
                )
            else:
                selected[dag_id] = dag
            continue
        invalid = _invalid_file(dag)
        if invalid in DEMO_FILES:
            selected[dag_id] = dag  # a broken catalogue file fails the demo, as it should
        elif invalid is not None:
            skipped[dag_id] = f"invalid policy file {invalid}, not one of the demo's"
        else:
            skipped[dag_id] = "not built from a policy of the demo"
    return Selection(selected, skipped, requests, evidence)


def skip_line(dag_id: str, reason: str, day: str) -> str:
    if dag_id.startswith("retention-invalid-"):
        how = "`make validate` shows its errors"
    else:
        how = (
            "run it by hand in your own Airflow with its connection set, a dry run first: "
            f"`airflow dags test {dag_id} {day} -c '{{\"dry_run\": true}}'`"
        )
    return f"skipping {dag_id}: not a demo policy ({reason}); {how}"
