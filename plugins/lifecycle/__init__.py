"""Retention policies as code: the engine behind the `retention_<name>` Airflow DAGs.

Importable without a running Airflow: policy model and loader, cutoff arithmetic, stores, guards,
verification and audit are plain Python; only `factory` (DAG building) needs the Task SDK.
"""

__version__ = "0.1.0"
