"""Airflow plugin: the retention audit pages, inside Airflow's UI and behind its login.

The pages are a FastAPI app (lifecycle.ui.app) mounted in the API server at /retention, with an
entry in the navigation that shows them inside the UI. Every route of the app depends on
Airflow's own security helpers.
"""

from typing import ClassVar

from airflow.sdk.plugins_manager import AirflowPlugin

from lifecycle.ui import URL_PREFIX


class AuditApp:
    """The app's ASGI entry, imported on the first request: every task loads this file too (for
    plugin macros) and must not pay seconds for FastAPI and Airflow's security module."""

    def __repr__(self) -> str:
        return "lifecycle.ui.app:app"

    async def __call__(self, scope, receive, send):
        from lifecycle.ui.app import app

        await app(scope, receive, send)


class RetentionAuditPlugin(AirflowPlugin):
    name = "retention_audit"
    fastapi_apps: ClassVar[list] = [
        {"app": AuditApp(), "url_prefix": URL_PREFIX, "name": "Retention audit"}
    ]
    external_views: ClassVar[list] = [
        {
            "name": "Retention audit",
            # Relative: the UI resolves it against its base URL, which may have a subpath.
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "url_route": "retention",
            "destination": "nav",
            "category": "browse",
        }
    ]
