"""`store.partitions: drop` (issue 13): `lifecycle grants` makes the PostgreSQL drop function
and the MariaDB drop procedure for exactly the policies that drop partitions, and the audit
row says how many partitions went and how many records they held."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lifecycle import cli
from lifecycle.audit import audit_row
from lifecycle.payloads import CheckDecision, Extracted, RunResults
from lifecycle.steps import Run, merge_purges
from lifecycle.stores import Plan
from tests.policies import make_policy, policy_yaml


def test_the_drop_function_is_made_for_the_policies_that_drop_partitions_only(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "calls.yaml").write_text(
        policy_yaml(name="calls", store__table="calls", store__partitions="drop")
    )
    (tmp_path / "cdrs.yaml").write_text(policy_yaml(name="cdrs", store__table="cdrs"))
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(tmp_path))
    assert cli.main(["grants", "--role", "jobs"]) == 0
    printed = capsys.readouterr().out
    functions = [line for line in printed.splitlines() if "FUNCTION" in line]
    assert [line.split("(")[0] for line in functions] == [
        # The three-argument function of earlier versions goes: replaced, not overloaded.
        'DROP FUNCTION IF EXISTS "public"."lifecycle_drop_partition_calls"',
        'CREATE OR REPLACE FUNCTION "public"."lifecycle_drop_partition_calls"',
        'REVOKE ALL ON FUNCTION "public"."lifecycle_drop_partition_calls"',
        'GRANT EXECUTE ON FUNCTION "public"."lifecycle_drop_partition_calls"',
    ]
    assert "SECURITY DEFINER" in functions[1]
    assert "interval 'P6M'" in printed  # the policy's period, the wall-clock limit
    assert "GRANT DELETE, SELECT ON calls TO jobs;" in printed  # nothing more on the table
    assert cli.main(["grants", "--role", "jobs", "--dialect", "mysql"]) == 0
    printed = capsys.readouterr().out
    assert "FUNCTION" not in printed
    # MariaDB: the procedure, between the mysql client's DELIMITER lines, for `calls` alone.
    assert printed.count("CREATE PROCEDURE") == 1
    assert "DELIMITER $$\nCREATE PROCEDURE `lifecycle_drop_partition_calls`" in printed
    assert "END$$\nDELIMITER ;\n" in printed
    assert "GRANT EXECUTE ON PROCEDURE `lifecycle_drop_partition_calls` TO 'jobs';" in printed


def test_policies_sharing_a_long_prefix_never_share_a_drop_routine():
    """Routine names are identifiers of 63 characters at most: a longer one keeps its start and
    ends with a digest of the policy's name (before, both policies below were cut to one name,
    and the second `lifecycle grants` replaced the first's routine)."""
    from lifecycle.stores.sql_partitions_mariadb import procedure_name
    from lifecycle.stores.sql_partitions_postgresql import function_name

    prefix = "customer_call_recordings_of_business_clients_"
    first, second = (
        make_policy(name=prefix + suffix, store__partitions="drop") for suffix in ("nl", "be")
    )
    names = {function_name(first), function_name(second)}
    assert len(names) == 2 and all(len(name) <= 63 for name in names)
    assert all(name.startswith("lifecycle_drop_partition_customer_call_") for name in names)
    assert procedure_name(first) == function_name(first)
    short = make_policy(name="calls", store__partitions="drop")
    assert function_name(short) == "lifecycle_drop_partition_calls"  # unchanged when it fits


@pytest.mark.parametrize(
    "retention",
    [
        {"period": "P6M", "per_tenant": {"table": "settings", "column": "tenant"}},
        {"period": "P0D", "from_event": {"table": "c", "subject": "s", "key": "k",
                                         "timestamp": "t"}},
    ],
)  # fmt: skip
def test_dropping_partitions_needs_the_record_s_own_timestamp_and_one_cutoff(retention):
    store = {"store__partitions": "drop"}
    if "from_event" in retention:
        store["store__timestamp"] = None
    with pytest.raises(ValueError, match=r"store\.partitions: drop needs the record's own"):
        make_policy(retention=retention, **store)


def _reasons(partitions: dict[str, int]) -> list[str]:
    run = Run("retention_cdrs", "r", 1, datetime(2026, 11, 29, tzinfo=UTC), None)
    slices = [{"index": 0, "expired": 1500, "attempt": 1}]
    result = {"slice": 0, "deleted": 1500, "batches": 20, "seconds": 1.0, "failed": {},
              "partitions": partitions, "attempt": 1}  # fmt: skip
    purged = merge_purges(run, slices, [result])
    assert purged.partitions == partitions
    row = audit_row(
        make_policy(store__partitions="drop"),
        dag_id="retention_cdrs",
        run_id="r",
        attempt=1,
        logical_date=run.logical_date,
        dry_run=False,
        results=RunResults(
            extracted=Extracted(
                cutoff="2026-05-29T00:00:00+00:00",
                plan=Plan(3000, 1500, partitions={"partitions": 18, "rows": 1400}),
            ),
            decision=CheckDecision(
                outcome="approved", approved=True, dry_run=False, approved_records=1500
            ),
            purged=purged,
        ),
        started_at=None,
    )
    assert row["deleted"] == 1500
    return list(row["reasons"])


def test_the_audit_row_names_the_partitions_dropped_and_their_records():
    assert (
        "18 partitions before the cutoff dropped whole, holding 1400 of the deleted records"
        in _reasons({"partitions": 18, "rows": 1400})
    )


def test_the_audit_row_names_partitions_kept_for_the_grace_and_those_dropped_after_it():
    reasons = _reasons({"partitions": 2, "rows": 1400, "detached": 2, "kept_dropped": 6})
    assert (
        "2 partitions before the cutoff taken out whole (2 kept as tables for the grace period), "
        "holding 1400 of the deleted records" in reasons
    )
    assert any(r.startswith("6 partitions kept by earlier runs dropped") for r in reasons)
    only = _reasons({"partitions": 0, "rows": 0, "detached": 0, "kept_dropped": 3})
    assert [r for r in only if "partitions" in r] == [
        "3 partitions kept by earlier runs dropped, their grace over (their records counted "
        "when they left the table)"
    ]


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"store__partition_grace": "P7D"}, r"store\.partition_grace: only with store\.partitions"),
        ({"store__partitions": "drop", "store__partition_grace": "7 days"}, r"partition_grace"),
        ({"store__partitions": "drop", "store__partition_grace": "P0D"}, r"partition_grace"),
    ],
)  # fmt: skip
def test_a_partition_grace_is_a_positive_period_of_a_policy_that_drops(store, message):
    with pytest.raises(ValueError, match=message):
        make_policy(**store)
    assert make_policy(store__partitions="drop", store__partition_grace="P7D")


def test_the_drop_function_keeps_partitions_only_for_a_policy_with_a_grace():
    from lifecycle.grants import owner_statements

    with_grace = make_policy(store__partitions="drop", store__partition_grace="P7D")
    without = make_policy(store__partitions="drop")
    (create,) = [s for s in owner_statements([with_grace], "postgresql", "jobs")["cdrs"]
                 if s.startswith("CREATE")]  # fmt: skip
    assert "grace constant interval := interval 'P7D';" in create
    (create,) = [s for s in owner_statements([without], "postgresql", "jobs")["cdrs"]
                 if s.startswith("CREATE")]  # fmt: skip
    assert "grace constant interval := NULL;" in create  # 'keep' refused


def test_the_mariadb_procedure_keeps_partitions_only_for_a_policy_with_a_grace():
    """MariaDB: a fourth parameter, `mode`; the grace embedded (and named in the COMMENT that
    the runs read), the kept tables' prefix embedded, their `until` from the clock."""
    from lifecycle.grants import owner_statements
    from lifecycle.stores.sql_partitions_mariadb import kept_prefix

    with_grace = make_policy(store__partitions="drop", store__partition_grace="P7D")
    without = make_policy(store__partitions="drop")
    create = owner_statements([with_grace], "mysql", "jobs")["cdrs"][1]
    assert "IN expected BIGINT, IN mode VARCHAR(16)) MODIFIES SQL DATA" in create
    assert "COMMENT 'lifecycle: drops or keeps expired partitions of cdrs (policy cdrs, " in create
    assert "(policy cdrs, partition_grace P7D)'\nBEGIN" in create
    assert "DECLARE grace VARCHAR(64) DEFAULT 'P7D';" in create
    # The prefix is part of every kept table's name: the same forever, or earlier runs' kept
    # tables would never be dropped.
    assert kept_prefix("cdrs", "cdrs") == "lck_a8db6065_"
    assert "LEFT(t.TABLE_NAME, 13) = BINARY 'lck_a8db6065_'" in create
    # The clock plus the grace plus Amsterdam's offset range (+1 h to +2 h): never shorter.
    assert (
        "SET kept_until = UTC_TIMESTAMP(6) + INTERVAL 0 MONTH + INTERVAL 7 DAY + INTERVAL 0 "
        "SECOND + INTERVAL 3600 SECOND;" in create
    )
    assert "IF mode = 'drop' AND grace IS NOT NULL THEN" in create  # the grace not skipped
    assert "kept_until > UTC_TIMESTAMP(6)" in create  # a kept table goes by the clock
    create = owner_statements([without], "mysql", "jobs")["cdrs"][1]
    assert "DECLARE grace VARCHAR(64) DEFAULT NULL;" in create  # 'keep' refused
    assert "(policy cdrs, partition_grace unset)'\nBEGIN" in create
