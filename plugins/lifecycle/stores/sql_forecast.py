"""The SQL store's forecast (`Plan.due`): how many records reach the end of their window within
each horizon. Counted in the plan's one query, with the predicate a purge deletes by: per
horizon, the records purgeable with every cutoff (the policy's and each client's) moved forward
by it, less the records purgeable now. Both are the same predicate, which only grows as its
cutoffs move forward: the difference is what is not expired now and will be by then."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from lifecycle.stores import HORIZON_DAYS, RetentionWindow


def due_columns(
    purgeable: Callable[[RetentionWindow], sa.ColumnElement[bool]], window: RetentionWindow
) -> list[sa.ColumnElement[Any]]:
    """One count per horizon of `HORIZON_DAYS`: purgeable in the window moved forward by it."""
    return [sa.func.count(sa.case((purgeable(window.moved(days)), 1))) for days in HORIZON_DAYS]


def due_counts(counts: Sequence[int], purgeable_now: int) -> dict[str, int]:
    """`Plan.due` from the counts of `due_columns`: horizon (days, as text) -> records due."""
    return {
        str(days): int(count) - purgeable_now
        for days, count in zip(HORIZON_DAYS, counts, strict=True)
    }
