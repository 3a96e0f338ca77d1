"""The tests' embedded Airflow: its environment and its metadata database.

The demo owns both (it runs the same embedded Airflow); they live in the demo's command module,
lifecycle/demo/__main__.py, for want of a module of their own. Tests import them from here, so
that when they move (to a module such as lifecycle/demo/environment.py) only this import changes.
Importing this module imports no Airflow: the environment must be set before Airflow loads.
"""

from lifecycle.demo.__main__ import airflow_environment, migrate_metadata_db

__all__ = ["airflow_environment", "migrate_metadata_db"]
