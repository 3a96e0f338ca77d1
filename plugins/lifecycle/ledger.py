"""The deletion ledger: evidence that cannot fall behind the deletions.

Before anything is deleted, the check writes an `approved` row (policy, run, cutoff, ceiling);
a delete task without it refuses to start. Every batch is bracketed: a `begin` row before it,
a `batch` row with what it deleted (by this policy's own predicate) right after it commits. So a
crash loses at most the batch in flight, and the ledger says which batch that was: a `begin`
without its `batch`. A retry of the slice reconciles: what went from the slice since the split,
less what the ledger holds, is written as `unrecorded`, attributed to the try that had the
batch in flight (never to the retry itself), and never more than those in-flight batches could
have deleted (a row that went by other means is not this policy's deletion). When the control
database cannot be written, the purge stops before its next batch: a purge never outruns its
evidence. `recorded` marks that the run's audit row was written; a later run writes the row of a
run whose own `record` never did (see `steps.record`).

A batch whose commit was never heard of (the connection lost with the COMMIT's answer, the
worker killed between the commit and its `batch` row) is settled before the next purge of the
policy is approved, whatever attempt or run it belonged to: its `begin` row keeps its witnesses
(the lowest and highest key it deletes); gone from the store, it committed; all there, it rolled
back; anything else, it is left named as in flight (something else touched those rows). The
settlement is written against the batch's own run and try: `unrecorded` while that run's audit
row is still to be written, `settled` once it is (the audit readers add those to its row).

Rows hold counts, batch numbers, cutoffs and a batch's key bounds: never a value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.control import ledger

log = logging.getLogger(__name__)


def _now(engine: sa.Engine, instant: datetime | None = None) -> datetime:
    moment = (instant or datetime.now(UTC)).astimezone(UTC)
    return moment.replace(tzinfo=None) if engine.dialect.name in ("mysql", "mariadb") else moment


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True)
class RunKey:
    policy: str
    dag_id: str
    run_id: str
    attempt: int


@dataclass
class SliceTotals:
    deleted: int = 0
    batches: int = 0
    # (try, batch, records it deletes if committed) of the batches never closed
    in_flight: list[tuple[int, int, int]] = field(default_factory=list)


class Ledger:
    """The ledger rows of one run attempt, in the control database."""

    def __init__(self, engine: sa.Engine, key: RunKey):
        self.engine = engine
        self.key = key
        self._columns: list[sa.Column[Any]] | None = None

    def columns(self) -> list[sa.Column[Any]]:
        """The ledger's columns the table has: one created by an older version (before the next
        `audit-init`) still reads and takes rows, without what it lacks."""
        if self._columns is None:
            present = {c["name"] for c in sa.inspect(self.engine).get_columns(ledger.name)}
            self._columns = [column for column in ledger.columns if column.name in present]
        return self._columns

    def _write(self, event: str, **values: Any) -> None:
        if values.get("witnesses") is not None and "witnesses" not in self._names():
            del values["witnesses"]  # such a batch is settled by a retry of its slice only
        row = {
            "policy": self.key.policy,
            "dag_id": self.key.dag_id,
            "run_id": self.key.run_id,
            "attempt": self.key.attempt,
            "event": event,
            "at": _now(self.engine),
        } | values
        with self.engine.begin() as conn:
            conn.execute(sa.insert(ledger).values(row))

    def _names(self) -> set[str]:
        return {column.name for column in self.columns()}

    def _rows(self, *conditions: sa.ColumnElement[bool]) -> list[sa.Row[Any]]:
        query = sa.select(*self.columns()).where(
            ledger.c.dag_id == self.key.dag_id,
            ledger.c.run_id == self.key.run_id,
            ledger.c.attempt == self.key.attempt,
            *conditions,
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query.order_by(ledger.c.id)))

    # -- intent --------------------------------------------------------------------------------

    def approve(self, cutoff: datetime, ceiling: int, logical_date: datetime) -> None:
        self._write(
            "approved",
            deleted=ceiling,
            cutoff=_now(self.engine, cutoff),
            logical_date=_now(self.engine, logical_date),
        )

    def approved(self) -> int | None:
        """The ceiling the check approved for this attempt, or None: nothing may be deleted."""
        approval = self.approval()
        return None if approval is None else int(approval["ceiling"])

    def approval(self) -> dict[str, Any] | None:
        rows = self._rows(ledger.c.event == "approved")
        if not rows:
            return None
        row = rows[-1]
        return {
            "ceiling": row.deleted,
            "cutoff": _aware(row.cutoff),
            "logical_date": _aware(row.logical_date),
            "at": _aware(row.at),
        }

    # -- batches -------------------------------------------------------------------------------

    def journal(self, slice_index: int, try_number: int) -> Journal:
        return Journal(self, slice_index, try_number)

    def slice_totals(self, slice_index: int, before_try: int | None = None) -> SliceTotals:
        """What the ledger holds for a slice (optionally: of the tries before `before_try`)."""
        conditions = [ledger.c.slice == slice_index]
        if before_try is not None:
            conditions.append(ledger.c.try_number < before_try)
        return _fold(self._rows(*conditions))

    def reconcile(self, slice_index: int, try_number: int, gone: int) -> int:
        """A retry's accounting of earlier tries. `gone` records of the slice went (by this
        policy's predicate) since the split; the ledger lacks those the batches in flight had
        committed when their tries ended. Each such batch deleted all it was about to or nothing
        (one transaction), so the in-flight batches whose counts fit what is missing are taken
        as committed, written as `unrecorded` against their try (never the retry's). What is
        missing beyond them went by other means: not this run's deletion, not counted."""
        totals = self.slice_totals(slice_index, before_try=try_number)
        missing = max(0, gone - totals.deleted)
        counted = 0
        settled: set[int] = set()  # tries whose in-flight batch is now accounted for
        for try_of_batch, batch, expected in totals.in_flight:
            if expected and counted + expected <= missing:
                counted += expected
                settled.add(try_of_batch)
                self._write(
                    "unrecorded",
                    slice=slice_index,
                    try_number=try_of_batch,
                    batch=batch,
                    deleted=expected,
                )
        if missing > counted:
            log.warning(
                "%s: slice %d: %d records went since the split that no try of this run "
                "deleted (deleted by other means): not counted",
                self.key.policy,
                slice_index,
                missing - counted,
            )
        for try_of_batch in sorted({t for t, _, _ in totals.in_flight} - settled):
            # Rolled back: closed with nothing, so no later retry counts it again.
            self._write("unrecorded", slice=slice_index, try_number=try_of_batch, deleted=0)
        return counted

    def finish_slice(self, slice_index: int, slices: int) -> bool:
        """Mark slice `slice_index` of `slices` finished. True for the one slice that finds all
        of them finished and the final sweep not yet claimed (it claims it), and again for a
        retry of that slice: it then sweeps the whole table once more for purgeable rows a
        concurrent UPDATE moved from a slice not yet walked into one already walked. One
        transaction, serialized on the attempt's approval row (PostgreSQL, MariaDB: locked;
        SQLite: the insert comes first and takes the database's write lock)."""
        run = (
            ledger.c.dag_id == self.key.dag_id,
            ledger.c.run_id == self.key.run_id,
            ledger.c.attempt == self.key.attempt,
        )
        row = {
            "policy": self.key.policy,
            "dag_id": self.key.dag_id,
            "run_id": self.key.run_id,
            "attempt": self.key.attempt,
            "slice": slice_index,
            "at": _now(self.engine),
        }
        with self.engine.begin() as conn:
            if conn.dialect.name != "sqlite":
                approval = sa.select(ledger.c.id).where(*run, ledger.c.event == "approved")
                conn.execute(approval.with_for_update()).all()
            conn.execute(sa.insert(ledger).values(row | {"event": "finished"}))
            marks = conn.execute(
                sa.select(ledger.c.event, ledger.c.slice).where(
                    *run, ledger.c.event.in_(("finished", "sweep"))
                )
            ).all()
            claimed = [index for event, index in marks if event == "sweep"]
            if claimed:
                return bool(claimed[0] == slice_index)
            if len({index for event, index in marks if event == "finished"}) < slices:
                return False
            conn.execute(sa.insert(ledger).values(row | {"event": "sweep"}))
            return True

    # -- the run's totals ----------------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        """Deleted and batches of the attempt, and the batches still in flight per slice."""
        by_slice: dict[int, list[sa.Row[Any]]] = {}
        for row in self._rows(ledger.c.event.in_(("batch", "unrecorded", "settled", "begin"))):
            if row.slice is not None:
                by_slice.setdefault(row.slice, []).append(row)
        slices = {index: _fold(rows) for index, rows in sorted(by_slice.items())}
        return {
            "deleted": sum(totals.deleted for totals in slices.values()),
            "batches": sum(totals.batches for totals in slices.values()),
            "in_flight": {i: t.in_flight for i, t in slices.items() if t.in_flight},
        }

    def mark_recorded(self) -> None:
        self._write("recorded")

    def recorded(self) -> bool:
        return bool(self._rows(ledger.c.event == "recorded"))

    # -- batches earlier attempts and runs left in flight --------------------------------------

    def in_flight_elsewhere(self) -> list[sa.Row[Any]]:
        """The policy's batches begun and never closed, in any other attempt or run."""
        if "witnesses" not in self._names():
            return []
        begun, closing = ledger.alias("begun"), ledger.alias("closing")
        closed = sa.exists().where(
            closing.c.dag_id == begun.c.dag_id,
            closing.c.run_id == begun.c.run_id,
            closing.c.attempt == begun.c.attempt,
            closing.c.slice == begun.c.slice,
            closing.c.try_number == begun.c.try_number,
            sa.or_(
                sa.and_(closing.c.event == "batch", closing.c.batch == begun.c.batch),
                sa.and_(  # a retry's reconciliation closes its try's batch in flight
                    closing.c.event.in_(("unrecorded", "settled")),
                    sa.or_(closing.c.batch.is_(None), closing.c.batch == begun.c.batch),
                ),
            ),
        )
        this_attempt = sa.and_(
            begun.c.dag_id == self.key.dag_id,
            begun.c.run_id == self.key.run_id,
            begun.c.attempt == self.key.attempt,
        )
        query = (
            sa.select(begun)
            .where(
                begun.c.policy == self.key.policy,
                begun.c.event == "begin",
                ~closed,
                ~this_attempt,
            )
            .order_by(begun.c.id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def settle_in_flight(
        self,
        witnesses_left: Callable[[list[Any]], int | None],
        pending: list[sa.Row[Any]] | None = None,
    ) -> list[str]:
        """Settle the batches other attempts and runs left in flight (`pending`, by default
        `in_flight_elsewhere()`; see the module's doc) before this attempt deletes anything;
        `witnesses_left` asks the store how many of a batch's witness keys are still there.
        Returns warnings for those it cannot settle."""
        warnings = []
        for begun in self.in_flight_elsewhere() if pending is None else pending:
            expected = int(begun.deleted or 0)
            where = f"batch {begun.batch} of run {begun.run_id} (attempt {begun.attempt})"
            deleted = 0  # a batch that was to delete nothing is closed as such
            if expected:
                left = witnesses_left(begun.witnesses) if begun.witnesses else None
                if left is None:
                    continue  # nothing to tell by: stays named as in flight in its run's row
                if 0 < left < len(begun.witnesses):
                    warnings.append(
                        f"{where} was in flight when its try ended and cannot be settled: "
                        "some of its records went by other means; it stays counted for none"
                    )
                    continue
                deleted = expected if left == 0 else 0
            key = RunKey(self.key.policy, begun.dag_id, begun.run_id, begun.attempt)
            owner = Ledger(self.engine, key)
            owner._columns = self._columns
            owner._write(
                "settled" if owner.recorded() else "unrecorded",
                slice=begun.slice,
                try_number=begun.try_number,
                batch=begun.batch,
                deleted=deleted,
            )
            log.info(
                "%s: %s settled: %s",
                self.key.policy,
                where,
                f"committed, {deleted} deleted" if deleted else "rolled back",
            )
        return warnings


def _fold(rows: list[sa.Row[Any]]) -> SliceTotals:
    """A slice's ledger rows (oldest first) summed: what its batches deleted, how many committed,
    and the batches begun but never closed by a `batch` or `unrecorded` row."""
    totals = SliceTotals()
    begun: dict[tuple[int, int], int] = {}  # (try, batch) -> what it deletes if committed
    closed: set[tuple[int, int]] = set()
    for row in rows:
        if row.event not in ("batch", "unrecorded", "settled", "begin"):
            continue  # marks of the run's course (a slice finished, the sweep claimed)
        if row.event in ("batch", "unrecorded", "settled"):
            totals.deleted += int(row.deleted or 0)
        late = row.event in ("unrecorded", "settled")
        if row.event == "batch" or (late and row.batch is not None and row.deleted):
            totals.batches += 1  # committed: written as it did, or found so later
        if row.event == "batch":
            closed.add((row.try_number, row.batch))
        elif row.event == "begin":
            begun[(row.try_number, row.batch)] = int(row.deleted or 0)
        elif row.batch is not None:  # settled by the next run: that batch is known
            closed.add((row.try_number, row.batch))
        else:  # reconciled by a retry: this try's batch in flight is known
            closed |= {tb for tb in begun if tb[0] == row.try_number}
    totals.in_flight = sorted(
        (t, b, expected) for (t, b), expected in begun.items() if (t, b) not in closed
    )
    return totals


class Journal:
    """What a purge calls around each batch: durable before, durable after."""

    def __init__(self, owner: Ledger, slice_index: int, try_number: int):
        self.owner, self.slice, self.try_number = owner, slice_index, try_number

    wants_witnesses = True

    def before(self, batch: int, expected: int, witnesses: list[Any] | None = None) -> None:
        self.owner._write(
            "begin",
            slice=self.slice,
            try_number=self.try_number,
            batch=batch,
            deleted=expected,
            witnesses=witnesses,
        )

    def after(self, batch: int, deleted: int) -> None:
        self.owner._write(
            "batch", slice=self.slice, try_number=self.try_number, batch=batch, deleted=deleted
        )


def unrecorded_runs(engine: sa.Engine, policy: str) -> list[RunKey]:
    """Run attempts of `policy` approved to delete whose audit row was never written (their
    `record` task failed with no retry left): a later run writes it from the ledger."""
    approved = (
        sa.select(ledger.c.dag_id, ledger.c.run_id, ledger.c.attempt)
        .where(ledger.c.policy == policy, ledger.c.event == "approved")
        .distinct()
    )
    recorded = _keys(engine, policy, "recorded")
    return [
        RunKey(policy, row.dag_id, row.run_id, row.attempt)
        for row in _select(engine, approved)
        if (row.dag_id, row.run_id, row.attempt) not in recorded
    ]


def _keys(engine: sa.Engine, policy: str, event: str) -> set[tuple[str, str, int]]:
    query = sa.select(ledger.c.dag_id, ledger.c.run_id, ledger.c.attempt).where(
        ledger.c.policy == policy, ledger.c.event == event
    )
    return {(row.dag_id, row.run_id, row.attempt) for row in _select(engine, query)}


def _select(engine: sa.Engine, query: sa.Select[Any]) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(query))
