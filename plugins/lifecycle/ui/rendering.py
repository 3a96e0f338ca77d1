"""Pages and error answers of the audit app: HTML for a browser, JSON for a script.

A browser that follows a stale link (a policy file removed, an audit record id mistyped) gets a
page it can navigate back from, not `{"detail": ...}`; a script (curl, httpx, an export job)
asks for JSON or for anything (`*/*`) and keeps the JSON answers it parses.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from lifecycle.ui import URL_PREFIX, zones

NO_STORE = {"Cache-Control": "no-store"}
TITLES = {
    400: "Bad request",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    422: "Not a valid request",
    503: "Audit database unavailable",
}

templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))
templates.env.filters.update(
    local_text=zones.local_text, utc_text=zones.utc_text, local_day=zones.local_day
)


def root(request: Request) -> str:
    return cast(str, request.scope.get("root_path", "")).rstrip("/")


def airflow_root(request: Request) -> str:
    path = root(request)
    return path[: -len(URL_PREFIX)] if path.endswith(URL_PREFIX) else ""


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {"root": root(request), "airflow": airflow_root(request), "quote": quote, **context},
        status_code=status_code,
        headers=NO_STORE,
    )


def wants_html(request: Request) -> bool:
    """A browser navigating asks for text/html first; `*/*`, JSON or an image (a chart's <img>)
    is a program or an embed, which gets the JSON or text it parses."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept.split(",")[0]


def error(
    request: Request, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    sent = {**(headers or {}), **NO_STORE}
    if not wants_html(request):
        return JSONResponse({"detail": detail}, status_code=status, headers=sent)
    response = page(
        request,
        "error.html",
        status_code=status,
        status=status,
        title=TITLES.get(status, "Error"),
        detail=detail,
    )
    response.headers.update(sent)
    return response
