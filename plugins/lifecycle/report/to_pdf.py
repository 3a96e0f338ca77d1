"""The report as a PDF (ReportLab: pure Python, no system libraries): a summary page, then a page
per policy (its statement row, figures, holds, refusals, failures and chart); on every page
a footer saying where the figures come from and what the trail's hash chain was found to be."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, Line, String
from reportlab.graphics.widgets.markers import Marker
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from lifecycle.report import text
from lifecycle.report.model import ChartBar, Period, PolicyReport, ReasonCount, Report

PAGE = A4
MARGIN = 15 * mm
# Reasons and holds beyond these are counted, not listed: a policy's page stays one page.
MAX_LISTED = 12
GRID = TableStyle(
    [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f0f0f0")),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]
)


def _styles() -> dict[str, ParagraphStyle]:
    sheet = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("title", parent=sheet["Title"]),
        "h2": ParagraphStyle("h2", parent=sheet["Heading2"]),
        "h3": ParagraphStyle("h3", parent=sheet["Heading4"], spaceBefore=4, spaceAfter=1),
        "body": ParagraphStyle("body", parent=sheet["BodyText"], fontSize=9, leading=11),
        "cell": ParagraphStyle("cell", parent=sheet["BodyText"], fontSize=8, leading=10),
    }


STYLES = _styles()


def _p(value: str, style: str = "body") -> Paragraph:
    """A paragraph of plain text: ReportLab reads markup, so the text is escaped."""
    return Paragraph(escape(value), STYLES[style])


def render_pdf(report: Report) -> bytes:
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=PAGE,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN + 10 * mm,
        title=f"{text.TITLE} {report.period}",
        author="lifecycle report",
        subject=text.period_line(report),
    )
    story = _summary(report)
    for policy in report.all:
        story += [PageBreak(), *_policy(policy, report.period)]
    footer = text.footer(report)
    document.build(story, canvasmaker=_numbered(footer))
    return buffer.getvalue()


def _summary(report: Report) -> list[Flowable]:
    header = [_p(title, "cell") for title in text.SUMMARY_HEADER]
    rows = [[_p(cell, "cell") for cell in row] for row in text.summary(report)]
    widths = [38 * mm, 12 * mm, 12 * mm, 18 * mm, 15 * mm, 15 * mm, 16 * mm, 13 * mm, 41 * mm]
    story: list[Flowable] = [
        _p(text.TITLE, "title"),
        _p(text.period_line(report) + "."),
        Spacer(1, 4 * mm),
        Table([header, *rows], colWidths=widths, style=GRID, repeatRows=1),
    ]
    if report.retired:
        names = ", ".join(policy.name for policy in report.retired)
        either = " (or its file is invalid)" if report.invalid_files else ""
        story.append(_p(f"Retired: {names}: runs in the period, no policy file any more{either}."))
    if report.invalid_files:
        story.append(
            _p(
                f"Invalid policy files, not in this report as policies: "
                f"{', '.join(report.invalid_files)}."
            )
        )
    return story


def _policy(policy: PolicyReport, period: Period) -> list[Flowable]:
    facts = [[_p(label, "cell"), _p(value, "cell")] for label, value in text.facts(policy)]
    story: list[Flowable] = [
        _p(text.heading(policy), "h2"),
        Table(facts, colWidths=[50 * mm, 130 * mm], style=GRID),
    ]
    if policy.attempts == 0:
        return [*story, Spacer(1, 3 * mm), _p("No run in the period.")]
    return [
        *story,
        _p("Held, by hold", "h3"),
        _holds(policy),
        _p(f"Refusals ({text.number(policy.refusals)})", "h3"),
        _reasons(policy.refusal_reasons, "No run was refused."),
        _p(f"Failures ({text.number(policy.failures)})", "h3"),
        _reasons(policy.failure_reasons, "No run failed."),
        _p("Records deleted per " + ("day" if _daily(policy.chart) else "week"), "h3"),
        deletions_chart(policy.chart),
        _p("Oldest remaining record against the limit (days)", "h3"),
        age_chart(policy, period),
    ]


def _holds(policy: PolicyReport) -> Flowable:
    if not policy.holds:
        return _p("No hold kept a record in the period.")
    header = ["Hold", "Held at its last run", "Most held in a run", "Runs"]
    rows: list[list[Any]] = [
        [f"hold {h.hold_id}", text.number(h.last), text.number(h.peak), text.number(h.runs)]
        for h in policy.holds[:MAX_LISTED]
    ]
    if len(policy.holds) > MAX_LISTED:
        rows.append([f"and {len(policy.holds) - MAX_LISTED} more holds", "", "", ""])
    return Table([header, *rows], style=GRID, hAlign="LEFT")


def _reasons(reasons: tuple[ReasonCount, ...], none: str) -> Flowable:
    if not reasons:
        return _p(none)
    rows: list[list[Any]] = [
        [_p(item.reason, "cell"), text.number(item.count)] for item in reasons[:MAX_LISTED]
    ]
    if len(reasons) > MAX_LISTED:
        rows.append([_p(f"and {len(reasons) - MAX_LISTED} other reasons", "cell"), ""])
    return Table(
        [["Reason", "Runs"], *rows], colWidths=[160 * mm, 20 * mm], style=GRID, hAlign="LEFT"
    )


def _daily(bars: tuple[ChartBar, ...]) -> bool:
    return all(bar.days == 1 for bar in bars)


def deletions_chart(bars: tuple[ChartBar, ...]) -> Drawing:
    """Records deleted per day (or week) over the whole period, with a few dated labels on the
    time axis: a year of runs reads as 53 weekly bars, not 365 unreadable ones."""
    drawing = Drawing(180 * mm, 36 * mm)
    chart = VerticalBarChart()
    chart.x, chart.y = int(16 * mm), int(8 * mm)
    chart.width, chart.height = int(160 * mm), int(26 * mm)
    chart.data = [[bar.deleted for bar in bars] or [0]]
    chart.bars[0].fillColor = colors.HexColor("#2e7d32")
    chart.bars[0].strokeColor = None
    every = max(1, -(-len(bars) // 7))
    chart.categoryAxis.categoryNames = [
        f"{bar.start:%d %b}" if index % every == 0 else "" for index, bar in enumerate(bars)
    ] or [""]
    chart.categoryAxis.labels.fontSize = 7
    chart.categoryAxis.labels.boxAnchor = "n"
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labels.fontSize = 7
    if not any(bar.deleted for bar in bars):
        chart.valueAxis.valueMax = 1  # an axis for all-zero data; said in words below
        chart.valueAxis.valueStep = 1
        drawing.add(String(70 * mm, 20 * mm, "no records deleted in the period", fontSize=8))
    chart.valueAxis.labelTextFormat = lambda value: text.number(int(value))
    drawing.add(chart)
    return drawing


AGE_COLOUR, LIMIT_COLOUR = colors.HexColor("#1565c0"), colors.HexColor("#c62828")


def age_chart(policy: PolicyReport, period: Period) -> Flowable:
    """Each run's oldest remaining record (blue) against its limit (red, dashed) over the
    period: a point above the line is a record kept past its limit."""
    if policy.until_event:
        return _p("No age: kept until the end of service, deleted at the event.")
    if not policy.ages:
        return _p("No run in the period left a dated record with a known limit.")
    ages = [(float((a.on - period.first).days), a.age_days or 0.0) for a in policy.ages]
    limits = [(float((a.on - period.first).days), a.limit_days or 0.0) for a in policy.ages]
    drawing = Drawing(180 * mm, 38 * mm)
    plot = LinePlot()
    plot.x, plot.y = int(16 * mm), int(8 * mm)
    plot.width, plot.height = int(160 * mm), int(24 * mm)
    plot.data = [ages, limits]
    plot.lines[0].strokeColor = AGE_COLOUR
    plot.lines[1].strokeColor = LIMIT_COLOUR
    plot.lines[1].strokeDashArray = [3, 2]
    plot.lines[0].symbol = Marker(kind="FilledCircle", size=2.5, fillColor=AGE_COLOUR)
    plot.xValueAxis.valueMin, plot.xValueAxis.valueMax = 0, max(period.days - 1, 1)
    plot.xValueAxis.labelTextFormat = lambda x: f"{period.first + timedelta(days=int(x)):%d %b}"
    plot.xValueAxis.labels.fontSize = plot.yValueAxis.labels.fontSize = 7
    plot.yValueAxis.valueMin = 0
    plot.yValueAxis.valueMax = max(value for _, value in ages + limits) * 1.1 or 1
    drawing.add(plot)
    for offset, (colour, label) in enumerate(
        ((AGE_COLOUR, "oldest remaining record"), (LIMIT_COLOUR, "limit"))
    ):
        x = 18 * mm + offset * 50 * mm
        key = Line(x, 36 * mm, x + 6 * mm, 36 * mm, strokeColor=colour)
        if colour == LIMIT_COLOUR:
            key.strokeDashArray = [3, 2]
        drawing.add(key)
        drawing.add(String(x + 8 * mm, 35.2 * mm, label, fontSize=7))
    return drawing


def _numbered(footer: str) -> type[Canvas]:
    """A canvas that writes the footer and "page n of N" on every page: N is known only once
    all pages are laid out, so pages are kept until save() and written then."""

    class NumberedCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:
            # Keep the page and start the next one; all are written in save(). The common
            # ReportLab numbered-canvas recipe calls the private _startPage; the stubs omit it.
            self._pages.append(dict(self.__dict__))
            self._startPage()  # type: ignore[attr-defined]

        def save(self) -> None:
            for page in self._pages:
                self.__dict__.update(page)
                self.setFont("Helvetica", 7)
                self.setFillColor(colors.HexColor("#555555"))
                width = PAGE[0] - 2 * MARGIN - 25 * mm
                for line, words in enumerate(simpleSplit(footer, "Helvetica", 7, width)):
                    self.drawString(MARGIN, MARGIN + 4 * mm - line * 3.2 * mm, words)
                self.drawRightString(
                    PAGE[0] - MARGIN,
                    MARGIN + 4 * mm,
                    f"page {self.getPageNumber()} of {len(self._pages)}",
                )
                super().showPage()
            super().save()

    return NumberedCanvas
