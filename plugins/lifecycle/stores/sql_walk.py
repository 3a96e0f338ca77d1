"""A purge's walk and its bookkeeping, for the SQL store (`lifecycle.stores.sql`).

Where the database can address its rows by where they are stored (PostgreSQL 14+: TID range
scans), a whole-table purge walks the table in ranges of blocks: each batch reads a few
contiguous pages, whatever the key type and however its values relate to insertion order
(a random UUID, a phone number as text). A range holds about `batch_size` rows: whole blocks
when a block holds fewer, parts of one block (ranges of line pointers) when it holds more. The
walk covers the blocks the table had when it started; rows an UPDATE moved meanwhile into a
block already walked, and rows appended past its end, are found by the keyed sweep that
follows (the store's key-range loop over whatever purgeable rows remain). A slice of a split
purge walks its own range of blocks and sweeps it; the last slice to finish then sweeps the
whole table (`SqlTableStore.sweep_all`, `lifecycle.steps.delete`).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from lifecycle.stores import PurgeJournal, RetentionWindow

if TYPE_CHECKING:
    from lifecycle.stores.sql import SqlTableStore

log = logging.getLogger("lifecycle.stores.sql")

PROGRESS_EVERY_SECONDS = 5.0

Tid = tuple[int, int]  # (block, line pointer); offset 0 is before a block's first row


def tid_ranges(
    blocks: int,
    rows_per_page: float,
    batch_size: int,
    last_offset: Callable[[int], int],
    start: int = 0,
) -> Iterator[tuple[Tid, Tid]]:
    """Consecutive ranges [lower, upper) over blocks `start`..`blocks`, of about `batch_size` rows
    for `rows_per_page` rows a page: whole blocks where a block holds fewer rows than a batch,
    else ranges of `batch_size` line pointers up to the block's highest one holding a row
    (`last_offset`, asked as the walk reaches the block). A block's last range runs to the next
    block: rows stored there meanwhile are deleted too if purgeable."""
    if rows_per_page <= batch_size:
        step = max(1, int(batch_size // max(rows_per_page, 1.0)))
        for block in range(start, blocks, step):
            yield (block, 0), (min(block + step, blocks), 0)
        return
    for block in range(start, blocks):
        cuts = range(1 + batch_size, last_offset(block) + 1, batch_size)
        yield from itertools.pairwise([(block, 0), *((block, o) for o in cuts), (block + 1, 0)])


class LivePurgeable:
    """The purge's predicate, rebuilt when the active holds change: `now()` reads them again
    (the control database) before each batch, so a hold placed mid-run protects at once; an
    unreachable control database stops the purge."""

    def __init__(
        self, build: Callable[[RetentionWindow], sa.ColumnElement[bool]], window: RetentionWindow
    ):
        self.build, self.window = build, window
        self.condition = build(window)

    def now(self) -> sa.ColumnElement[bool]:
        if self.window.reload_holds is not None:
            fresh = self.window.reload_holds()
            if fresh != self.window.holds:
                self.window = replace(self.window, holds=fresh)
                self.condition = self.build(self.window)
        return self.condition


@dataclass
class Tally:
    """A purge's committed batches, told to the journal and, every few seconds, to the log."""

    label: str
    journal: PurgeJournal
    started: float = field(default_factory=time.perf_counter)
    deleted: int = 0
    batches: int = 0
    last_report: float = field(default_factory=time.perf_counter)

    def committed(self, count: int) -> None:
        self.deleted += count
        self.batches += 1
        self.journal.after(self.batches, count)  # right after the commit
        now = time.perf_counter()
        if now - self.last_report >= PROGRESS_EVERY_SECONDS:
            self.last_report = now
            self.report()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def report(self, final: bool = False) -> None:
        seconds = self.seconds
        log.info(
            "%s %s: %d batches, %d rows deleted, %.0f rows/s",
            self.label,
            "purge done" if final else "purging",
            self.batches,
            self.deleted,
            self.deleted / seconds if seconds > 0 else 0.0,
        )


def walk(
    store: SqlTableStore,
    purgeable: LivePurgeable,
    tally: Tally,
    approved: int,
    blocks: tuple[int | None, int | None] = (None, None),
) -> bool:
    """Batches of block ranges over the blocks the table has now (of a slice's `blocks`, from
    and up to: None, unbounded), each its own transaction with the store's checks (the
    ceiling, the journal); False where the table cannot be walked so (`Dialect.heap_layout`).
    A range with nothing to delete is no batch (nothing journaled). The witnesses are the
    lowest and highest key the batch deletes, for integer and UUID keys. The walk ends where
    the approval is spent: a table whose expired rows sit in its first blocks (inserted in time
    order, as CDRs are) is read only that far."""
    with store.guarded("purge"), store.engine.connect() as conn:
        layout = store.sql.heap_layout(conn, store.table)
    if layout is None:
        return False
    size, rows_per_page = layout
    start, end = blocks
    size = size if end is None else min(end, size)
    key = store.key if tally.journal.wants_witnesses and store._opaque_key() else None

    def last_offset(block: int) -> int:
        with store.guarded("purge"), store.engine.connect() as conn:
            return store.sql.last_offset(conn, store.table, block)

    ranges = tid_ranges(size, rows_per_page, store.config.batch_size, last_offset, start or 0)
    for lower, upper in ranges:
        if tally.deleted >= approved:
            break  # the approval is spent: no later range may delete anything
        in_batch = sa.and_(store.sql.tid_between(store.table, lower, upper), purgeable.now())
        number = tally.batches + 1
        with store.guarded(f"purge batch {number}"), store.engine.begin() as conn:
            bounds = None if key is None else store.sql.key_bounds(conn, in_batch, key)
            if bounds == (None, None):
                continue  # nothing purgeable in the range: no batch
            count = conn.execute(sa.delete(store.table).where(in_batch)).rowcount
            if count:
                witnesses = None if bounds is None else json_keys(*bounds)
                store._before_commit(number, tally.deleted + count, approved, tally, witnesses)
        if count:
            tally.committed(count)
    return True


def json_keys(*keys: Any) -> list[int | str]:
    """Keys as the ledger and XCom keep them (a batch's witnesses, slice bounds): JSON-safe,
    each once, None left out."""
    return list(dict.fromkeys(k if isinstance(k, int) else str(k) for k in keys if k is not None))
