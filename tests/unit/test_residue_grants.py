"""`store.residue: remove` (issue 15, residual copies): the jobs' role gets exactly the right to
remove the residue of that policy's table (MAINTAIN on PostgreSQL 17+, DELETE HISTORY on
MariaDB), nothing for a policy that only reports it; a removal that failed is in the run's
reasons."""

from __future__ import annotations

from datetime import UTC, datetime

from lifecycle import cli
from lifecycle.audit import audit_row
from lifecycle.grants import grant_statements, required_grants, residue_not_grantable
from lifecycle.payloads import CheckDecision, Extracted, Purge, RunResults, VerificationResult
from lifecycle.stores import Plan
from tests.policies import make_policy


def table_statements(dialect: str, *policies, server_version=None) -> list[str]:
    grants = required_grants(policies)["telecom_db"]
    return [
        s
        for s in grant_statements(dialect, "jobs", grants, server_version=server_version)
        if s.startswith("GRANT")
    ]


def test_only_a_policy_that_removes_its_residue_gets_the_right_to():
    reporting = make_policy(name="cdrs", store__table="cdrs")
    removing = make_policy(name="calls", store__table="calls", store__residue="remove")
    assert reporting.store.residue == "report"  # the default

    assert table_statements("postgresql", reporting, removing) == [
        "GRANT DELETE, MAINTAIN, SELECT ON calls TO jobs",
        "GRANT DELETE, SELECT ON cdrs TO jobs",
    ]
    assert table_statements("mysql", reporting, removing) == [
        "GRANT DELETE, DELETE HISTORY, SELECT ON calls TO 'jobs'",
        "GRANT DELETE, SELECT ON cdrs TO 'jobs'",
    ]
    assert table_statements("mysql", reporting) == ["GRANT DELETE, SELECT ON cdrs TO 'jobs'"]


def test_before_postgresql_17_no_grant_can_give_vacuum_and_it_is_said():
    removing = make_policy(name="calls", store__table="calls", store__residue="remove")
    grants = required_grants([removing])["telecom_db"]
    assert table_statements("postgresql", removing, server_version=(15, 20)) == [
        "GRANT DELETE, SELECT ON calls TO jobs"
    ]
    assert residue_not_grantable("postgresql", grants, (15, 20)) == ["calls"]
    assert residue_not_grantable("postgresql", grants, (17, 2)) == []
    assert table_statements("postgresql", removing, server_version=(17, 2)) == [
        "GRANT DELETE, MAINTAIN, SELECT ON calls TO jobs"
    ]


def test_the_printed_grants_say_which_postgresql_has_maintain(tmp_path, monkeypatch, capsys):
    from tests.policies import policy_yaml

    (tmp_path / "calls.yaml").write_text(
        policy_yaml(name="calls", store__table="calls", store__residue="remove")
    )
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(tmp_path))
    assert cli.main(["grants", "--role", "jobs"]) == 0
    printed = capsys.readouterr().out
    assert "GRANT DELETE, MAINTAIN, SELECT ON calls TO jobs;" in printed
    assert "-- MAINTAIN (store.residue: remove, for VACUUM) exists from PostgreSQL 17" in printed


def test_a_residue_not_removed_is_in_the_run_s_reasons_and_the_run_stands():
    error = (
        "InsufficientPrivilege: VACUUM of calls needs its owner before PostgreSQL 17 (no grant "
        "gives it alone); its dead tuples stay until autovacuum"
    )
    residue = {"dead_tuples": 12, "removed_by": "VACUUM (autovacuum or the owner)"}
    rows = [
        audit_row(
            make_policy(store__residue="remove"),
            dag_id="retention_cdrs",
            run_id="r",
            attempt=1,
            logical_date=datetime(2026, 11, 29, tzinfo=UTC),
            dry_run=False,
            results=RunResults(
                extracted=Extracted(cutoff="2026-05-29T00:00:00+00:00", plan=Plan(20, 12)),
                decision=CheckDecision(
                    outcome="approved", approved=True, dry_run=False, approved_records=12
                ),
                purged=Purge(deleted=12, batches=1, slices=1),
                verification=VerificationResult(
                    success=True, remaining=0, seconds=0.1, summary={"residue": summary}
                ),
            ),
            started_at=None,
        )
        for summary in (residue | {"removal_error": error}, residue | {"removed": {}})
    ]
    failed, removed = rows
    assert (failed["status"], failed["deleted"], failed["verified"]) == ("purged", 12, True)
    assert failed["reasons"] == [f"residue not removed: {error}"]
    assert failed["verification"]["residue"]["removal_error"] == error
    assert removed["reasons"] == []
