"""`make demo` ends with the audit trail's hash chain, as `lifecycle audit-verify` checks it
(issue 15: each assurance shows in the demo's output)."""

from datetime import UTC, datetime

import sqlalchemy as sa

from lifecycle.audit import record_run
from lifecycle.control import ensure_schema, runs
from lifecycle.demo.__main__ import print_chain
from tests.unit.test_audit_trail import row


def test_the_demo_prints_the_chain_intact_then_broken(tmp_path, capsys):
    audit = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    ensure_schema(audit)
    for day in (27, 28, 29):
        record_run(audit, row(f"r{day}", datetime(2026, 11, day, tzinfo=UTC)))
    print_chain(audit)
    line = capsys.readouterr().out
    assert line.startswith("audit trail: chain intact: 3 rows checked, head row 3 sha256 ")
    assert line.rstrip().endswith("(python -m lifecycle audit-verify)")
    with audit.begin() as conn:
        conn.execute(sa.update(runs).where(runs.c.id == 2).values(deleted=0))
    print_chain(audit)
    assert "chain BROKEN: row 2 altered" in capsys.readouterr().out
    audit.dispose()
