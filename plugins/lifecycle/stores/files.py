"""Files under a directory of a mounted file system (the network share a PBX writes its call
recordings to), reached through an Airflow `fs` connection whose extra `path` is the root.

The directory and its subdirectories are walked with `os.scandir`, one directory open at a time,
streamed: memory holds the subdirectories still to visit and one delete batch, whatever the
number of files. Symbolic links are never followed and never deleted, wherever they point; they,
other non-regular files (pipes, sockets, devices) and files whose time cannot be read are
anomalies: counted, reported, never deleted. Just before a file is unlinked it is looked at
again: a file replaced, touched back into its window or turned into a link since the listing is
left alone, and one already gone is not counted.

A file's path may name a person (a phone number in a recording's name): no path or file name
leaves this module. Logs, errors and results carry counts, the policy name and the configured
directory only; the `OSError`s of the os module, whose messages quote paths, are never re-raised.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from lifecycle.fields import KeyPatternTimestamp, compile_key_pattern
from lifecycle.stores import (
    HORIZON_DAYS,
    NO_JOURNAL,
    Hold,
    Plan,
    PurgeJournal,
    PurgeLimitExceeded,
    PurgeResult,
    RetentionStore,
    RetentionWindow,
    Slice,
    StoreConfigError,
    Verification,
)
from lifecycle.stores.files_config import FilesStore as FilesConfig
from lifecycle.stores.key_dates import end_of_named_period
from lifecycle.subjects import PREFIX_SUBJECT

if TYPE_CHECKING:
    from lifecycle.policy import Policy

log = logging.getLogger(__name__)

INVENTORY_CHUNK = 5_000
PROGRESS_EVERY_SECONDS = 5.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A directory is opened as such and never through a link (the last component; the ones before
# it were walked, or checked when the store was opened).
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# An unlink that fails for these leaves the other files deletable: counted in the result's
# `failed` by code and reported. Any other error (EIO, ESTALE, ENOTCONN: the share is failing)
# stops the purge once the batch's deletions are in the ledger, and the task is retried.
FILE_ERRORS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.EBUSY, errno.ETXTBSY})


class FilesUnavailable(RuntimeError):
    """The file system failed (not one file's permission): transient, the task is retried.
    Its message has the error code and counts, never the path the os module's error quoted."""


def _code(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


@dataclass(frozen=True)
class Listed:
    """One entry of the walk. `path` is in memory only: never logged, raised or returned."""

    path: str  # absolute
    name: str  # relative to the connection's root: what holds and the key pattern see
    moment: datetime | None  # the file's time; None: unreadable (an anomaly)
    regular: bool  # False: a symbolic link, a pipe, a device (an anomaly)
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) when listed

    @property
    def anomaly(self) -> bool:
        return not self.regular or self.moment is None

    def expired(self, cutoff: datetime) -> bool:
        return self.regular and self.moment is not None and self.moment < cutoff


def held_by(name: str, holds: tuple[Hold, ...]) -> int | None:
    """The id of the first prefix hold whose value (a path prefix under the root) covers it."""
    return next(
        (h.id for h in holds if h.subject == PREFIX_SUBJECT and name.startswith(h.value)), None
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


@dataclass
class _Tally:
    """The plan's counts, folded one file at a time (the walk is never kept)."""

    prefixes: dict[int, str]
    total: int = 0
    expired: int = 0
    held: int = 0
    anomalies: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    oldest_retained: datetime | None = None
    held_by_hold: Counter[str] = field(default_factory=Counter)
    reached: set[int] = field(default_factory=set)
    due: Counter[str] = field(default_factory=Counter)  # the forecast: horizon -> files

    def add(self, listed: Listed, cutoff: datetime, hold: int | None) -> None:
        self.total += 1
        self.reached |= {i for i, prefix in self.prefixes.items() if listed.name.startswith(prefix)}
        if listed.anomaly:
            self.anomalies += 1
            return
        moment = listed.moment
        assert moment is not None  # not an anomaly: dated
        if moment >= cutoff:
            self.oldest_retained = min(self.oldest_retained or moment, moment)
            if hold is None:  # expired once the cutoff has moved past it, by then
                self.due.update(str(d) for d in HORIZON_DAYS if moment < cutoff + timedelta(d))
        elif hold is not None:
            self.held += 1
            self.held_by_hold[str(hold)] += 1
        else:
            self.expired += 1
            self.oldest = min(self.oldest or moment, moment)
            self.newest = max(self.newest or moment, moment)

    def plan(self) -> Plan:
        return Plan(
            total=self.total,
            expired=self.expired,
            held=self.held,
            anomalies=self.anomalies,
            oldest_expired=_iso(self.oldest),
            newest_expired=_iso(self.newest),
            oldest_retained=_iso(self.oldest_retained),
            held_by_hold=dict(self.held_by_hold),
            inert_holds=[str(i) for i in sorted(set(self.prefixes) - self.reached)],
            due={str(days): self.due[str(days)] for days in HORIZON_DAYS},
        )


class FilesStore(RetentionStore):
    def __init__(self, policy: Policy, root: Any):
        if not isinstance(policy.store, FilesConfig):
            raise TypeError(f"{policy.name}: store.kind {policy.store.kind!r} is not files")
        self.policy = policy
        self.config = config = policy.store
        self.label = policy.name
        self.zone = ZoneInfo(policy.timezone)
        self.pattern: Any = None  # a compiled re2 pattern (re2 is untyped)
        if isinstance(config.timestamp, KeyPatternTimestamp):
            self.pattern = compile_key_pattern(config.timestamp.key_pattern)
        self.top = self._top(root)

    def _top(self, root: Any) -> str:
        """The directory to walk, checked: the connection gives an absolute root that is there
        (the share mounted), and the directory is under it, reached without a symbolic link."""
        conn, directory = self.config.conn_id, self.config.directory
        if not isinstance(root, str) or not root:
            raise StoreConfigError(
                f"store.conn_id: connection {conn!r} has no `path` in its extra (the absolute "
                "path of the mount's root, as in an Airflow File (path) connection, type fs)"
            )
        if not os.path.isabs(root):
            raise StoreConfigError(
                f"store.conn_id: the `path` of connection {conn!r} is not an absolute path"
            )
        if not os.path.isdir(root):
            raise StoreConfigError(
                f"store.conn_id: the root of connection {conn!r} (its extra `path`) is not a "
                "directory on this worker: is the share mounted?"
            )
        top = os.path.join(root, directory)
        if not os.path.isdir(top):
            raise StoreConfigError(
                f"store.directory: {directory!r} does not exist under the root of connection "
                f"{conn!r} (or is not a directory)"
            )
        if os.path.realpath(top) != os.path.join(os.path.realpath(root), directory).rstrip("/"):
            raise StoreConfigError(
                f"store.directory: {directory!r} is reached through a symbolic link under the "
                f"root of connection {conn!r}: give the real directory"
            )
        return top

    # -- listing ------------------------------------------------------------------------------

    def _walk(self) -> Iterator[Listed]:
        """Every entry under the directory but the subdirectories themselves (walked, one open
        at a time; a link to a directory is an entry, never walked). A subdirectory is opened
        without following a link: one swapped for a link since its parent was read is reported,
        not walked into wherever it points."""
        pending = [(self.top, self.config.directory)]
        while pending:
            path, name = pending.pop()
            try:
                fd = os.open(path, DIRECTORY_FLAGS)
            except OSError as exc:
                if path != self.top and exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    yield Listed(path, name.rstrip("/"), None, regular=False)
                elif path == self.top or not isinstance(exc, FileNotFoundError):
                    raise self._listing_error(exc, path) from None
                continue  # a subdirectory removed since its parent was read: nothing in it
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        full = os.path.join(path, entry.name)
                        if self._is_directory(entry):
                            pending.append((full, f"{name}{entry.name}/"))
                            continue
                        listed = self._listed(entry, full, name + entry.name)
                        if listed is not None:
                            yield listed
            except OSError as exc:
                raise self._listing_error(exc, path) from None
            finally:
                os.close(fd)

    def _listing_error(self, exc: OSError, path: str) -> Exception:
        """What a failed listing raises: the error's code and the configured directory, never
        the path the os module's error quotes."""
        directory, conn = self.config.directory, self.config.conn_id
        if isinstance(exc, FileNotFoundError) and path == self.top:
            return StoreConfigError(
                f"store.directory: {directory!r} is gone from the root of connection {conn!r}"
            )
        if isinstance(exc, PermissionError):
            return StoreConfigError(
                f"store.directory: a directory under {directory!r} cannot be read "
                f"({_code(exc)}): the workers' OS user needs read and search permission on "
                "every subdirectory"
            )
        return FilesUnavailable(f"{self.label}: listing {directory!r} failed ({_code(exc)})")

    @staticmethod
    def _is_directory(entry: os.DirEntry[str]) -> bool:
        try:
            return entry.is_dir(follow_symlinks=False)
        except OSError:
            return False  # then _listed finds out what it is

    def _listed(self, entry: os.DirEntry[str], path: str, name: str) -> Listed | None:
        """The entry with its time, or None when it is gone since the directory was read."""
        try:
            if entry.is_symlink():
                return Listed(path, name, None, regular=False)
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError:
            return Listed(path, name, None, regular=True)  # its time cannot be read
        if not stat.S_ISREG(info.st_mode):
            return Listed(path, name, None, regular=False)
        moment = self._moment(name, info)
        return Listed(path, name, moment, True, (info.st_dev, info.st_ino))

    def _moment(self, name: str, info: os.stat_result) -> datetime | None:
        """The file's time: its mtime (to the microsecond, rounded down: a file a nanosecond
        before a cutoff is still before it), or the end of the period its path names."""
        if self.pattern is not None:
            return end_of_named_period(self.pattern, name, self.zone)
        try:
            return EPOCH + timedelta(microseconds=info.st_mtime_ns // 1000)
        except OverflowError:
            return None

    # -- plan ---------------------------------------------------------------------------------

    def plan(self, window: RetentionWindow) -> Plan:
        prefixes = {h.id: h.value for h in window.holds if h.subject == PREFIX_SUBJECT}
        tally = _Tally(prefixes)
        for listed in self._walk():
            tally.add(listed, window.cutoff, held_by(listed.name, window.holds))
        return tally.plan()

    # -- purge --------------------------------------------------------------------------------

    def _batches(self, window: RetentionWindow) -> Iterator[list[Listed]]:
        batch: list[Listed] = []
        for listed in self._walk():
            if listed.expired(window.cutoff) and held_by(listed.name, window.holds) is None:
                batch.append(listed)
                if len(batch) == self.config.batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    @staticmethod
    def _still_unheld(window: RetentionWindow, batch: list[Listed]) -> list[Listed]:
        """The batch less the files a hold placed since the listing covers: the holds are read
        again before every batch, so a hold placed mid-run protects at once."""
        if window.reload_holds is None:
            return batch
        holds = window.reload_holds()
        return [listed for listed in batch if held_by(listed.name, holds) is None]

    def _unchanged(self, listed: Listed, cutoff: datetime) -> bool:
        """Whether the file is still the one listed and still expired (raises OSError)."""
        info = os.lstat(listed.path)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != listed.identity:
            return False  # replaced, or turned into a link, since the listing
        moment = self._moment(listed.name, info)
        return moment is not None and moment < cutoff

    def _unlink(
        self, batch: list[Listed], cutoff: datetime
    ) -> tuple[int, Counter[str], str | None]:
        """Delete one batch: how many files went, the codes of those that could not go, and
        the code of an error that stops the purge (None: the batch went through)."""
        gone, left = 0, 0
        failed: Counter[str] = Counter()
        for listed in batch:
            try:
                if not self._unchanged(listed, cutoff):
                    left += 1
                    continue
                os.unlink(listed.path)
            except FileNotFoundError:
                continue  # vanished since the listing: not ours to count
            except OSError as exc:
                if exc.errno not in FILE_ERRORS:
                    return gone, failed, _code(exc)
                failed[_code(exc)] += 1
                continue
            gone += 1
        if left:
            log.info("%s: %d files changed since the listing were left alone", self.label, left)
        return gone, failed, None

    def purge(
        self,
        window: RetentionWindow,
        *,
        approved: int,
        in_slice: Slice | None = None,
        journal: PurgeJournal | None = None,
    ) -> PurgeResult:
        journal = journal or NO_JOURNAL
        if in_slice is not None and not in_slice.whole:
            raise ValueError(f"{self.label}: a files store purges as one slice")
        started = last_report = time.perf_counter()
        deleted = submitted = batches = 0
        errors: Counter[str] = Counter()
        for listed in self._batches(window):
            batch = self._still_unheld(window, listed)
            if not batch:
                continue
            if submitted + len(batch) > approved:
                raise PurgeLimitExceeded(
                    f"{self.label}: the purge found {submitted + len(batch)} files to delete, "
                    f"more than the {approved} approved by the check; stopped before deleting "
                    "them, run again"
                )
            batches += 1
            journal.before(batches, len(batch))  # at most: a file may fail or be gone
            gone, failed, stopped = self._unlink(batch, window.cutoff)
            journal.after(batches, gone)
            deleted, submitted, errors = deleted + gone, submitted + len(batch), errors + failed
            if stopped is not None:
                raise FilesUnavailable(
                    f"{self.label}: deleting batch {batches} failed ({stopped}) after {gone} of "
                    f"its {len(batch)} files; {deleted} files deleted in all, each batch in the "
                    "ledger"
                )
            now = time.perf_counter()
            if now - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = now
                self._log_progress(batches, deleted, now - started)
        seconds = time.perf_counter() - started
        self._log_progress(batches, deleted, seconds, final=True)
        if errors:
            log.warning(
                "%s: %d files not deleted: %s",
                self.label,
                sum(errors.values()),
                ", ".join(f"{code} x{n}" for code, n in errors.most_common()),
            )
        return PurgeResult(
            deleted=deleted, batches=batches, seconds=round(seconds, 3), failed=dict(errors)
        )

    def _log_progress(self, batches: int, files: int, seconds: float, final: bool = False) -> None:
        log.info(
            "%s %s: %d batches, %d files, %.0f files/s",
            self.label,
            "purge done" if final else "purging",
            batches,
            files,
            files / seconds if seconds > 0 else 0.0,
        )

    # -- verify -------------------------------------------------------------------------------

    def verify(self, window: RetentionWindow) -> Verification:
        """Great Expectations on an inventory of what remains, chunk by chunk: per file, the
        seconds from the cutoff to its time (None for held files and anomalies). A negative
        value is an unheld expired file left behind. Only numbers reach GX, never a path."""
        from lifecycle.verification import verify_inventory

        def chunks() -> Iterator[list[float | None]]:
            chunk: list[float | None] = []
            for listed in self._walk():
                if listed.moment is None or held_by(listed.name, window.holds) is not None:
                    chunk.append(None)  # an anomaly (never dated) or held
                else:
                    chunk.append((listed.moment - window.cutoff).total_seconds())
                if len(chunk) == INVENTORY_CHUNK:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

        return verify_inventory(
            chunks(), label=self.label, held=len(window.holds), unit="files", also_excepted=""
        )


def open_store(policy: Policy, connection: Any) -> FilesStore:
    """The store of a files policy: the root is the connection's extra `path` (Airflow's
    FSHook reads it there too)."""
    extra = connection.extra_dejson or {}
    return FilesStore(policy, extra.get("path"))
