"""The compliance report: a period's evidence from the audit trail, per policy, as HTML or PDF.

An auditor asks for a quarter or a year, not for a database: `build_report` reads the trail once
and folds it into plain figures (counts, bounds, hold ids, policy names: never a record); the
renderers only lay those figures out, so the CLI (`python -m lifecycle report`) and the UI print
the same numbers.
"""

from lifecycle.report.model import (
    Age,
    ChartBar,
    HoldCount,
    Period,
    PolicyReport,
    ReasonCount,
    Report,
    StatementRow,
    build_report,
)
from lifecycle.report.to_html import render_html
from lifecycle.report.to_pdf import render_pdf

__all__ = [
    "Age",
    "ChartBar",
    "HoldCount",
    "Period",
    "PolicyReport",
    "ReasonCount",
    "Report",
    "StatementRow",
    "build_report",
    "render_html",
    "render_pdf",
]
