"""The embedded demo: `python -m lifecycle.demo run [--date YYYY-MM-DD]` or `... airflow`.

`run` builds the demo telecom database once (SQLite, in .demo/), runs the catalogue's retention
DAGs for the date (default: today in Europe/Amsterdam; never a future one) with `dag.test()` and
prints the audit trail's view of the runs. Running it again is safe: the second run finds nothing
new to delete. Only the demo's own policies run, against the demo's own stores (selection.py): a
policy of yours in include/policies is skipped, and its connections are not even defined here.
`airflow` serves the same demo in the Airflow UI (`airflow standalone`, 127.0.0.1:8080, or a free
port when that one is taken: ports.py); its DAGs start paused, as in production.
`env` prints the demo's environment, for `airflow dags test retention_cdrs 2026-11-29` by hand.
`check-test-setup` checks what `make test` needs (setup_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import warnings
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from lifecycle.demo import ports
from lifecycle.demo.environment import (
    DEMO_S3_KEY,
    DEMO_S3_SECRET,
    PROJECT,
    airflow_environment,
    evidence_connection_uri,
    migrate_metadata_db,
    s3_connection_uri,
)

DEMO_DIR = Path(os.environ.get("LIFECYCLE_DEMO_DIR") or PROJECT / ".demo")
# The demo runs the project's own policy folder, whatever LIFECYCLE_POLICY_DIR says.
DEMO_POLICY_DIR = PROJECT / "include" / "policies"
TIMEZONE = "Europe/Amsterdam"
FIRST_RUN_FRACTION = 1.0
# moto accepts any key. The secret is longer than Airflow's secrets masker's minimum (5), which
# otherwise warns "Skipping masking for a secret as it's too short" in every run.
# Inherited variables that could point the demo at someone else's stores or metadata: a
# connection (AIRFLOW_CONN_*), a secrets backend (read before the environment) or a metadata
# database. The demo process drops them; `make env` unsets them.
FOREIGN_PREFIXES = (
    "AIRFLOW_CONN_",
    "AIRFLOW__SECRETS__",
    "AIRFLOW__WORKERS__SECRETS_BACKEND",
    "AIRFLOW__DATABASE__",
)


def demo_environment(s3_port: int, api_port: int) -> dict[str, str]:
    """The demo's Airflow: its own home, policy folder, connections (SQLite and the S3 server
    on `s3_port`) and no secrets backend; the UI on `api_port`."""
    s3 = s3_connection_uri(f"http://{ports.HOST}:{s3_port}")
    home = DEMO_DIR / "airflow"
    return airflow_environment(
        home,
        f"sqlite:///{DEMO_DIR / 'telecom.db'}",
        f"sqlite:///{DEMO_DIR / 'audit.db'}",
    ) | {
        "LIFECYCLE_POLICY_DIR": str(DEMO_POLICY_DIR),
        "AIRFLOW_CONN_RECORDINGS": s3,
        "AIRFLOW_CONN_ANALYTICS": s3,
        # The evidence bucket the audit trail's head is anchored in (lifecycle.anchor).
        "AIRFLOW_CONN_LIFECYCLE_EVIDENCE": evidence_connection_uri(s3),
        # The export location of access and portability requests (lifecycle.requests).
        "AIRFLOW_CONN_LIFECYCLE_EXPORTS": json.dumps(
            {"conn_type": "fs", "extra": {"path": str(DEMO_DIR / "exports")}}
        ),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__SECRETS__BACKEND": "",
        "AIRFLOW__WORKERS__SECRETS_BACKEND": "",
        "AIRFLOW__API__HOST": ports.HOST,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://{ports.HOST}:{api_port}",
    }


def foreign_variables(environ) -> list[str]:
    """The inherited variables the demo must not see (FOREIGN_PREFIXES)."""
    return sorted(name for name in environ if name.startswith(FOREIGN_PREFIXES))


def demo_process_environment(environ, s3_port: int, api_port: int) -> dict[str, str]:
    """`environ` made the demo's: without the foreign variables, with the demo's own."""
    foreign = set(foreign_variables(environ))
    kept = {name: value for name, value in environ.items() if name not in foreign}
    return kept | demo_environment(s3_port, api_port)


def use_demo_environment(s3_port: int, api_port: int) -> None:
    """This process becomes the demo's: call before Airflow is imported (it reads its
    configuration at import)."""
    environment = demo_process_environment(os.environ, s3_port, api_port)
    for name in set(os.environ) - set(environment):
        del os.environ[name]
    os.environ.update(environment)


class _OncePerProcess(logging.Filter):
    """Each error message once: dag.test() parses the DAG folder again for every run, and the
    factory logs every invalid policy file at each parse (into another DAG's run, too)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


_ONCE = _OncePerProcess()


def quiet() -> None:
    """The demo's output is the runs: no deprecation warnings of the libraries (Airflow adds
    its own filters at import, so this runs again after it), each policy error once."""
    for category in (DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    # Some libraries warn of their deprecations as UserWarnings (starlette's test client).
    warnings.filterwarnings("ignore", message=r".*\bdeprecated\b", category=UserWarning)
    factory = logging.getLogger("lifecycle.factory")
    if _ONCE not in factory.filters:
        factory.addFilter(_ONCE)


def start_s3_server():
    """moto's S3 server on LIFECYCLE_DEMO_S3_PORT, or 9100, or a free port (ports.py)."""
    from lifecycle.demo import objects

    return ports.listen(
        ports.S3_PORT_ENV, ports.DEFAULT_S3_PORT, objects.start_server, "the demo's S3 server"
    )


@contextmanager
def object_store(server, telecom):
    """The demo's buckets on a running S3 server, restored from (and saved to) .demo/."""
    import boto3

    from lifecycle.demo import objects

    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=DEMO_S3_KEY,
        aws_secret_access_key=DEMO_S3_SECRET,
        region_name="us-east-1",
    )
    state = DEMO_DIR / "s3-state.json"
    if state.exists():
        objects.restore(s3, state)
    else:
        counts = objects.seed(s3, telecom, datetime.now(ZoneInfo(TIMEZONE)))
        print("seeded the demo object store:", ", ".join(f"{n} {k}" for k, n in counts.items()))
    yield s3
    objects.dump(s3, state)


def local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(TIMEZONE))


def _refuse_beside_serve() -> None:
    serving = ports.read_serving(DEMO_DIR)
    if serving is not None:
        raise ports.PortError(
            f"`make airflow` serves this demo (pid {serving.pid}, UI on port "
            f"{serving.api_port}): stop it first, or trigger the DAGs in its UI"
        )


def run(day: date) -> int:
    _refuse_beside_serve()
    quiet()
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    # The export location of requests, and the folder its own policy (request_exports) purges.
    (DEMO_DIR / "exports" / "requests").mkdir(parents=True, exist_ok=True)
    server = start_s3_server()  # first: a port problem stops the demo before any work
    try:
        use_demo_environment(server.port, ports.configured_api_port())
        return _run(day, server)
    finally:
        server.stop()


def _run(day: date, server) -> int:
    import sqlalchemy as sa

    from lifecycle.audit import read_runs
    from lifecycle.control import ensure_schema
    from lifecycle.demo.requests import run_demo_requests
    from lifecycle.demo.seed import seed_telecom
    from lifecycle.demo.selection import select_demo_dags, skip_line
    from lifecycle.factory import build_dags

    quiet()  # again: importing Airflow added its own warning filters
    telecom = DEMO_DIR / "telecom.db"
    audit = sa.create_engine(f"sqlite:///{DEMO_DIR / 'audit.db'}")
    ensure_schema(audit)  # the demo is its own owner: its `lifecycle audit-init`
    store = sa.create_engine(f"sqlite:///{telecom}")
    if not telecom.exists():
        counts = seed_telecom(store, datetime.now(ZoneInfo(TIMEZONE)))
        print("seeded the demo telecom database:", ", ".join(f"{n} {t}" for t, n in counts.items()))
        place_demo_holds(store, audit)
    migrate_metadata_db(DEMO_DIR / "airflow")
    logical_date = local_midnight(day)
    selection = select_demo_dags(build_dags(DEMO_POLICY_DIR), DEMO_POLICY_DIR)
    for dag_id, reason in selection.skipped.items():
        print(skip_line(dag_id, reason, day.isoformat()))
    with object_store(server, store) as s3:
        failed = run_all(selection.dags, audit, logical_date)
        print_report(read_runs(audit), logical_date)
        failed += run_demo_requests(
            selection.requests, audit, store, logical_date, s3, DEMO_DIR / "exports"
        )
        print_chain(audit)
        failed += anchor_chain(selection.evidence, logical_date, s3)
    if failed:
        print(f"{len(failed)} run(s) did not succeed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def anchor_chain(dags, logical_date: datetime, s3) -> list[str]:
    """The daily anchor DAG, as its schedule runs it: the chain's head to the evidence bucket
    (Object Lock, COMPLIANCE), printed; the ids of the runs that did not succeed."""
    from lifecycle.chain import ANCHOR_PREFIX
    from lifecycle.demo.objects import EVIDENCE

    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=EVIDENCE, ObjectLockEnabledForBucket=True)
    failed = []
    for dag_id, dag in dags.items():
        if str(dag.test(logical_date=logical_date).state) != "success":
            failed.append(dag_id)
    listed = s3.list_objects_v2(Bucket=EVIDENCE, Prefix=ANCHOR_PREFIX).get("Contents", [])
    if listed:
        newest = max(item["Key"] for item in listed)
        mode = s3.head_object(Bucket=EVIDENCE, Key=newest).get("ObjectLockMode", "no lock")
        print(f"evidence: the chain's head anchored in s3://{EVIDENCE}/{newest} ({mode})")
    return failed


def print_chain(audit) -> None:
    """The audit trail's hash chain, as `python -m lifecycle audit-verify` checks it."""
    from lifecycle.chain import verify

    print(f"audit trail: {verify(audit).summary()} (python -m lifecycle audit-verify)")


def run_all(dags, audit, logical_date: datetime) -> list[str]:
    """Run every DAG once; the ids of the runs that did not succeed (an invalid policy file's
    DAG among them). Only ever given the demo's own DAGs (selection.py): the first run of each
    lifts the mass-deletion guard."""
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
        # The retention runs of the day (a data-subject request's rows are printed apart).
        if row["logical_date"] == logical_date and row.get("request_id") is None:
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
        "due 7/30/90 d",
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
                _due(row.get("due")),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"\nRetention runs for {logical_date.date()} (audit trail: {DEMO_DIR / 'audit.db'})")
    for index, line in enumerate(lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print(residue_line(list(latest.values())))
    print(alerts_line(list(latest.values())))


def residue_line(rows: list[dict]) -> str:
    """What the SQL purges left in the database file (the verification's `residue`)."""
    found = [
        (row["policy"], residue)
        for row in rows
        if (residue := (row.get("verification") or {}).get("residue"))
    ]
    if not found:
        return "residual copies: none reported"
    pages = max(int(residue.get("free_pages", 0)) for _, residue in found)
    secure = all(residue.get("secure_delete") for _, residue in found)
    return (
        f"residual copies: {len(found)} SQL policies reported; the demo database has {pages} "
        f"free pages, secure_delete {'on' if secure else 'OFF'} (deleted bytes "
        f"{'overwritten' if secure else 'left'} in them); `store.residue: remove` would VACUUM"
    )


def alerts_line(rows: list[dict]) -> str:
    """The owners' alerts this run would send: one per run refused, failed or unverified."""
    due = sorted(row["policy"] for row in rows if row["status"] not in ("purged", "dry_run"))
    if not due:
        return (
            "alerts: none due (no run refused, failed or unverified; a policy's `owners:` hear "
            "of one, and of a policy overdue, by e-mail or webhook)"
        )
    return f"alerts: due for {', '.join(due)} (to the owners each policy names)"


def _due(due: dict | None) -> str:
    """The forecast: records that reach the end of their window within 7, 30, 90 days."""
    if not due:
        return "-"  # a run that counted none
    return "/".join(str(due.get(str(days), "-")) for days in (7, 30, 90))


def serve() -> int:
    if not (DEMO_DIR / "telecom.db").exists():
        print("no demo database yet: run `make demo` first", file=sys.stderr)
        return 1
    _refuse_beside_serve()
    _init_demo_control_schema()
    api_port = ports.api_port()  # checked before anything starts: a busy port stops us at once
    server = start_s3_server()
    serving = None
    try:
        # standalone starts its components as `airflow ...`: the virtualenv's bin on PATH.
        venv_bin = str(Path(sys.executable).parent)
        env = demo_process_environment(os.environ, server.port, api_port) | {
            "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
            "PYTHONWARNINGS": "ignore::DeprecationWarning",
        }
        serving = ports.write_serving(DEMO_DIR, ports.Serving(os.getpid(), server.port, api_port))
        _standalone(env, server, api_port)
    finally:
        if serving is not None:
            serving.unlink(missing_ok=True)
        server.stop()
    return 0


def _init_demo_control_schema() -> None:
    """The demo owns its control database: its `lifecycle audit-init` (after an upgrade too)."""
    import sqlalchemy as sa

    from lifecycle.control import ensure_schema

    engine = sa.create_engine(f"sqlite:///{DEMO_DIR / 'audit.db'}")
    try:
        ensure_schema(engine)
    finally:
        engine.dispose()


def _standalone(env: dict[str, str], server, api_port: int) -> None:
    import sqlalchemy as sa

    print(
        f"Airflow UI: http://{ports.HOST}:{api_port} (no login needed locally); Ctrl-C stops it.\n"
        "The retention DAGs start paused, as in production: trigger one from its page (the form "
        "offers to unpause it; try dry_run first), or unpause it to run daily."
    )
    airflow = Path(sys.executable).with_name("airflow")

    def stop(_signum, _frame):
        raise KeyboardInterrupt  # so that the S3 state is saved on SIGTERM too

    signal.signal(signal.SIGTERM, stop)
    with object_store(server, sa.create_engine(f"sqlite:///{DEMO_DIR / 'telecom.db'}")):
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


def print_env() -> None:
    """The demo's environment as shell exports, with the ports of a running `make airflow`
    (its S3 server may have had to take another port), else the configured or default ones."""
    serving = ports.read_serving(DEMO_DIR)
    if serving is not None:
        s3_port, api_port = serving.s3_port, serving.api_port
        source = f"those of the running `make airflow` (pid {serving.pid})"
    else:
        s3_port = ports.configured_s3_port()
        api_port = ports.configured_api_port()
        source = "configured (no `make airflow` running: start it for the S3 policies)"
    venv_bin = Path(sys.executable).parent
    exports = demo_environment(s3_port, api_port) | {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"
    }
    print(f"# the demo's environment; S3 on port {s3_port}, UI on port {api_port}: {source}")
    for name in foreign_variables(os.environ):
        if name not in exports:
            print(f"unset {name}")
    print("\n".join(f"export {name}={shlex.quote(value)}" for name, value in exports.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lifecycle.demo", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="run the demo's retention DAGs once for a date")
    run_cmd.add_argument("--date", type=date.fromisoformat, default=None)
    commands.add_parser("airflow", help="serve the demo in the Airflow UI")
    commands.add_parser("env", help="print the demo's environment as shell exports")
    commands.add_parser("check-test-setup", help="check what `make test` needs")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            today = datetime.now(ZoneInfo(TIMEZONE)).date()
            if args.date is not None and args.date > today:
                parser.error(
                    f"--date {args.date} is in the future (today is {today} in {TIMEZONE}): "
                    "a retention run's cutoff may not be later than the wall clock, the engine "
                    "would refuse every policy; give today or a past date"
                )
            return run(args.date or today)
        if args.command == "env":
            print_env()
            return 0
        if args.command == "check-test-setup":
            from lifecycle.demo import setup_check

            return setup_check.main()
        return serve()
    except ports.PortError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
