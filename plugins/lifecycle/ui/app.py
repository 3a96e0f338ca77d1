"""The audit review app, mounted in Airflow's API server by the `retention_ui` plugin.

Read-only (GET only) and behind Airflow's own login: every route depends on Airflow's FastAPI
security helpers (a plugin app is not protected by default), so an anonymous request gets 401
and a user needs read access to DAG runs. It reads the policy files and the audit table through
the `lifecycle_audit` connection; the audit trail holds counts, bounds and policy names only.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BeforeValidator, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from lifecycle.policy import NAME_PATTERN
from lifecycle.ui import zones
from lifecycle.ui.overview import (
    chart_gaps,
    due_figures,
    history,
    not_counted,
    overview,
    remaining_after,
    retired,
)
from lifecycle.ui.rendering import (
    NO_STORE,
    error,
    templates,  # noqa: F401 - importable from here too
    wants_html,
)
from lifecycle.ui.rendering import page as _page

if TYPE_CHECKING:
    from lifecycle.loader import LoadedPolicy, LoadResult

log = logging.getLogger(__name__)

# Logical dates the export filters on: wide enough for any trail, narrow enough that a day
# after the end and an instant in UTC exist on every database (MariaDB's DATETIME starts in
# year 1000, Python's date ends in 9999).
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2999, 12, 31)
LAST_ROW_ID = 2**31 - 1  # the audit table's id is a 32-bit integer on PostgreSQL and MariaDB
NOT_A_NAME = (
    "not a policy name (lower case letters, digits and _, starting with a letter, "
    "at most 63 characters)"
)
PARAMETER_RULES = {
    "policy": NOT_A_NAME,
    "name": NOT_A_NAME,
    "start": f"not a date from {FIRST_DAY} to {LAST_DAY} (YYYY-MM-DD); leave it empty for none",
    "end": f"not a date from {FIRST_DAY} to {LAST_DAY} (YYYY-MM-DD); leave it empty for none",
    "row_id": f"not an audit record id (a whole number from 1 to {LAST_ROW_ID})",
    "page": "not a page number (a whole number from 1)",
    "tz": "not an IANA timezone (example: Europe/Amsterdam); leave it empty for the policy's",
    "request_id": f"not a request number (a whole number from 1 to {LAST_ROW_ID})",
}


def _require_run_reader() -> Any:  # FastAPI's Depends() is typed Any
    """Airflow's own login and permissions: an authenticated user (401 without a valid token)
    allowed to read the runs of every DAG (403 otherwise). Not `requires_access_dag`: it takes
    a `dag_id` from the query string, so a user allowed one DAG could name it and pass."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )
    from airflow.api_fastapi.core_api.security import get_user

    def check(user: Any = Depends(get_user)) -> None:  # noqa: B008 - FastAPI's dependency idiom
        allowed = get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=None), user=user
        )
        if not allowed:
            raise HTTPException(403, "reading the audit trail needs read access to all DAG runs")

    return Depends(check)


app = FastAPI(
    title="Retention audit",
    description="Compliance overview, per-run evidence and the audit trail export.",
    dependencies=[_require_run_reader()],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@app.exception_handler(sa.exc.DBAPIError)
def _database_error(request: Request, exc: Exception) -> Response:
    # The type only: a driver's message can quote values.
    log.warning("retention audit: audit database error (%s)", type(exc).__name__)
    message = "the audit database did not answer; see the API server's log"
    if wants_html(request):
        return error(request, 503, message)
    return Response(message, status_code=503, media_type="text/plain", headers=NO_STORE)


@app.exception_handler(StarletteHTTPException)
def _http_error(request: Request, exc: Exception) -> Response:
    """404, 403, 401...: a page for a browser, `{"detail": ...}` for a program."""
    assert isinstance(exc, StarletteHTTPException)
    return error(request, exc.status_code, str(exc.detail), exc.headers)


@app.exception_handler(RequestValidationError)
def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """A 422 naming each wrong parameter and what it must be, without the value sent: FastAPI's
    own answer repeats the input (10,000 characters, control characters, a NUL byte)."""
    problems: dict[str, str] = {}
    for problem in exc.errors():
        where = str(problem["loc"][-1]) if problem.get("loc") else "request"
        problems.setdefault(where, PARAMETER_RULES.get(where, problem["msg"]))
    detail = "; ".join(f"{where}: {problem}" for where, problem in problems.items())
    return error(request, 422, detail)


# -- data ---------------------------------------------------------------------------------------


@functools.cache
def _audit_engine() -> sa.Engine:
    from lifecycle.connections import AUDIT_CONN_ID, new_engine

    return new_engine(AUDIT_CONN_ID, "the audit connection")


def audit_engine() -> sa.Engine:
    try:
        return _audit_engine()
    except Exception as exc:  # a missing or broken connection: say which, never its URL
        log.warning("retention audit: connection lifecycle_audit unusable (%s)", type(exc).__name__)
        raise HTTPException(503, "the audit connection `lifecycle_audit` is not usable") from None


def _policies() -> LoadResult:
    """The policy files as the DAGs see them, reread when a file changes."""
    from lifecycle.loader import policy_dir

    directory = policy_dir()
    stamp = tuple((path.name, path.stat().st_mtime_ns) for path in sorted(directory.glob("*.y*ml")))
    return _load(directory, stamp)


@functools.lru_cache(maxsize=4)
def _load(directory: Path, stamp: tuple[tuple[str, int], ...]) -> LoadResult:
    from lifecycle.loader import load_policies

    return load_policies(directory)


def _runs_of(
    policy: str | None,
    start: date | None = None,
    end: date | None = None,
    zone: str = zones.DEFAULT_ZONE,
) -> Iterator[dict[str, Any]]:
    """Runs whose logical date falls on the local calendar days [start, end] in `zone`."""
    from lifecycle.audit import iter_runs

    lower, upper = zones.day_bounds(start, end, zone)
    return iter_runs(audit_engine(), policy, start=lower, end=upper)


def _zone_of(name: str) -> str:
    return zones.zones_of(p.policy for p in _policies().policies)(name)


def _empty_is_none(value: object) -> object:
    """The overview's export form sends `policy=&start=&end=` for "all policies, no bounds"."""
    return None if value == "" else value


# Checked before any query: a name no policy can have (a NUL byte, which PostgreSQL refuses with
# an error, 10,000 characters, `../`) is the client's mistake, not the database's.
PolicyName = Annotated[str, PathParameter(pattern=NAME_PATTERN, max_length=63)]
PolicyFilter = Annotated[
    Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)] | None,
    BeforeValidator(_empty_is_none),
    Query(description="one policy; empty: all"),
]
RowId = Annotated[int, PathParameter(ge=1, le=LAST_ROW_ID)]


def _policy(name: str) -> LoadedPolicy | None:
    for loaded in _policies().policies:
        if loaded.policy.name == name:
            return loaded
    return None


def _known(name: str) -> tuple[LoadedPolicy | None, int]:
    """The policy's file (None: retired or invalid) and its run count; a 404 when neither
    a file nor a run knows the name."""
    from lifecycle.ui.queries import count_runs

    loaded, total = _policy(name), count_runs(audit_engine(), name)
    if loaded is None and total == 0:
        raise HTTPException(404, f"no policy named {name!r}, and no run of one in the trail")
    return loaded, total


# -- pages --------------------------------------------------------------------------------------


@app.get("/", response_class=HTMLResponse)
def overview_page(request: Request) -> HTMLResponse:
    from lifecycle.audit import latest_runs

    loaded = _policies()
    from lifecycle.ui.integrity import chain_status

    latest = latest_runs(audit_engine())
    rows = overview([p.policy for p in loaded.policies], latest, _now())
    return _page(
        request,
        "overview.html",
        rows=rows,
        chain=chain_status(audit_engine(), _now()),
        retired=retired(latest, loaded),
        chart_gaps=chart_gaps(rows),
        default_zone=zones.DEFAULT_ZONE,
        errors=loaded.errors,
        export_zones=sorted({"UTC", *(p.policy.timezone for p in loaded.policies)}),
        # An invalid policy file enforces nothing: it needs attention as much as a failed run.
        needs_attention=sum(1 for row in rows if row.attention) + len(loaded.errors),
    )


PageNumber = Annotated[int, Query(ge=1, le=LAST_ROW_ID, description="runs page, newest first")]


@app.get("/policies/{name}", response_class=HTMLResponse)
def policy_page(request: Request, name: PolicyName, page: PageNumber = 1) -> HTMLResponse:
    """A policy and its runs, a hundred a page, newest first; a retired policy (no file any
    more) by what its runs recorded."""
    from lifecycle.ui.queries import PER_PAGE, runs_page

    loaded, total = _known(name)
    pages = max(1, -(-total // PER_PAGE))
    if page > pages:
        raise HTTPException(404, f"no page {page} of the runs of {name}: it has {pages}")
    runs = runs_page(audit_engine(), name, page)
    last = runs[0] if page == 1 or not runs else runs_page(audit_engine(), name, 1, 1)[0]
    invalid = [e.path.name for e in _policies().errors if e.path.stem == name]
    return _page(
        request,
        "policy.html",
        name=name,
        loaded=loaded,
        policy=loaded.policy if loaded else None,
        last=last,
        invalid_file=invalid[0] if invalid else None,
        zone=loaded.policy.timezone if loaded else zones.DEFAULT_ZONE,
        runs=runs,
        total=total,
        page=page,
        pages=pages,
        remaining={run["id"]: remaining_after(run) for run in runs},
        due=due_figures(last),
        due_note=not_counted(),
    )


@app.get("/runs/{row_id}", response_class=HTMLResponse)
def run_page(request: Request, row_id: RowId) -> HTMLResponse:
    from lifecycle.audit import read_run

    run = read_run(audit_engine(), row_id)
    if run is None:
        raise HTTPException(404, f"no audit record {row_id}")
    loaded = _policy(run["policy"])
    return _page(
        request,
        "run.html",
        run=run,
        zone=_zone_of(run["policy"]),
        retired=loaded is None,
        due=due_figures(run),
        due_note=not_counted(of="this run"),
        remaining=remaining_after(run),
        in_airflow=airflow_run_exists(run["dag_id"], run["run_id"]),
    )


def airflow_run_exists(dag_id: str, run_id: str) -> bool | None:
    """Whether Airflow still has the DAG run (the page links to it only then: `db clean` or a
    `dags test` of the same date removes runs, the evidence stays). None when Airflow's
    database cannot be asked (the link is then shown, as before)."""
    try:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            found = session.scalar(
                sa.select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            )
    except Exception:  # no Airflow here (unit tests), or its database is down
        log.warning("could not ask Airflow whether run %s of %s exists", run_id, dag_id)
        return None
    return found is not None


# -- charts -------------------------------------------------------------------------------------


def _svg(text: str) -> Response:
    return Response(text, media_type="image/svg+xml", headers=NO_STORE)


@app.get("/charts/overview.svg")
def overview_chart() -> Response:
    from lifecycle.audit import latest_runs
    from lifecycle.ui.charts import overview_svg

    rows = overview([p.policy for p in _policies().policies], latest_runs(audit_engine()), _now())
    return _svg(overview_svg(rows, chart_gaps(rows)))


def _history(name: str) -> tuple[list[dict[str, Any]], str]:
    """A known policy's chart points (every run: a chart is the whole history) and its zone."""
    loaded, _ = _known(name)
    zone = loaded.policy.timezone if loaded else zones.DEFAULT_ZONE
    return history(list(_runs_of(name))), zone


@app.get("/charts/{name}/deletions.svg")
def deletions_chart(name: PolicyName) -> Response:
    from lifecycle.ui.charts import deletions_svg

    return _svg(deletions_svg(*_history(name)))


@app.get("/charts/{name}/age.svg")
def age_chart(name: PolicyName) -> Response:
    from lifecycle.ui.charts import age_svg

    return _svg(age_svg(*_history(name)))


@app.get("/charts/{name}/held.svg")
def held_chart(name: PolicyName) -> Response:
    from lifecycle.ui.charts import held_svg

    return _svg(held_svg(*_history(name)))


@app.get("/charts/{name}/due.svg")
def due_chart(name: PolicyName) -> Response:
    from lifecycle.ui.charts import due_svg

    points, zone = _history(name)
    return _svg(due_svg(points, zone, not_counted(of="any run yet")))


# -- export -------------------------------------------------------------------------------------


def _day(value: object) -> object:
    """A calendar day written YYYY-MM-DD, and nothing pydantic would also take for one: a Unix
    time (`0`), a datetime whose offset would move the day, a year beyond the range."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("not YYYY-MM-DD")
    day = date.fromisoformat(value)  # 2026-13-01 raises ValueError
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError("out of range")
    return day


Day = Annotated[
    date | None,
    BeforeValidator(_day),
    Query(description="logical dates from or to (inclusive, local days of `tz`); empty: none"),
]
ZoneParameter = Annotated[
    str | None,
    BeforeValidator(zones.known_zone),
    Query(description="the days' timezone; empty: the policy's, or Europe/Amsterdam for all"),
]


def _export(
    kind: str, policy: str | None, start: date | None, end: date | None, tz: str | None
) -> StreamingResponse:
    from lifecycle.ui.export import (
        as_csv_lines,
        as_json_lines,
        chunked,
        content_disposition,
        stored_rows,
    )

    if start and end and end < start:
        raise HTTPException(422, "end is before start")
    zone_of = zones.zones_of(p.policy for p in _policies().policies)
    # Days are the policy's own (its 29 November run is on the 29th), else Amsterdam's.
    day_zone = tz or (zone_of(policy) if policy else zones.DEFAULT_ZONE)
    # The first row is read before the response starts: a database that fails is a 503, not
    # a 200 with a truncated file.
    # As stored: the hashes a third party rechecks are of the rows as written; what a later
    # run settled for a row is its own column (settled_later).
    lower, upper = zones.day_bounds(start, end, day_zone)
    rows = stored_rows(audit_engine(), policy or None, start=lower, end=upper)
    first = next(rows, None)
    rows = itertools.chain([first] if first is not None else [], rows)
    name = "-".join(
        ["retention-audit", policy or "all", str(start or "begin"), str(end or "today")]
    )
    lines = {
        "csv": lambda: as_csv_lines(rows, zone_of),
        "excel": lambda: as_csv_lines(rows, zone_of, excel=True),
        "json": lambda: as_json_lines(rows, zone_of),
    }[kind]()
    media = "application/json" if kind == "json" else "text/csv; charset=utf-8"
    filename = f"{name}-excel.csv" if kind == "excel" else f"{name}.{kind}"
    return StreamingResponse(
        chunked(lines),
        media_type=media,
        headers={"Content-Disposition": content_disposition(filename), **NO_STORE},
    )


@app.get("/export.csv")
def export_csv(
    policy: PolicyFilter = None, start: Day = None, end: Day = None, tz: ZoneParameter = None
) -> StreamingResponse:
    """The audit trail as CSV, optionally one policy and logical dates in [start, end]."""
    return _export("csv", policy, start, end, tz)


@app.get("/export-excel.csv")
def export_excel_csv(
    policy: PolicyFilter = None, start: Day = None, end: Day = None, tz: ZoneParameter = None
) -> StreamingResponse:
    """The CSV for Excel in a `;` locale (Dutch): a byte order mark and semicolons."""
    return _export("excel", policy, start, end, tz)


@app.get("/export.json")
def export_json(
    policy: PolicyFilter = None, start: Day = None, end: Day = None, tz: ZoneParameter = None
) -> StreamingResponse:
    """The audit trail as a JSON array, optionally one policy and logical dates in [start, end]."""
    return _export("json", policy, start, end, tz)


# -- the compliance report -------------------------------------------------------------------

ReportDay = Annotated[
    date,
    BeforeValidator(_day),
    Query(description="the period's first or last day (YYYY-MM-DD, included)"),
]


def _report(start: date, end: date) -> Any:
    from lifecycle.report import Period, build_report

    if end < start:
        raise HTTPException(422, "end is before start")
    loaded = _policies()
    return build_report(
        audit_engine(),
        [item.policy for item in loaded.policies],
        Period(start, end),
        source="the audit trail",
        invalid_files=tuple(sorted({error.path.name for error in loaded.errors})),
    )


@app.get("/report.html", response_class=HTMLResponse)
def report_html(start: ReportDay, end: ReportDay) -> HTMLResponse:
    """The compliance report of a period (as `python -m lifecycle report`), as a page."""
    from lifecycle.report import render_html

    return HTMLResponse(render_html(_report(start, end)), headers=NO_STORE)


@app.get("/report.pdf")
def report_pdf(start: ReportDay, end: ReportDay) -> Response:
    """The compliance report of a period as a PDF to download."""
    from lifecycle.report import render_pdf
    from lifecycle.ui.export import content_disposition

    filename = f"retention-report-{start}-{end}.pdf"
    return Response(
        render_pdf(_report(start, end)),
        media_type="application/pdf",
        headers={"Content-Disposition": content_disposition(filename), **NO_STORE},
    )


# -- data-subject requests (lifecycle.ui.requests_pages) -----------------------------------------

RequestId = Annotated[int, PathParameter(ge=1, le=LAST_ROW_ID)]


def _register_read(read: Any, *args: Any) -> Any:
    """A read of the request register; a control database without one is a 503 saying why."""
    from lifecycle.ui.requests_pages import RegisterMissing

    try:
        return read(audit_engine(), *args)
    except RegisterMissing as exc:
        raise HTTPException(503, str(exc)) from None


@app.get("/requests", response_class=HTMLResponse)
def requests_page(request: Request) -> HTMLResponse:
    """The register: open requests the soonest due first, overdue ones marked; closed ones
    below. Identifier names only, never a value."""
    from lifecycle.ui import requests_pages as pages

    register = _register_read(pages.read_register)
    now = _now()
    return _page(
        request,
        "requests.html",
        register=register,
        overdue=sum(1 for r in register.open if r.overdue(now)),
        now=now,
        zone=pages.ZONE,
        summary=pages.summary,
        due_note=pages.due_note,
        closed_shown=pages.CLOSED_SHOWN,
    )


def _request_log(excel: bool) -> Response:
    from lifecycle.ui import requests_pages as pages
    from lifecycle.ui.export import content_disposition

    now = _now()
    # Read whole before answering: a database that fails is a 503, not a truncated file.
    text = "".join(pages.log_lines(_register_read(pages.log_rows), now, excel=excel))
    day = now.astimezone(zones.zone(pages.ZONE)).date()
    filename = f"retention-requests-{day}{'-excel' if excel else ''}.csv"
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": content_disposition(filename), **NO_STORE},
    )


@app.get("/requests/export.csv")
def requests_export_csv() -> Response:
    """The request log: a row per request (dates, status, overdue, runs, decision, the last
    run's categories counted per status); no identifier, no client id."""
    return _request_log(excel=False)


@app.get("/requests/export-excel.csv")
def requests_export_excel_csv() -> Response:
    """The request log for Excel in a `;` locale (Dutch): a byte order mark and semicolons."""
    return _request_log(excel=True)


@app.get("/requests/{request_id}", response_class=HTMLResponse)
def request_page(request: Request, request_id: RequestId) -> HTMLResponse:
    """One request: its facts, its last run's result per category and that run's audit
    records; a forwarded category by how many client organisations, never their ids."""
    from lifecycle.ui import requests_pages as pages

    found = _register_read(pages.read_request, request_id)
    if found is None:
        raise HTTPException(404, f"no data-subject request {request_id} in the register")
    subject, names_readable = found
    now = _now()
    return _page(
        request,
        "request.html",
        r=subject,
        names_readable=names_readable,
        run=pages.last_run(audit_engine(), subject),
        overdue=subject.overdue(now),
        due_note=pages.due_note(subject, now),
        summary=pages.summary(subject),
        zone=pages.ZONE,
    )


def _now() -> datetime:
    return datetime.now(UTC)
