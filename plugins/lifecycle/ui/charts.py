"""Charts of the audit trail: Vega-Lite specs built with Altair, rendered to SVG on the server
(vl-convert), so the pages carry no JavaScript and need no front-end build.

A year or three of daily runs must read at a glance: runs are placed on their local calendar
day (the policy's zone, as on the pages), the date axis has a handful of labels whatever the
span, the x scale is padded so that the first and last bars are whole, and the retention limit
is drawn over the ages it bounds.
"""

from __future__ import annotations

import textwrap
from datetime import date, timedelta
from typing import Any

from lifecycle.stores import HORIZON_DAYS
from lifecycle.ui.zones import DEFAULT_ZONE, local_day

STATUS_COLOURS = {
    "purged": "#2e7d32",
    "dry_run": "#607d8b",
    "refused": "#ef6c00",
    "failed": "#c62828",
    "verification_failed": "#6a1b9a",
}
WITHIN, PAST, UNKNOWN, AGE, HELD = "#2e7d32", "#c62828", "#9aa5b1", "#1565c0", "#8d6e63"
DUE = ["#f9a825", "#ef6c00", "#8d6e63"]  # the forecast's horizons, shortest first
DUE_KEYS = tuple(f"due_{days}" for days in HORIZON_DAYS)
WIDTH, HEIGHT = 560, 170
DAILY_UP_TO = 400  # runs: more are charted a week a point
EDGE = 10  # pixels of x padding: a bar on the first or last day is drawn whole


def _svg(chart: Any) -> str:  # an altair chart (altair is untyped)
    import vl_convert

    return vl_convert.vegalite_to_svg(chart.to_dict())


def _empty(message: str) -> str:
    import altair as alt

    chart = (
        alt.Chart(alt.Data(values=[{"text": message}]))
        .mark_text(fontSize=13, color="#666")
        .encode(text="text:N")
        .properties(width=WIDTH, height=40)
    )
    return _svg(chart)


def _dated(points: list[dict[str, Any]], zone: str) -> list[dict[str, Any]]:
    """Each point on its local calendar day (a date, read by Vega as UTC midnight)."""
    return [{**p, "day": local_day(p["logical_date"], zone)} for p in points]


def _weekly(dated: list[dict[str, Any]], by_status: bool = False) -> list[dict[str, Any]]:
    """Over DAILY_UP_TO runs, one point a week (and outcome: `by_status`) on its Monday:
    deletions summed; ages, limits, held and due records at their highest; the worst verdict.
    Three years of daily points are bars a pixel wide, and render slower than a page may."""
    if len(dated) <= DAILY_UP_TO:
        return dated
    weeks: dict[tuple[str, str], dict[str, Any]] = {}
    for point in dated:
        day = date.fromisoformat(point["day"])
        monday = str(day - timedelta(days=day.weekday()))
        key = (monday, point["status"] if by_status else "")
        week = weeks.setdefault(key, {**point, "day": monday, "deleted": 0})
        week["deleted"] += point["deleted"]
        for name in ("age_days", "limit_days", "held", *DUE_KEYS):
            values = [v for v in (week.get(name), point.get(name)) if v is not None]
            week[name] = max(values) if values else None
        week["within"] = min(
            (week["within"], point["within"]), key=lambda v: {False: 0, None: 1, True: 2}[v]
        )
    return list(weeks.values())


def _date_axis(days: list[str]) -> tuple[str, dict[str, Any]]:
    """The label format and tick interval for a span of days: about six labels on whole days,
    months or years, never one a run (365 labels) nor one a few hours ("27 Nov" eight times)."""
    span = (date.fromisoformat(max(days)) - date.fromisoformat(min(days))).days
    if span <= 62:
        return "%d %b", {"interval": "day", "step": max(1, -(-span // 6))}
    if span <= 3 * 366:
        return "%b %Y", {"interval": "month", "step": max(1, -(-span // 180))}
    return "%Y", {"interval": "year", "step": 1}


def _x(points: list[dict[str, Any]], zone: str) -> Any:
    import altair as alt

    label_format, ticks = _date_axis([p["day"] for p in points])
    return alt.X(
        "day:T",
        title=f"run (logical date, {zone})",
        scale=alt.Scale(type="utc", padding=EDGE),
        axis=alt.Axis(
            # No formatType: "utc" there drops the format; the utc scale formats in UTC.
            format=label_format,
            labelAngle=0,
            tickCount=ticks,
            labelOverlap=True,
            grid=False,
        ),
    )


def _per(title: str, dated: list[dict[str, Any]], points: list[dict[str, Any]]) -> str:
    return title + (" per week" if len(dated) < len(points) else " per run")


def _bar_size(count: int) -> float:
    """A bar per run that fills its day without touching the next: 6 px at most."""
    return max(1.0, min(6.0, 0.8 * WIDTH / max(count, 1)))


def deletions_svg(points: list[dict[str, Any]], zone: str = DEFAULT_ZONE) -> str:
    """Records deleted per run over time, coloured by the run's outcome."""
    import altair as alt

    if not points:
        return _empty("no runs yet")
    dated = _weekly(_dated(points, zone), by_status=True)
    statuses = sorted({p["status"] for p in points})
    chart = (
        alt.Chart(alt.Data(values=dated), title=_per("Records deleted", dated, points))
        .mark_bar(size=_bar_size(len({p["day"] for p in dated})))
        .encode(
            x=_x(dated, zone),
            y=alt.Y("sum(deleted):Q", title="deleted"),
            color=alt.Color(
                "status:N",
                scale=alt.Scale(domain=statuses, range=[STATUS_COLOURS[s] for s in statuses]),
                legend=alt.Legend(title="outcome", orient="top"),
            ),
            tooltip=["day:N", "status:N", "deleted:Q"],
        )
        .properties(width=WIDTH, height=HEIGHT)
    )
    return _svg(chart)


def age_svg(points: list[dict[str, Any]], zone: str = DEFAULT_ZONE) -> str:
    """Age of the oldest remaining record at each run, under the retention limit drawn over it
    (a red dashed line, labelled); runs past the limit or unknown marked with a dot."""
    import altair as alt

    dated = _weekly([p for p in _dated(points, zone) if p["limit_days"] is not None])
    if not dated:
        return _empty("no run has measured what remains")
    if all(p["limit_days"] == 0 for p in dated):  # P0D after an event: kept while it lasts
        return _empty("until end of service: records have no age limit to chart")
    for point in dated:
        point["verdict"] = {True: "within", False: "past", None: "unknown"}[point["within"]]
    x = _x(dated, zone)
    base = alt.Chart(alt.Data(values=dated))
    age = base.mark_area(color=AGE, opacity=0.25, line={"color": AGE}).encode(
        x=x, y=alt.Y("age_days:Q", title="days")
    )
    flagged = base.transform_filter("datum.verdict != 'within'").mark_point(filled=True, size=30)
    flags = flagged.encode(
        x=x,
        y="age_days:Q",
        color=alt.Color(
            "verdict:N",
            scale=alt.Scale(domain=["past", "unknown"], range=[PAST, UNKNOWN]),
            legend=alt.Legend(title="runs", orient="top"),
        ),
    )
    limit = base.mark_line(strokeDash=[6, 4], color=PAST, strokeWidth=2).encode(
        x=x, y="limit_days:Q"
    )
    label = (
        base.transform_window(rank="rank()", sort=[alt.SortField("day", order="descending")])
        .transform_filter("datum.rank == 1")
        .mark_text(align="right", dy=-7, color=PAST, fontSize=11)
        .encode(x=x, y="limit_days:Q", text=alt.Text("label:N"))
        .transform_calculate(label="'limit ' + format(datum.limit_days, ',.0f') + ' d'")
    )
    title = "Oldest remaining record (area) against the limit (dashed), in days"
    title += ", highest of each week" if len(dated) < len(points) else ""
    layers = alt.layer(age, flags, limit, label, title=title)
    return _svg(layers.properties(width=WIDTH, height=HEIGHT))


def held_svg(points: list[dict[str, Any]], zone: str = DEFAULT_ZONE) -> str:
    """Records past the limit and kept under a hold, per run: holds placed and lifted."""
    import altair as alt

    if not points:
        return _empty("no runs yet")
    dated = _weekly(_dated(points, zone))
    chart = (
        alt.Chart(alt.Data(values=dated), title=_per("Records kept under a hold", dated, points))
        .mark_area(interpolate="step-after", color=HELD, opacity=0.35, line={"color": HELD})
        .encode(
            x=_x(dated, zone),
            y=alt.Y("held:Q", title="held"),
            tooltip=["day:N", "held:Q"],
        )
        .properties(width=WIDTH, height=HEIGHT * 2 // 3)
    )
    return _svg(chart)


def due_svg(
    points: list[dict[str, Any]],
    zone: str = DEFAULT_ZONE,
    not_counted: str = "not counted by any run yet",
) -> str:
    """The forecast at each run: records due to reach the end of their window within each
    horizon (7, 30 and 90 days), one line each; runs that counted none are left out."""
    import altair as alt

    counted = [p for p in _dated(points, zone) if p.get(DUE_KEYS[0]) is not None]
    if not counted:
        return _empty(f"records due to expire: {not_counted}")
    dated = _weekly(counted)
    horizons = [f"within {days} d" for days in HORIZON_DAYS]
    values = [
        {"day": p["day"], "horizon": horizon, "due": p[key]}
        for p in dated
        for horizon, key in zip(horizons, DUE_KEYS, strict=True)
        if p.get(key) is not None
    ]
    title = "Records due to expire (their window ends), counted at each run"
    title += ", highest of each week" if len(dated) < len(counted) else ""
    chart = (
        alt.Chart(alt.Data(values=values), title=title)
        .mark_line(point=alt.OverlayMarkDef(size=20))
        .encode(
            x=_x(dated, zone),
            y=alt.Y("due:Q", title="records"),
            color=alt.Color(
                "horizon:N",
                scale=alt.Scale(domain=horizons, range=DUE[: len(horizons)]),
                legend=alt.Legend(title="due", orient="top"),
            ),
            tooltip=["day:N", "horizon:N", "due:Q"],
        )
        .properties(width=WIDTH, height=HEIGHT * 2 // 3)
    )
    return _svg(chart)


def overview_svg(rows: list[Any], gaps: list[tuple[str, str]] | None = None) -> str:
    """Each policy's oldest remaining record as a share of its limit (past 100%: a broken one);
    the policies it cannot place (`gaps`: name, why) listed beneath."""
    import altair as alt

    values = [
        {
            "policy": row.name,
            "percent": round(100 * row.remaining.age_days / row.remaining.limit_days, 1),
            "verdict": {True: "within", False: "past", None: "unknown"}[row.remaining.within],
        }
        for row in rows
        if row.remaining.age_days is not None and row.remaining.limit_days
    ]
    if not values:
        return _empty("no run has measured what remains")
    top = max(110, 10 * -(-max(v["percent"] for v in values) * 1.05 // 10))
    base = alt.Chart(alt.Data(values=values))
    bars = base.mark_bar().encode(
        y=alt.Y("policy:N", sort="-x", title=None),
        # Room past 100 %: the limit line stands clear of the right edge.
        x=alt.X("percent:Q", title="% of the retention limit", scale=alt.Scale(domain=[0, top])),
        color=alt.Color(
            "verdict:N",
            scale=alt.Scale(domain=["within", "past", "unknown"], range=[WITHIN, PAST, UNKNOWN]),
            legend=alt.Legend(title=None, orient="top"),
        ),
    )
    rule = (
        alt.Chart(alt.Data(values=[{"limit": 100}]))
        .mark_rule(color=PAST, strokeDash=[6, 4])
        .encode(x="limit:Q")
    )
    title: dict[str, Any] = {"text": "Oldest remaining record, % of its limit"}
    if gaps:
        # Said in the chart too: an image passed on without the page still tells who is missing.
        title["subtitle"] = _gap_lines(gaps)
        title["subtitleColor"] = "#52606d"
    chart = alt.layer(bars, rule, title=alt.TitleParams(**title))
    return _svg(chart.properties(width=WIDTH, height=18 * len(values)))


def _gap_lines(gaps: list[tuple[str, str]]) -> list[str]:
    """`Not shown, no run yet: a, b` and so on, one line per reason, wrapped to the chart."""
    reasons: dict[str, list[str]] = {}
    for name, why in gaps:
        reasons.setdefault(why, []).append(name)
    lines = []
    for why, names in reasons.items():
        lines += textwrap.wrap(f"Not shown, {why}: {', '.join(names)}", width=95)
    return lines
