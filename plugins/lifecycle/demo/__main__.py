"""The embedded demo: `python -m lifecycle.demo run [--date YYYY-MM-DD]` or `... airflow`.

`run` builds the demo telecom database once (SQLite, in .demo/), runs every retention DAG for the
date (default: today in Europe/Amsterdam) with `dag.test()` and prints the audit trail's view of
the runs. Running it again is safe: the second run finds nothing new to delete.
`airflow` serves the same demo in the Airflow UI (`airflow standalone`, 127.0.0.1:8080).
`env` prints the demo's environment, for `airflow dags test retention_cdrs 2026-11-29` by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

PROJECT = Path(__file__).resolve().parents[3]
DEMO_DIR = Path(os.environ.get("LIFECYCLE_DEMO_DIR") or PROJECT / ".demo")
TIMEZONE = "Europe/Amsterdam"
FIRST_RUN_FRACTION = 1.0
DEMO_S3_PORT = int(os.environ.get("LIFECYCLE_DEMO_S3_PORT") or 9100)


def airflow_environment(home: Path, telecom_url: str, audit_url: str) -> dict[str, str]:
    """The environment of an embedded Airflow on this project (the demo and the tests)."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW_CONN_TELECOM_DB": telecom_url,
        "AIRFLOW_CONN_LIFECYCLE_AUDIT": audit_url,
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PROJECT / "plugins"), os.environ.get("PYTHONPATH")])
        ),
    }


def s3_connection_uri(endpoint: str) -> str:
    """An Airflow AWS connection (JSON form) to an S3 endpoint such as moto's or MinIO's."""
    extra = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    return json.dumps({"conn_type": "aws", "login": "demo", "password": "demo", "extra": extra})


def demo_environment() -> dict[str, str]:
    s3 = s3_connection_uri(f"http://127.0.0.1:{DEMO_S3_PORT}")
    return airflow_environment(
        DEMO_DIR / "airflow",
        f"sqlite:///{DEMO_DIR / 'telecom.db'}",
        f"sqlite:///{DEMO_DIR / 'audit.db'}",
    ) | {
        "AIRFLOW_CONN_RECORDINGS": s3,
        "AIRFLOW_CONN_ANALYTICS": s3,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": "8080",
        "AIRFLOW__API__BASE_URL": "http://127.0.0.1:8080",
    }


@contextmanager
def object_store(telecom):
    """moto's S3 server for the demo, its state restored from (and saved to) .demo/."""
    import boto3

    from lifecycle.demo import objects

    server = objects.start_server(DEMO_S3_PORT)
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{DEMO_S3_PORT}",
        aws_access_key_id="demo",
        aws_secret_access_key="demo",  # noqa: S106 - moto on loopback accepts any key
        region_name="us-east-1",
    )
    state = DEMO_DIR / "s3-state.json"
    try:
        if state.exists():
            objects.restore(s3, state)
        else:
            counts = objects.seed(s3, telecom, datetime.now(ZoneInfo(TIMEZONE)))
            print("seeded the demo object store:", ", ".join(f"{n} {k}" for k, n in counts.items()))
        yield s3
        objects.dump(s3, state)
    finally:
        server.stop()


def migrate_metadata_db(home: Path) -> None:
    """`airflow db migrate` once per Airflow home (it is idempotent but costs seconds)."""
    if (home / "airflow.db").exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        env=os.environ.copy(),
    )


def local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(TIMEZONE))


def run(day: date) -> int:
    os.environ.update(demo_environment())
    import sqlalchemy as sa

    from lifecycle.audit import read_runs
    from lifecycle.demo.seed import seed_telecom
    from lifecycle.factory import build_dags

    DEMO_DIR.mkdir(exist_ok=True)
    telecom = DEMO_DIR / "telecom.db"
    audit = sa.create_engine(f"sqlite:///{DEMO_DIR / 'audit.db'}")
    store = sa.create_engine(f"sqlite:///{telecom}")
    if not telecom.exists():
        counts = seed_telecom(store, datetime.now(ZoneInfo(TIMEZONE)))
        print("seeded the demo telecom database:", ", ".join(f"{n} {t}" for t, n in counts.items()))
        place_demo_holds(store, audit)
    migrate_metadata_db(DEMO_DIR / "airflow")
    logical_date = local_midnight(day)
    with object_store(store):
        failed = run_all(build_dags(), audit, logical_date)
    print_report(read_runs(audit), logical_date)
    if failed:
        print(f"{len(failed)} run(s) did not succeed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def run_all(dags, audit, logical_date: datetime) -> list[str]:
    """Run every DAG once; the ids of the runs that did not succeed (an invalid policy file's
    DAG among them)."""
    from lifecycle.audit import read_runs

    failed = []
    for dag_id, dag in sorted(dags.items()):
        policy = dag_id.removeprefix("retention_")
        # A table that was never purged is mostly expired; the guard would rightly refuse, so
        # the first run lifts max_delete_fraction once, as an operator would with the DAG param.
        first = not any(row["status"] == "purged" for row in read_runs(audit, policy))
        conf = {"max_delete_fraction": FIRST_RUN_FRACTION} if first else {}
        print(
            f"running {dag_id} for {logical_date.isoformat()}" + (" (first purge)" if first else "")
        )
        dag_run = dag.test(logical_date=logical_date, run_conf=conf)
        if str(dag_run.state) != "success":
            failed.append(dag_id)
    return failed


def place_demo_holds(store, audit) -> None:
    """A privacy officer's holds: a legal hold on a former client (all policies), and a
    restriction of processing on one caller's number while a correction request is pending."""
    import sqlalchemy as sa

    from lifecycle.demo.seed import HELD_CUSTOMER
    from lifecycle.holds import ALL_POLICIES, place_hold

    with store.connect() as conn:
        caller = conn.execute(
            sa.text("SELECT caller FROM cdrs ORDER BY started_at LIMIT 1")
        ).scalar()
    place_hold(
        audit,
        scope=ALL_POLICIES,
        subject="customer",
        value=str(HELD_CUSTOMER),
        reason="legal_hold",
        placed_by="demo: privacy officer",
        note="case LH-2026-001",
    )
    month = f"support/{datetime.now(ZoneInfo(TIMEZONE)) - timedelta(days=200):%Y/%m}/"
    place_hold(
        audit,
        scope="support_call_recordings",
        subject="prefix",
        value=month,
        reason="dispute",
        placed_by="demo: privacy officer",
        note="complaint about the support line, case D-2026-007",
    )
    place_hold(
        audit,
        scope="cdrs",
        subject="phone",
        value=caller,
        reason="restriction",
        placed_by="demo: privacy officer",
        note="correction request CR-2026-042",
    )
    print(
        f"placed three holds: customer {HELD_CUSTOMER} (legal hold, all policies), one caller's "
        "number (restriction, cdrs) and a month of support recordings (dispute): `make holds` "
        "lists them"
    )


def print_report(rows: list[dict], logical_date: datetime) -> None:
    latest: dict[str, dict] = {}
    for row in rows:
        if row["logical_date"] == logical_date:
            latest[row["policy"]] = row  # rows come oldest first: keep the last attempt
    header = (
        "policy",
        "period",
        "cutoff (UTC)",
        "expired",
        "held",
        "deleted",
        "active",
        "no date",
        "verified",
        "status",
    )
    lines = [header]
    for name, row in sorted(latest.items()):
        cutoff = row["cutoff"].strftime("%Y-%m-%d %H:%M") if row["cutoff"] else "-"
        verified = {True: "yes", False: "NO", None: "-"}[row["verified"]]
        lines.append(
            (
                name,
                row["period"],
                cutoff,
                *(
                    str(row[k] if row[k] is not None else "-")
                    for k in ("expired", "held", "deleted", "active", "anomalies")
                ),
                verified,
                row["status"],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"\nRetention runs for {logical_date.date()} (audit trail: {DEMO_DIR / 'audit.db'})")
    for index, line in enumerate(lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def serve() -> int:
    # standalone starts its components as `airflow ...`: the virtualenv's bin must be on PATH.
    venv_bin = str(Path(sys.executable).parent)
    env = os.environ | demo_environment() | {"PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    if not (DEMO_DIR / "telecom.db").exists():
        print("no demo database yet: run `make demo` first", file=sys.stderr)
        return 1
    import sqlalchemy as sa

    print("Airflow UI: http://127.0.0.1:8080 (no login needed locally); Ctrl-C stops it")
    airflow = Path(sys.executable).with_name("airflow")

    def stop(_signum, _frame):
        raise KeyboardInterrupt  # so that the S3 state is saved on SIGTERM too

    signal.signal(signal.SIGTERM, stop)
    with object_store(sa.create_engine(f"sqlite:///{DEMO_DIR / 'telecom.db'}")):
        # Its own process group: standalone does not pass a SIGTERM on to the scheduler,
        # api-server and the rest, so the whole group is stopped (and killed if it lingers).
        process = subprocess.Popen(  # noqa: S603
            [str(airflow), "standalone"], env=env, start_new_session=True
        )
        try:
            process.wait()
        except KeyboardInterrupt:
            os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lifecycle.demo", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="run every retention DAG once for a date")
    run_cmd.add_argument("--date", type=date.fromisoformat, default=None)
    commands.add_parser("airflow", help="serve the demo in the Airflow UI")
    commands.add_parser("env", help="print the demo's environment as shell exports")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.date or datetime.now(ZoneInfo(TIMEZONE)).date())
    if args.command == "env":
        venv_bin = Path(sys.executable).parent
        exports = demo_environment() | {"PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
        print("\n".join(f"export {name}={shlex.quote(value)}" for name, value in exports.items()))
        return 0
    return serve()


if __name__ == "__main__":
    sys.exit(main())
