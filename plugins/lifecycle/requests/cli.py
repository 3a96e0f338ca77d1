"""`python -m lifecycle requests register|list|show|decide`: the privacy officer's commands.

    requests register --kind erasure --subject customer=1042 --subject email=a@b.nl --by dpo
    requests list [--all]
    requests show 7 [--identifiers]
    requests decide 7 --decision granted --by dpo [--note "case 2026-114"]

Nothing printed shows an identifier, except `show --identifiers` (the privacy officer checking
what was registered); the request's run is triggered with its id alone:
`airflow dags trigger dsr_erasure --conf '{"request_id": 7}'` or the UI's trigger form.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from lifecycle.periods import local_instant
from lifecycle.requests import KINDS, dag_id_of

ZONE = ZoneInfo("Europe/Amsterdam")


def add_parser(command: argparse.ArgumentParser, parser_class: type[Any]) -> None:
    command.add_argument("--conn-id", default="lifecycle_audit", help="control database")
    actions = command.add_subparsers(dest="action", required=True, parser_class=parser_class)
    register = actions.add_parser("register", help="register a data-subject request")
    register.add_argument("--kind", required=True, choices=KINDS)
    register.add_argument(
        "--subject",
        action="append",
        required=True,
        metavar="NAME=VALUE",
        help="an identifier as the policies map it: customer=..., phone=..., email=..., "
        "prefix=... (repeat for each)",
    )
    register.add_argument("--by", required=True, help="who registers it")
    register.add_argument("--received", help="ISO 8601; Amsterdam time if no offset; default now")
    register.add_argument("--reference", help="a case reference (no personal data)")
    register.add_argument(
        "--client-instructed",
        action="store_true",
        help="erasure: the client organisation instructed it (its categories are erased too)",
    )
    register.add_argument(
        "--copy-objects", action="store_true", help="access/portability: copy objects too"
    )
    list_cmd = actions.add_parser("list", help="open requests, the soonest due first")
    list_cmd.add_argument("--all", action="store_true", help="closed ones too")
    show = actions.add_parser("show", help="one request and its result per category")
    show.add_argument("id", type=int)
    show.add_argument(
        "--identifiers", action="store_true", help="also print the identifiers (personal data)"
    )
    decide = actions.add_parser("decide", help="close a request (releases a restriction)")
    decide.add_argument("id", type=int)
    decide.add_argument("--decision", required=True, choices=["granted", "rejected"])
    decide.add_argument("--by", required=True, help="who decides")
    decide.add_argument("--note", help="the ground of the decision (no personal data)")


def _identifiers(pairs: list[str]) -> dict[str, str]:
    from lifecycle.requests.register import RequestError

    found: dict[str, str] = {}
    for index, pair in enumerate(pairs, 1):
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise RequestError(f"--subject #{index}: write NAME=VALUE (customer=1042)")
        if name.strip() in found:
            raise RequestError(f"--subject {name.strip()}: given twice")
        found[name.strip()] = value
    return found


def _day(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(ZONE).strftime("%Y-%m-%d %H:%M")


def _line(request: Any, now: datetime) -> str:
    late = "  OVERDUE" if request.overdue(now) else ""
    return (
        f"{request.id:>5}  {request.kind:<12} {request.status:<13} received "
        f"{_day(request.received_at)}  due {_day(request.due_at)}{late}  "
        f"subjects: {', '.join(request.subjects)}"
    )


def run(args: argparse.Namespace) -> int:
    from lifecycle.connections import new_engine
    from lifecycle.control import ControlSchemaMissing
    from lifecycle.requests.register import RequestError

    engine = new_engine(args.conn_id, "--conn-id")
    try:
        return _action(engine, args)
    except (RequestError, ControlSchemaMissing) as exc:
        print(f"requests: {exc}", file=sys.stderr)
        return 1
    except sa.exc.DBAPIError as exc:
        print(
            f"requests: the control database refused or did not answer ({type(exc.orig).__name__})",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()


def _action(engine: sa.Engine, args: argparse.Namespace) -> int:
    from lifecycle.loader import load_policies
    from lifecycle.requests.register import (
        decide_request,
        get_request,
        identifiers_of,
        list_requests,
        register_request,
    )

    now = datetime.now(UTC)
    if args.action == "register":
        policies = [loaded.policy for loaded in load_policies().policies]
        request_id = register_request(
            engine,
            kind=args.kind,
            identifiers=_identifiers(args.subject),
            registered_by=args.by,
            received_at=local_instant(args.received) if args.received else None,
            reference=args.reference,
            client_instructed=args.client_instructed,
            copy_objects=args.copy_objects,
            mapped={s for p in policies for s in p.store.hold_subjects()},
        )
        request = get_request(engine, request_id)
        print(f"registered request {request_id}, due {_day(request.due_at)}")
        print(
            f"run it: airflow dags trigger {dag_id_of(args.kind)} --conf "
            f"'{{\"request_id\": {request_id}}}'"
        )
        return 0
    if args.action == "list":
        requests = list_requests(engine, include_closed=args.all)
        for request in requests:
            print(_line(request, now))
        print(f"{len(requests)} requests")
        return 0
    if args.action == "show":
        request = get_request(engine, args.id)
        print(_line(request, now))
        if request.reference:
            print(f"       reference: {request.reference}")
        if args.identifiers:
            for subject, value in sorted(identifiers_of(engine, request.id).items()):
                print(f"       {subject} = {value}")
        for policy, result in _results(engine, request.id, request.last_run_id):
            print(f"       {policy:<28} {json.dumps(result, sort_keys=True)}")
        if request.decision:
            print(f"       {request.decision} by {request.decided_by} {_day(request.decided_at)}")
        return 0
    released = decide_request(
        engine, args.id, decision=args.decision, decided_by=args.by, note=args.note
    )
    print(f"request {args.id} closed ({args.decision})")
    if released:
        print(f"released restriction hold(s) {', '.join(map(str, released))}")
    return 0


def _results(
    engine: sa.Engine, request_id: int, run_id: str | None
) -> list[tuple[str, dict[str, Any]]]:
    from lifecycle.requests.register import category_results

    if run_id is None:
        return []
    with engine.connect() as conn:
        rows = category_results(conn, request_id, run_id)
    found = []
    for policy, status, result, clients in rows:
        entry = {"status": status, **(result or {})}
        if clients:
            entry["forward_to_clients"] = clients
        found.append((policy, entry))
    return found
