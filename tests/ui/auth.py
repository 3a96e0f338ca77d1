"""An auth manager with per-DAG permissions, as FAB or Keycloak give them, for the UI test:
Airflow's SimpleAuthManager, except that the user `narrow` may read one DAG only."""

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

NARROW_USER, NARROW_DAG = "narrow", "retention_cdrs"


class OneDagForNarrowAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        if user.get_name() == NARROW_USER:
            return details is not None and details.id == NARROW_DAG and method == "GET"
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
