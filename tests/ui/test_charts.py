"""The charts read at a glance (issue 16, "Charts"): a year of daily runs on a date axis of a
few month labels, the limit drawn on the oldest-remaining chart, bars whole at the edges, held
records over time, and the overview chart naming the policies it leaves out and why.

The SVG the app serves is read back: its axis labels, its bars' geometry, its dashed limit."""

from __future__ import annotations

import re
from datetime import timedelta

from tests.ui.conftest import policy
from tests.ui.scale import LAST_DAY, scale_row

WIDTH = 560  # the plot's width in lifecycle.ui.charts
UNTIL_END_OF_SERVICE = [
    "billing_names",
    "internet_lines",
    "mobile_subscriptions",
    "org_contacts",
    "service_addresses",
    "voip_accounts",
]


def _year(name: str, days: int = 365) -> list[dict]:
    subject = policy(name)
    first = LAST_DAY - timedelta(days=days - 1)
    return [scale_row(subject, first + timedelta(days=n), n) for n in range(days)]


def _labels(svg: str, role: str) -> list[str]:
    """The texts of every text mark of a role (axis-label, title-subtitle, mark, ...); a text
    of several lines (<tspan> each) as one, its lines joined by a space."""
    groups = re.split(f'class="mark-text role-{role}[ "]', svg)[1:]
    texts = [re.findall(r"<text[^>]*>(.*?)</text>", g.split("</g>")[0]) for g in groups]
    return [" ".join(re.findall(r">([^<>]+)<", f">{t}<")) for found in texts for t in found]


def _bars(svg: str) -> list[tuple[float, float]]:
    group = svg.split('aria-roledescription="rect mark container"')[1].split("</g>")[0]
    return [
        (float(x), float(w))
        for x, w in re.findall(r'aria-roledescription="bar" d="M([-\d.]+),[-\d.]+h([\d.]+)', group)
    ]


def test_a_year_of_deletions_has_a_month_axis_and_whole_bars(app_client):
    client = app_client(_year("cdrs"))
    svg = client.get("/charts/cdrs/deletions.svg").text
    labels = _labels(svg, "axis-label")
    months = [label for label in labels if re.fullmatch(r"[A-Z][a-z]{2} 20\d\d", label)]
    assert 4 <= len(months) <= 8, labels  # a handful, not 365 (one a day)
    assert "Jan 2026" in months
    assert "run (logical date, Europe/Amsterdam)" in _labels(svg, "axis-title")
    bars = _bars(svg)
    assert len(bars) == 365
    assert min(x for x, _ in bars) >= 0
    assert max(x + w for x, w in bars) <= WIDTH


def test_a_month_of_runs_reads_day_and_month(app_client):
    client = app_client(_year("cdrs", days=30))
    labels = _labels(client.get("/charts/cdrs/deletions.svg").text, "axis-label")
    days = [label for label in labels if re.fullmatch(r"\d\d [A-Z][a-z]{2}", label)]
    assert "01 Nov" in days and len(days) == len(set(days)) <= 8, labels
    bars = _bars(client.get("/charts/cdrs/deletions.svg").text)
    assert len(bars) == 30 and min(x for x, _ in bars) > 0 and max(x + w for x, w in bars) < WIDTH


def test_three_runs_have_three_day_labels_not_one_every_few_hours(app_client):
    svg = app_client(_year("cdrs", days=3)).get("/charts/cdrs/age.svg").text
    labels = _labels(svg, "axis-label")
    assert [label for label in labels if not label.isdigit()] == ["27 Nov", "28 Nov", "29 Nov"]


def test_the_limit_is_drawn_on_the_oldest_remaining_chart(app_client):
    svg = app_client(_year("cdrs")).get("/charts/cdrs/age.svg").text
    # P6M back from 29 November: 29 May, 184 days.
    assert "limit 184 d" in _labels(svg, "mark")
    dashed = re.findall(r'<path [^>]*stroke="#c62828"[^>]*stroke-dasharray="6,4"', svg)
    dashed += re.findall(r'<path [^>]*stroke-dasharray="6,4"[^>]*stroke="#c62828"', svg)
    assert len(dashed) == 1


def test_held_records_over_time(app_client):
    client = app_client(_year("cdrs"))
    page = client.get("/policies/cdrs").text
    assert 'src="/charts/cdrs/held.svg"' in page
    svg = client.get("/charts/cdrs/held.svg").text
    assert "Records kept under a hold per run" in svg
    ticks = [int(t) for t in _labels(svg, "axis-label") if t.isdigit()]
    assert ticks == [0, 5, 10]  # the seed holds back 0 to 12 records (a y scale of 0-12)


def test_three_years_are_charted_a_week_a_point(app_client):
    trail = _year("cdrs", days=3 * 365)
    client = app_client(trail)
    svg = client.get("/charts/cdrs/deletions.svg").text
    assert "Records deleted per week" in svg
    # A bar a week and outcome: 157 weeks, some with a refusal, a dry run or a failed check.
    days = [LAST_DAY - timedelta(days=back) for back in range(3 * 365)]
    weeks = {
        (d - timedelta(days=d.weekday()), r["status"])
        for d, r in zip(days[::-1], trail, strict=True)
    }
    assert len({monday for monday, _ in weeks}) == 157
    assert len(_bars(svg)) == len(weeks)
    labels = _labels(svg, "axis-label")
    assert "Jan 2025" in labels and len([x for x in labels if " 20" in x]) <= 8
    held = client.get("/charts/cdrs/held.svg").text
    assert "Records kept under a hold per week" in held
    assert "highest of each week" in client.get("/charts/cdrs/age.svg").text


def test_until_end_of_service_has_no_age_to_chart(app_client):
    svg = app_client(_year("org_contacts", 30)).get("/charts/org_contacts/age.svg").text
    assert "until end of service: records have no age limit to chart" in svg


def test_the_overview_chart_names_what_it_leaves_out(app_client):
    trail = [row for name in ("cdrs", *UNTIL_END_OF_SERVICE[1:]) for row in _year(name, 3)]
    client = app_client(trail)  # billing_names has no run
    svg = client.get("/charts/overview.svg").text
    subtitle = " ".join(_labels(svg, "title-subtitle"))
    assert "Not shown, no run yet: billing_names" in subtitle
    assert "Not shown, until end of service: no age: internet_lines," in subtitle
    for name in UNTIL_END_OF_SERVICE:
        assert name in subtitle
    page = client.get("/").text
    gaps = page.split('data-field="chart-gaps">')[1].split("</p>")[0]
    named = re.findall(r'<a href="/policies/(\w+)">\w+</a> \(([^)]+)\)', gaps)
    assert named[0] == ("billing_names", "no run yet")
    assert {name for name, _ in named} >= set(UNTIL_END_OF_SERVICE)
    assert dict(named)["org_contacts"] == "until end of service: no age"
    assert "cdrs" not in dict(named)
