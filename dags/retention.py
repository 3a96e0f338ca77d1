"""Retention DAGs: one Airflow DAG `retention_<name>` per policy in include/policies/, beside
them the data-subject request DAGs (`dsr_<kind>`), the chain's daily anchor and, where a policy
names owners, the overdue watchdog.

Thin on purpose: the policies are data and the engine builds the DAGs. Drop a policy file into the
folder (or $LIFECYCLE_POLICY_DIR) and its DAG appears; a broken one appears as a failing DAG.
"""

from lifecycle.factory import build_dags

globals().update(build_dags())
