"""The demo data is consistent: no contract ends before it starts."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from lifecycle.demo.seed import HELD_CUSTOMER, seed_telecom

AMS = ZoneInfo("Europe/Amsterdam")


@pytest.mark.parametrize(
    ("now", "scale"),
    [(datetime(2026, 11, 29, 9, tzinfo=AMS), 1.0), (datetime(2026, 3, 1, 23, tzinfo=AMS), 0.25)],
)
def test_every_contract_ends_after_it_starts(tmp_path, now, scale):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'telecom.db'}")
    try:
        seed_telecom(engine, now, scale=scale)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT customer_id, started_at, ended_at FROM contracts")
            ).all()
    finally:
        engine.dispose()
    ended = [row for row in rows if row.ended_at is not None]
    assert ended and any(row.customer_id == HELD_CUSTOMER for row in ended)
    assert [row for row in ended if row.ended_at < row.started_at] == []
