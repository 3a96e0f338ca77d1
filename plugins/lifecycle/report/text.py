"""The report's words, shared by the HTML and the PDF: both say the same thing in the same terms,
and a test that reads one knows what the other says."""

from __future__ import annotations

from lifecycle.report.model import Age, PolicyReport, Report

TITLE = "Retention compliance report"
SUMMARY_HEADER = (
    "Policy",
    "Keep",
    "Runs",
    "Deleted",
    "Verified ok",
    "Verified failed",
    "Refused",
    "Failed",
    "Oldest remaining (last run)",
)
STATUS_WORDS = {
    "purged": "purged",
    "dry_run": "dry run",
    "refused": "refused",
    "failed": "failed",
    "verification_failed": "verification failed",
}


def number(value: int) -> str:
    return f"{value:,}"


def plural(value: int, word: str, words: str | None = None) -> str:
    return f"{number(value)} {word if value == 1 else words or word + 's'}"


def ground(legal_basis: str) -> str:
    return legal_basis.replace("_", " ") or "not recorded"


def days(value: float) -> str:
    text = f"{value:.1f}".removesuffix(".0")
    return "0" if text == "-0" else text


def age_text(age: Age | None, policy: PolicyReport) -> str:
    """The oldest record a run left, against the limit, in words (or why there is no age)."""
    if policy.until_event:
        return "no age: kept until the end of service, deleted at the event"
    if age is None:
        return "no run in the period"
    if age.limit_days is None:
        return f"not known (run of {age.on})"
    if age.age_days is None:
        return f"nothing dated remained (limit {days(age.limit_days)} days, run of {age.on})"
    verdict = {True: "within the limit", False: "past the limit", None: "not verified"}
    return (
        f"{days(age.age_days)} of {days(age.limit_days)} days, "
        f"{verdict[age.within]} (run of {age.on})"
    )


def short_age(policy: PolicyReport) -> str:
    if policy.until_event:
        return "until end of service"
    age = policy.last_age
    if age is None:
        return "no run"
    if age.age_days is None or age.limit_days is None:
        return "no dated record" if age.limit_days is not None else "not known"
    mark = {True: "", False: " PAST LIMIT", None: " unverified"}[age.within]
    return f"{days(age.age_days)} / {days(age.limit_days)} d{mark}"


def summary(report: Report) -> list[tuple[str, ...]]:
    """One row a policy, current ones first, then the retired."""
    return [
        (
            policy.name + (" (retired)" if policy.retired else ""),
            policy.period,
            number(policy.runs),
            number(policy.deleted),
            number(policy.verified_passed),
            number(policy.verified_failed),
            number(policy.refusals),
            number(policy.failures),
            short_age(policy),
        )
        for policy in report.all
    ]


def _statement(policy: PolicyReport) -> list[tuple[str, str]]:
    if policy.statement is None:
        return [("Statement row", "policy file removed: not in the audit trail")]
    return [
        ("Service", policy.statement.service),
        ("Data", policy.statement.data),
        ("Retention as promised", f"\u201c{policy.statement.retention}\u201d"),
    ]


def facts(policy: PolicyReport) -> list[tuple[str, str]]:
    """The policy's label/value lines: its statement row, ground and period, then the figures."""
    outcomes = ", ".join(
        f"{STATUS_WORDS.get(status, status)} {number(n)}" for status, n in policy.statuses.items()
    )
    runs = plural(policy.runs, "run")
    if policy.attempts != policy.runs:
        runs += f" ({plural(policy.attempts, 'attempt')}: cleared and run again)"
    if policy.first_run is not None:
        runs += f", {policy.first_run} to {policy.last_run}"
    deleted = number(policy.deleted)
    if policy.deleted_unknown:
        deleted += f" (and an unknown number in {plural(policy.deleted_unknown, 'failed attempt')})"
    held = "no run" if policy.runs == 0 else number(policy.held_last or 0)
    return [
        *_statement(policy),
        ("Controller", policy.controller or "not recorded"),
        ("Legal ground", ground(policy.legal_basis)),
        ("Retention period", _period(policy)),
        ("Runs", runs),
        ("Outcomes", outcomes),
        ("Records deleted", deleted),
        ("Held at the last run", held),
        (
            "Verifications",
            f"{number(policy.verified_passed)} passed, {number(policy.verified_failed)} failed",
        ),
        ("Oldest remaining, last run", age_text(policy.last_age, policy)),
        ("Oldest remaining in the period", age_text(policy.worst_age, policy)),
        ("Runs that left records past the limit", number(policy.past_limit)),
    ]


def _period(policy: PolicyReport) -> str:
    period = policy.period or "not recorded"
    if policy.until_event:
        period += " from the event: until the end of service"
    return f"{period}; dates read in {policy.timezone}"


def heading(policy: PolicyReport) -> str:
    return f"{policy.name}: {policy.title}" + (" (retired)" if policy.retired else "")


def footer(report: Report) -> str:
    generated = (
        f"Generated {report.generated_at:%Y-%m-%d %H:%M} UTC from {report.source}; "
        f"counts and dates only. Integrity: {report.integrity}"
    )
    if report.chain_head:
        return f"{generated}, head of the chain {report.chain_head}."
    return f"{generated}, so this report carries no hashes."


def period_line(report: Report) -> str:
    return (
        f"Period {report.period}, whole days, each policy's days in its own timezone "
        f"({plural(report.period.days, 'day')})"
    )
