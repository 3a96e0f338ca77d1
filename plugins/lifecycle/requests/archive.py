"""The archive of an access or portability request, written to the export location.

The location is an Airflow connection (`lifecycle_exports`): type `fs` with the root directory
in its extra `path` (a share the privacy officer hands the archive out from), or an AWS
connection with the bucket in its extra `bucket` (and `endpoint_url` for an S3-compatible
server). Everything goes under `requests/`, which the exports' own retention policy
(`include/policies/request_exports.yaml`) empties after its period: the archives are personal
data too.

    requests/request-<id>/<run>/manifest.json          the request: kind, when, categories
    requests/request-<id>/<run>/<policy>/manifest.json  the category: title, statement row,
                                                         controller, ground, period, counts,
                                                         oldest and newest
    requests/request-<id>/<run>/<policy>/records.csv    the subject's records (JSON: the same)
    requests/request-<id>/<run>/<policy>/objects/<key>  object copies, when the request asks
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

EXPORTS_CONN_ID = "lifecycle_exports"
ROOT = "requests/"


class ExportLocationError(ValueError):
    """The export connection cannot take an archive (its type or its extra is wrong)."""


class Sink(Protocol):
    location: str

    def open(self, relative: str) -> Any:
        """A context manager yielding a binary file; the file is stored when it closes."""


def run_folder(request_id: int, run_id: str) -> str:
    """`requests/request-<id>/<run>/`: the run id made safe as one path segment."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run"
    return f"{ROOT}request-{request_id}/{safe[:120]}/"


class DirectorySink:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.location = f"file://{self.root}/"

    @contextmanager
    def open(self, relative: str) -> Iterator[IO[bytes]]:
        target = (self.root / relative).resolve()
        if self.root not in target.parents:
            raise ExportLocationError(f"{relative!r} would leave the export directory")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written aside, then renamed: a half-written file is never taken for the archive.
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as file:
                yield file
            os.chmod(partial, 0o600)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise


class BucketSink:
    def __init__(self, client: Any, bucket: str):
        self.client, self.bucket = client, bucket
        self.location = f"s3://{bucket}/"

    @contextmanager
    def open(self, relative: str) -> Iterator[IO[bytes]]:
        with tempfile.SpooledTemporaryFile(max_size=8 * 2**20) as spool:
            yield spool
            spool.seek(0)
            self.client.upload_fileobj(spool, self.bucket, relative)


@contextmanager
def export_sink(conn_id: str = EXPORTS_CONN_ID) -> Iterator[Sink]:
    """The export location of connection `conn_id`."""
    from lifecycle.connections import airflow_connection

    connection = airflow_connection(conn_id, "the export location")
    extra = connection.extra_dejson or {}
    kind = (connection.conn_type or "").lower()
    if kind in ("fs", "file", "local"):
        root = extra.get("path") or connection.host
        if not root or not Path(root).is_absolute():
            raise ExportLocationError(
                f"connection {conn_id!r}: give the export directory as an absolute `path` in "
                "its extra"
            )
        Path(root).mkdir(parents=True, exist_ok=True)
        yield DirectorySink(Path(root))
        return
    if kind in ("aws", "s3"):
        bucket = extra.get("bucket")
        if not bucket:
            raise ExportLocationError(f"connection {conn_id!r}: give the `bucket` in its extra")
        from lifecycle.stores.s3 import client_from_connection

        client = client_from_connection(connection)
        try:
            yield BucketSink(client, bucket)
        finally:
            client.close()
        return
    raise ExportLocationError(
        f"connection {conn_id!r}: type {kind!r} is not an export location (fs or aws)"
    )


def write_json(sink: Sink, relative: str, value: Any) -> None:
    with sink.open(relative) as file:
        file.write(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True).encode())


def write_records(
    sink: Sink, folder: str, fields: list[str], records: Iterable[dict[str, Any]]
) -> int:
    """records.csv and records.json of one category, streamed; returns how many records."""
    count = 0
    with sink.open(f"{folder}records.csv") as csv_file, sink.open(f"{folder}records.json") as js:
        text = io.TextIOWrapper(csv_file, encoding="utf-8", newline="")
        writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        js.write(b"[")
        for record in records:
            writer.writerow(record)
            js.write((b",\n" if count else b"\n") + json.dumps(record, ensure_ascii=False).encode())
            count += 1
        js.write(b"\n]\n")
        text.flush()
        text.detach()  # the sink closes the file, not the wrapper
    return count
