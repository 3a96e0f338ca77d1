"""The evidence page says what a purge left in the database (issue 15, residual copies)."""

from __future__ import annotations

from tests.ui.conftest import audit_row, policy
from tests.ui.test_local_time import AMSTERDAM_29, CUTOFF


def test_the_evidence_page_shows_the_residue_counts(app_client):
    cdrs = policy("cdrs")
    row = audit_row(cdrs, AMSTERDAM_29, cutoff=CUTOFF)
    row["verification"] = row["verification"] | {
        "residue": {"dead_tuples": 9996, "removed_by": "VACUUM (autovacuum or the owner)"}
    }
    client = app_client([row])
    page = client.get("/runs/1").text
    assert (
        '<dd data-field="residue">dead tuples: 9996; removed by: VACUUM (autovacuum or the '
        "owner)</dd>"
    ) in page
    bare = audit_row(cdrs, AMSTERDAM_29, cutoff=CUTOFF)
    assert 'data-field="residue"' not in app_client([bare]).get("/runs/1").text


def test_the_evidence_page_shows_what_was_removed_and_what_was_not(app_client):
    cdrs = policy("cdrs")
    found = {
        "history_rows": 300,
        "removed_by": "DELETE HISTORY (needs the DELETE HISTORY privilege)",
    }
    removed = audit_row(cdrs, AMSTERDAM_29, cutoff=CUTOFF)
    removed["verification"] = removed["verification"] | {
        "residue": found
        | {
            "removed": {"history_rows": 300, "by": "DELETE HISTORY"},
            "after": {"history_rows": 0},
        }
    }
    failed = audit_row(cdrs, AMSTERDAM_29, cutoff=CUTOFF)
    failed["verification"] = failed["verification"] | {
        "residue": found | {"removal_error": "OperationalError (code 42000): refused"}
    }
    page = app_client([removed]).get("/runs/1").text
    assert (
        '<dd data-field="residue">history rows: 300; removed by: DELETE HISTORY (needs the '
        "DELETE HISTORY privilege); removed: history rows 300, by DELETE HISTORY; after: "
        "history rows 0</dd>"
    ) in page
    page = app_client([failed]).get("/runs/1").text
    assert "; removal error: OperationalError (code 42000): refused</dd>" in page
