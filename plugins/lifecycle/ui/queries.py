"""Reads of the audit trail that the pages need beyond lifecycle.audit's: a policy's run count
and one page of its runs, newest first, so that three years of daily runs are never all read
to show a hundred of them. Rows are still read through lifecycle.audit (its handling of a trail
written by an older version, of naive timestamps), by the page's span of logical dates.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from lifecycle.control import runs

PER_PAGE = 100


def _has_table(conn: sa.Connection) -> bool:
    return sa.inspect(conn).has_table(runs.name)


def _retention_rows(conn: sa.Connection) -> sa.ColumnElement[bool]:
    from lifecycle.audit import _present, retention_rows

    return retention_rows(_present(conn))


def count_runs(engine: sa.Engine, policy: str) -> int:
    with engine.connect() as conn:
        if not _has_table(conn):
            return 0
        query = (
            sa.select(sa.func.count())
            .select_from(runs)
            .where(runs.c.policy == policy, _retention_rows(conn))
        )
        return int(conn.execute(query).scalar_one())


def runs_page(
    engine: sa.Engine, policy: str, page: int, per_page: int = PER_PAGE
) -> list[dict[str, Any]]:
    """Page `page` (from 1) of a policy's runs, newest logical date first (attempts of one date:
    the latest first), as lifecycle.audit reads them."""
    from lifecycle.audit import iter_runs, read_run

    with engine.connect() as conn:
        if not _has_table(conn):
            return []
        newest_first = (runs.c.logical_date.is_(None), runs.c.logical_date.desc(), runs.c.id.desc())
        query = (
            sa.select(runs.c.id, runs.c.logical_date)
            .where(runs.c.policy == policy, _retention_rows(conn))
            .order_by(*newest_first)
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        keys = conn.execute(query).all()
    order = {row.id: index for index, row in enumerate(keys)}
    dated = [row.logical_date for row in keys if row.logical_date is not None]
    found: list[dict[str, Any]] = []
    if dated:
        # Microsecond past the newest: the bound is exclusive. Naive values are UTC (MySQL).
        start, end = min(dated), max(dated) + timedelta(microseconds=1)
        found = [
            run
            for run in iter_runs(engine, policy, start=_aware(start), end=_aware(end))
            if run["id"] in order
        ]
    seen = {run["id"] for run in found}
    # A row without a logical date (none is written so today) is read on its own.
    found += [run for key in order if key not in seen and (run := read_run(engine, key))]
    return sorted(found, key=lambda run: order[run["id"]])


def _aware(value: Any) -> Any:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
