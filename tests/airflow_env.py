"""The tests' embedded Airflow: its environment and its metadata database, from the module the
demo shares with the tests (lifecycle.demo.environment). Importing it imports no Airflow: the
environment must be set before Airflow loads."""

from lifecycle.demo.environment import airflow_environment, migrate_metadata_db

__all__ = ["airflow_environment", "migrate_metadata_db"]
