"""The audit trail's hash chain: every row carries the SHA-256 of its own content and of the row
before it, so that a row altered, removed or inserted afterwards shows (`lifecycle audit-verify`).

The canonical form (version 1), what a third party recomputes from the export with hashlib alone:

- the row's columns except `id` and `row_hash`, each that is not NULL (a column added by a later
  version is NULL in older rows, and so leaves their hashes as they were), `prev_hash` and
  `chain_seq` among them;
- values as stored: timestamps in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (always six digits of
  microseconds), integers as JSON integers, booleans as `true`/`false`, text as is, the JSON
  columns (holds, tenants, due, reasons, verification, timings) as the JSON value they hold;
- one JSON object of those, `json.dumps(obj, sort_keys=True, separators=(",", ":"),
  ensure_ascii=False, allow_nan=False)` (keys sorted at every depth), encoded as UTF-8;
- `row_hash` = the lowercase hex SHA-256 of those bytes.

The first chained row's `prev_hash` is 64 zeros; `chain_seq` counts the chained rows from 1. Rows
written before the chain existed have no hash: they are "before the chain". What a later run
settled for a row (`audit.with_settled`) is added when it is read, never hashed: the hash is of
the row as stored. Nothing but the row's own columns enters the hash: no record, no key.

Concurrent writers never fork the chain: the head (`control.chain_head`, one row: the last
chained row's `chain_seq` and hash) is locked (an UPDATE of it, then SELECT ... FOR UPDATE) in the
transaction that inserts the row and moves the head; on SQLite that UPDATE takes the database's
write lock. The same on PostgreSQL, MariaDB and SQLite, and the jobs' role needs only SELECT and
UPDATE on the head table (it still may not read the trail).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lifecycle.control import HEAD_ID, chain_head, runs

CANONICAL_VERSION = 1
ZERO_HASH = "0" * 64
CHAIN_COLUMNS = ("chain_seq", "prev_hash", "row_hash")
# The columns a hash covers (when not NULL): every column but the key and the hash itself.
HASHED = tuple(column.name for column in runs.columns if column.name not in ("id", "row_hash"))


def _timestamp(value: datetime | str) -> str:
    instant = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    instant = instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_value(name: str, value: Any) -> Any:
    """One column's value in the canonical form (see the module's doc), by the column's type."""
    kind = runs.c[name].type
    if isinstance(kind, sa.DateTime):
        return _timestamp(value)
    if isinstance(kind, sa.Boolean):
        return bool(value)
    if isinstance(kind, sa.Integer):
        return int(value)
    if isinstance(kind, sa.JSON):
        return json.loads(value) if isinstance(value, str) else json.loads(json.dumps(value))
    return str(value)


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a row's hash is taken of: its own non-NULL columns but `id` and `row_hash`."""
    content = {
        name: canonical_value(name, row[name]) for name in HASHED if row.get(name) is not None
    }
    text = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def row_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(row)).hexdigest()


@dataclass(frozen=True)
class Head:
    seq: int  # chained rows so far; 0: none
    row_hash: str


def has_chain(conn: sa.Connection) -> bool:
    """Whether the schema has the chain (`audit-init` of this version has run)."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(chain_head.name) or not inspector.has_table(runs.name):
        return False
    present = {column["name"] for column in inspector.get_columns(runs.name)}
    return set(CHAIN_COLUMNS) <= present


def lock_head(conn: sa.Connection) -> Head | None:
    """Lock the head for this transaction and read it; None when it has no row (never made
    here: the jobs' role may not INSERT it; `audit-init` does)."""
    # The UPDATE first: a row lock on PostgreSQL and MariaDB, the write lock on SQLite (whose
    # SELECT would take only a shared one, and two writers would read the same head).
    conn.execute(
        sa.update(chain_head).where(chain_head.c.id == HEAD_ID).values(seq=chain_head.c.seq)
    )
    query = sa.select(chain_head.c.seq, chain_head.c.row_hash).where(chain_head.c.id == HEAD_ID)
    found = conn.execute(query.with_for_update()).first()
    return None if found is None else Head(int(found[0]), found[1])


def chain_onto(conn: sa.Connection, values: dict[str, Any]) -> Head | None:
    """Give `values` (the row as it will be stored) its place and hashes, and move the head in
    this transaction; None when the head has no row (the row goes unchained)."""
    head = lock_head(conn)
    if head is None:
        return None
    values |= {"chain_seq": head.seq + 1, "prev_hash": head.row_hash}
    values["row_hash"] = row_hash(values)
    moved = Head(head.seq + 1, values["row_hash"])
    conn.execute(
        sa.update(chain_head)
        .where(chain_head.c.id == HEAD_ID)
        .values(seq=moved.seq, row_hash=moved.row_hash, moved_at=datetime.now(UTC))
    )
    return moved


def read_head(conn: sa.Connection) -> Head | None:
    row = conn.execute(
        sa.select(chain_head.c.seq, chain_head.c.row_hash).where(chain_head.c.id == HEAD_ID)
    ).first()
    return None if row is None else Head(int(row[0]), row[1])


def hashed_rows(conn: sa.Connection, chunk: int = 1000) -> Generator[dict[str, Any], None, None]:
    """The chained rows as stored, in chain order, streamed (no settled corrections)."""
    present = {column["name"] for column in sa.inspect(conn).get_columns(runs.name)}
    columns = [column for column in runs.columns if column.name in present]
    query = (
        sa.select(*columns)
        .where(runs.c.row_hash.is_not(None))
        .order_by(runs.c.chain_seq, runs.c.id)
    )
    result = conn.execution_options(yield_per=chunk).execute(query)
    try:
        for row in result:
            yield dict(row._mapping)
    finally:
        result.close()  # a walk that stops early frees the connection (MariaDB's stream)


# -- verification: a reader's (the owner's, or the audit UI's role) -----------------------------

ALTERED, REMOVED, INSERTED = "altered", "removed", "inserted"


@dataclass(frozen=True)
class Break:
    """The first place the chain does not hold: which row, how, and what was found."""

    kind: str  # altered | removed | inserted
    row_id: int | None  # the row named (the one after the gap, for a removal)
    detail: str

    def __str__(self) -> str:
        where = f"row {self.row_id}" if self.row_id is not None else "the chain"
        return f"{where} {self.kind}: {self.detail}"


@dataclass(frozen=True)
class Verification:
    chained: bool  # False: the schema has no chain yet (run `audit-init`)
    checked: int = 0  # chained rows recomputed and found intact, oldest first
    before_chain: int = 0  # rows without a hash written before the chain began
    last_row_id: int | None = None  # the last intact row (the chain is intact up to it)
    last_hash: str = ZERO_HASH
    broken: Break | None = None

    @property
    def intact(self) -> bool:
        return self.chained and self.broken is None

    def summary(self) -> str:
        if not self.chained:
            return "the audit trail has no hash chain yet (run `lifecycle audit-init`)"
        before = f"; {self.before_chain} rows before the chain" if self.before_chain else ""
        if self.broken is not None:
            upto = f"up to row {self.last_row_id}" if self.last_row_id else "from its first row"
            return f"chain BROKEN: {self.broken} (intact {upto}, {self.checked} rows){before}"
        head = f"row {self.last_row_id}" if self.last_row_id else "no row yet"
        return (
            f"chain intact: {self.checked} rows checked, head {head} sha256 "
            f"{self.last_hash}{before}"
        )


@dataclass
class _Walk:
    """What a walk of the chained rows found, row by row."""

    expected: int = 1
    prev: str = ZERO_HASH
    last_id: int | None = None
    first_id: int | None = None
    broken: Break | None = None
    # The id and hash of the row at the place of the head read before the walk.
    at_head: tuple[int, str] | None = None
    past: list[tuple[int, int]] | None = None  # (seq, id) of rows past that head

    def step(self, row: dict[str, Any], head_seq: int) -> Break | None:
        seq, row_id = row["chain_seq"], row["id"]
        if seq is None or seq < self.expected:
            return Break(INSERTED, row_id, f"a second row claims place {seq} of the chain")
        if seq > self.expected:
            return Break(
                REMOVED,
                row_id,
                f"place {self.expected}"
                + (f" to {seq - 1}" if seq - 1 > self.expected else "")
                + f" of the chain missing before it (after row {self.last_id})",
            )
        if row_hash(row) != row["row_hash"]:
            return Break(ALTERED, row_id, "its content no longer matches its hash")
        if row["prev_hash"] != self.prev:
            return Break(
                INSERTED,
                row_id,
                f"its prev_hash is not the hash of row {self.last_id}: forged into the chain "
                f"(or row {self.last_id} rewritten with a new hash)",
            )
        if seq == head_seq:
            self.at_head = (row_id, row["row_hash"])
        elif seq > head_seq:
            self.past = [*(self.past or []), (seq, row_id)]
        self.expected, self.prev, self.last_id = seq + 1, row["row_hash"], row_id
        self.first_id = self.first_id or row_id
        return None


def verify(engine: sa.Engine, chunk: int = 1000) -> Verification:
    """Walk the chain oldest first (streamed), recompute every hash, and name the first row
    altered, removed or inserted. The head is read before and after the walk: rows chained by a
    run while the walk went are not taken for forged ones."""
    with engine.connect() as conn:
        if not has_chain(conn):
            return Verification(chained=False)
        before = read_head(conn)
        walk = _Walk()
        rows = hashed_rows(conn, chunk)
        for row in rows:
            walk.broken = walk.step(row, before.seq if before else 0)
            if walk.broken is not None:
                rows.close()
                break
        broken = walk.broken or _head_break(walk, before, read_head(conn))
        broken = _first(broken, _unchained_after(conn, walk.first_id))
        unhashed = sa.select(sa.func.count()).select_from(runs).where(runs.c.row_hash.is_(None))
        if walk.first_id is not None:
            unhashed = unhashed.where(runs.c.id < walk.first_id)
        before_chain = int(conn.execute(unhashed).scalar_one())
    return Verification(True, walk.expected - 1, before_chain, walk.last_id, walk.prev, broken)


def _head_break(walk: _Walk, before: Head | None, after: Head | None) -> Break | None:
    if before is None or after is None:
        return Break(REMOVED, None, f"the head of the chain ({chain_head.name}) has no row")
    end = walk.expected - 1
    if end < before.seq:
        return Break(
            REMOVED,
            None,
            f"the head says {before.seq} rows were chained, the chain ends at place {end}"
            + (f" (row {walk.last_id})" if walk.last_id else "")
            + ": its last rows removed",
        )
    if walk.at_head is not None and walk.at_head[1] != before.row_hash:
        return Break(
            ALTERED,
            walk.at_head[0],
            "it is not the row the head of the chain recorded (rewritten with a new hash)",
        )
    past = [(seq, row_id) for seq, row_id in walk.past or () if seq > after.seq]
    if past:
        return Break(INSERTED, past[0][1], f"past the head of the chain (place {after.seq})")
    return None


def _unchained_after(conn: sa.Connection, first_id: int | None) -> Break | None:
    if first_id is None:
        return None
    query = sa.select(sa.func.min(runs.c.id)).where(runs.c.row_hash.is_(None), runs.c.id > first_id)
    row_id = conn.execute(query).scalar_one()
    if row_id is None:
        return None
    return Break(INSERTED, row_id, "it has no hash, yet was written after the chain began")


def _first(one: Break | None, other: Break | None) -> Break | None:
    if one is None or other is None:
        return one or other
    if one.row_id is not None and other.row_id is not None and other.row_id < one.row_id:
        return other
    return one


# -- the evidence location: the head, written where not even the database's owner can rewrite it -

ANCHOR_PREFIX = "retention-chain-head/"
ANCHOR_RETENTION_DAYS = 3653  # ten years: past the longest retention period of the catalogue


@dataclass(frozen=True)
class Anchor:
    """What `write_anchor` left in the bucket: the object, and whether Object Lock keeps it."""

    key: str
    locked: bool
    head: dict[str, Any]


def anchor_body(result: Verification, now: datetime) -> dict[str, Any]:
    """The head as a small JSON object: place, row id, hash; no content of any row."""
    return {
        "algorithm": f"sha256, canonical form v{CANONICAL_VERSION}",
        "seq": result.checked,
        "row_id": result.last_row_id,
        "row_hash": result.last_hash,
        "verified_at": _timestamp(now),
    }


def _object_lock(client: Any, bucket: str) -> bool:
    try:
        found = client.get_object_lock_configuration(Bucket=bucket)
    except client.exceptions.ClientError:
        return False  # no Object Lock on this bucket (or not readable): a plain object
    return bool(found.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")


def write_anchor(
    client: Any, bucket: str, result: Verification, now: datetime, prefix: str = ANCHOR_PREFIX
) -> Anchor:
    """Write the intact chain's head to `bucket`, under Object Lock retention in COMPLIANCE
    mode where the bucket has Object Lock (nobody, root included, shortens or lifts it)."""
    if not result.intact:
        raise ValueError(f"a broken chain is not anchored: {result.broken}")
    head = anchor_body(result, now)
    key = f"{prefix}{now.astimezone(UTC):%Y-%m-%dT%H%M%S.%fZ}.json"
    extra: dict[str, Any] = {}
    locked = _object_lock(client, bucket)
    if locked:
        until = now + timedelta(days=ANCHOR_RETENTION_DAYS)
        extra = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}
    body = json.dumps(head, sort_keys=True).encode()
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **extra)
    return Anchor(key, locked, head)


def latest_anchor(client: Any, bucket: str, prefix: str = ANCHOR_PREFIX) -> dict[str, Any] | None:
    """The newest head written to the bucket (keys sort by time), or None."""
    newest = None
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [item["Key"] for item in page.get("Contents", ())]
        newest = max([*keys, *([newest] if newest else [])], default=None)
    if newest is None:
        return None
    found: dict[str, Any] = json.loads(client.get_object(Bucket=bucket, Key=newest)["Body"].read())
    return found


def against_anchor(engine: sa.Engine, anchored: dict[str, Any]) -> Break | None:
    """Whether the chain still holds the head anchored earlier: the row at its place with its
    hash. A chain rewritten from that place on, head included, shows here and nowhere else."""
    if not anchored["seq"]:
        return None  # anchored before the first chained row
    query = sa.select(runs.c.id, runs.c.row_hash).where(runs.c.chain_seq == anchored["seq"])
    with engine.connect() as conn:
        found = conn.execute(query).all()
    if any(row.row_hash == anchored["row_hash"] for row in found):
        return None
    row_id = found[0].id if found else anchored.get("row_id")
    return Break(
        ALTERED if found else REMOVED,
        row_id,
        f"the chain no longer holds the head anchored at {anchored.get('verified_at')} "
        f"(place {anchored['seq']}, sha256 {anchored['row_hash']}): rewritten since",
    )
