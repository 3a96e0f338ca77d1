"""S3 purge benchmark (DESIGN §7: at least 5x the throughput of one delete per object; issue 13:
a metadata-dated, Object-Locked versioned bucket, the `delete` task >= 0.7x a plain parallel
boto3 script and the whole run, extract + delete + verify, within 3x of it).

moto's S3 server runs in this process on loopback and is seeded in-process (its HTTP PUT manages
~130 objects/s); the purges run in child processes that talk to it over HTTP, so each child's
peak memory is the purge's own. Prints ratios; asserts nothing.

    .venv/bin/python benchmarks/s3_purge.py [--objects 20000] [--locked-objects 6000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "plugins"))
CUTOFF = datetime(2026, 8, 31, 22, tzinfo=UTC)


def client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(max_pool_connections=32),  # as the engine's (and 16 + 4 in flight)
    )


def seed(bucket: str, count: int) -> None:
    """`count` expired objects, written straight into moto's backend."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(bucket, "us-east-1")
    old = (CUTOFF - timedelta(days=30)).replace(tzinfo=None)
    for i in range(count):
        key = backend.put_object(bucket, f"support/2026/07/call-{i:06d}.wav", b"RIFF")
        key.last_modified = old


def seed_locked(bucket: str, count: int) -> None:
    """`count` recordings in a versioned bucket with Object Lock, dated by their metadata
    (`recorded-at`): every other one expired, one expired in a hundred under a legal hold."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(bucket, "us-east-1")
    backend.get_bucket(bucket).object_lock_enabled = True
    backend.put_bucket_versioning(bucket, "Enabled")
    for i in range(count):
        at = CUTOFF - timedelta(days=30) if i % 2 == 0 else CUTOFF + timedelta(days=1)
        key = backend.put_object(
            bucket,
            f"clients/acme/call-{i:06d}.wav",
            b"RIFF",
            lock_legal_status="ON" if i % 200 == 0 else None,
        )
        key.set_metadata({"x-amz-meta-recorded-at": at.isoformat()})


def parallel_script(endpoint: str, bucket: str) -> dict:
    """In a child process: the plain boto3 script a data engineer would write, timed whole: list
    the versions, HeadObject each in 16 threads (metadata date and lock), DeleteObjects of
    1000 versions, 4 calls in flight."""
    s3 = client(endpoint)
    started = time.perf_counter()
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
    versions = [(v["Key"], v["VersionId"]) for page in pages for v in page.get("Versions", ())]
    now = datetime.now(UTC)

    def expired(version: tuple[str, str]) -> bool:
        head = s3.head_object(Bucket=bucket, Key=version[0], VersionId=version[1])
        until = head.get("ObjectLockRetainUntilDate")
        locked = head.get("ObjectLockLegalHoldStatus") == "ON" or (
            until is not None and until > now
        )
        at = datetime.fromisoformat(head["Metadata"]["recorded-at"])
        return at < CUTOFF and not locked

    with ThreadPoolExecutor(16) as pool:
        doomed = [
            {"Key": key, "VersionId": version_id}
            for (key, version_id), gone in zip(versions, pool.map(expired, versions), strict=True)
            if gone
        ]

    def delete(batch: list[dict]) -> int:
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        return len(batch) - len(answer.get("Errors", ()))

    with ThreadPoolExecutor(4) as pool:
        deleted = sum(pool.map(delete, [doomed[i : i + 1000] for i in range(0, len(doomed), 1000)]))
    return {"deleted": deleted, "seconds": time.perf_counter() - started}


def bench_policy(bucket: str, prefix: str, **store: Any) -> Any:
    """A 90-day policy on `bucket`/`prefix` (`store`: the store's other fields)."""
    from lifecycle.policy import Policy

    return Policy.model_validate(
        {
            "name": "bench",
            "title": "Benchmark",
            "statement": {"service": "Algemeen", "data": "Opnames", "retention": "90 dagen"},
            "controller": "provider",
            "legal_basis": "legitimate_interest",
            "retention": {"period": "P90D"},
            "store": {"kind": "s3", "conn_id": "bench", "bucket": bucket, "prefix": prefix} | store,
        }
    )


def locked_phase(phase: str, endpoint: str, bucket: str) -> dict:
    """In a child process, as the task would run it: the store opened (the bucket's Object Lock
    and versioning read), then `extract` (the plan), `delete` (the purge) or `verify`. The
    verification's fixed cost, Great Expectations' import and context, is timed apart."""
    from lifecycle.stores import RetentionWindow
    from lifecycle.stores.s3 import S3PrefixStore

    policy = bench_policy(bucket, "clients/", timestamp={"metadata": "recorded-at"})
    figures: dict = {"gx_seconds": 0.0}
    if phase == "verify":
        from lifecycle.verification import _context

        started = time.perf_counter()
        _context()
        figures["gx_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    store = S3PrefixStore(policy, client(endpoint))
    window = RetentionWindow(CUTOFF)
    if phase == "extract":
        plan = store.plan(window)
        figures |= {"total": plan.total, "expired": plan.expired, "held": plan.held}
    elif phase == "delete":
        result = store.purge(window, approved=10**9)
        figures |= {"deleted": result.deleted, "failed": sum(result.failed.values())}
    else:
        verification = store.verify(window)
        figures |= {"success": verification.success, "remaining": verification.remaining}
    figures["seconds"] = time.perf_counter() - started + figures["gx_seconds"]
    return figures


def high_water_mark_kib() -> int:
    """This process's peak RSS. Not getrusage: on Linux a child's ru_maxrss starts at its
    parent's (here the S3 server's) size at fork time."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def engine_purge(endpoint: str, bucket: str) -> dict:
    """In a child process: the engine's purge of the whole bucket, and its peak memory."""
    from lifecycle.stores import RetentionWindow
    from lifecycle.stores.s3 import S3PrefixStore

    policy = bench_policy(bucket, "support/")
    store = S3PrefixStore(policy, client(endpoint))
    before = high_water_mark_kib()
    started = time.perf_counter()
    result = store.purge(RetentionWindow(CUTOFF), approved=10**9)
    seconds = time.perf_counter() - started
    after = high_water_mark_kib()
    return {
        "deleted": result.deleted,
        "seconds": seconds,
        "peak_kib": after,
        "growth_kib": after - before,
    }


def one_by_one(endpoint: str, bucket: str) -> dict:
    """In a child process: one DeleteObject call per key, the naive way."""
    s3 = client(endpoint)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", ())]  # fmt: skip
    started = time.perf_counter()  # the listing above is not timed: it favours the baseline
    for key in keys:
        s3.delete_object(Bucket=bucket, Key=key)
    return {"deleted": len(keys), "seconds": time.perf_counter() - started}


def forked_from_worker(endpoint: str, bucket: str) -> dict:
    """In a child process standing for a Celery worker: Great Expectations loaded as
    `lifecycle.worker` has the worker load it when it starts, then the verify task in a process
    forked from it, as Airflow forks every task process from its worker."""
    from lifecycle.worker import preload

    preload()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task process
        os.close(read)
        with os.fdopen(write, "w") as out:
            out.write(json.dumps(locked_phase("verify", endpoint, bucket)))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as results:
        figures = json.loads(results.read())
    os.waitpid(pid, 0)
    return dict(figures)


def child(mode: str, endpoint: str, bucket: str) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", mode, endpoint, bucket],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(PROJECT / "plugins")},
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--baseline-objects", type=int, default=2_000)
    parser.add_argument("--locked-objects", type=int, default=6_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, endpoint, bucket = args.child
        if mode in ("extract", "delete", "verify"):
            print(json.dumps(locked_phase(mode, endpoint, bucket)))
            return
        runs = {
            "engine": engine_purge,
            "naive": one_by_one,
            "script": parallel_script,
            "verify-forked": forked_from_worker,
        }
        print(json.dumps(runs[mode](endpoint, bucket)))
        return

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        seed("bench-engine", args.objects)
        seed("bench-small", args.objects // 10)
        seed("bench-naive", args.baseline_objects)
        engine = child("engine", endpoint, "bench-engine")
        small = child("engine", endpoint, "bench-small")
        naive = child("naive", endpoint, "bench-naive")
        seed_locked("bench-locked-script", args.locked_objects)
        seed_locked("bench-locked-engine", args.locked_objects)
        script = child("script", endpoint, "bench-locked-script")
        phases = {
            phase: child(phase, endpoint, "bench-locked-engine")
            for phase in ("extract", "delete", "verify")
        }
        forked = child("verify-forked", endpoint, "bench-locked-engine")
    finally:
        server.stop()
    engine_rate = engine["deleted"] / engine["seconds"]
    naive_rate = naive["deleted"] / naive["seconds"]
    print(f"S3 purge benchmark against moto's server on loopback ({endpoint})")
    print(
        f"engine purge      : {engine['deleted']:,} objects in {engine['seconds']:.1f} s = "
        f"{engine_rate:,.0f} objects/s (DeleteObjects, 1000 keys a call, 4 in flight)"
    )
    print(
        f"one call per key  : {naive['deleted']:,} objects in {naive['seconds']:.1f} s = "
        f"{naive_rate:,.0f} objects/s"
    )
    print(f"throughput ratio  : {engine_rate / naive_rate:.1f}x (target >= 5x)")
    for figure in (small, engine):
        print(
            f"purge peak memory : {figure['deleted']:>7,} objects, peak RSS "
            f"{figure['peak_kib'] / 1024:.0f} MiB, growth during the purge "
            f"{figure['growth_kib'] / 1024:.1f} MiB"
        )
    print(
        f"memory ratio      : peak RSS at 10x the objects = "
        f"{engine['peak_kib'] / small['peak_kib']:.2f}x (target: flat, ~1.0)"
    )
    report_locked(script, phases, forked)


def report_locked(script: dict, phases: dict[str, dict], forked: dict) -> None:
    extract, delete, verify = phases["extract"], phases["delete"], phases["verify"]
    whole = sum(phase["seconds"] for phase in phases.values())
    print(
        f"\nmetadata-dated, Object-Locked versioned bucket: {extract['total']:,} objects, "
        f"{extract['expired']:,} expired and unheld, {extract['held']:,} under a legal hold"
    )
    print(
        f"plain boto3 script: {script['deleted']:,} deleted in {script['seconds']:.1f} s (list "
        "versions, HeadObject in 16 threads, DeleteObjects of 1000, 4 in flight)"
    )
    print(f"extract task      : {extract['seconds']:.1f} s")
    print(f"delete task       : {delete['deleted']:,} deleted in {delete['seconds']:.1f} s")
    print(
        f"verify task       : {verify['seconds']:.1f} s (of which Great Expectations' fixed "
        f"cost {verify['gx_seconds']:.1f} s), success={verify['success']}, "
        f"remaining={verify['remaining']}"
    )
    print(
        f"verify, forked    : {forked['seconds']:.1f} s in a task process forked from a worker "
        f"that loaded Great Expectations when it started (lifecycle.worker): fixed cost "
        f"{forked['gx_seconds'] * 1000:.0f} ms (target < 3 s), success={forked['success']}"
    )
    print(
        f"delete vs script  : {script['seconds'] / delete['seconds']:.2f}x the script's speed "
        "(target >= 0.7x)"
    )
    print(
        f"whole run         : {whole:.1f} s = {whole / script['seconds']:.2f}x the script's "
        "time (target <= 3x)"
    )
    on_workers = whole - verify["seconds"] + forked["seconds"]
    print(
        f"whole run, workers: {on_workers:.1f} s = {on_workers / script['seconds']:.2f}x with the "
        "verify task forked from a worker that preloaded Great Expectations"
    )


if __name__ == "__main__":
    main()
