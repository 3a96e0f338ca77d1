"""The engine's errors: permanent ones, which no retry can fix, fail a task at once (the DAG
factory catches the base class); every other error of a store is transient and retried.

Messages name files, fields, settings and counts, never a record's value.
"""

from __future__ import annotations


class PermanentError(Exception):
    """Configuration, a client's settings, a purge limit, a missing approval: fail at once."""


class NotApproved(PermanentError, RuntimeError):
    """A delete task found no approval for its run in the deletion ledger."""
