"""Command line: `python -m lifecycle <command>` (with plugins/ on PYTHONPATH; `make validate`).

validate [DIR]        check every policy file; same messages as the DAG loader; exit 1 on any
schema [--check]      write (or check) the JSON Schema and the field reference from the model
holds ...             list, place and release holds (control database)
audit-init            create the audit trail and holds tables, as their owner
audit-verify          walk the audit trail's hash chain, name the first row altered, removed or
                      inserted; exit 1 on a broken chain; --anchor S3_CONN: check the head last
                      written to that bucket, then write this one (Object Lock, COMPLIANCE mode)
grants --role R       the least-privilege GRANT statements of the jobs' role, from the policies;
                      --apply runs them through each connection (which must log in as the owner);
                      --audit-reader: those of the audit UI's role instead (reads the trail only)
report --from D --to D  the compliance report of a period (whole days) from the audit trail, as
                      PDF (default) or HTML
requests ...          register, list, show and decide data-subject requests (lifecycle.requests)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.loader import DEFAULT_POLICY_DIR, LoadResult, load_policies, policy_dir
from lifecycle.periods import local_instant
from lifecycle.policy import json_schema
from lifecycle.reference import REFERENCE_PATH, render_reference_section, update_reference

if TYPE_CHECKING:
    import sqlalchemy as sa

    from lifecycle.report import Report

SCHEMA_PATH = DEFAULT_POLICY_DIR / "policy.schema.json"


def validate(directory: Path) -> int:
    result = load_policies(directory)
    for loaded in result.policies:
        print(
            f"ok      {loaded.path}: {loaded.policy.dag_id} keeps {loaded.policy.retention.period}"
        )
    for error in result.errors:
        print(f"INVALID {error.message}", file=sys.stderr)
    for conflict in result.conflicts:
        # Both DAGs stay, and every run of both is refused with this message.
        print(f"CONFLICT {conflict.message}", file=sys.stderr)
    print(
        f"{len(result.policies)} valid, {len(result.errors)} invalid policy files, "
        f"{len(result.conflicts)} conflicts in {directory}"
    )
    return 1 if result.errors or result.conflicts or not result.policies else 0


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def schema(check: bool) -> int:
    stale = []
    expected_schema = schema_text()
    if not SCHEMA_PATH.exists() or SCHEMA_PATH.read_text(encoding="utf-8") != expected_schema:
        stale.append(SCHEMA_PATH)
        if not check:
            SCHEMA_PATH.write_text(expected_schema, encoding="utf-8")
    current = REFERENCE_PATH.read_text(encoding="utf-8")
    updated = update_reference(current, render_reference_section())
    if updated != current:
        stale.append(REFERENCE_PATH)
        if not check:
            REFERENCE_PATH.write_text(updated, encoding="utf-8")
    if check and stale:
        for path in stale:
            print(
                f"{path} is out of date with the policy model: run `make schema`", file=sys.stderr
            )
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


def _control_engine(conn_id: str) -> sa.Engine:
    from lifecycle.connections import new_engine

    return new_engine(conn_id, "--conn-id")


def _check_hold_target(scope: str, subject: str) -> str | None:
    """Why a hold on (scope, subject) would protect nothing, or None when it protects."""
    from lifecycle.holds import ALL_POLICIES

    policies = [loaded.policy for loaded in load_policies().policies]
    if scope != ALL_POLICIES:
        policies = [p for p in policies if p.name == scope]
        if not policies:
            return f"--scope: no policy named {scope!r} in {policy_dir()}"
    if any(subject in p.store.hold_subjects() for p in policies):
        return None
    known = sorted({s for p in policies for s in p.store.hold_subjects()})
    return f"--subject: {subject!r} is mapped by no policy in scope (known: {', '.join(known)})"


# HoldError messages name the argument of place_hold/release_hold; the CLI user typed a flag.
HOLD_FLAGS = {
    "scope": "--scope",
    "subject": "--subject",
    "value": "--value",
    "reason": "--reason",
    "note": "--note",
    "placed_by": "--by",
    "released_by": "--by",
    "expires_at": "--expires",
}


def _as_flags(message: str) -> str:
    field, colon, rest = message.partition(": ")
    return f"{HOLD_FLAGS[field]}: {rest}" if colon and field in HOLD_FLAGS else message


def _visible(value: object) -> str:
    """Text as a terminal should show it, not as it would act on it: a control character (a CR,
    the ANSI sequence ESC [2K that erases the line) or another unprintable one (a bidi override)
    as its Python escape (`\\r`, `\\x1b`, `\\u202e`); printable Unicode as is."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(value))


def _hold_line(row: dict[str, Any]) -> str:
    """One hold, every text field through _visible: a note or a name is whatever its author
    typed, and must not rewrite the lines above it in the privacy officer's terminal."""
    text = {name: _visible(value) for name, value in row.items() if isinstance(value, str)}
    until = row["expires_at"].isoformat() if row["expires_at"] else "no expiry"
    state = (
        f"released {row['released_at']:%Y-%m-%d} by {text.get('released_by', '')}"
        if row["released_at"]
        else "active"
    )
    return (
        f"{row['id']:>5}  {text['scope']:<26} {text['subject']}={row['value']!r}  "
        f"{text['reason']:<11} placed {row['placed_at']:%Y-%m-%d} by "
        f"{text['placed_by']}, {until}, {state}" + (f"  ({text['note']})" if row["note"] else "")
    )


def _place(engine: sa.Engine, args: argparse.Namespace) -> int:
    """Place a hold. Nothing printed here ever holds the value: it is personal data."""
    from lifecycle.holds import check_lengths, place_hold

    # Lengths first: a 10,000-character scope is "too long", not "no policy named <it>".
    check_lengths(
        scope=args.scope,
        subject=args.subject,
        value=args.value.strip(),
        note=args.note,
        placed_by=args.by,
    )
    problem = _check_hold_target(args.scope, args.subject)
    if problem:
        print(f"hold not placed: {problem}", file=sys.stderr)
        return 1
    hold_id = place_hold(
        engine,
        scope=args.scope,
        subject=args.subject,
        value=args.value,
        reason=args.reason,
        placed_by=args.by,
        expires_at=args.expires,
        note=args.note,
    )
    print(f"placed hold {hold_id}")
    return 0


def holds(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from lifecycle.control import ControlSchemaMissing
    from lifecycle.holds import HoldError, list_holds, release_hold

    engine = _control_engine(args.conn_id)
    try:
        if args.action == "list":
            rows = list_holds(engine, include_released=args.all)
            for row in rows:
                print(_hold_line(row))
            print(f"{len(rows)} holds")
            return 0
        if args.action == "place":
            return _place(engine, args)
        release_hold(engine, args.id, released_by=args.by)
        print(f"released hold {args.id}: its records are eligible from the next run")
        return 0
    except (HoldError, ControlSchemaMissing) as exc:
        print(f"hold: {_as_flags(str(exc))}", file=sys.stderr)
        return 1
    except sa.exc.DBAPIError as exc:
        # The type only: the driver's message and the statement's parameters can hold the value.
        print(
            f"hold: the control database refused or did not answer ({type(exc.orig).__name__})",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()


class _HoldsParser(argparse.ArgumentParser):
    """The parser of `holds list|place|release`. argparse repeats unexpected arguments in its
    error, and an unquoted value with spaces (`--value 06 1234 5678`) is a held value split
    into unexpected arguments: they are counted, never repeated."""

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads; one behaviour here
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(
                f"{len(extras)} unexpected argument(s), not repeated here (they may be "
                "personal data): quote a value that has spaces"
            )
        return namespace, extras


def audit_init(conn_id: str) -> int:
    """Create (or complete) the audit schema as its owner: the jobs' role may not run DDL."""
    from lifecycle.control import ensure_schema, metadata

    engine = _control_engine(conn_id)
    try:
        ensure_schema(engine)
    finally:
        engine.dispose()
    print(f"audit schema ready in connection {conn_id}: {', '.join(sorted(metadata.tables))}")
    return 0


def audit_verify(conn_id: str, anchor: str | None = None, bucket: str | None = None) -> int:
    """Walk the chain oldest first and recompute every hash: exit 0 intact, 1 broken (or not
    readable, said by error type only: a driver's message can quote values). `anchor`: also
    check the head last written to that S3 connection's bucket, then write today's there."""
    import sqlalchemy as sa

    from lifecycle.chain import verify
    from lifecycle.stores import StoreConfigError

    try:
        engine = _control_engine(conn_id)
    except StoreConfigError as exc:
        print(f"audit-verify: {exc}", file=sys.stderr)
        return 1
    try:
        result = verify(engine)
        print(f"{result.checked} rows checked ({result.before_chain} before the chain)")
        print(result.summary(), file=sys.stdout if result.intact else sys.stderr)
        code = 0 if result.intact else 1
        if anchor is not None:
            code = _anchor(engine, result, anchor, bucket) or code
        return code
    except sa.exc.DBAPIError as exc:
        print(
            f"audit-verify: the control database refused or did not answer "
            f"({type(exc.orig).__name__})",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()


def _anchor(engine: sa.Engine, result: Any, conn_id: str, bucket: str | None) -> int:
    """Check the chain against the head last anchored in the bucket, then anchor this one
    (only when intact): `lifecycle.anchor`, as the daily DAG does. 1 when the chain lost the
    anchored head or the bucket refused."""
    from datetime import UTC

    from botocore.exceptions import BotoCoreError, ClientError

    from lifecycle.anchor import anchor_chain
    from lifecycle.connections import airflow_connection
    from lifecycle.stores import StoreConfigError
    from lifecycle.stores.s3 import client_from_connection

    try:
        connection = airflow_connection(conn_id, "--anchor")
        bucket = bucket or (connection.extra_dejson or {}).get("bucket")
        if not bucket:
            raise StoreConfigError(f"--anchor: connection {conn_id!r} names no bucket (--bucket)")
        client = client_from_connection(connection)
        outcome = anchor_chain(engine, client, bucket, datetime.now(UTC), result)
    except StoreConfigError as exc:
        print(f"audit-verify: {exc}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as exc:
        print(f"audit-verify: the evidence bucket refused ({type(exc).__name__})", file=sys.stderr)
        return 1
    if not outcome.ok:
        print(f"audit-verify: {outcome.message}", file=sys.stderr)
        return 1
    print(outcome.message.rpartition("; ")[2])
    return 0


def grants(
    role: str, dialect: str, apply: bool, audit_conn_id: str, audit_reader: bool = False
) -> int:
    """Print the grants, or apply them connection by connection: one unreachable connection
    does not keep the others' grants back (exit 1 tells it)."""
    from lifecycle.grants import (
        check_role,
        grant_statements,
        owner_statements,
        policies_by_connection,
        reader_grants,
        required_grants,
    )
    from lifecycle.stores.config import REMOVE_RESIDUE

    check_role(role)
    result = load_policies()
    for error in result.errors:
        # An invalid policy gets no grant; its DAG fails with the message anyway.
        print(f"INVALID (no grants) {error.message}", file=sys.stderr)
    policies = [loaded.policy for loaded in result.policies]
    needed = required_grants(policies, audit_conn_id)
    functions = policies_by_connection(policies)
    if audit_reader:
        needed, functions = reader_grants(audit_conn_id), {}
    if not apply:
        for conn_id, table_grants in needed.items():
            print(f"-- connection {conn_id}: run as the tables' owner, in its database")
            if dialect == "postgresql" and any(
                REMOVE_RESIDUE in g.privileges for g in table_grants
            ):
                print(
                    "-- MAINTAIN (store.residue: remove, for VACUUM) exists from PostgreSQL 17; "
                    "before 17 only the table's owner may VACUUM: leave it out there, and the "
                    "runs report the residue as not removed"
                )
            for statement in grant_statements(dialect, role, table_grants):
                print(f"{statement};")
            owned = owner_statements(functions.get(conn_id, []), dialect, role)
            for statement in (s for _table, extra in sorted(owned.items()) for s in extra):
                print(f"{statement};")
        return 0
    databases, failed = _databases_of(needed)
    for conn_ids, engine, tables in databases.values():
        drops = [p for conn_id in conn_ids for p in functions.get(conn_id, [])]
        label = ", ".join(conn_ids)
        failed = not _apply_to_database(role, label, engine, tables, drops) or failed
    return 1 if failed else 0


def _databases_of(
    needed: dict[str, Any],
) -> tuple[dict[str, tuple[list[str], Any, dict[str, set[str]]]], bool]:
    """The grants grouped by database: connections to the same database are granted together,
    in one pass (each pass first revokes what the role held there, so one per connection would
    undo the others). Also whether a connection could not be resolved."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    from lifecycle.stores import StoreConfigError

    databases: dict[str, tuple[list[str], Any, dict[str, set[str]]]] = {}
    failed = False
    for conn_id, table_grants in needed.items():
        try:
            engine = _control_engine(conn_id)
        except (AirflowNotFoundException, StoreConfigError) as exc:
            print(f"{conn_id}: no grants: {exc}", file=sys.stderr)
            failed = True
            continue
        where = engine.url.set(username=None, password=None).render_as_string()
        if where in databases:
            engine.dispose()
        conn_ids, engine, tables = databases.setdefault(where, ([], engine, {}))
        conn_ids.append(conn_id)
        for grant in table_grants:
            tables.setdefault(grant.table, set()).update(grant.privileges)
    return databases, failed


def _apply_to_database(
    role: str, label: str, engine: Any, tables: dict[str, set[str]], drops: list[Any]
) -> bool:
    """Grant on one database; False when it refused (said on stderr, by error type only: a
    driver's message can quote values)."""
    import sqlalchemy as sa

    from lifecycle.grants import TableGrant, apply_grants, residue_not_grantable

    merged = [TableGrant(table, tuple(sorted(p))) for table, p in sorted(tables.items())]
    try:
        if engine.dialect.name == "sqlite":
            print(f"{label}: SQLite has no roles (protect the file instead)")
            return True
        missing = apply_grants(engine, role, merged, drops)
    except sa.exc.DBAPIError as exc:
        print(f"{label}: no grants: {type(exc.orig).__name__}", file=sys.stderr)
        return False
    finally:
        engine.dispose()
    print(f"{label}: {role} granted on {len(merged) - len(missing)} tables")
    version = engine.dialect.server_version_info
    for table in residue_not_grantable(engine.dialect.name, merged, version):
        print(
            f"{label}: table {table}: store.residue: remove needs VACUUM, which before "
            "PostgreSQL 17 only the table's owner may run (no grant gives it alone): not granted; "
            "the runs report the residue as not removed (removal_error)",
            file=sys.stderr,
        )
    for table in missing:
        print(
            f"{label}: table {table} does not exist, no grant: create it, then run "
            "`lifecycle grants --apply` again",
            file=sys.stderr,
        )
    return True


def _day(text: str) -> date:
    """A report bound: a calendar date (YYYY-MM-DD); argparse names the option on failure."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def report(args: argparse.Namespace) -> int:
    """Write the compliance report of [--from, --to] (whole days, both included). Exit 2 on
    bounds that make no period, 1 when the trail cannot be read."""
    if args.to < args.start:
        print(f"report: --to {args.to} is before --from {args.start}", file=sys.stderr)
        return 2
    loaded = load_policies(args.policies or policy_dir())
    for error in loaded.errors:
        # Listed in the report too: its runs would otherwise read as a retired policy's.
        print(f"INVALID {error.message}", file=sys.stderr)
    result = _build_report(args, loaded)
    if result is None:
        return 1
    from lifecycle.report import render_html, render_pdf

    fmt = args.format or ("html" if str(args.output).endswith((".html", ".htm")) else "pdf")
    data = render_pdf(result) if fmt == "pdf" else render_html(result).encode()
    output = args.output or Path(f"retention-report-{args.start}-{args.to}.{fmt}")
    if str(output) == "-":
        sys.stdout.buffer.write(data)
        return 0
    output.write_bytes(data)
    print(f"wrote {output}: {len(result.policies)} policies, {len(result.retired)} retired, {fmt}")
    return 0


def _build_report(args: argparse.Namespace, loaded: LoadResult) -> Report | None:
    """The report's figures from the trail, or None when it cannot be read (said on stderr, by
    error type only: a driver's message can quote values)."""
    import sqlalchemy as sa

    from lifecycle.control import ControlSchemaMissing, require, runs
    from lifecycle.report import Period, build_report
    from lifecycle.stores import StoreConfigError

    try:
        engine = _control_engine(args.conn_id)
    except StoreConfigError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return None
    try:
        require(engine, runs)  # a missing trail is an error, not a report of no runs
        return build_report(
            engine,
            [item.policy for item in loaded.policies],
            Period(args.start, args.to),
            source=f"the audit trail (connection {args.conn_id})",
            invalid_files=tuple(sorted({error.path.name for error in loaded.errors})),
        )
    except ControlSchemaMissing as exc:
        print(f"report: {exc}", file=sys.stderr)
    except sa.exc.DBAPIError as exc:
        print(
            f"report: the control database refused or did not answer ({type(exc.orig).__name__})",
            file=sys.stderr,
        )
    finally:
        engine.dispose()
    return None


def _add_holds(holds_cmd: argparse.ArgumentParser) -> None:
    holds_cmd.add_argument("--conn-id", default="lifecycle_audit", help="control database")
    actions = holds_cmd.add_subparsers(dest="action", required=True, parser_class=_HoldsParser)
    list_cmd = actions.add_parser("list", help="active holds (--all: released ones too)")
    list_cmd.add_argument("--all", action="store_true")
    place_cmd = actions.add_parser("place", help="protect a subject's records from deletion")
    place_cmd.add_argument("--scope", required=True, help="a policy name, or '*' for all")
    place_cmd.add_argument("--subject", required=True, help="customer, phone, ... or prefix")
    place_cmd.add_argument("--value", required=True, help="the subject's value")
    place_cmd.add_argument(
        "--reason", required=True, choices=["legal_hold", "restriction", "dispute"]
    )
    place_cmd.add_argument("--by", required=True, help="who places it")
    place_cmd.add_argument(
        "--expires", type=local_instant, help="ISO 8601; Amsterdam time if no offset"
    )
    place_cmd.add_argument("--note", help="a case reference (no personal data)")
    release_cmd = actions.add_parser("release", help="end a hold")
    release_cmd.add_argument("id", type=int)
    release_cmd.add_argument("--by", required=True, help="who releases it")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lifecycle", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    validate_cmd = commands.add_parser("validate", help="validate the policy files")
    validate_cmd.add_argument("directory", nargs="?", type=Path, default=None)
    schema_cmd = commands.add_parser("schema", help="generate the JSON Schema and reference")
    schema_cmd.add_argument("--check", action="store_true", help="fail if they are stale")
    _add_holds(commands.add_parser("holds", help="list, place or release holds"))
    audit_cmd = commands.add_parser("audit-init", help="create the audit and holds tables")
    audit_cmd.add_argument("--conn-id", default="lifecycle_audit", help="control database")
    verify_cmd = commands.add_parser("audit-verify", help="check the audit trail's hash chain")
    verify_cmd.add_argument("--conn-id", default="lifecycle_audit", help="control database")
    verify_cmd.add_argument(
        "--anchor", metavar="CONN_ID", help="S3 connection: check and write the head there"
    )
    verify_cmd.add_argument("--bucket", help="the evidence bucket (default: the connection's)")
    grants_cmd = commands.add_parser("grants", help="least-privilege grants of the jobs' role")
    grants_cmd.add_argument("--role", required=True, help="the database role the jobs log in as")
    grants_cmd.add_argument(
        "--dialect", default="postgresql", choices=["postgresql", "mysql"], help="when printing"
    )
    grants_cmd.add_argument(
        "--apply", action="store_true", help="run them through each connection (as the owner)"
    )
    grants_cmd.add_argument("--audit-conn-id", default="lifecycle_audit", help="control database")
    grants_cmd.add_argument(
        "--audit-reader", action="store_true", help="the audit UI's role: SELECT on the trail"
    )
    from lifecycle.requests.cli import add_parser as add_requests

    add_requests(
        commands.add_parser("requests", help="data-subject requests: register, list, decide"),
        _HoldsParser,
    )
    report_cmd = commands.add_parser("report", help="the compliance report of a period")
    report_cmd.add_argument(
        "--from", dest="start", required=True, type=_day, help="first day (YYYY-MM-DD), included"
    )
    report_cmd.add_argument("--to", required=True, type=_day, help="last day, included")
    report_cmd.add_argument("--format", choices=["pdf", "html"], help="default: pdf")
    report_cmd.add_argument("--output", type=Path, help="file to write ('-': standard output)")
    report_cmd.add_argument("--conn-id", default="lifecycle_audit", help="control database")
    report_cmd.add_argument("--policies", type=Path, help="policy folder (default: as validate)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "audit-init":
        return audit_init(args.conn_id)
    if args.command == "audit-verify":
        return audit_verify(args.conn_id, args.anchor, args.bucket)
    if args.command == "grants":
        try:
            return grants(
                args.role, args.dialect, args.apply, args.audit_conn_id, args.audit_reader
            )
        except ValueError as exc:
            print(f"grants: {exc}", file=sys.stderr)
            return 1
    if args.command == "validate":
        return validate(args.directory or policy_dir())
    if args.command == "holds":
        return holds(args)
    if args.command == "report":
        return report(args)
    if args.command == "requests":
        from lifecycle.requests.cli import run as requests

        return requests(args)
    return schema(args.check)


if __name__ == "__main__":
    sys.exit(main())
