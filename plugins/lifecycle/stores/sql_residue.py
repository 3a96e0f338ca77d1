"""Residual copies (issue 15): what a purge leaves in the database beside the live rows, and,
where the policy asks for it (`store.residue: remove`), its removal after the purge.

Found: PostgreSQL's dead tuples (from the table's statistics), the history rows of a MariaDB
system-versioned table, SQLite's free pages; each database's `Dialect` counts and removes its
own (`lifecycle.stores.sql_dialects`). The result goes into the verification's summary as
`residue`: the counts found, and with removal `removed` and `after` (counts), or
`removal_error` (an error class and a message naming the table and what it needs, never a
value). A removal that fails never fails the run, whose records are gone and verified; the
audit row's reasons say it (`lifecycle.audit`).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from lifecycle.stores.sql_dialects import Dialect, ResidueNotRemoved

log = logging.getLogger(__name__)


def residue(
    engine: sa.Engine,
    table: sa.Table,
    dialect: Dialect,
    label: str,
    *,
    remove: bool,
    purgeable: sa.ColumnElement[bool],
) -> dict[str, Any]:
    """The residue found after the purge and, with `remove`, what was removed and what is left.
    `purgeable` is the policy's predicate: a version of a record it does not hold (MariaDB's
    history) is never removed."""
    try:
        with engine.connect() as conn:
            found = dialect.residue(conn, table)
    except sa.exc.DBAPIError as exc:  # a role that may not read the statistics
        found = {"unknown": type(exc.orig).__name__}
    if not remove:
        return found
    try:
        removed, after = dialect.remove_residue(engine, table, found, purgeable)
    except ResidueNotRemoved as exc:
        error = f"{exc.kind}: {exc}"
    except sa.exc.DBAPIError as exc:  # the database's message can quote values: its class only
        orig = exc.orig
        code = getattr(orig, "sqlstate", None) or (
            orig.args[0] if orig is not None and orig.args else None
        )
        error = (
            f"{type(orig).__name__} (code {code}): removing the residue of {table.name} was "
            "refused; the database's own message is withheld"
        )
    else:
        log.info("%s: residue removed: %s; left: %s", label, removed, after)
        return {**found, "removed": removed, "after": after}
    log.warning("%s: residue not removed: %s", label, error)
    return {**found, "removal_error": error}
