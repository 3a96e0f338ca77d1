"""The report as one self-contained HTML page: inline CSS and SVG charts, no script, no request
to anything else, so it can be mailed, archived or printed as it is."""

from __future__ import annotations

import math
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from lifecycle.report import text
from lifecycle.report.model import Age, ChartBar, Period, Report

TEMPLATES = Path(__file__).parent / "templates"
CHART_WIDTH, CHART_HEIGHT = 640, 160
MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 56, 28, 10
TICKS = 6  # date labels on the time axis


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["text"] = text
    environment.globals["chart"] = deletions_svg
    environment.globals["age_chart"] = ages_svg
    return environment


def render_html(report: Report) -> str:
    return _environment().get_template("report.html").render(report=report)


def _label_every(count: int) -> int:
    return max(1, -(-count // TICKS))


def deletions_svg(bars: tuple[ChartBar, ...]) -> Markup:
    """Records deleted per day (or week) as SVG bars, with a dated axis and the top count; each
    bar has a tooltip with its dates and count. Every bar keeps inside the frame."""
    plot_w = CHART_WIDTH - MARGIN_LEFT - 8
    plot_h = CHART_HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    top = max((bar.deleted for bar in bars), default=0) or 1
    step = plot_w / max(len(bars), 1)
    base = MARGIN_TOP + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" '
        f'width="{CHART_WIDTH}" height="{CHART_HEIGHT}" role="img" '
        f'aria-label="records deleted per {"day" if _daily(bars) else "week"}">',
        f'<line x1="{MARGIN_LEFT}" y1="{base}" x2="{CHART_WIDTH - 8}" y2="{base}" stroke="#555"/>',
        f'<text x="{MARGIN_LEFT - 4}" y="{MARGIN_TOP + 8}" text-anchor="end">'
        f"{text.number(top)}</text>",
        f'<text x="{MARGIN_LEFT - 4}" y="{base}" text-anchor="end">0</text>',
    ]
    every = _label_every(len(bars))
    for index, bar in enumerate(bars):
        x = MARGIN_LEFT + index * step
        height = plot_h * bar.deleted / top
        parts.append(
            f'<rect x="{x + step * 0.1:.1f}" y="{base - height:.1f}" width="{step * 0.8:.1f}" '
            f'height="{height:.1f}" fill="#2e7d32"><title>{escape(_when(bar))}: '
            f"{text.plural(bar.deleted, 'record')} deleted</title></rect>"
        )
        if index % every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{base + 16}" text-anchor="start">{bar.start:%d %b}</text>'
            )
    if not any(bar.deleted for bar in bars):
        parts.append(
            f'<text x="{MARGIN_LEFT + plot_w / 2:.0f}" y="{MARGIN_TOP + plot_h / 2:.0f}" '
            'text-anchor="middle">no records deleted in the period</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built here from numbers and escaped text


def _daily(bars: tuple[ChartBar, ...]) -> bool:
    return all(bar.days == 1 for bar in bars)


def _when(bar: ChartBar) -> str:
    if bar.days == 1:
        return bar.start.isoformat()
    return f"{bar.start} to {bar.start + timedelta(days=bar.days - 1)}"


def ages_svg(ages: tuple[Age, ...], period: Period) -> Markup:
    """Each run's oldest remaining record (blue) against its limit (red, dashed), in days over
    the period: a point above the line is a record kept past its limit."""
    plot_w = CHART_WIDTH - MARGIN_LEFT - 8
    plot_h = CHART_HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    top = float(
        math.ceil(max(max(a.age_days or 0.0, a.limit_days or 0.0) for a in ages) * 1.1) or 1
    )
    base = MARGIN_TOP + plot_h

    def x(on: date) -> float:
        return MARGIN_LEFT + plot_w * (on - period.first).days / max(period.days - 1, 1)

    def y(days: float | None) -> float:
        return base - plot_h * (days or 0.0) / top

    def line(values: list[tuple[float, float]], style: str) -> str:
        points = " ".join(f"{px:.1f},{py:.1f}" for px, py in values)
        return f'<polyline points="{points}" fill="none" stroke-width="1.5" {style}/>'

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" '
        f'width="{CHART_WIDTH}" height="{CHART_HEIGHT}" role="img" '
        'aria-label="oldest remaining record against the limit, in days">',
        f'<line x1="{MARGIN_LEFT}" y1="{base}" x2="{CHART_WIDTH - 8}" y2="{base}" stroke="#555"/>',
        f'<text x="{MARGIN_LEFT - 4}" y="{MARGIN_TOP + 8}" text-anchor="end">'
        f"{text.days(top)} d</text>",
        f'<text x="{MARGIN_LEFT - 4}" y="{base}" text-anchor="end">0</text>',
        line([(x(a.on), y(a.limit_days)) for a in ages], 'stroke="#c62828" stroke-dasharray="4 3"'),
        line([(x(a.on), y(a.age_days)) for a in ages], 'stroke="#1565c0"'),
    ]
    for a in ages:
        parts.append(
            f'<circle cx="{x(a.on):.1f}" cy="{y(a.age_days):.1f}" r="2" fill="#1565c0">'
            f"<title>{a.on}: oldest {text.days(a.age_days or 0.0)} of "
            f"{text.days(a.limit_days or 0.0)} days</title></circle>"
        )
    for index in range(0, period.days, _label_every(period.days)):
        day = period.first + timedelta(days=index)
        parts.append(f'<text x="{x(day):.1f}" y="{base + 16}">{day:%d %b}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built here from numbers and dates
