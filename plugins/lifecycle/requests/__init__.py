"""Data-subject requests: the statement's rights (inzage, overdracht, verwijdering, beperking)
answered across every policy's store with the rigour of the retention runs.

A request is registered in the control database (`lifecycle.requests.register`, the CLI
`lifecycle requests`) with the subject's identifiers, named as the policies' `store.subjects`
name them; a DAG per kind (`dsr_access`, `dsr_portability`, `dsr_erasure`, `dsr_restriction`)
is triggered with the request's id alone. Each policy's part is decided by the policy itself
(`lifecycle.requests.scope`: does it map one of the identifiers, its ground, its controller),
then done in its store through the same subject resolution the holds use, so a request finds
exactly what a hold on the same subject protects (`lifecycle.stores.<kind>_requests`).

The identifiers stay in the register's subjects table and the task's memory: XCom, logs, the
DAG run's conf and the audit trail carry the request id, policy names and counts only.
"""

from __future__ import annotations

KINDS = ("access", "portability", "erasure", "restriction")


def dag_id_of(kind: str) -> str:
    return f"dsr_{kind}"
