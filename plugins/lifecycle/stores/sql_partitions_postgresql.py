"""PostgreSQL's range-partitioned tables (`store.partitions: drop`,
`lifecycle.stores.sql_partitions`): reading the partitions' bounds, detaching them, dropping
them or keeping them for the policy's `store.partition_grace`, and
`lifecycle_drop_partition_<policy>`, the SECURITY DEFINER function through which a jobs' role
that does not own the table does all of that and nothing else.

A kept partition is a standalone table (its own name) whose COMMENT is `lifecycle-kept ` and a
JSON object: the policy, the table it was a partition of, the detaching run's cutoff, the
moment its grace ends (`until`: that cutoff plus the grace, on the calendar of the policy's
timezone) and its rows. A later run whose cutoff has reached `until` drops it: the run's
cutoff, not the clock, so a retry of the same run decides the same. The rows left the table
when it was detached: that was their purge, counted and journaled then.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from lifecycle.periods import parse_period
from lifecycle.stores import StoreConfigError
from lifecycle.stores.sql_partitions import RangePartition, _count, _range, routine_name

if TYPE_CHECKING:
    from lifecycle.policy import Policy
    from lifecycle.stores import RetentionWindow
    from lifecycle.stores.sql import SqlTableStore
    from lifecycle.stores.sql_walk import Tally

log = logging.getLogger("lifecycle.stores.sql")

KEPT = "lifecycle-kept "  # the COMMENT of a kept partition starts so; JSON follows

_BOUND = re.compile(r"^FOR VALUES FROM \((?P<lower>.*)\) TO \((?P<upper>.*)\)$")


def postgresql_partitions(
    conn: sa.Connection, table: sa.Table, column: str
) -> list[RangePartition] | None:
    name = conn.dialect.identifier_preparer.format_table(table)
    ranged = conn.execute(
        sa.text(
            "SELECT p.partstrat = 'r' AND p.partnatts = 1 AND p.partattrs[0] = a.attnum "
            "FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid "
            "AND a.attname = :column WHERE p.partrelid = CAST(:name AS regclass)"
        ),
        {"name": name, "column": column},
    ).scalar()
    if not ranged:
        return None
    rows = conn.execute(
        sa.text(
            "SELECT CAST(c.oid AS regclass)::text, pg_get_expr(c.relpartbound, c.oid), c.relkind "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:name AS regclass)"
        ),
        {"name": name},
    ).all()
    parts = []
    for part, bound, kind in rows:
        match = _BOUND.match(bound or "")
        if kind != "r" or match is None:  # the DEFAULT partition, a sub-partitioned one
            parts.append(RangePartition(part, None, None))
            continue
        lower, upper = (_pg_bound(conn, match[side]) for side in ("lower", "upper"))
        parts.append(RangePartition(part, lower, upper))
    return sorted(
        parts, key=lambda p: (p.upper is None, p.upper or datetime.min.replace(tzinfo=UTC))
    )


def _pg_bound(conn: sa.Connection, text: str) -> datetime | None:
    """A bound as pg_get_expr writes it: a quoted literal, or MINVALUE / MAXVALUE."""
    if not text.startswith("'"):
        return None
    literal = text[1:-1].replace("''", "'")
    try:  # pg_get_expr writes the session's format (ISO, UTC): read here, no round trip
        parsed = datetime.fromisoformat(literal)
    except ValueError:
        parsed = None
    if parsed is not None:  # a timestamp without time zone is UTC (the session's zone)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    value = conn.execute(sa.text("SELECT CAST(:v AS timestamptz)"), {"v": literal}).scalar_one()
    return value if isinstance(value, datetime) else None


def function_name(policy: Policy) -> str:
    return routine_name(policy)


def _function(conn: sa.Connection, store: SqlTableStore) -> tuple[str, int] | None:
    """The policy's function, schema-qualified, and its number of arguments (3: made by an
    earlier `lifecycle grants`, which could not keep partitions), if its owner created it."""
    schema = store.table.schema or "public"
    found = conn.execute(
        sa.text(
            "SELECT max(p.pronargs) FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = :schema AND p.proname = :name"
        ),
        {"schema": schema, "name": function_name(store.policy)},
    ).scalar()
    if found is None:
        return None
    quote = conn.dialect.identifier_preparer.quote
    return f"{quote(schema)}.{quote(function_name(store.policy))}", int(found)


def _made_with_grace(conn: sa.Connection, function: str) -> bool:
    """Whether the policy's function keeps partitions (made by `lifecycle grants` for a policy
    with a grace): its source, which any role may read, fixes the grace."""
    source = conn.execute(
        sa.text("SELECT prosrc FROM pg_proc WHERE oid = CAST(:f AS regprocedure)"),
        {"f": f"{function}(regclass, timestamptz, bigint, text)"},
    ).scalar()
    return source is not None and "grace constant interval := NULL;" not in source


def _parent_name(store: SqlTableStore) -> str:
    """The table as a kept partition's COMMENT names it: schema.table, unquoted."""
    return f"{store.table.schema or 'public'}.{store.table.name}"


def grace_until(store: SqlTableStore, cutoff: datetime) -> datetime:
    """When a partition detached by a run of `cutoff` may go: the cutoff plus the grace, on
    the calendar of the policy's timezone (as the function computes it)."""
    grace = store.config.partition_grace
    assert grace is not None
    zone = ZoneInfo(store.policy.timezone)
    local = cutoff.astimezone(zone).replace(tzinfo=None) + parse_period(grace)
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def drop_postgresql(
    store: SqlTableStore,
    parts: list[RangePartition],
    window: RetentionWindow,
    tally: Tally,
    approved: int,
) -> list[tuple[RangePartition, int]]:
    """One transaction, one batch: the table locked against writes, each partition checked
    (with holds: every row of it purgeable, or it stays for the row purge), then each detached
    and dropped, or kept (`store.partition_grace`), by the policy's function where it exists,
    counted as it goes. Returns the partitions detached and the rows each held."""
    parent = store.engine.dialect.identifier_preparer.format_table(store.table)
    keep = store.config.partition_grace is not None
    number = tally.batches + 1
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"LOCK TABLE {parent} IN SHARE MODE")
        # Without a hold every row of a range partition whose bound is at or before the cutoff
        # is past the window (PostgreSQL keeps a NULL key in the DEFAULT partition only): the
        # partition's own count, under the lock, is what the drop deletes.
        chosen: list[tuple[RangePartition, int | None]] = []
        for part in parts:
            if not window.holds:
                chosen.append((part, None))
                continue
            total, ok = _count(store, conn, part, store._purgeable(window))
            if total == ok:
                chosen.append((part, total))
            else:
                log.info(
                    "%s: a partition before the cutoff keeps %d held records: row-purged instead",
                    store.label,
                    total - ok,
                )
        if not chosen:
            return []
        witnesses = (
            store._witnesses(conn, sa.or_(*(sa.and_(*_range(store, p)) for p, _n in chosen)))
            if tally.journal.wants_witnesses and store._opaque_key()
            else None
        )
        function = _function(conn, store)
        if function is not None and function[1] < 4 and keep:
            raise StoreConfigError(
                f"store.partition_grace: {function[0]} predates kept partitions: run "
                "`lifecycle grants` again as the table's owner"
            )
        if (
            function is not None
            and function[1] >= 4
            and not keep
            and _made_with_grace(conn, function[0])
        ):
            raise StoreConfigError(
                f"store.partition_grace: unset, but {function[0]} was made for a grace (it "
                "refuses to drop at once): run `lifecycle grants` again as the table's owner"
            )
        dropped: list[tuple[RangePartition, int]] = []
        for part, expected in chosen:
            if function is not None:
                mode = ", :mode" if function[1] >= 4 else ""
                rows = conn.execute(
                    sa.text(
                        f"SELECT {function[0]}(CAST(:part AS regclass), :cutoff, :expected{mode})"
                    ),
                    {
                        "part": part.name,
                        "cutoff": window.cutoff,
                        "expected": expected,
                        "mode": "keep" if keep else "drop",
                    },
                ).scalar_one()
            else:  # the table's owner
                rows = conn.exec_driver_sql(f"SELECT count(*) FROM {part.name}").scalar_one()
                conn.exec_driver_sql(f"ALTER TABLE {parent} DETACH PARTITION {part.name}")
                if keep:
                    note = _kept_note(store, window.cutoff, int(rows))
                    conn.exec_driver_sql(f"COMMENT ON TABLE {part.name} IS '{note}'")
                else:
                    conn.exec_driver_sql(f"DROP TABLE {part.name}")
            dropped.append((part, int(rows)))
        reached = tally.deleted + sum(n for _p, n in dropped)
        store._before_commit(number, reached, approved, tally, witnesses)
    return dropped


def _kept_note(store: SqlTableStore, cutoff: datetime, rows: int) -> str:
    """A kept partition's COMMENT (as the function writes it): names, instants and a count,
    never a value of a row; no quote in it (the names are plain identifiers)."""
    info = {
        "policy": store.policy.name,
        "parent": _parent_name(store),
        "cutoff": cutoff.astimezone(UTC).isoformat(),
        "until": grace_until(store, cutoff).isoformat(),
        "rows": rows,
    }
    return KEPT + json.dumps(info)


def kept_tables(conn: sa.Connection, store: SqlTableStore) -> list[tuple[str, datetime]]:
    """This policy's kept partitions of this table: (table, until), from the catalog (readable
    by any role); a COMMENT that is not ours is not read."""
    found = conn.execute(
        sa.text(
            "SELECT CAST(c.oid AS regclass)::text, d.description FROM pg_description d "
            "JOIN pg_class c ON c.oid = d.objoid AND d.classoid = CAST('pg_class' AS regclass) "
            "AND d.objsubid = 0 WHERE c.relkind = 'r' AND d.description LIKE :kept"
        ),
        {"kept": KEPT + "%"},
    ).all()
    kept = []
    for table, description in found:
        try:
            info = json.loads(description[len(KEPT) :])
            until = datetime.fromisoformat(info["until"])
        except (ValueError, KeyError, TypeError):
            continue
        if info.get("policy") == store.policy.name and info.get("parent") == _parent_name(store):
            kept.append((table, until))
    return sorted(kept, key=lambda found: found[1])


def drop_kept(store: SqlTableStore, window: RetentionWindow) -> int:
    """Drop this policy's kept partitions whose grace has ended by the run's cutoff (through
    the policy's function where it exists), in one transaction; how many went. Their rows were
    purged, counted and journaled when they were detached: this deletes no row of the table."""
    with store.engine.begin() as conn:
        due = [table for table, until in kept_tables(conn, store) if until <= window.cutoff]
        if not due:
            return 0
        function = _function(conn, store)
        for table in due:
            if function is not None and function[1] >= 4:
                conn.execute(
                    sa.text(f"SELECT {function[0]}(CAST(:t AS regclass), :cutoff, NULL, :mode)"),
                    {"t": table, "cutoff": window.cutoff, "mode": "drop_kept"},
                )
            else:  # the table's owner
                conn.exec_driver_sql(f"DROP TABLE {table}")
    log.info("%s: %d kept partitions dropped, their grace over", store.label, len(due))
    return len(due)


def drop_function_sql(policy: Policy, role: str) -> list[str]:
    """The PostgreSQL function the table's owner creates for a policy with `store.partitions:
    drop` (`lifecycle grants`), and the right of `role` to call it. `mode` 'drop' (or 'keep',
    with `store.partition_grace`) detaches one partition of the policy's table and drops it
    (or keeps it, its COMMENT saying until when): only a leaf range partition of it whose upper
    bound is at or before the `cutoff` it is given, and only when it holds exactly the
    `expected` rows (when given: the caller counted them with the holds). 'drop_kept' drops a
    table that this function kept for this policy and table, once the `cutoff` has reached the
    end of its grace. Every mode refuses a cutoff later than now minus the policy's period
    (wall clock, in the policy's timezone). It returns the rows it detached or dropped."""
    from lifecycle.stores.sql_config import SqlStore

    store = policy.store
    assert isinstance(store, SqlStore)
    schema, _, table = store.table.rpartition(".")
    schema = schema or "public"
    fn = f'"{schema}"."{function_name(policy)}"'
    parent = f'"{schema}"."{table}"'
    column = store.timestamp or ""
    period = policy.retention.period
    tz = policy.timezone
    grace = f"interval '{store.partition_grace}'" if store.partition_grace else "NULL"
    body = f"""
DECLARE
  parent constant regclass := '{parent}'::regclass;
  latest timestamptz := ((now() AT TIME ZONE '{tz}') - interval '{period}') AT TIME ZONE '{tz}';
  grace constant interval := {grace};
  bound text;
  upper_bound timestamptz;
  note text;
  info jsonb;
  n bigint;
BEGIN
  IF cutoff IS NULL OR cutoff > latest THEN
    RAISE EXCEPTION 'cutoff after now minus the period {period}' USING ERRCODE = '42501';
  END IF;
  IF mode = 'drop_kept' THEN
    -- Only a table this function kept, for this policy and table (a COMMENT needs the
    -- table's ownership), no partition again, once the cutoff has reached its grace's end.
    note := obj_description(part, 'pg_class');
    IF note LIKE '{KEPT}%' THEN
      info := CAST(substr(note, {len(KEPT) + 1}) AS jsonb);
    END IF;
    IF info IS NULL OR info->>'policy' IS DISTINCT FROM '{policy.name}'
       OR info->>'parent' IS DISTINCT FROM '{schema}.{table}'
       OR EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = part OR inhparent = part)
       OR NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = part AND relkind = 'r') THEN
      RAISE EXCEPTION 'not a partition kept for this policy' USING ERRCODE = '42501';
    END IF;
    IF CAST(info->>'until' AS timestamptz) > cutoff THEN
      RAISE EXCEPTION 'kept partition still in its grace period' USING ERRCODE = '42501';
    END IF;
    EXECUTE format('SELECT count(*) FROM %s', part) INTO n;
    EXECUTE format('DROP TABLE %s', part);
    RETURN n;
  END IF;
  -- 'drop' where the policy keeps partitions would skip its grace; 'keep' needs one.
  IF mode IS NULL OR mode NOT IN ('drop', 'keep') OR (mode = 'keep' AND grace IS NULL)
     OR (mode = 'drop' AND grace IS NOT NULL) THEN
    RAISE EXCEPTION 'mode % refused for this policy', mode USING ERRCODE = '42501';
  END IF;
  IF NOT EXISTS (
    SELECT 1 FROM pg_partitioned_table p JOIN pg_attribute a
      ON a.attrelid = p.partrelid AND a.attname = '{column}'
    WHERE p.partrelid = parent AND p.partstrat = 'r' AND p.partnatts = 1
      AND p.partattrs[0] = a.attnum
  ) THEN
    RAISE EXCEPTION 'not range-partitioned on {column}' USING ERRCODE = '42501';
  END IF;
  SELECT pg_get_expr(c.relpartbound, c.oid) INTO bound
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent AND i.inhrelid = part AND c.relkind = 'r';
  IF bound IS NULL THEN
    RAISE EXCEPTION 'not a partition of %', parent USING ERRCODE = '42501';
  END IF;
  upper_bound := CAST(substring(bound FROM ' TO \\(''(.*)''\\)$') AS timestamptz);
  IF upper_bound IS NULL OR upper_bound > cutoff THEN
    RAISE EXCEPTION 'partition bound after the cutoff' USING ERRCODE = '42501';
  END IF;
  EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, part);
  EXECUTE format('SELECT count(*) FROM %s', part) INTO n;
  IF expected IS NOT NULL AND n <> expected THEN
    RAISE EXCEPTION 'partition holds % rows, % counted', n, expected USING ERRCODE = '40001';
  END IF;
  IF mode = 'keep' THEN
    EXECUTE format('COMMENT ON TABLE %s IS %L', part, '{KEPT}' || jsonb_build_object(
      'policy', '{policy.name}', 'parent', '{schema}.{table}', 'cutoff', cutoff,
      'until', ((cutoff AT TIME ZONE '{tz}') + grace) AT TIME ZONE '{tz}', 'rows', n)::text);
    RETURN n;
  END IF;
  EXECUTE format('DROP TABLE %s', part);
  RETURN n;
END"""
    arguments = "regclass, timestamptz, bigint, text"
    return [
        # The three-argument function of earlier versions: replaced, not overloaded.
        f"DROP FUNCTION IF EXISTS {fn}(regclass, timestamptz, bigint)",
        f"CREATE OR REPLACE FUNCTION {fn}(part regclass, cutoff timestamptz, expected bigint, "
        "mode text DEFAULT 'drop') RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' "
        f"AS $lifecycle${body}$lifecycle$",
        f"REVOKE ALL ON FUNCTION {fn}({arguments}) FROM PUBLIC",
        f'GRANT EXECUTE ON FUNCTION {fn}({arguments}) TO "{role}"',
    ]
