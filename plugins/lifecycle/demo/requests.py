"""The demo's data-subject requests: one of each kind for one demo customer, as a privacy
officer would handle them (register, trigger with the id, read the outcome, decide), and the
outcome per category. Nothing printed holds an identifier: the request's id, the policies and
counts only (`python -m lifecycle requests show <id> --identifiers` shows what was registered).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

# The order a privacy officer would take them in: erasure last, it removes what the others see.
ORDER = ("access", "portability", "restriction", "erasure")


def demo_subject(store: sa.Engine) -> tuple[int, dict[str, str]]:
    """A customer with a contract still running (the lowest such id after the held customer:
    its contract data is active, kept by an erasure) and its identifiers as the policies map
    them: its id, a contact's e-mail address and phone number."""
    from lifecycle.demo.seed import HELD_CUSTOMER

    with store.connect() as conn:
        customer = conn.execute(
            sa.text(
                "SELECT customer_id FROM contracts GROUP BY customer_id "
                "HAVING count(ended_at) < count(*) AND customer_id <> :held "
                "ORDER BY customer_id LIMIT 1"
            ),
            {"held": HELD_CUSTOMER},
        ).scalar_one()
        email, phone = conn.execute(
            sa.text("SELECT email, phone FROM org_contacts WHERE customer_id = :c ORDER BY id"),
            {"c": customer},
        ).first() or (None, None)
    identifiers = {"customer": str(customer)}
    if email:
        identifiers["email"] = email
    if phone:
        identifiers["phone"] = phone
    return customer, identifiers


def run_demo_requests(
    dags: dict[str, Any],
    audit: sa.Engine,
    store: sa.Engine,
    logical_date: datetime,
    s3: Any,
    exports: Path,
) -> list[str]:
    """Register and run one request of each kind; print each one's outcome per category.
    Returns the ids of the request runs that did not succeed."""
    from lifecycle.loader import load_policies

    customer, identifiers = demo_subject(store)
    recording = _a_support_recording(s3)
    if recording is not None:
        identifiers["prefix"] = recording
    mapped = {s for p in load_policies().policies for s in p.policy.store.hold_subjects()}
    print(
        f"\nData-subject requests for demo customer {customer} (its identifiers: "
        f"{', '.join(sorted(identifiers))}; kept in the register only)"
    )
    failed: list[str] = []
    # The engine's log records of the request runs, every level (the demo's console shows
    # warnings only): read by the privacy check below.
    engine_log = logging.getLogger("lifecycle")
    witness, before = _LogWitness(), (engine_log.level, engine_log.propagate)
    engine_log.addHandler(witness)
    engine_log.setLevel(logging.DEBUG)
    engine_log.propagate = False
    runs = []
    try:
        for kind in ORDER:
            runs.append(_one(kind, dags, audit, identifiers, mapped, logical_date, failed, exports))
    finally:
        engine_log.removeHandler(witness)
        engine_log.setLevel(before[0])
        engine_log.propagate = before[1]
    print_privacy_check(audit, identifiers, runs, witness.text())
    return failed


def _one(  # one request: registered, run, its outcome printed (a restriction then decided)
    kind: str,
    dags: dict[str, Any],
    audit: sa.Engine,
    identifiers: dict[str, str],
    mapped: set[str],
    logical_date: datetime,
    failed: list[str],
    exports: Path,
) -> Any:
    from lifecycle.requests import dag_id_of
    from lifecycle.requests.register import decide_request, get_request, register_request

    request_id = register_request(
        audit,
        kind=kind,
        identifiers=identifiers,
        registered_by="demo: privacy officer",
        reference=f"demo {kind}",
        copy_objects=kind == "access",
        mapped=mapped,
    )
    dag_id = dag_id_of(kind)
    dag_run = dags[dag_id].test(logical_date=logical_date, run_conf={"request_id": request_id})
    if str(dag_run.state) != "success":
        failed.append(f"{dag_id} (request {request_id})")
    request = get_request(audit, request_id)
    print(f"\n  request {request_id}: {kind}, {request.status}, due {request.due_at:%Y-%m-%d}")
    if kind in ("access", "portability") and request.last_run_id is not None:
        from lifecycle.requests.archive import run_folder

        folder = exports / run_folder(request_id, request.last_run_id)
        print(f"  archive: {folder}/ (a folder per category)")
    print_outcome(audit, request_id, request.last_run_id)
    if kind == "restriction":
        released = decide_request(
            audit, request_id, decision="granted", decided_by="demo: privacy officer"
        )
        print(f"  decided: granted; {len(released)} restriction hold(s) released")
    return dag_run


class _LogWitness(logging.Handler):
    """Every log record of the request runs, formatted, to look for identifiers in."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # a record whose arguments do not format: its template then
            self.lines.append(str(record.msg))
        if record.levelno >= logging.WARNING:  # still on the console, as without the witness
            logging.getLogger().handle(record)

    def text(self) -> str:
        return "\n".join(self.lines)


def print_privacy_check(
    audit: sa.Engine, identifiers: dict[str, str], dag_runs: list[Any], logged: str
) -> None:
    """Prove on this run what the design promises: no identifier of the subject (as registered,
    or as the stores spell it: digits only for a number) in the runs' XCom, their conf, the
    audit trail or what the tasks logged. Raises when one is found."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from lifecycle.audit import read_runs

    with create_session() as session:
        xcom = [
            json.dumps(row.value, default=str)
            for dag_run in dag_runs
            for row in session.query(XComModel).filter(
                XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id
            )
        ]
    places = {
        "XCom": "\n".join(xcom),
        "the runs' conf": json.dumps([dag_run.conf for dag_run in dag_runs]),
        "the audit trail": json.dumps(read_runs(audit), default=str),
        "the task logs": logged,
    }
    needles = _needles(identifiers)
    found = [
        f"{subject} in {where}"
        for where, text in places.items()
        for subject, needle in needles
        if needle in text.lower()
    ]
    if found:
        raise RuntimeError(f"privacy check failed: an identifier was found ({', '.join(found)})")
    print(
        f"\nprivacy check: none of the {len(identifiers)} identifiers in {len(xcom)} XCom "
        f"values, the {len(dag_runs)} runs' conf, the audit trail or {len(logged.splitlines())} "
        "log lines of the request runs"
    )


def _needles(identifiers: dict[str, str]) -> list[tuple[str, str]]:
    needles = []
    for subject, value in identifiers.items():
        text = value.strip().lower()
        if subject == "customer":  # a short number: as a JSON value, not any digit run
            needles += [(subject, f'"customer": "{text}"'), (subject, f"customer={text}")]
            continue
        needles.append((subject, text))
        digits = "".join(ch for ch in text if ch.isdigit())
        if subject == "phone" and len(digits) >= 8:
            needles.append((subject, digits[-8:]))  # the subscriber part, however spelled
    return needles


def _a_support_recording(s3: Any) -> str | None:
    """The key of one support call recording, without its extension: a prefix of exactly it."""
    from lifecycle.demo.objects import RECORDINGS

    listed = s3.list_objects_v2(Bucket=RECORDINGS, Prefix="support/", MaxKeys=1)
    contents = listed.get("Contents") or []
    return str(contents[0]["Key"]).rsplit(".", 1)[0] if contents else None


def print_outcome(audit: sa.Engine, request_id: int, run_id: str | None) -> None:
    from lifecycle.requests.register import category_results

    if run_id is None:
        print("  (no run recorded)")
        return
    with audit.connect() as conn:
        rows = category_results(conn, request_id, run_id)
    header = ("category", "result", "records", "deleted", "held", "active", "note")
    lines: list[tuple[str, ...]] = [header]
    for policy, status, result, _clients in rows:
        lines.append(
            (
                policy,
                status,
                *(str(result.get(k, "-")) for k in ("records", "deleted", "held", "active")),
                _note(status, result),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for index, line in enumerate(lines):
        print("    " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            print("    " + "  ".join("-" * w for w in widths))


def _note(status: str, result: dict[str, Any]) -> str:
    if status == "exported":
        copied = " and the objects" if result.get("archive", "").endswith("recordings/") else ""
        return "records.csv, records.json, manifest.json" + copied
    if status == "kept" and result.get("kept_until"):
        return f"legal obligation: the last goes by {result['kept_until']}"
    if status == "restricted":
        return f"hold(s) {', '.join(map(str, result.get('holds_placed', [])))}"
    if status == "erased":
        verified = "verified" if result.get("verified") else "NOT verified"
        return f"{verified}" + (f"; {result['reasons'][0]}" if result.get("reasons") else "")
    reasons = result.get("reasons") or []
    return str(reasons[0]) if reasons else ""
