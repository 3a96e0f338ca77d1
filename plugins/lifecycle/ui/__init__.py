"""The audit review UI: compliance overview, charts, per-run evidence and the auditor export,
served inside Airflow's API server (see plugins/retention_ui.py)."""

URL_PREFIX = "/retention"  # where the plugin mounts the app in the API server
