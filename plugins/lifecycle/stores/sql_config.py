"""The config of the `sql` store kind: a table in a relational database (SQLAlchemy), and
what the engine needs to know about the kind. The store itself is `lifecycle.stores.sql`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator

from lifecycle.fields import NAME_PATTERN, ConnId, Identifier, Period, QualifiedTable, Strict
from lifecycle.stores.config import DELETE, READ, REMOVE_RESIDUE, Needs, StoreConfig

if TYPE_CHECKING:
    from lifecycle.policy import Policy, Retention


class LinkHop(Strict):
    """One step of a subject link: the previous column's value is this table's `key`; the
    subject (or the next step) is in this table's `column`."""

    table: QualifiedTable = Field(description="The linked table, e.g. `subscribers`.")
    key: Identifier = Field(description="Its column the previous column refers to (e.g. `id`).")
    column: Identifier = Field(description="Its column that leads on (e.g. `customer_id`).")


class SubjectLink(Strict):
    """How a record reaches a subject: its own `column`, followed `through` linked tables,
    resolved in the database (`cdrs.subscriber_id -> subscribers.id`, `subscribers.customer_id`
    is the customer)."""

    column: Identifier = Field(description="The record's column the link starts from.")
    through: list[LinkHop] = Field(
        default_factory=list,
        max_length=4,
        description="Linked tables, in order; empty: the column holds the subject itself.",
    )


class SqlStore(StoreConfig):
    """A table in a relational database reached through an Airflow connection."""

    kind: Literal["sql"] = Field(description="A relational database table.")
    conn_id: ConnId = Field(description="Airflow connection to the database.")
    table: QualifiedTable = Field(description="Table, optionally schema-qualified.")
    key: Identifier = Field(description="Primary key column (integer, uuid or text).")
    timestamp: Identifier | None = Field(
        default=None,
        description="Column the period runs from: timestamptz, or a naive timestamp in UTC. "
        "Required unless `retention.from_event` is set.",
    )
    null_timestamp: Literal["anomaly", "active"] = Field(
        default="anomaly",
        description=(
            "What a NULL timestamp means. `anomaly`: reported, never deleted. `active`: the "
            "period has not started yet (an open ticket), kept and counted as active."
        ),
    )
    batch_size: int = Field(
        default=50_000, gt=0, le=1_000_000, description="Rows deleted per transaction."
    )
    slices: int = Field(
        default=4,
        ge=1,
        le=64,
        # `shards`, its former name, is still read.
        validation_alias=AliasChoices("slices", "shards"),
        description="Most parallel delete tasks a purge is split into (mapped tasks that spread "
        "over the workers), of about equal expired rows, two batches at least (the last may be "
        "smaller); fewer when less is expired. On PostgreSQL 14+: contiguous ranges of blocks, "
        "whatever the key. Elsewhere: contiguous, non-overlapping ranges of an integer or UUID "
        "`key`; tables with other key types purge in one task there (their key values could be "
        "personal data, and range bounds travel through XCom). Formerly `shards` (still read).",
    )
    residue: Literal["report", "remove"] = Field(
        default="report",
        description="What to do, after each purge, with the copies of the deleted rows the "
        "database still keeps beside the live ones: PostgreSQL's dead tuples (until VACUUM), "
        "the history rows of a MariaDB system-versioned table (until DELETE HISTORY), SQLite's "
        "free pages. `report`: count them in the run's evidence, leave them to the database. "
        "`remove`: also remove them: PostgreSQL runs `VACUUM (INDEX_CLEANUP ON)` on the table "
        "(needs MAINTAIN on it, PostgreSQL 17+, or the table's owner before 17); MariaDB runs "
        "`DELETE HISTORY` (needs the DELETE HISTORY privilege), up to the first version of a "
        "record still inside its window or under a hold, which it keeps with all later history; "
        "SQLite deletes with `secure_delete` on and runs `VACUUM` (rewrites the whole file). "
        "`lifecycle grants` gives the privilege. A removal that fails is reported in the run's "
        "evidence and reasons; the purge and its verification stand.",
    )
    partitions: Literal["delete", "drop"] = Field(
        default="delete",
        description="On a table range-partitioned on `timestamp` (PostgreSQL `PARTITION BY "
        "RANGE (ts)`; MariaDB `PARTITION BY RANGE` on `TO_DAYS(ts)`, `UNIX_TIMESTAMP(ts)` or "
        "`RANGE COLUMNS(ts)`). `delete`: rows are deleted in batches, as in any table. `drop`: "
        "a partition whose upper bound is at or before the cutoff and whose every row may go "
        "(none held, none without a usable timestamp) is dropped whole, counted as one batch; "
        "the others, the straddling one included, are row-purged. The jobs' role drops through "
        "a SECURITY DEFINER function (PostgreSQL) or procedure (MariaDB, with LOCK TABLES) "
        "that `lifecycle grants` has the table's owner create: it refuses any partition whose "
        "bound is after the cutoff, and any cutoff later than now minus the period. Needs the "
        "record's own `timestamp` and one cutoff (no `retention.from_event`, no "
        "`retention.per_tenant`).",
    )
    partition_grace: Period | None = Field(
        default=None,
        description="With `partitions: drop`: an expired partition leaves the table (its rows "
        "leave it then: the purge, counted and journaled as such) and is kept as a standalone "
        "table for this ISO 8601 duration (P7D) instead of dropped at once, then dropped by the "
        "first run after the grace. PostgreSQL detaches it and its COMMENT names the policy "
        "and `until`, the run's cutoff plus the grace, which a later run's cutoff must reach; "
        "MariaDB (10.7+) converts it to a table named `lck_<digest>_<until>_<partition>`, "
        "`until` the database's clock plus the grace, which that clock must pass (partition "
        "names of 36 characters at most). "
        "Through the routine of `lifecycle grants`, a changed grace needs `lifecycle grants` "
        "again (the routine fixes it). Unset: dropped at once. A kept table is outside the "
        "table: an erasure or a hold no longer reaches its rows.",
    )
    subjects: dict[
        Annotated[str, Field(pattern=NAME_PATTERN)],
        Identifier | SubjectLink | list[Identifier | SubjectLink],
    ] = Field(
        default_factory=dict,
        description="How the records reach each subject (hold subjects, data-subject requests): "
        "a column, a list of columns, or a link through other tables, e.g. `{phone: [caller, "
        "callee], customer: {column: subscriber_id, through: [{table: subscribers, key: id, "
        "column: customer_id}]}}`: a hold on subject `customer` with value V keeps every row "
        "whose subscriber belongs to customer V. Values compare in canonical form: `phone` as "
        "E.164, `email` case-insensitively, other subjects as keys.",
    )

    @field_validator("table")
    @classmethod
    def _not_protected(cls, value: str) -> str:
        # The audit trail, the holds, Airflow's metadata and system catalogs are never a purge
        # target (checked again at run time on the resolved database).
        from lifecycle.protected import protected_table_problem

        problem = protected_table_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def subject_links(self) -> dict[str, list[SubjectLink]]:
        """Every subject as links (a plain column is a link with no hops)."""
        links: dict[str, list[SubjectLink]] = {}
        for subject, spec in self.subjects.items():
            items = spec if isinstance(spec, list) else [spec]
            links[subject] = [
                SubjectLink(column=item) if isinstance(item, str) else item for item in items
            ]
        return links

    def subject_columns(self) -> dict[str, list[str]]:
        """The record's own columns each subject starts from."""
        return {s: [link.column for link in ls] for s, ls in self.subject_links().items()}

    def link_tables(self) -> list[str]:
        """The tables the subject links read through (the jobs' role needs SELECT on them)."""
        links = [link for links in self.subject_links().values() for link in links]
        return sorted({hop.table for link in links for hop in link.through})

    @property
    def location(self) -> str:
        return self.table

    # -- what the engine asks of the kind (lifecycle.stores.config) ---------------------------

    implementation: ClassVar[str] = "lifecycle.stores.sql"
    reference_sections: ClassVar[tuple[tuple[str, type[BaseModel]], ...]] = (
        ("A link of `store.subjects` (sql)", SubjectLink),
        ("A step of a link's `through`", LinkHop),
    )

    @property
    def max_slices(self) -> int:
        return self.slices

    def hold_subjects(self) -> set[str]:
        return set(self.subjects)

    def subjects_doc(self) -> str:
        def link_text(link: SubjectLink) -> str:
            hops = "".join(f" → `{hop.table}.{hop.key}`, `{hop.column}`" for hop in link.through)
            return f"`{link.column}`{hops}"

        text = "; ".join(
            f"{subject} → " + ", ".join(link_text(link) for link in links)
            for subject, links in self.subject_links().items()
        )
        return text or "none"

    def time_doc(self, retention: Retention) -> str:
        event = retention.from_event
        if event is None:
            return f"from `{self.timestamp}`"
        if event.table is None:
            return f"from the event `{event.timestamp}` (NULL: not yet, kept)"
        return (
            f"from the latest `{event.table}.{event.timestamp}` of the record's "
            f"`{event.subject}` (= `{event.key}`); a running one (NULL) keeps it"
        )

    def doc_rows(self) -> list[tuple[str, str]]:
        return [
            ("Key", f"`{self.key}`, {self.batch_size} rows per batch"),
            ("NULL timestamp", self.null_timestamp),
        ]

    def scope(self) -> tuple[str, ...]:
        # Connection ids compare case-insensitively (AIRFLOW_CONN_<ID> is upper case either
        # way), SQL names too (unquoted identifiers fold); a bare table is in `public`.
        table = self.table.lower()
        return ("sql", self.conn_id.lower(), table if "." in table else f"public.{table}")

    def overlap(self, other: StoreConfig) -> tuple[str, str, str] | None:
        if self.scope() != other.scope():
            return None
        return (f"same table {self.table} on connection {self.conn_id}", "as", "table")

    def grants(self, policy: Policy) -> Needs:
        from lifecycle.protected import protected_table_problem

        problem = protected_table_problem(self.table)
        if problem is not None:
            raise ValueError(f"store.table: {problem}")
        tables: dict[str, set[str]] = {self.table: {READ, DELETE}}
        if self.residue == "remove":  # VACUUM / DELETE HISTORY, on this table alone
            tables[self.table].add(REMOVE_RESIDUE)
        event = policy.retention.from_event
        if event is not None and event.table is not None:
            tables.setdefault(event.table, set()).add(READ)
        for linked in self.link_tables():  # subject links: read, never deleted
            tables.setdefault(linked, set()).add(READ)
        return {self.conn_id: tables}

    def owner_statements(self, policy: Policy, dialect: str, role: str) -> dict[str, list[str]]:
        """`partitions: drop`: what the table's owner creates so that the role drops this
        table's expired partitions and nothing else: PostgreSQL's SECURITY DEFINER function
        (`lifecycle.stores.sql_partitions`), MariaDB's SQL SECURITY DEFINER procedure
        (`lifecycle.stores.sql_partitions_mariadb`)."""
        if self.partitions != "drop":
            return {}
        if dialect == "postgresql":
            from lifecycle.stores.sql_partitions_postgresql import drop_function_sql

            return {self.table: drop_function_sql(policy, role)}
        if dialect in ("mysql", "mariadb"):
            from lifecycle.stores.sql_partitions_mariadb import procedure_sql

            return {self.table: procedure_sql(policy, role)}
        return {}

    def check_policy(self, policy: Policy) -> None:
        retention = policy.retention
        if retention.per_tenant is not None and retention.per_tenant.column is None:
            raise ValueError("retention.per_tenant.column: required for sql stores")
        if self.timestamp is None and retention.from_event is None:
            raise ValueError("store.timestamp: required unless retention.from_event is set")
        if self.partitions == "drop" and (
            retention.from_event is not None or retention.per_tenant is not None
        ):
            raise ValueError(
                "store.partitions: drop needs the record's own timestamp and one cutoff: not "
                "with retention.from_event or retention.per_tenant (use delete)"
            )
        if self.partition_grace is not None and self.partitions != "drop":
            raise ValueError(
                "store.partition_grace: only with store.partitions: drop (it is how long a "
                "dropped partition is kept first): set partitions: drop or remove it"
            )
        if self.timestamp is not None and retention.from_event is not None:
            raise ValueError(
                "store.timestamp: not used with retention.from_event (the event column is the "
                "timestamp): remove one of them"
            )


CONFIG = SqlStore
