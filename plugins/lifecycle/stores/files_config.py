"""The config of the `files` store kind: files under a directory of a mounted file system (the
network share a PBX writes its call recordings to), and what the engine needs to know about the
kind. The store is `lifecycle.stores.files`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, Discriminator, Field, Tag, WithJsonSchema

from lifecycle.fields import MAX_PREFIX_LENGTH, ConnId, KeyPatternTimestamp
from lifecycle.stores.config import HeldByPrefix, Needs, StoreConfig, time_source_text
from lifecycle.subjects import PREFIX_SUBJECT

if TYPE_CHECKING:
    from lifecycle.policy import Policy, Retention

# Segments of one or more characters, none of them `.` or `..`, each ending in `/`; or empty.
DIRECTORY_PATTERN = r"^(?!(.*/)?\.\.?/)([^/\x00]+/)*$"


def _directory(value: str) -> str:
    """A directory relative to the connection's root, spelled one way only: the overlap check
    between policies compares these strings, and `a/./b/` or `a//b/` would hide that two
    policies share `a/b/`; `..` could leave the root altogether."""
    if value.startswith("/"):
        raise ValueError(f"{value!r} must be relative to the connection's root: no leading /")
    if value and not value.endswith("/"):
        raise ValueError(f"{value!r} must end in / (`recordings/`), or be empty (the whole root)")
    segments = value.split("/")[:-1]
    if ".." in segments:
        raise ValueError(f"{value!r} has a `..` segment: the directory must stay under the root")
    if "." in segments or "" in segments or "\x00" in value:
        raise ValueError(f"{value!r} has an empty or `.` segment: write each directory once")
    return value


def _timestamp_source(value: object) -> str | None:
    if isinstance(value, str):
        return "mtime" if value == "mtime" else None
    if isinstance(value, dict) and len(value) == 1 and "key_pattern" in value:
        return "key_pattern"
    return "key_pattern" if isinstance(value, KeyPatternTimestamp) else None


FileTimestamp = Annotated[
    Annotated[Literal["mtime"], Tag("mtime")] | Annotated[KeyPatternTimestamp, Tag("key_pattern")],
    Discriminator(
        _timestamp_source,
        custom_error_type="timestamp_source",
        custom_error_message="unknown timestamp source (expected mtime or {key_pattern: <regex>})",
    ),
]


class FilesStore(HeldByPrefix, StoreConfig):
    """Files under a directory of a mounted file system (a network share), reached through an
    Airflow connection of type `fs` (File (path)) whose extra `path` is the mount's root."""

    kind: Literal["files"] = Field(description="Files on a mounted file system.")
    conn_id: ConnId = Field(
        description="Airflow connection of type `fs` (File (path)); its extra `path` is the "
        "absolute path of the mount's root on the workers."
    )
    directory: Annotated[
        str,
        Field(max_length=MAX_PREFIX_LENGTH),
        AfterValidator(_directory),
        WithJsonSchema(
            {"type": "string", "pattern": DIRECTORY_PATTERN, "maxLength": MAX_PREFIX_LENGTH}
        ),
    ] = Field(
        default="",
        description="The directory under the root, ending in `/` (`recordings/support/`), "
        "without `..`, `.` or a leading `/`; empty: the whole root. Its subdirectories are "
        "walked; symbolic links are never followed nor deleted.",
    )
    timestamp: FileTimestamp = Field(
        default="mtime",
        description="Where a file's time comes from: `mtime` (its modification time) or "
        "`{key_pattern: <regex>}`, named groups year, month, day (optionally hour, minute, "
        "second) searched in the file's path under the root, read in the policy's timezone; "
        "the file counts from the end of the period it names. A file whose time cannot be read "
        "is reported, not deleted.",
    )
    batch_size: int = Field(
        default=1000,
        gt=0,
        le=100_000,
        description="Files deleted per batch: each batch is one entry of the deletion ledger.",
    )

    @property
    def location(self) -> str:
        # Relative to the connection's root, which only the connection knows.
        return f"./{self.directory}"

    # -- what the engine asks of the kind (lifecycle.stores.config) ---------------------------

    implementation: ClassVar[str] = "lifecycle.stores.files"
    reference_sections: ClassVar[tuple[tuple[str, type[BaseModel]], ...]] = ()

    def subjects_doc(self) -> str:
        return f"{PREFIX_SUBJECT} → the file's path under the connection's root"

    def time_doc(self, retention: Retention) -> str:
        return "from the file's time (see below)"

    def doc_rows(self) -> list[tuple[str, str]]:
        source = time_source_text(self.timestamp)
        return [
            ("File time", source),
            ("Deletion", f"unlink, {self.batch_size} files a batch; symbolic links and other "
             "non-regular files are never followed nor deleted (reported)"),
            ("Permissions", "nothing to grant in a database: the workers' OS user needs write "
             "and search permission on the directory and its subdirectories"),
        ]  # fmt: skip

    def asset_path(self) -> str:
        return quote(self.directory, safe="/")

    def scope(self) -> tuple[str, ...]:
        return ("files", self.conn_id.lower(), self.directory)

    def overlap(self, other: StoreConfig) -> tuple[str, str, str] | None:
        if not isinstance(other, FilesStore) or self.scope()[:2] != other.scope()[:2]:
            return None
        mine, theirs = self.directory, other.directory
        if not (mine.startswith(theirs) or theirs.startswith(mine)):
            return None
        what = f"{self.location} on connection {self.conn_id}"
        return (what, f"overlaps {other.location} of", "directory")

    def grants(self, policy: Policy) -> Needs:
        """Nothing in a database: the file permissions are the OS's (see the doc rows)."""
        return {}

    def check_policy(self, policy: Policy) -> None:
        retention = policy.retention
        if retention.from_event is not None:
            raise ValueError(
                "retention.from_event: not available for files stores (a file's period runs "
                "from its own time: store.timestamp)"
            )
        if retention.per_tenant is not None:
            raise ValueError(
                "retention.per_tenant: not available for files stores (one period for every "
                "file of the directory: give each client's directory its own policy)"
            )


CONFIG = FilesStore
