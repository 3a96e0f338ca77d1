"""The compliance report, from audit rows written by `record_run` into a real SQLite file and a
real PostgreSQL schema, through `lifecycle report` (the CLI), read back: the PDF with pypdf (text
and page count), the HTML as text. The trail holds rows just outside the period on both sides
(by UTC, and by the policy's local day) whose counts must not show up."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from lifecycle import cli
from lifecycle.audit import ensure_schema, record_run
from lifecycle.report import Period, build_report, render_html
from tests.policies import DROP, policy_yaml

CONN_ID = "report_trail"
# Midnight in Amsterdam (summer time, UTC+2): the logical date of that local day's daily run.
JUL_01 = datetime(2026, 6, 30, 22, tzinfo=UTC)
REFUSED = "would delete 900 of 1000 records (90%), more than max_delete_fraction 0.5"
ESCAPED = "table cdrs & link <subscribers> changed since approval"
FAILED = "delete did not complete (see its task log)"
UNVERIFIED = "3 unheld records before the cutoff remain"
EVENT = {"period": "P0D", "from_event": {"timestamp": "ended_at"}}


def local_day(day: date) -> datetime:
    """The logical date of the Amsterdam daily run of `day` (summer time: 22:00 UTC before)."""
    return datetime.combine(day, datetime.min.time(), UTC) - timedelta(hours=2)


def row(run_id: str, logical_date: datetime, policy: str = "cdrs", **fields) -> dict:
    return {
        "dag_id": f"retention_{policy}",
        "run_id": run_id,
        "attempt": 0,
        "policy": policy,
        "title": "Call detail records",
        "controller": "provider",
        "legal_basis": "contract",
        "store": "sql:telecom_db:cdrs",
        "period": "P6M",
        "logical_date": logical_date,
        "status": "purged",
        "dry_run": False,
        "deleted": 0,
    } | fields


def trail_rows() -> list[dict]:
    """A quarter of cdrs runs, the two just outside it, and two runs of a policy since removed."""
    jul_01, aug_15, sep_30 = JUL_01, local_day(date(2026, 8, 15)), local_day(date(2026, 9, 30))
    oct_01 = local_day(date(2026, 10, 1))  # 30 September 22:00 UTC: 1 October in Amsterdam
    cut = {d: d - timedelta(days=n) for d, n in ((jul_01, 181), (aug_15, 181), (sep_30, 183))}
    return [
        row("before", jul_01 - timedelta(days=1), deleted=1000, verified=True),
        row("jul", jul_01, deleted=10, verified=True, expired=10, cutoff=cut[jul_01],
            oldest_retained=cut[jul_01] + timedelta(days=1), held=5, holds={"3": 4, "11": 1}),
        row("aug", aug_15, status="failed", deleted=None, reasons=[FAILED]),
        row("aug", aug_15, attempt=1, status="verification_failed", deleted=20, verified=False,
            remaining=3, expired=23, cutoff=cut[aug_15], held=2, holds={"3": 2},
            oldest_expired=cut[aug_15] - timedelta(days=2), reasons=[UNVERIFIED]),
        row("sep", sep_30, status="refused", total=1000, expired=900, cutoff=cut[sep_30],
            oldest_expired=cut[sep_30] - timedelta(days=30), held=6, holds={"3": 6},
            reasons=[REFUSED, ESCAPED]),
        row("after", oct_01, deleted=7777, verified=True),
        row("o1", local_day(date(2026, 7, 2)), policy="old_cdrs", deleted=5, period="P3M",
            title="Old call records"),
        row("o2", local_day(date(2026, 7, 3)), policy="old_cdrs", deleted=6, period="P3M",
            title="Old call records"),
    ]  # fmt: skip


@pytest.fixture
def policies(tmp_path):
    """A policy folder: cdrs (with runs), an S3 and an until-end-of-service policy (none)."""
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "cdrs.yaml").write_text(policy_yaml(), encoding="utf-8")
    (folder / "support_call_recordings.yaml").write_text(policy_yaml("s3"), encoding="utf-8")
    (folder / "org_contacts.yaml").write_text(
        policy_yaml(
            name="org_contacts",
            title="Contact persons",
            retention=EVENT,
            store__table="org_contacts",
            store__timestamp=DROP,
        ),
        encoding="utf-8",
    )
    return folder


def _postgres_schema(url: str, monkeypatch) -> tuple[sa.Engine, str]:
    """A schema of this test's own on the shared `test` database: other tests' rows never show
    up in the report, and the test drops only what it created."""
    schema = f"report_{uuid.uuid4().hex[:12]}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    options = {"options": f"-csearch_path={schema}"}
    parsed = sa.make_url(url)
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": parsed.host,
                "port": parsed.port,
                "login": parsed.username,
                "schema": parsed.database,
                "extra": {"sqlalchemy_query": options},
            }
        ),
    )
    return sa.create_engine(url, connect_args=options), schema


@pytest.fixture
def trail(sql_url, monkeypatch):
    """The control database after `audit-init`, holding trail_rows(), and the Airflow connection
    CONN_ID to it (what `lifecycle report --conn-id` resolves)."""
    schema = None
    if sql_url.startswith("sqlite"):
        engine = sa.create_engine(sql_url)
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", sql_url)
    else:
        engine, schema = _postgres_schema(sql_url, monkeypatch)
    ensure_schema(engine)
    for item in trail_rows():
        assert record_run(engine, item)
    yield engine
    engine.dispose()
    if schema is not None:
        with sa.create_engine(sql_url).begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


BOTH = pytest.mark.parametrize("sql_url", ["sqlite", "postgresql"], indirect=True)
SQLITE = pytest.mark.parametrize("sql_url", ["sqlite"], indirect=True)
QUARTER = ["--from", "2026-07-01", "--to", "2026-09-30", "--conn-id", CONN_ID]


def _loaded(folder):
    from lifecycle.loader import load_policies

    return [item.policy for item in load_policies(folder).policies]


@BOTH
def test_the_figures_of_a_quarter_per_policy(trail, policies):
    report = build_report(trail, _loaded(policies), Period(date(2026, 7, 1), date(2026, 9, 30)))
    assert [p.name for p in report.policies] == ["cdrs", "org_contacts", "support_call_recordings"]
    cdrs = report.policies[0]
    # 1000 (the day before) and 7777 (1 October in Amsterdam, 30 September in UTC) are out.
    assert (cdrs.deleted, cdrs.deleted_unknown, cdrs.runs, cdrs.attempts) == (30, 1, 3, 4)
    assert cdrs.statuses == {
        "purged": 1, "dry_run": 0, "refused": 1, "failed": 1, "verification_failed": 1
    }  # fmt: skip
    assert (cdrs.verified_passed, cdrs.verified_failed) == (1, 1)
    assert [(h.hold_id, h.last, h.peak, h.runs) for h in cdrs.holds] == [
        ("3", 6, 6, 3),
        ("11", 1, 1, 1),
    ]  # numerically: hold 3 before hold 11
    assert cdrs.held_last == 6
    # As often each, so alphabetically.
    assert [(r.reason, r.count) for r in cdrs.refusal_reasons] == [(ESCAPED, 1), (REFUSED, 1)]
    assert sorted((r.reason, r.count) for r in cdrs.failure_reasons) == [
        (UNVERIFIED, 1),
        (FAILED, 1),
    ]
    assert (cdrs.refusals, cdrs.failures, cdrs.past_limit) == (1, 2, 2)
    # The refused run left its expired records: the oldest is 30 days past its 183-day limit.
    assert cdrs.last_age is not None and cdrs.last_age.on == date(2026, 9, 30)
    assert (cdrs.last_age.age_days, cdrs.last_age.limit_days, cdrs.last_age.within) == (
        213.0,
        183.0,
        False,
    )
    assert cdrs.worst_age == cdrs.last_age
    assert (cdrs.first_run, cdrs.last_run) == (date(2026, 7, 1), date(2026, 9, 30))
    assert cdrs.statement is not None and cdrs.statement.retention == "Zes maanden"
    assert (cdrs.legal_basis, cdrs.period, cdrs.timezone) == ("contract", "P6M", "Europe/Amsterdam")


@BOTH
def test_runs_of_a_removed_policy_are_listed_as_retired(trail, policies):
    report = build_report(trail, _loaded(policies), Period(date(2026, 7, 1), date(2026, 9, 30)))
    (retired,) = report.retired
    assert (retired.name, retired.retired, retired.statement) == ("old_cdrs", True, None)
    assert (retired.title, retired.period, retired.deleted, retired.runs) == (
        "Old call records",
        "P3M",
        11,
        2,
    )
    events, recordings = report.policies[1:]
    assert events.until_event and events.last_age is None and events.runs == 0
    assert not recordings.until_event and recordings.runs == 0 and recordings.deleted == 0


def test_the_chart_counts_each_local_day_and_a_year_reads_by_week(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    ensure_schema(engine)
    for item in trail_rows():
        record_run(engine, item)
    quarter = build_report(engine, [], Period(date(2026, 7, 1), date(2026, 9, 30)))
    (cdrs,) = [p for p in quarter.retired if p.name == "cdrs"]  # no file given: retired
    assert len(cdrs.chart) == 92 and {bar.days for bar in cdrs.chart} == {1}
    assert {bar.start: bar.deleted for bar in cdrs.chart if bar.deleted} == {
        date(2026, 7, 1): 10,
        date(2026, 8, 15): 20,
    }
    year = build_report(engine, [], Period(date(2026, 1, 1), date(2026, 12, 31)))
    (cdrs,) = [p for p in year.retired if p.name == "cdrs"]
    assert len(cdrs.chart) == 53 and cdrs.chart[-1].days == 1  # 52 weeks and 31 December
    assert sum(bar.deleted for bar in cdrs.chart) == 1000 + 30 + 7777 == cdrs.deleted


def _pdf_pages(path) -> list[str]:
    """Each page's text, whitespace folded: table cells and wrapped lines read as one line."""
    return [" ".join(page.extract_text().split()) for page in PdfReader(path).pages]


@BOTH
def test_the_pdf_through_the_cli(trail, policies, tmp_path, capsys):
    output = tmp_path / "q3.pdf"
    assert cli.main(["report", *QUARTER, "--policies", str(policies), "--output", str(output)]) == 0
    assert f"wrote {output}: 3 policies, 1 retired, pdf" in capsys.readouterr().out
    pages = _pdf_pages(output)
    assert len(pages) == 5  # the summary, the three policies, the retired one
    for number, page in enumerate(pages, 1):
        # The trail's hash chain, walked as the report was made: intact, and its head.
        assert re.search(
            r"chain verified intact \(\d+ rows\), head of the chain row \d+ sha256 [0-9a-f]{64}",
            page,
        ), page
        assert f"page {number} of 5" in page
    summary, cdrs, events, recordings, retired = pages
    assert "Period 2026-07-01 to 2026-09-30" in summary
    assert re.search(r"cdrs P6M 3 30 1 1 1 2 213 / 183 d PAST LIMIT", summary), summary
    assert "old_cdrs (retired) P3M 2 11" in summary
    assert "cdrs: Call detail records" in cdrs
    for figure in (
        "Retention as promised “Zes maanden”",
        "Legal ground contract",
        "Records deleted 30 (and an unknown number in 1 failed attempt)",
        "Verifications 1 passed, 1 failed",
        "3 runs (4 attempts: cleared and run again)",
        "hold 3 6 6 3",
        "hold 11 1 1 1",
        f"{REFUSED} 1",
        f"{ESCAPED} 1",
        "213 of 183 days, past the limit (run of 2026-09-30)",
        "Records deleted per day",
        "Oldest remaining record against the limit (days)",
    ):
        assert figure in cdrs, figure
    assert "7,777" not in " ".join(pages) and "1,000" not in " ".join(pages)
    assert "no age: kept until the end of service" in events
    assert "No run in the period." in recordings
    assert "old_cdrs: Old call records (retired)" in retired
    assert "policy file removed" in retired and "Records deleted 11" in retired


@BOTH
def test_the_html_through_the_cli(trail, policies, tmp_path):
    output = tmp_path / "q3.html"
    assert cli.main(["report", *QUARTER, "--policies", str(policies), "--output", str(output)]) == 0
    page = output.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<th>Records deleted</th><td>30 (and an unknown number" in page
    assert "<td>hold 3</td>" in page and "<td>hold 11</td>" in page
    assert REFUSED in page and "&lt;subscribers&gt;" in page and "<subscribers>" not in page
    assert re.search(
        r"chain verified intact \(\d+ rows\), head of the chain row \d+ sha256 [0-9a-f]{64}", page
    )
    cdrs = page.split('id="policy-cdrs"')[1].split("</section>")[0]
    assert cdrs.count("<rect ") == 92  # a bar for every day of the quarter
    assert "2026-07-01: 10 records deleted" in cdrs and "2026-08-15: 20 records deleted" in cdrs
    # The runs that left a dated record: each a point against its limit (the failed try did not).
    assert cdrs.count("<circle ") == 3 and cdrs.count("<polyline ") == 2
    assert "2026-09-30: oldest 213 of 183 days" in cdrs
    events = page.split('id="policy-org_contacts"')[1].split("</section>")[0]
    assert "no age: kept until the end of service" in events and "No run in the period." in events
    assert "7,777" not in page and "<script" not in page


def test_a_chart_of_nothing_says_so():
    from lifecycle.report.model import ChartBar
    from lifecycle.report.to_html import deletions_svg

    svg = deletions_svg(tuple(ChartBar(date(2026, 7, d), 1, 0) for d in range(1, 31)))
    assert "no records deleted in the period" in svg and svg.count("<rect ") == 30


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--from", "2026-13-01", "--to", "2026-09-30"], "--from"),
        (["--from", "2026-07-01", "--to", "30-09-2026"], "--to"),
        (["--from", "yesterday", "--to", "2026-09-30"], "--from"),
    ],
)
def test_a_bad_date_exits_2_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["report", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and "is not a date (YYYY-MM-DD)" in err


def test_to_before_from_exits_2(capsys):
    assert cli.main(["report", "--from", "2026-07-01", "--to", "2026-06-30"]) == 2
    assert capsys.readouterr().err == "report: --to 2026-06-30 is before --from 2026-07-01\n"


def test_a_trail_never_initialised_is_an_error_not_an_empty_report(tmp_path, policies, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    output = tmp_path / "r.pdf"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", url)
        argv = ["report", *QUARTER, "--policies", str(policies), "--output", str(output)]
        assert cli.main(argv) == 1
    assert "audit-init" in capsys.readouterr().err and not output.exists()


@SQLITE
def test_an_invalid_policy_file_is_named_in_the_report(trail, policies, tmp_path, capsys):
    (policies / "broken.yaml").write_text("name: [\n", encoding="utf-8")
    output = tmp_path / "r.html"
    argv = ["report", *QUARTER, "--policies", str(policies), "--output", str(output)]
    assert cli.main(argv) == 0
    assert "INVALID" in capsys.readouterr().err
    page = output.read_text(encoding="utf-8")
    assert "Invalid policy files, not in this report as policies:\n  broken.yaml." in page
    assert "(or its file is invalid)" in page  # old_cdrs may be the broken file's policy


@SQLITE
def test_render_html_escapes_and_holds_no_run_ids(trail, policies):
    report = build_report(trail, _loaded(policies), Period(date(2026, 7, 1), date(2026, 9, 30)))
    page = render_html(report)
    assert all(f">{run_id}<" not in page for run_id in ("jul", "aug", "sep", "o1", "o2"))
    assert "retention_cdrs" not in page  # dag and run ids stay in the trail
