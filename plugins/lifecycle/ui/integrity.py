"""The overview's word on the audit trail's hash chain: intact up to which row, or the first row
that breaks it (lifecycle.chain). A walk of three years of runs takes a second or more, so one
walk stands for a few minutes while the head of the chain stays where it was; a new row (a
moved head) or the end of that time walks it again."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

import sqlalchemy as sa

from lifecycle.chain import Head, Verification, has_chain, read_head, verify

log = logging.getLogger(__name__)

CHECK_EVERY = timedelta(minutes=5)
_checks: dict[str, tuple[datetime, Head | None, Verification]] = {}
_lock = threading.Lock()


def chain_status(engine: sa.Engine, now: datetime) -> Verification | None:
    """The chain's verification, walked again when the head moved or CHECK_EVERY passed; None
    when the UI's role may not read the head (granted before the chain existed)."""
    key = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            head = read_head(conn) if has_chain(conn) else None
        with _lock:
            cached = _checks.get(key)
        if cached and cached[1] == head and now - cached[0] < CHECK_EVERY:
            return cached[2]
        result = verify(engine)
    except sa.exc.DBAPIError as exc:
        log.warning("retention audit: the hash chain is not readable (%s)", type(exc.orig).__name__)
        return None
    with _lock:
        _checks[key] = (now, head, result)
    return result


def forget() -> None:
    """Walk again at the next page (tests; an operator after a repair)."""
    with _lock:
        _checks.clear()
