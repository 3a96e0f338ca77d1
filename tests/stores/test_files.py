"""The files store on real directories: exact survivors around the cutoff, dates in paths,
holds by path prefix, the purge limit and the ledger's calls, links never followed, and no path
in a log, an error or a result (a recording's name may be a phone number)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airflow.sdk import Connection

from lifecycle.policy import Policy
from lifecycle.stores import Hold, PurgeLimitExceeded, RetentionWindow, StoreConfigError
from lifecycle.stores.files import FilesStore, FilesUnavailable, open_store
from tests.policies import make_policy

CUTOFF = datetime(2026, 8, 31, 22, 0, tzinfo=UTC)  # 1 September 00:00 in Amsterdam
ONE_US = timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PHONE = "+31612345678"
DAY_PATTERN = r"(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/"


def files_policy(directory="recordings/", timestamp="mtime", batch_size=2, **store) -> Policy:
    """The S3 base policy (P90D, legitimate interest) on a files store instead."""
    return make_policy(
        "s3",
        name="pbx_recordings",
        title="PBX call recordings",
        store={
            "kind": "files",
            "conn_id": "pbx_share",
            "directory": directory,
            "timestamp": timestamp,
            "batch_size": batch_size,
            **store,
        },
    )


def ns(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_US * 1000


def write(root: Path, name: str, at: datetime | int | None = None) -> Path:
    """A file `name` under `root`, its mtime `at` (a datetime, or nanoseconds); None: now."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF....WAVE")
    if at is not None:
        stamp = at if isinstance(at, int) else ns(at)
        os.utime(path, ns=(stamp, stamp))
    return path


def survivors(root: Path) -> list[str]:
    """Every file, link and special file left under `root` (links not followed)."""
    found = []
    for folder, dirs, files in os.walk(root):  # os.walk lists a link to a directory in dirs
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


class Journal:
    """A deletion ledger that remembers its calls."""

    wants_witnesses = False

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def before(self, batch, expected, witnesses=None):
        self.calls.append(("before", batch, expected))

    def after(self, batch, deleted):
        self.calls.append(("after", batch, deleted))


def test_exact_survivors_a_microsecond_either_side_of_the_cutoff(tmp_path):
    write(tmp_path, "recordings/a.wav", CUTOFF - ONE_US)  # expired
    write(tmp_path, "recordings/b.wav", CUTOFF)  # exactly the cutoff: kept
    write(tmp_path, "recordings/c.wav", CUTOFF + ONE_US)  # kept
    write(tmp_path, "recordings/d.wav", ns(CUTOFF) - 1)  # a nanosecond before: expired
    write(tmp_path, "recordings/2026/05/e.wav", CUTOFF - timedelta(days=100))  # subfolder
    write(tmp_path, "voicemail/f.wav", CUTOFF - timedelta(days=100))  # not this directory
    store = FilesStore(files_policy(), str(tmp_path))
    window = RetentionWindow(CUTOFF)

    plan = store.plan(window)
    assert (plan.total, plan.expired, plan.held, plan.anomalies) == (5, 3, 0, 0)
    assert plan.oldest_expired == (CUTOFF - timedelta(days=100)).isoformat()
    assert plan.newest_expired == (CUTOFF - ONE_US).isoformat()
    assert plan.oldest_retained == CUTOFF.isoformat()
    before = store.verify(window)
    assert (before.success, before.remaining) == (False, 3)

    journal = Journal()
    result = store.purge(window, approved=plan.expired, journal=journal)

    assert (result.deleted, result.batches, result.failed) == (3, 2, {})
    assert [call for call in journal.calls if call[0] == "after"] == [
        ("after", 1, 2),
        ("after", 2, 1),
    ]
    assert survivors(tmp_path) == ["recordings/b.wav", "recordings/c.wav", "voicemail/f.wav"]
    after = store.verify(window)
    assert (after.success, after.remaining, after.summary["versions_checked"]) == (True, 0, 2)
    assert store.plan(window).expired == 0


def test_the_journal_hears_each_batch_before_and_after(tmp_path):
    for i in range(5):
        write(tmp_path, f"recordings/{i}.wav", CUTOFF - timedelta(days=1))
    journal = Journal()

    result = FilesStore(files_policy(), str(tmp_path)).purge(
        RetentionWindow(CUTOFF), approved=5, journal=journal
    )

    assert (result.deleted, result.batches) == (5, 3)
    assert journal.calls == [
        ("before", 1, 2), ("after", 1, 2),
        ("before", 2, 2), ("after", 2, 2),
        ("before", 3, 1), ("after", 3, 1),
    ]  # fmt: skip


def test_dates_in_the_path_go_whole_days_at_a_time(tmp_path):
    for day in ("2026/08/30", "2026/08/31", "2026/09/01"):
        for part in range(2):
            write(tmp_path, f"recordings/{day}/{part}.wav")  # mtime now: not what counts
    write(tmp_path, "recordings/misc/undated.wav", CUTOFF - timedelta(days=400))
    write(tmp_path, "recordings/2026/02/30/impossible.wav", CUTOFF - timedelta(days=400))
    not_utf8 = os.fsencode(tmp_path / "recordings" / "2026" / "08" / "30") + b"/\xff.wav"
    Path(os.fsdecode(not_utf8)).write_bytes(b"x")  # RE2 matches UTF-8 text: reported
    store = FilesStore(files_policy(timestamp={"key_pattern": DAY_PATTERN}), str(tmp_path))
    # 06:00 in Amsterdam on 1 September: 30 and 31 August are wholly before it, 1 September
    # straddles it and waits for the next run.
    window = RetentionWindow(datetime(2026, 9, 1, 4, tzinfo=UTC))

    plan = store.plan(window)

    assert (plan.total, plan.expired, plan.anomalies) == (9, 4, 3)
    assert plan.newest_expired == "2026-08-31T21:59:59.999999+00:00"  # the day's last µs
    assert plan.oldest_retained == "2026-09-01T21:59:59.999999+00:00"
    assert store.purge(window, approved=4).deleted == 4
    assert survivors(tmp_path) == sorted(
        [
            "recordings/2026/02/30/impossible.wav",
            os.fsdecode(b"recordings/2026/08/30/\xff.wav"),
            "recordings/2026/09/01/0.wav",
            "recordings/2026/09/01/1.wav",
            "recordings/misc/undated.wav",
        ]
    )
    assert store.verify(window).success  # anomalies are reported, not a failed proof
    # At local midnight on 1 September, 31 August is exactly whole: expired too (already gone).
    assert store.plan(RetentionWindow(CUTOFF)).expired == 0


def test_holds_by_path_prefix_keep_their_files(tmp_path):
    old = CUTOFF - timedelta(days=30)
    for name in ("2026/03/a", "2026/03/b", "2026/04/a", "2026/04/b", "2026/04/c"):
        write(tmp_path, f"recordings/{name}.wav", old)
    write(tmp_path, "recordings/2026/04/new.wav", CUTOFF)  # under the hold, not expired
    write(tmp_path, f"recordings/{PHONE}-2026-03-01.wav", old)
    window = RetentionWindow(
        CUTOFF,
        holds=(
            Hold(5, "*", "prefix", "recordings/2026/04/", "legal_hold"),
            Hold(6, "pbx_recordings", "prefix", f"recordings/{PHONE}", "dispute"),
            Hold(7, "*", "prefix", "recordings/2025/", "audit"),  # reaches no file
            Hold(8, "*", "customer", "recordings/2026/03/", "another subject: not a path"),
        ),
    )
    store = FilesStore(files_policy(), str(tmp_path))

    plan = store.plan(window)

    assert (plan.total, plan.expired, plan.held) == (7, 2, 4)
    assert (plan.held_by_hold, plan.inert_holds) == ({"5": 3, "6": 1}, ["7"])
    result = store.purge(window, approved=plan.expired)
    assert result.deleted == 2
    assert survivors(tmp_path) == [
        f"recordings/{PHONE}-2026-03-01.wav",
        "recordings/2026/04/a.wav",
        "recordings/2026/04/b.wav",
        "recordings/2026/04/c.wav",
        "recordings/2026/04/new.wav",
    ]
    verification = store.verify(window)
    assert (verification.success, verification.remaining) == (True, 0)


def test_a_hold_placed_during_a_purge_protects_from_the_next_batch(tmp_path):
    old = CUTOFF - timedelta(days=30)
    # A folder's own files are listed before its subfolders': x1 and x2 are the first batch.
    names = ["recordings/x1.wav", "recordings/x2.wav"] + [
        f"recordings/2026-0{month}/{name}.wav" for month in (3, 4) for name in "abc"
    ]
    for name in names:
        write(tmp_path, name, old)
    holds = (
        Hold(5, "pbx_recordings", "prefix", "recordings/2026-04/", "dispute"),
        Hold(6, "pbx_recordings", "prefix", "recordings/x", "too late for the first batch"),
    )
    calls = []

    def reload_holds():
        calls.append(1)
        return () if len(calls) < 2 else holds  # placed after the first batch

    store = FilesStore(files_policy(), str(tmp_path))
    result = store.purge(RetentionWindow(CUTOFF, reload_holds=reload_holds), approved=8)

    # Read before each of the four listed batches; one of them was all held: three went.
    assert (result.deleted, result.batches, len(calls)) == (5, 3, 4)
    assert survivors(tmp_path) == [f"recordings/2026-04/{name}.wav" for name in "abc"]


def test_the_purge_stops_before_deleting_more_than_approved(tmp_path):
    for i in range(5):
        write(tmp_path, f"recordings/{i}.wav", CUTOFF - timedelta(days=1))
    journal = Journal()
    store = FilesStore(files_policy(), str(tmp_path))

    with pytest.raises(PurgeLimitExceeded, match="found 4 files to delete, more than the 3"):
        store.purge(RetentionWindow(CUTOFF), approved=3, journal=journal)

    assert len(survivors(tmp_path)) == 3  # one batch of two went; the second would exceed
    assert journal.calls == [("before", 1, 2), ("after", 1, 2)]


def test_links_are_never_followed_nor_deleted(tmp_path):
    old = CUTOFF - timedelta(days=200)
    outside = write(tmp_path, "outside/secret.wav", old)
    write(tmp_path, "outside/deep/other.wav", old)
    root = tmp_path / "share"
    write(root, "recordings/real.wav", old)
    (root / "recordings" / "link.wav").symlink_to(outside)
    (root / "recordings" / "folder").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "recordings" / "loop").symlink_to(root / "recordings", target_is_directory=True)
    os.utime(root / "recordings" / "link.wav", ns=(ns(old), ns(old)), follow_symlinks=False)
    os.mkfifo(root / "recordings" / "pipe.wav")
    store = FilesStore(files_policy(), str(root))
    window = RetentionWindow(CUTOFF)

    plan = store.plan(window)
    assert (plan.total, plan.expired, plan.anomalies) == (5, 1, 4)
    result = store.purge(window, approved=plan.expired)

    assert result.deleted == 1
    assert survivors(root) == sorted(
        ["recordings/folder", "recordings/link.wav", "recordings/loop", "recordings/pipe.wav"]
    )
    assert outside.read_bytes() == b"RIFF....WAVE"
    assert survivors(tmp_path / "outside") == ["deep/other.wav", "secret.wav"]
    assert store.verify(window).success


def test_a_folder_swapped_for_a_link_during_the_walk_is_not_walked_into(tmp_path):
    old = CUTOFF - timedelta(days=200)
    root = tmp_path / "share"
    write(root, "recordings/a.wav", old)
    write(root, "recordings/sub/b.wav", old)
    outside = write(tmp_path, "outside/secret.wav", old)

    def swap():  # after the first batch is listed, before the subfolder is walked
        if not (root / "recordings" / "sub").is_symlink():
            (root / "recordings" / "sub").rename(tmp_path / "moved")
            (root / "recordings" / "sub").symlink_to(outside.parent, target_is_directory=True)
        return ()

    store = FilesStore(files_policy(batch_size=1), str(root))
    result = store.purge(RetentionWindow(CUTOFF, reload_holds=swap), approved=3)

    assert result.deleted == 1
    assert survivors(root) == ["recordings/sub"]
    assert outside.exists() and (tmp_path / "moved" / "b.wav").exists()


def test_a_file_changed_since_the_listing_is_left_and_one_gone_not_counted(tmp_path):
    old = CUTOFF - timedelta(days=10)
    for name in ("a", "b", "c", "d"):
        write(tmp_path, f"recordings/{name}.wav", old)

    def meanwhile():
        # Between the listing and the unlinking: touched back into its window, replaced by a
        # new file (another inode) of the same old time, deleted by someone else.
        os.utime(tmp_path / "recordings/a.wav", ns=(ns(CUTOFF), ns(CUTOFF)))
        write(tmp_path, "recordings/b.new", old).replace(tmp_path / "recordings/b.wav")
        (tmp_path / "recordings/c.wav").unlink()
        return ()

    store = FilesStore(files_policy(batch_size=10), str(tmp_path))
    journal = Journal()
    result = store.purge(
        RetentionWindow(CUTOFF, reload_holds=meanwhile), approved=4, journal=journal
    )

    assert (result.deleted, result.failed) == (1, {})
    assert journal.calls == [("before", 1, 4), ("after", 1, 1)]
    assert survivors(tmp_path) == ["recordings/a.wav", "recordings/b.wav"]


def test_a_failing_share_stops_the_purge_with_the_batch_in_the_ledger(tmp_path, monkeypatch):
    for i in range(4):
        write(tmp_path, f"recordings/{PHONE}-{i}.wav", CUTOFF - timedelta(days=1))
    unlink, calls = os.unlink, []

    def stale(path, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the second file of the second batch: the share went away
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), path)
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", stale)
    journal = Journal()
    store = FilesStore(files_policy(), str(tmp_path))
    with pytest.raises(FilesUnavailable) as raised:
        store.purge(RetentionWindow(CUTOFF), approved=4, journal=journal)
    monkeypatch.setattr(os, "unlink", unlink)

    assert journal.calls == [("before", 1, 2), ("after", 1, 2), ("before", 2, 2), ("after", 2, 1)]
    assert str(raised.value) == (
        "pbx_recordings: deleting batch 2 failed (ESTALE) after 1 of its 2 files; 3 files "
        "deleted in all, each batch in the ledger"
    )
    assert raised.value.__context__ is None  # the OSError, which quotes the path, is not kept
    assert len(survivors(tmp_path)) == 1


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Act as an ordinary user: as root, the effective user `nobody` for the block (root
    ignores file permissions); otherwise the test's own user."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def share():
    """A root any user may reach (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="lifecycle-share-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder, dirs, _ in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o755)
        shutil.rmtree(path)


def test_files_the_worker_may_not_delete_are_counted_by_error_code(share):
    old = CUTOFF - timedelta(days=1)
    for name in ("open/a", "open/b", f"locked/{PHONE}", "locked/c"):
        write(share, f"recordings/{name}.wav", old)
    for folder in ("recordings", "recordings/open"):
        (share / folder).chmod(0o777)
    (share / "recordings" / "locked").chmod(0o555)  # listed, not writable: nothing unlinks
    store = FilesStore(files_policy(batch_size=10), str(share))

    with unprivileged():
        result = store.purge(RetentionWindow(CUTOFF), approved=4)

    assert (result.deleted, result.failed) == (2, {"EACCES": 2})
    assert survivors(share) == [f"recordings/locked/{PHONE}.wav", "recordings/locked/c.wav"]


def test_an_unreadable_subdirectory_fails_the_listing_naming_the_field(share):
    write(share, f"recordings/{PHONE}/a.wav", CUTOFF - timedelta(days=1))
    (share / "recordings" / PHONE).chmod(0o000)
    store = FilesStore(files_policy(), str(share))
    with unprivileged(), pytest.raises(StoreConfigError) as raised:
        store.plan(RetentionWindow(CUTOFF))
    assert str(raised.value) == (
        "store.directory: a directory under 'recordings/' cannot be read (EACCES): the "
        "workers' OS user needs read and search permission on every subdirectory"
    )
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_verify_fails_on_what_remains_and_names_no_file(tmp_path):
    write(tmp_path, f"recordings/{PHONE}.wav", CUTOFF - timedelta(days=1))
    write(tmp_path, "recordings/kept.wav", CUTOFF + timedelta(days=1))
    verification = FilesStore(files_policy(), str(tmp_path)).verify(RetentionWindow(CUTOFF))
    assert (verification.success, verification.remaining) == (False, 1)
    assert verification.summary["versions_checked"] == 2
    # Said of files, not of an object store's versions and Object Lock.
    assert verification.summary["unit"] == "files"
    assert verification.summary["checked"] == "files past the window, 0 holds excepted"
    assert "612345678" not in json.dumps(verification.to_dict())


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({}, "store.conn_id: connection 'pbx_share' has no `path` in its extra"),
        ({"path": "share/relative"}, "store.conn_id: the `path` of connection 'pbx_share' is not"),
        ({"path": "/no/such/mount"}, "store.conn_id: the root of connection 'pbx_share' (its"),
    ],
)
def test_a_connection_without_a_usable_root_names_the_field(extra, problem):
    connection = Connection(conn_id="pbx_share", conn_type="fs", extra=json.dumps(extra))
    with pytest.raises(StoreConfigError) as raised:
        open_store(files_policy(), connection)
    assert str(raised.value).startswith(problem)


def test_a_missing_or_linked_directory_names_the_field(tmp_path):
    connection = Connection(
        conn_id="pbx_share", conn_type="fs", extra=json.dumps({"path": str(tmp_path)})
    )
    with pytest.raises(StoreConfigError) as raised:
        open_store(files_policy(), connection)
    assert str(raised.value) == (
        "store.directory: 'recordings/' does not exist under the root of connection "
        "'pbx_share' (or is not a directory)"
    )
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "recordings").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(StoreConfigError, match=r"^store\.directory: 'recordings/' is reached "):
        open_store(files_policy(), connection)
    (tmp_path / "recordings").unlink()
    (tmp_path / "recordings").mkdir()
    assert isinstance(open_store(files_policy(), connection), FilesStore)


def test_no_path_reaches_a_log_record_or_a_result(tmp_path, caplog):
    old = CUTOFF - timedelta(days=1)
    write(tmp_path, f"recordings/0612345678/{PHONE}.wav", old)
    write(tmp_path, f"recordings/{PHONE}-held.wav", old)
    write(tmp_path, f"recordings/{PHONE}-kept.wav", CUTOFF)
    (tmp_path / "recordings" / f"{PHONE}.lnk").symlink_to(tmp_path / "recordings")
    window = RetentionWindow(CUTOFF, holds=(Hold(1, "*", "prefix", "recordings/+316", "x"),))
    store = FilesStore(files_policy(), str(tmp_path))

    with caplog.at_level(logging.DEBUG):
        results = [
            store.plan(window).to_dict(),
            store.purge(window, approved=1).to_dict(),
            store.verify(window).to_dict(),
        ]

    assert results[0]["expired"] == 1 and results[1]["deleted"] == 1
    assert caplog.records  # the purge logged its progress
    for text in [json.dumps(results), *(r.getMessage() for r in caplog.records)]:
        assert "612345678" not in text and str(tmp_path) not in text
