"""A files policy run step by step as its tasks run it (extract, check, split, delete, verify,
record): real directories reached through an `fs` connection, the holds, the deletion ledger
and the audit trail in a real control database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lifecycle import steps
from lifecycle.holds import place_hold
from lifecycle.periods import compute_cutoff
from tests.e2e.test_runs import LOGICAL_DATE
from tests.policies import make_policy
from tests.stores.test_files import PHONE, survivors, write

ONE_US = timedelta(microseconds=1)


def record(policy, run, slices, purged, extracted, decision, verification):
    """`steps.record` of the run, as its task calls it."""
    return steps.record(
        policy,
        run,
        purges=purged,
        extracted=extracted,
        decision=decision,
        verification=verification,
        slices=slices,
    )


def test_a_files_policy_purges_verifies_and_audits(deployment, tmp_path, monkeypatch):
    cutoff = compute_cutoff(LOGICAL_DATE, "P90D", "Europe/Amsterdam")
    assert cutoff == datetime(2026, 8, 30, 22, tzinfo=UTC)  # 31 August, midnight in Amsterdam
    root, old = tmp_path / "share", cutoff - timedelta(days=30)
    write(root, f"recordings/2026/08/{PHONE}-a.wav", cutoff - ONE_US)  # expired
    write(root, "recordings/2026/08/b.wav", cutoff)  # exactly the cutoff: kept
    write(root, "recordings/2026/06/c.wav", old)  # expired
    write(root, "recordings/2026/06/d.wav", old)  # expired
    write(root, f"recordings/2026/07/{PHONE}/e.wav", old)  # held
    outside = write(tmp_path, "outside/f.wav", old)
    (root / "recordings" / "link.wav").symlink_to(outside)  # an anomaly, never followed
    write(root, "voicemail/g.wav", old)  # another directory: not this policy's
    monkeypatch.setenv(
        "AIRFLOW_CONN_PBX_SHARE", json.dumps({"conn_type": "fs", "extra": {"path": str(root)}})
    )
    audit = sa.create_engine(deployment.audit_url)
    hold = place_hold(
        audit,
        scope="pbx_recordings",
        subject="prefix",
        value=f"recordings/2026/07/{PHONE}/",
        reason="dispute",
        placed_by="privacy officer",
    )
    audit.dispose()
    policy = make_policy(
        "s3",
        name="pbx_recordings",
        title="PBX recordings",
        store={
            "kind": "files",
            "conn_id": "pbx_share",
            "directory": "recordings/",
            "batch_size": 2,
        },
        guards={"max_delete_fraction": 1},
        retries=0,
    )
    run = steps.Run("retention_pbx_recordings", "scheduled__1", 0, LOGICAL_DATE, None)

    extracted = steps.extract(policy, run)
    decision = steps.check(policy, run, extracted)
    slices = steps.split(policy, run, extracted, decision)
    purged = [steps.delete(policy, run, extracted, piece) for piece in slices]
    verification = steps.verify(policy, run, extracted)
    row = record(policy, run, slices, purged, extracted, decision, verification)

    plan = extracted["plan"]
    assert (plan["total"], plan["expired"], plan["held"], plan["anomalies"]) == (6, 3, 1, 1)
    assert plan["held_by_hold"] == {str(hold): 1}
    assert (decision["outcome"], decision["approved_records"]) == ("approved", 3)
    assert len(slices) == 1  # a files store purges as one slice
    assert [(p["deleted"], p["batches"]) for p in purged] == [(3, 2)]
    assert survivors(root) == [
        "recordings/2026/07/+31612345678/e.wav",
        "recordings/2026/08/b.wav",
        "recordings/link.wav",
        "voicemail/g.wav",
    ]
    assert outside.exists()
    assert (verification["success"], verification["remaining"]) == (True, 0)
    (audited,) = deployment.audit("pbx_recordings")
    assert (audited["status"], audited["expired"], audited["held"], audited["anomalies"]) == (
        "purged", 3, 1, 1,
    )  # fmt: skip
    assert (audited["deleted"], audited["batches"], audited["verified"]) == (3, 2, True)
    assert audited["store"] == "files:pbx_share:./recordings/"
    assert audited["deleted"] == row["deleted"]
    # The trail names no recording: no phone number, no path under the root.
    trail = json.dumps([audited, extracted, decision, slices, purged, verification], default=str)
    assert "612345678" not in trail and str(root) not in trail
