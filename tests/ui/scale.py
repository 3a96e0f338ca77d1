"""Three years of daily runs for every policy of the catalogue (about 15,000 audit rows), as the
scheduled runs write them: logical dates at local midnight in the policy's zone, cutoffs by the
engine's own calendar arithmetic. Deterministic: a few refusals, dry runs and failed
verifications, holds that come and go. Used by tests/ui/test_scale.py and benchmarks/ui_pages.py.

Inserted in bulk (record_run inspects the table per row: minutes for 15,000 rows); the values
are converted as record_run converts them (UTC; naive on MariaDB, whose DATETIME has no zone).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from lifecycle.audit import ensure_schema, runs
from lifecycle.loader import load_policies
from lifecycle.periods import compute_cutoff

PROJECT = Path(__file__).resolve().parents[2]
DAYS = 3 * 365 + 1
LAST_DAY = date(2026, 11, 29)


def _outcome(index: int) -> str:
    # One run in 97 refused, one in 89 a dry run, one in 211 a failed verification.
    if index % 211 == 5:
        return "verification_failed"
    if index % 97 == 3:
        return "refused"
    if index % 89 == 7:
        return "dry_run"
    return "purged"


def scale_row(policy: Any, day: date, index: int) -> dict[str, Any]:
    logical = datetime.combine(day, time(), ZoneInfo(policy.timezone)).astimezone(UTC)
    zero = policy.retention.period == "P0D"
    cutoff = compute_cutoff(logical, policy.retention.period, policy.timezone, allow_zero=zero)
    status = _outcome(index)
    expired = 40 + (index * 37) % 160
    deleted = expired if status in ("purged", "verification_failed") else 0
    held = (index // 30) % 5 * 3  # holds placed and lifted month by month
    return {
        "dag_id": f"retention_{policy.name}",
        "run_id": f"scheduled__{logical.isoformat()}",
        "attempt": 0,
        "policy": policy.name,
        "title": policy.title,
        "controller": policy.controller,
        "legal_basis": policy.legal_basis,
        "store": f"{policy.store.kind}:{policy.store.conn_id}:{policy.store.location}",
        "period": policy.retention.period,
        "logical_date": logical,
        "cutoff": cutoff,
        "status": status,
        "dry_run": status == "dry_run",
        "total": 100_000 + index,
        "expired": expired,
        "held": held,
        "active": 0,
        "anomalies": 0,
        "deleted": deleted,
        "batches": 1,
        "oldest_expired": cutoff - timedelta(days=1),
        "newest_expired": cutoff - timedelta(minutes=5),
        "oldest_retained": cutoff + timedelta(hours=3),
        "verified": {"purged": True, "verification_failed": False}.get(status),
        "remaining": {"purged": 0, "verification_failed": 2}.get(status),
        "holds": {"7": held} if held else {},
        "tenants": {},
        "reasons": ["guard: more than half of the records would go"] if status == "refused" else [],
        "verification": None,
        "timings": {"delete": 0.4, "verify": 0.1},
        "started_at": logical + timedelta(minutes=1),
        "finished_at": logical + timedelta(minutes=2),
    }


def seed(engine: sa.Engine, policy_dir: Path = PROJECT / "include/policies") -> int:
    """Create the trail's tables and write three years of daily runs of every policy."""
    ensure_schema(engine)
    naive = engine.dialect.name in ("mysql", "mariadb")
    policies = [loaded.policy for loaded in load_policies(policy_dir).policies]
    first = LAST_DAY - timedelta(days=DAYS - 1)
    rows = [
        scale_row(policy, first + timedelta(days=offset), offset)
        for policy in policies
        for offset in range(DAYS)
    ]
    if naive:
        for row in rows:
            for name, value in row.items():
                if isinstance(value, datetime):
                    row[name] = value.astimezone(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            conn.execute(sa.insert(runs), rows[start : start + 2000])
    return len(rows)
