"""Charts of the audit trail: Vega-Lite specs built with Altair, rendered to SVG on the server
(vl-convert), so the pages carry no JavaScript and need no front-end build."""

from __future__ import annotations

from typing import Any

STATUS_COLOURS = {
    "purged": "#2e7d32",
    "dry_run": "#607d8b",
    "refused": "#ef6c00",
    "failed": "#c62828",
    "verification_failed": "#6a1b9a",
}
WITHIN, PAST = "#2e7d32", "#c62828"
WIDTH, HEIGHT = 560, 170
UTC_SCALE = {"type": "utc"}
DATE_AXIS = {"format": "%Y-%m-%d", "labelAngle": 0, "tickCount": "day"}


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


def _dated(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**p, "logical_date": p["logical_date"].isoformat()} for p in points]


def deletions_svg(points: list[dict[str, Any]]) -> str:
    """Records deleted per run over time, coloured by the run's outcome."""
    import altair as alt

    if not points:
        return _empty("no runs yet")
    statuses = sorted({p["status"] for p in points})
    chart = (
        alt.Chart(alt.Data(values=_dated(points)), title="Records deleted per run")
        .mark_bar(size=6)
        .encode(
            x=alt.X(
                "logical_date:T", title="run (logical date, UTC)", axis=DATE_AXIS, scale=UTC_SCALE
            ),
            y=alt.Y("sum(deleted):Q", title="deleted"),
            color=alt.Color(
                "status:N",
                scale=alt.Scale(domain=statuses, range=[STATUS_COLOURS[s] for s in statuses]),
                legend=alt.Legend(title="outcome", orient="top"),
            ),
        )
        .properties(width=WIDTH, height=HEIGHT)
    )
    return _svg(chart)


def age_svg(points: list[dict[str, Any]]) -> str:
    """Age of the oldest remaining record at each run against the retention limit."""
    import altair as alt

    dated = [p for p in _dated(points) if p["limit_days"] is not None]
    if not dated:
        return _empty("no run has measured what remains")
    for point in dated:
        point["verdict"] = {True: "within", False: "past", None: "unknown"}[point["within"]]
    base = alt.Chart(alt.Data(values=dated), title="Oldest remaining record vs the limit (days)")
    limit = base.mark_line(strokeDash=[6, 4], color="#c62828").encode(
        x=alt.X("logical_date:T", title="run (logical date, UTC)", axis=DATE_AXIS, scale=UTC_SCALE),
        y=alt.Y("limit_days:Q", title="days"),
    )
    age = base.mark_line(point=True, color="#1565c0").encode(
        x="logical_date:T",
        y="age_days:Q",
        color=alt.Color(
            "verdict:N",
            scale=alt.Scale(domain=["within", "past", "unknown"], range=[WITHIN, PAST, "#999"]),
            legend=alt.Legend(title="dashed: limit", orient="top"),
        ),
    )
    return _svg((limit + age).properties(width=WIDTH, height=HEIGHT))


def overview_svg(rows: list[Any]) -> str:
    """Each policy's oldest remaining record as a share of its limit (past 100%: a broken one)."""
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
    base = alt.Chart(alt.Data(values=values), title="Oldest remaining record, % of its limit")
    bars = base.mark_bar().encode(
        y=alt.Y("policy:N", sort="-x", title=None),
        x=alt.X("percent:Q", title="% of the retention limit"),
        color=alt.Color(
            "verdict:N",
            scale=alt.Scale(domain=["within", "past", "unknown"], range=[WITHIN, PAST, "#999"]),
            legend=alt.Legend(title=None, orient="top"),
        ),
    )
    rule = (
        alt.Chart(alt.Data(values=[{"limit": 100}]))
        .mark_rule(color="#c62828", strokeDash=[6, 4])
        .encode(x="limit:Q")
    )
    return _svg((bars + rule).properties(width=WIDTH, height=18 * len(values)))
