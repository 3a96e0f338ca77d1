"""The audit trail's hash chain on a SQLite file: it verifies, and a row altered, removed or
inserted behind the engine's back is named by `lifecycle audit-verify`; the export carries the
hashes, rechecked here with hashlib and the documented canonical form alone."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from lifecycle import cli
from lifecycle.audit import ensure_schema, iter_runs, late_row, read_runs, record_run
from lifecycle.chain import (
    ALTERED,
    INSERTED,
    REMOVED,
    ZERO_HASH,
    Break,
    canonical,
    row_hash,
    verify,
)
from lifecycle.control import chain_head, ledger, runs
from tests.unit.test_audit_trail import row

DAY = datetime(2026, 11, 29, tzinfo=UTC)


def trail_row(index: int, **fields) -> dict:
    """A run's row with every kind of column filled: counts, bounds, JSON, booleans."""
    return (
        row(
            f"scheduled__{index}",
            DAY + timedelta(days=index),
            cutoff=DAY - timedelta(days=183) + timedelta(days=index, microseconds=7),
            total=100 + index,
            expired=index,
            held=1,
            holds={3: 1},  # an integer key: stored (and hashed) as the JSON string "3"
            tenants={"acme": {"period": "P1Y", "total": 4, "expired": 0, "default": False}},
            due={"7": index, "30": 10 * index, "90": 100},
            reasons=["a reason", "-starts like a formula"],
            verification={"success": True, "remaining": 0, "ratio": 0.25},
            timings={"delete": 1.5, "verify": 0.001},
            verified=True,
            remaining=0,
            started_at=DAY + timedelta(days=index, hours=1),
            finished_at=DAY + timedelta(days=index, hours=1, microseconds=123456),
        )
        | fields
    )


@pytest.fixture
def audit_url(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", url)
    return url


@pytest.fixture
def engine(audit_url):
    engine = sa.create_engine(audit_url)
    ensure_schema(engine)
    for index in range(1, 6):
        assert record_run(engine, trail_row(index))
    yield engine
    engine.dispose()


def stored(engine: sa.Engine, row_id: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(runs).where(runs.c.id == row_id)).one()._mapping)


def audit_verify(capsys) -> tuple[int, str, str]:
    code = cli.main(["audit-verify"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_chain_verifies_and_audit_verify_prints_the_rows_and_the_head(engine, capsys):
    result = verify(engine)
    assert result.intact and result.checked == 5 and result.before_chain == 0
    assert result.last_row_id == 5
    rows = [stored(engine, row_id) for row_id in range(1, 6)]
    assert [r["chain_seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev_hash"] == ZERO_HASH
    assert [r["prev_hash"] for r in rows[1:]] == [r["row_hash"] for r in rows[:-1]]
    assert all(row_hash(r) == r["row_hash"] for r in rows)
    with engine.connect() as conn:
        head = conn.execute(sa.select(chain_head)).one()
    assert (head.seq, head.row_hash) == (5, rows[-1]["row_hash"])

    code, out, err = audit_verify(capsys)
    assert code == 0 and not err
    assert "5 rows checked (0 before the chain)" in out
    assert f"chain intact: 5 rows checked, head row 5 sha256 {rows[-1]['row_hash']}" in out


def test_an_altered_cell_of_a_middle_row_is_named(engine, capsys):
    with engine.begin() as conn:  # as the tables' owner: nothing in SQL stops it
        conn.execute(sa.update(runs).where(runs.c.id == 3).values(deleted=4))

    assert verify(engine).broken == Break(ALTERED, 3, "its content no longer matches its hash")
    code, out, err = audit_verify(capsys)
    assert code == 1
    assert "2 rows checked" in out
    assert "chain BROKEN: row 3 altered: its content no longer matches its hash" in err
    assert "intact up to row 2" in err


def test_a_rewritten_hash_does_not_hide_an_alteration(engine):
    # The owner alters row 3 and recomputes its hash: row 4 no longer follows it.
    altered = stored(engine, 3) | {"deleted": 0}
    with engine.begin() as conn:
        conn.execute(
            sa.update(runs).where(runs.c.id == 3).values(deleted=0, row_hash=row_hash(altered))
        )
    broken = verify(engine).broken
    assert broken is not None and (broken.kind, broken.row_id) == (INSERTED, 4)
    assert "not the hash of row 3" in broken.detail and "row 3 rewritten" in broken.detail


def test_a_removed_row_is_named(engine, capsys):
    with engine.begin() as conn:
        conn.execute(sa.delete(runs).where(runs.c.id == 3))

    result = verify(engine)
    assert result.broken == Break(
        REMOVED, 4, "place 3 of the chain missing before it (after row 2)"
    )
    assert (result.checked, result.last_row_id) == (2, 2)
    code, _, err = audit_verify(capsys)
    assert code == 1 and "row 4 removed: place 3 of the chain missing" in err


def test_removed_last_rows_are_named_against_the_head(engine):
    with engine.begin() as conn:
        conn.execute(sa.delete(runs).where(runs.c.id >= 4))
    broken = verify(engine).broken
    assert broken is not None and broken.kind == REMOVED and broken.row_id is None
    assert "the head says 5 rows were chained, the chain ends at place 3 (row 3)" in broken.detail


def test_a_forged_row_without_a_hash_is_named(engine, capsys):
    with engine.begin() as conn:
        conn.execute(sa.insert(runs).values(trail_row(9, run_id="forged")))
    assert verify(engine).broken == Break(
        INSERTED, 6, "it has no hash, yet was written after the chain began"
    )
    code, _, err = audit_verify(capsys)
    assert code == 1 and "row 6 inserted" in err


def test_a_forged_row_chained_past_the_head_is_named(engine):
    # Hashed by the documented algorithm onto the last row, but the head was not moved.
    forged = trail_row(9, run_id="forged", chain_seq=6, prev_hash=stored(engine, 5)["row_hash"])
    with engine.begin() as conn:
        conn.execute(sa.insert(runs).values(forged | {"row_hash": row_hash(forged)}))
    assert verify(engine).broken == Break(INSERTED, 6, "past the head of the chain (place 5)")


def test_a_forged_row_in_the_middle_of_the_chain_is_named(engine):
    forged = trail_row(9, run_id="forged", chain_seq=3, prev_hash=stored(engine, 2)["row_hash"])
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ux_retention_audit_chain_seq")  # the owner may
        conn.execute(sa.insert(runs).values(forged | {"row_hash": row_hash(forged)}))
    assert verify(engine).broken == Break(INSERTED, 6, "a second row claims place 3 of the chain")


def test_rows_before_the_chain_are_reported_apart_and_the_chain_starts_after_them(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    ensure_schema(engine)
    with engine.begin() as conn:  # a trail of the version before the chain
        conn.execute(sa.text("DROP TABLE retention_chain"))
    assert record_run(engine, trail_row(1)) and record_run(engine, trail_row(2))
    assert stored(engine, 1)["row_hash"] is None
    ensure_schema(engine)  # `audit-init` of this version
    assert record_run(engine, trail_row(3)) and record_run(engine, trail_row(4))

    result = verify(engine)
    assert result.intact and (result.before_chain, result.checked) == (2, 2)
    assert stored(engine, 3)["prev_hash"] == ZERO_HASH and stored(engine, 3)["chain_seq"] == 1
    assert "2 rows before the chain" in result.summary()


def test_a_retry_leaves_the_chain_and_its_head_as_they_were(engine):
    assert record_run(engine, trail_row(2)) is False
    result = verify(engine)
    assert result.intact and result.checked == 5


def test_late_rows_are_chained_like_any_row(engine, make_policy):
    policy = make_policy()
    key = SimpleNamespace(dag_id=policy.dag_id, run_id="scheduled__late", attempt=0)
    approval = {"logical_date": DAY, "cutoff": DAY - timedelta(days=1), "at": DAY}
    totals = {"deleted": 7, "batches": 2, "in_flight": {}}
    assert record_run(engine, late_row(policy, key, approval, totals, written_by="r9"))
    assert stored(engine, 6)["chain_seq"] == 6
    assert verify(engine).intact


def test_what_a_later_run_settled_is_read_into_the_row_but_never_hashed(engine):
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ledger).values(
                policy="cdrs",
                dag_id="retention_cdrs",
                run_id="scheduled__2",
                attempt=0,
                event="settled",
                deleted=3,
                at=DAY,
            )
        )
    (read,) = [r for r in read_runs(engine) if r["run_id"] == "scheduled__2"]
    assert read["deleted"] == 5 + 3  # with_settled: the reader's figure
    assert row_hash(read) != read["row_hash"]
    assert verify(engine).intact  # the row as stored still matches its hash
    (as_stored,) = [r for r in iter_runs(engine, as_stored=True) if r["id"] == read["id"]]
    assert as_stored["deleted"] == 5 and row_hash(as_stored) == as_stored["row_hash"]
    assert as_stored["settled_later"] == {"records": 3, "batches": 1, "settlements": 1}


def test_nothing_but_the_rows_own_columns_enters_the_hash(engine):
    written = stored(engine, 2)
    content = json.loads(canonical(written))
    assert set(content) == {
        name for name, value in written.items() if value is not None and name != "row_hash"
    } - {"id"}
    # Whatever else a caller's dict holds (a phone number) is not hashed.
    assert canonical(written | {"phone": "+31 6 12345678"}) == canonical(written)
    assert b"12345678" not in canonical(written | {"phone": "+31 6 12345678"})


# -- the export, rechecked by a third party with hashlib and the README's canonical form ----------

INTEGERS = {"attempt", "total", "expired", "held", "active", "anomalies", "deleted", "batches"}
INTEGERS |= {"shards", "remaining", "chain_seq"}
BOOLEANS = {"dry_run", "verified"}
TIMESTAMPS = {"logical_date", "cutoff", "oldest_expired", "newest_expired", "oldest_retained"}
TIMESTAMPS |= {"started_at", "finished_at"}
JSONS = {"holds", "tenants", "due", "reasons", "verification", "timings"}
TEXTS = {"dag_id", "run_id", "policy", "title", "controller", "legal_basis", "store", "period"}
TEXTS |= {"status", "prev_hash"}


def _utc(text: str) -> str:
    instant = datetime.fromisoformat(text).astimezone(UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _from_cell(name: str, cell: str):
    if cell.startswith("'") and cell[1:2] in ("=", "+", "-", "@", "\t", "\r"):
        cell = cell[1:]  # the CSV's formula guard
    if name in INTEGERS:
        return int(cell)
    if name in BOOLEANS:
        return {"True": True, "False": False}[cell]
    if name in TIMESTAMPS:
        return _utc(cell)
    return json.loads(cell) if name in JSONS else cell


def recomputed(record: dict, cell=lambda name, value: value) -> str:
    """The row's hash from an exported record: every hashed column that is not empty."""
    content = {
        name: cell(name, value)
        for name, value in record.items()
        if name in INTEGERS | BOOLEANS | TIMESTAMPS | JSONS | TEXTS and value not in ("", None)
    }
    text = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_csv_and_json_exports_carry_hashes_a_third_party_recomputes(engine):
    from lifecycle.ui.export import as_csv_lines, as_json_lines

    text = "".join(as_csv_lines(iter_runs(engine, as_stored=True)))
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["chain_seq"] for r in records] == ["1", "2", "3", "4", "5"]
    prev = ZERO_HASH
    for record in records:
        assert record["prev_hash"] == prev
        assert recomputed(record, _from_cell) == record["row_hash"]
        prev = record["row_hash"]

    exported = json.loads("".join(as_json_lines(iter_runs(engine, as_stored=True))))
    for record in exported:
        as_canonical = {
            name: _utc(value) if name in TIMESTAMPS and value else value
            for name, value in record.items()
        }
        assert recomputed(as_canonical) == record["row_hash"]


def test_a_head_behind_its_rows_fails_the_write_loudly_never_as_a_retry(engine):
    with engine.begin() as conn:  # the head reset behind the chain's back
        conn.execute(sa.update(chain_head).values(seq=2, row_hash=stored(engine, 2)["row_hash"]))
    with pytest.raises(RuntimeError, match="chain head is behind its rows"):
        record_run(engine, trail_row(6))
    with engine.begin() as conn:  # the head row gone: `audit-init` puts it after the last row
        conn.execute(sa.delete(chain_head))
    ensure_schema(engine)
    assert record_run(engine, trail_row(6))
    result = verify(engine)
    assert result.intact and result.checked == 6
