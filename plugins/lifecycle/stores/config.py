"""What a store kind's config model owns: everything the engine needs to know about its kind.

A store kind is two modules here: `<kind>_config.py`, light (imported when DAG files are parsed),
with its config model, a subclass of `StoreConfig` exported as `CONFIG`; and the implementation
it names in `implementation` (`open_store(policy, connection)` returning a `RetentionStore`).
The registry (`lifecycle.stores.kinds`) finds the config modules by their name; nothing outside
`stores/` branches on a kind: it asks the policy's store config (its hold subjects, how far a
purge may be sliced, its rows of the DAG doc, its asset, the grants it needs, what it requires of
the rest of the policy).
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from lifecycle.fields import Strict

if TYPE_CHECKING:
    from lifecycle.policy import Policy, Retention

READ, DELETE = "SELECT", "DELETE"
# Not an SQL privilege: the right to remove what deleted rows leave behind (`store.residue:
# remove`), which `lifecycle.grants` names per database (MAINTAIN, DELETE HISTORY).
REMOVE_RESIDUE = "REMOVE RESIDUE"
# connection id -> table -> privileges the jobs' role needs there
Needs = dict[str, dict[str, set[str]]]


class StoreConfig(Strict):
    """The base of every store kind's config model (see the module's doc)."""

    kind: str
    conn_id: str

    # The module holding `open_store(policy, connection)`.
    implementation: ClassVar[str]
    # Sections of the generated field reference beyond the model itself (nested models).
    reference_sections: ClassVar[tuple[tuple[str, type[BaseModel]], ...]] = ()

    @classmethod
    def kind_name(cls) -> str:
        (name,) = typing.get_args(cls.model_fields["kind"].annotation)
        return str(name)

    @property
    def location(self) -> str:
        """Where the records are, as the trail and the DAG doc name it (table, URL, path)."""
        raise NotImplementedError

    @property
    def max_slices(self) -> int:
        """The most mapped delete tasks a purge may be split into."""
        return 1

    def hold_subjects(self) -> set[str]:
        """The hold subjects this store's records can be reached by."""
        return set()

    def subjects_doc(self) -> str:
        """How each hold subject reaches the records, for the DAG doc."""
        return "none"

    def time_doc(self, retention: Retention) -> str:
        """Where a record's period starts, for the DAG doc."""
        raise NotImplementedError

    def doc_rows(self) -> list[tuple[str, str]]:
        """The kind's own rows of the DAG doc's table."""
        return []

    def asset_path(self) -> str:
        """The path of the policy's asset URI `retention://<conn_id>/<path>?policy=<name>`."""
        return self.location

    def scope(self) -> tuple[str, ...]:
        """What the store deletes from, normalised for comparison between policies."""
        return (self.kind, self.conn_id.lower(), self.location)

    def overlap(self, other: StoreConfig) -> tuple[str, str, str] | None:
        """Whether `other` deletes from the same records: (what, relation, the records' noun),
        as in "same table t on connection c" "as" (policy ...) ... "table"; None if not."""
        if self.scope() != other.scope():
            return None
        return (f"same {self.location} on connection {self.conn_id}", "as", "store")

    def grants(self, policy: Policy) -> Needs:
        """The privileges the jobs' role needs for this store (`lifecycle grants`)."""
        return {}

    def owner_statements(self, policy: Policy, dialect: str, role: str) -> dict[str, list[str]]:
        """What the owner of the store's tables runs for the jobs' `role` beyond table grants,
        by table, on a database of `dialect` (`lifecycle grants`); none by default."""
        return {}

    def check_policy(self, policy: Policy) -> None:
        """Refuse, with a ValueError naming the field, what the rest of the policy asks and
        this kind cannot do (a `from_event` on objects, say)."""


class HeldByPrefix:
    """For a store kind whose records are named by a key or a path (objects, files): a hold
    names a prefix of it (subject `prefix`), and its time is its own or read from its name."""

    def hold_subjects(self) -> set[str]:
        from lifecycle.subjects import PREFIX_SUBJECT

        return {PREFIX_SUBJECT}


def time_source_text(timestamp: str | BaseModel) -> str:
    """A record's time source for the DAG doc: `mtime`, `last_modified`, or the mapping."""
    return timestamp if isinstance(timestamp, str) else f"`{timestamp.model_dump()}`"
