"""Retention DAGs: one Airflow DAG `retention_<name>` per policy in include/policies/.

Thin on purpose: the policies are data and the engine builds the DAGs. Drop a policy file into the
folder (or $LIFECYCLE_POLICY_DIR) and its DAG appears; a broken one appears as a failing DAG.
"""

from lifecycle.factory import build_dags

globals().update(build_dags())
