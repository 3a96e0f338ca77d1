"""The demo's object store: moto's S3 server on 127.0.0.1, seeded with call recordings and
web-analytics event files, and kept across demo runs in .demo/s3-state.json.

moto keeps everything in memory, so the demo saves what is left after each run (keys, versions,
times, metadata, locks) and restores it into a fresh server next time: a second `make demo`
finds the first run's survivors, not a new bucket.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

RECORDINGS = "call-recordings"
ANALYTICS = "web-analytics"
# The daily anchor's evidence bucket (lifecycle.anchor): Object Lock, made afresh each demo run.
EVIDENCE = "retention-evidence"
# Client organisations of the demo and the period each set for its own recordings; one set none.
TENANT_PERIODS = {"acme": "P30D", "globex": "P2Y", "initech": "P6M", "umbrella": None}


class S3Server:
    """moto's S3 server on 127.0.0.1:`port` (0: a free port), serving from a daemon thread.

    The socket is bound here, in the caller's thread: a port in use raises OSError at once.
    (moto's ThreadedMotoServer binds inside its thread, where werkzeug turns the error into
    SystemExit: the thread dies and start() waits forever. Given a bound socket, werkzeug only
    serves it.)
    """

    def __init__(self, port: int):
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug does
            sock.bind(("127.0.0.1", port))  # OSError (EADDRINUSE) here, at once
            sock.listen(128)
            app = DomainDispatcherApplication(create_backend_app)
            self._server = make_server(
                "127.0.0.1",
                port,
                app,
                threaded=True,
                request_handler=MotoRequestHandler,
                fd=sock.fileno(),  # werkzeug serves a duplicate of it
            )
        self.port: int = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"demo-s3-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def start_server(port: int) -> S3Server:
    return S3Server(port)


def _backdate(bucket: str, key: str, moments: list[datetime]) -> None:
    """moto stamps every write 'now'; the demo's history needs its real dates."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    versions = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_bucket(bucket).keys.getlist(key)
    for version, moment in zip(versions, moments, strict=True):
        version.last_modified = moment.astimezone(UTC).replace(tzinfo=None)


def _create_buckets(s3) -> None:
    s3.create_bucket(Bucket=RECORDINGS, ObjectLockEnabledForBucket=True)  # versioned, lockable
    s3.create_bucket(Bucket=ANALYTICS)


def _put_key(s3, bucket: str, key: str, versions: list[dict]) -> None:
    for version in versions:
        if version.get("marker"):
            s3.delete_object(Bucket=bucket, Key=key)
            continue
        extra = {}
        if version.get("metadata"):
            extra["Metadata"] = version["metadata"]
        if version.get("legal_hold"):
            extra["ObjectLockLegalHoldStatus"] = "ON"
        s3.put_object(Bucket=bucket, Key=key, Body=b"RIFF....WAVE", **extra)
    _backdate(bucket, key, [datetime.fromisoformat(v["at"]) for v in versions])


def seed(s3, telecom: sa.Engine, now: datetime, *, seed: int = 11) -> dict[str, int]:
    """Recordings of the support line and of four client organisations (one with no period of
    its own), some versioned and some under legal hold, and two years of daily analytics."""
    rng = random.Random(seed)
    _create_buckets(s3)
    counts = {"support recordings": 0, "client recordings": 0, "analytics files": 0}
    for i in range(240):  # a support call every ~1.5 days over a year
        at = now - timedelta(days=365 * rng.random(), seconds=rng.randrange(86400))
        versions: list[dict] = [{"at": at.isoformat()}]
        if i % 40 == 0:  # a re-uploaded (corrected) recording: two versions
            versions.append({"at": (at + timedelta(hours=2)).isoformat()})
        if i % 60 == 5:  # evidence in a dispute: the first version is under legal hold
            versions[0]["legal_hold"] = True
        _put_key(s3, RECORDINGS, f"support/{at:%Y/%m}/call-{i:05d}.wav", versions)
        counts["support recordings"] += 1
    for tenant in TENANT_PERIODS:
        for i in range(60):
            at = now - timedelta(days=900 * rng.random())
            versions = [{"at": at.isoformat(), "metadata": {"recorded-at": at.isoformat()}}]
            _put_key(s3, RECORDINGS, f"tenants/{tenant}/{at:%Y/%m}/rec-{i:04d}.wav", versions)
            counts["client recordings"] += 1
    for day in range(730):
        date = (now - timedelta(days=day)).date()
        s3.put_object(
            Bucket=ANALYTICS, Key=f"events/date={date.isoformat()}/part-0000.json", Body=b"{}"
        )
        counts["analytics files"] += 1
    settings = sa.Table(
        "client_retention_settings",
        sa.MetaData(),
        sa.Column("tenant", sa.String(50), primary_key=True),
        sa.Column("policy", sa.String(100), primary_key=True),
        sa.Column("period", sa.String(40), nullable=False),
    )
    settings.drop(telecom, checkfirst=True)
    settings.create(telecom)
    with telecom.begin() as conn:
        conn.execute(
            settings.insert(),
            [
                {"tenant": t, "policy": "customer_call_recordings", "period": p}
                for t, p in TENANT_PERIODS.items()
                if p is not None
            ],
        )
    return counts


def dump(s3, path: Path) -> None:
    """Save what is left in the demo buckets."""
    state: dict[str, dict[str, list[dict]]] = {}
    for bucket in (RECORDINGS, ANALYTICS):
        keys: dict[str, list[dict]] = {}
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            entries = [(v, False) for v in page.get("Versions", ())]
            entries += [(m, True) for m in page.get("DeleteMarkers", ())]
            for entry, marker in entries:
                version = {"at": entry["LastModified"].isoformat(), "marker": marker}
                if not marker and bucket == RECORDINGS:
                    head = s3.head_object(
                        Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"]
                    )
                    version["metadata"] = head.get("Metadata") or {}
                    version["legal_hold"] = head.get("ObjectLockLegalHoldStatus") == "ON"
                keys.setdefault(entry["Key"], []).append(version)
        for versions in keys.values():
            versions.sort(key=lambda v: v["at"])  # oldest first, as they are written back
        state[bucket] = keys
    path.write_text(json.dumps(state), encoding="utf-8")


def restore(s3, path: Path) -> int:
    """Write the saved state into a fresh server; returns the number of keys."""
    _create_buckets(s3)
    state = json.loads(path.read_text(encoding="utf-8"))
    count = 0
    for bucket, keys in state.items():
        for key, versions in keys.items():
            _put_key(s3, bucket, key, versions)
            count += 1
    return count
