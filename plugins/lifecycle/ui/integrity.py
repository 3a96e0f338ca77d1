"""The overview's word on the audit trail's hash chain: intact up to which row, or the first row
that breaks it (lifecycle.chain). A walk of three years of runs takes a second or more, longer
than a page may: the first page of a process walks once; after that a page answers with the
last walk and, when the head of the chain moved or CHECK_EVERY passed, starts the next walk in
the background (one at a time), so no page waits for it. `python -m lifecycle audit-verify`
is the full check on demand."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

import sqlalchemy as sa

from lifecycle.chain import Head, Verification, has_chain, read_head, verify

log = logging.getLogger(__name__)

CHECK_EVERY = timedelta(minutes=5)
_checks: dict[str, tuple[datetime, Head | None, Verification]] = {}
_walking: set[str] = set()
_lock = threading.Lock()


def chain_status(engine: sa.Engine, now: datetime) -> Verification | None:
    """The chain's last verification; None when the UI's role may not read the head (granted
    before the chain existed)."""
    key = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            head = read_head(conn) if has_chain(conn) else None
    except sa.exc.DBAPIError as exc:
        log.warning("retention audit: the hash chain is not readable (%s)", type(exc.orig).__name__)
        return None
    with _lock:
        cached = _checks.get(key)
        stale = cached is None or cached[1] != head or now - cached[0] >= CHECK_EVERY
        start = cached is not None and stale and key not in _walking
        if start:
            _walking.add(key)
    if cached is None:
        return _walk(engine, key, now, head)
    if start:
        threading.Thread(
            target=_walk, args=(engine, key, now, head), name="chain-walk", daemon=True
        ).start()
    return cached[2]


def _walk(engine: sa.Engine, key: str, now: datetime, head: Head | None) -> Verification | None:
    try:
        result = verify(engine)
    except sa.exc.DBAPIError as exc:
        log.warning("retention audit: the hash chain is not readable (%s)", type(exc.orig).__name__)
        return None
    finally:
        with _lock:
            _walking.discard(key)
    with _lock:
        _checks[key] = (now, head, result)
    return result


def forget() -> None:
    """Walk again, before answering, at the next page (tests; an operator after a repair)."""
    with _lock:
        _checks.clear()
