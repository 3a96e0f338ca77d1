"""Audit UI pages over three years of daily runs of every policy (~15,000 audit rows; issue 16:
under 300 ms server time per page on this machine).

Seeds the trail (tests/ui/scale.py) into SQLite, and into PostgreSQL when it answers at
127.0.0.1 (a database of its own, `lifecycle_ui_bench`), then asks the audit app for each page
in process, Airflow's login left out, and prints the median of several requests against the
target. Server time: from the request to the last byte of the body (an export streams); beside
it the CPU time the request took (the figure to compare when the machine is busy).

    PYTHONPATH=plugins .venv/bin/python benchmarks/ui_pages.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import sqlalchemy as sa

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT), str(PROJECT / "plugins")]

from bench_servers import POSTGRES_URL  # noqa: E402  (this folder, on sys.path as the script's)

TARGET_MS = 300
REPEAT = 7
PAGES = [
    ("overview", "/"),
    ("policy page 1 (100 runs)", "/policies/cdrs"),
    ("policy page 11 (oldest)", "/policies/cdrs?page=11"),
    ("evidence", "/runs/5000"),
    ("chart: overview", "/charts/overview.svg"),
    ("chart: deletions (3 years)", "/charts/cdrs/deletions.svg"),
    ("chart: oldest remaining", "/charts/cdrs/age.svg"),
    ("chart: held", "/charts/cdrs/held.svg"),
    ("export: one policy, a month", "/export.csv?policy=cdrs&start=2026-11-01&end=2026-11-30"),
    ("export: one policy, 3 years", "/export.csv?policy=cdrs"),
    ("export: everything (15k rows)", "/export.csv"),
    ("export: everything, JSON", "/export.json"),
]


def _postgres_engine() -> sa.Engine | None:
    from lifecycle.stores.sql import create_engine

    server = sa.make_url(POSTGRES_URL)
    try:
        admin = create_engine(server)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            found = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = 'lifecycle_ui_bench'")
            )
            if not found:
                conn.execute(sa.text("CREATE DATABASE lifecycle_ui_bench"))
        admin.dispose()
    except sa.exc.OperationalError:
        print("PostgreSQL not reachable at 127.0.0.1: SQLite only")
        return None
    return create_engine(server.set(database="lifecycle_ui_bench"))


def _client(engine: sa.Engine) -> object:
    with warnings.catch_warnings():  # Starlette's notice that it prefers httpx2
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from lifecycle.ui import app as ui

    ui._audit_engine = lambda: engine  # type: ignore[assignment]
    (login,) = ui.app.router.dependencies
    ui.app.dependency_overrides[login.dependency] = lambda: None
    return TestClient(ui.app)


def _measure(client: object, path: str) -> tuple[float, float, int]:
    """Median wall time and CPU time (this process, the client's reading included) in ms, and
    the body's size. On a machine other processes keep busy the wall time grows with them; the
    CPU time much less: it tells a slower page from a busier machine."""
    times, cpu_times, size = [], [], 0
    client.get(path)  # type: ignore[attr-defined]  # warm: the policy files, the chart engine
    for _ in range(REPEAT):
        started, cpu_started = time.perf_counter(), time.process_time()
        response = client.get(path)  # type: ignore[attr-defined]
        size = len(response.content)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
        assert response.status_code == 200, (path, response.status_code)
    return statistics.median(times) * 1000, statistics.median(cpu_times) * 1000, size


def _first_chunk(client: object, path: str) -> float:
    """Median time to the first chunk of a streamed export, in ms: when a download starts."""
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        with client.stream("GET", path) as response:  # type: ignore[attr-defined]
            chunks = response.iter_bytes()
            next(chunks)
            times.append(time.perf_counter() - started)
            for _rest in chunks:
                pass
    return statistics.median(times) * 1000


def _report(name: str, engine: sa.Engine) -> None:
    from lifecycle.control import metadata
    from tests.ui.scale import seed

    metadata.drop_all(engine)
    started = time.perf_counter()
    rows = seed(engine)
    print(f"\n{name}: {rows:,} audit rows seeded in {time.perf_counter() - started:.1f} s")
    # Another process busy on this machine shows in the wall times (see _measure).
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    client = _client(engine)
    print(f"{'page':32} {'median':>9} {'of 300 ms':>10} {'cpu':>9} {'bytes':>11}")
    for label, path in PAGES:
        median, cpu, size = _measure(client, path)
        verdict = "ok" if median <= TARGET_MS else "OVER"
        first = f"  first chunk {_first_chunk(client, path):.0f} ms" if "export" in path else ""
        print(
            f"{label:32} {median:7.0f} ms {median / TARGET_MS:9.2f}x {cpu:6.0f} ms {size:11,} "
            f"{verdict}{first}"
        )
    metadata.drop_all(engine)
    engine.dispose()


def main() -> None:
    from lifecycle.stores.sql import create_engine

    os.environ.setdefault("LIFECYCLE_POLICY_DIR", str(PROJECT / "include/policies"))
    with tempfile.TemporaryDirectory() as folder:
        _report("SQLite", create_engine(f"sqlite:///{folder}/audit.db"))
    postgres = _postgres_engine()
    if postgres is not None:
        _report("PostgreSQL", postgres)


if __name__ == "__main__":
    main()
