"""A subject's records in SQL: the one way the engine finds "this person's records" in a table.

The policy maps each subject to links (`SubjectLink`): a column of the record's table, followed
through linked tables in the database with nested EXISTS, as the event joins are. A value matches
in canonical form (see `lifecycle.subjects`): keys as the column's type, e-mail addresses
trimmed and case-insensitive, phone numbers by their E.164 form. Stored phone numbers may be
formatted any way (`+31 6 12345678`, `06-12345678`); the stored spellings of a held number are
found once per hold set (a LIKE on its digits, each candidate canonicalised with `phonenumbers`)
and then matched exactly, so the purge's predicate stays an index-friendly IN list.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from lifecycle import subjects as canon
from lifecycle.stores import Hold, StoreConfigError

if TYPE_CHECKING:
    from lifecycle.stores.sql_config import SqlStore


@dataclass(frozen=True)
class _Hop:
    table: Any  # an aliased sa.Table
    key: sa.ColumnElement[Any]
    column: sa.ColumnElement[Any]


@dataclass(frozen=True)
class ResolvedLink:
    column: sa.ColumnElement[Any]  # the record's own column
    hops: tuple[_Hop, ...]

    @property
    def final(self) -> tuple[Any, sa.ColumnElement[Any]]:
        """The table and column holding the subject's value."""
        return (self.hops[-1].table, self.hops[-1].column) if self.hops else (None, self.column)


def hold_value(hold: Hold) -> str:
    """A hold's value in canonical form; as stored (trimmed) when it has none (a hold placed
    before canonical forms existed, or a value of no known form): it then matches exactly."""
    return canon.canonical_or_none(hold.subject, hold.value) or hold.value.strip()


class SubjectMatcher:
    """Predicates "this row belongs to one of these subject values", for one table."""

    def __init__(
        self,
        table: sa.Table,
        config: SqlStore,
        reflect: Callable[[str, str], sa.Table],
        column: Callable[[Any, str, str], sa.Column[Any]],
        connect: Callable[[], Any],
    ):
        self.table = table
        self._connect = connect
        self._phone_spellings: dict[tuple[str, str, str], list[str]] = {}
        self.links: dict[str, list[ResolvedLink]] = {}
        for subject, links in config.subject_links().items():
            resolved = []
            for n, link in enumerate(links):
                field = f"store.subjects.{subject}"
                hops = []
                for h, hop in enumerate(link.through):
                    linked = reflect(hop.table, f"{field}.through.table").alias(
                        f"link_{subject}_{n}_{h}"
                    )
                    hops.append(
                        _Hop(
                            linked,
                            column(linked, hop.key, f"{field}.through.key"),
                            column(linked, hop.column, f"{field}.through.column"),
                        )
                    )
                resolved.append(ResolvedLink(column(table, link.column, field), tuple(hops)))
            self.links[subject] = resolved
        self._check_no_self_links()

    def _check_no_self_links(self) -> None:
        for subject, links in self.links.items():
            for link in links:
                if any(hop.table.element.fullname == self.table.fullname for hop in link.hops):
                    raise StoreConfigError(
                        f"store.subjects.{subject}: a link through the record's own table "
                        f"{self.table.fullname!r} is not supported"
                    )

    @property
    def subjects(self) -> set[str]:
        return set(self.links)

    def matches(self, subject: str, values: Iterable[str]) -> sa.ColumnElement[bool]:
        """Rows reaching any of `values` (canonical) of `subject` through any of its links.
        False where the subject is not mapped; never NULL (a NULL column matches nothing)."""
        values = sorted(set(values))
        if not values or subject not in self.links:
            return sa.false()
        return sa.or_(*(self._through(subject, link, values) for link in self.links[subject]))

    def _through(
        self, subject: str, link: ResolvedLink, values: list[str]
    ) -> sa.ColumnElement[bool]:
        table, final_column = link.final
        condition = self._value_match(subject, table, final_column, values)
        # From the last hop back: EXISTS (hop_i WHERE hop_i.key = previous column AND ...).
        for index in range(len(link.hops) - 1, -1, -1):
            hop = link.hops[index]
            previous = link.column if index == 0 else link.hops[index - 1].column
            condition = sa.exists().where(hop.key == previous, condition)
        return condition

    def _value_match(
        self, subject: str, table: Any, column: sa.ColumnElement[Any], values: list[str]
    ) -> sa.ColumnElement[bool]:
        kind = canon.kind_of(subject)
        match: sa.ColumnElement[bool]
        if kind == "email":
            match = sa.func.lower(sa.func.trim(column)).in_(values)
        elif kind == "phone":
            spellings = self._spellings(table, column, values)
            match = column.in_(spellings) if spellings else sa.false()
        else:
            typed = []
            for value in values:
                # A value of another type (text for an integer column) cannot match any row.
                with suppress(ValueError, TypeError):
                    typed.append(coerce(value, column))
            match = column.in_(typed) if typed else sa.false()
        return sa.and_(column.is_not(None), match)

    def _spellings(self, table: Any, column: sa.ColumnElement[Any], values: list[str]) -> list[str]:
        """The stored spellings of held phone numbers in `column` (cached per number)."""
        source = self.table if table is None else table
        found: list[str] = []
        for value in values:
            cache_key = (str(source.name), str(column.key), value)
            if cache_key not in self._phone_spellings:
                self._phone_spellings[cache_key] = self._find_spellings(source, column, value)
            found += self._phone_spellings[cache_key]
        return sorted(set(found))

    def _find_spellings(self, source: Any, column: sa.ColumnElement[Any], value: str) -> list[str]:
        try:
            pattern = canon.stored_phone_candidates_pattern(value)
        except Exception:  # not an E.164 number (a hold stored before canonical forms)
            return [value]
        query = sa.select(column).select_from(source).where(column.like(pattern)).distinct()
        with self._connect() as conn:
            candidates = conn.execute(query).scalars().all()
        return sorted(
            {str(c) for c in candidates if canon.canonical_or_none("phone", str(c)) == value}
            | {value}
        )


def coerce(value: str, column: sa.ColumnElement[Any]) -> Any:
    """A hold value as the column's Python type (holds are stored as text)."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    if python_type is str:
        return value
    if python_type is uuid.UUID:
        return uuid.UUID(value)
    return python_type(value)
