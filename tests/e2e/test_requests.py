"""Data-subject requests end to end with `dag.test()`: registered in the control database, run
by id through the four request DAGs over a SQL store and moto's S3 server, with exact survivors,
archives equal to the subject's records, and no identifier in XCom, the logs, the conf or the
audit trail."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from dateutil.relativedelta import relativedelta

from lifecycle.control import holds as holds_table
from lifecycle.control import request_results
from lifecycle.demo.environment import s3_connection_uri
from lifecycle.holds import place_hold
from lifecycle.requests.register import decide_request, get_request, register_request
from lifecycle.stores.s3 import client_from_connection
from tests.e2e.test_runs import LOGICAL_DATE
from tests.stores.test_s3 import inventory, new_bucket, put

# The subject: customer 7, number +31 6 12345678, address jan@example.nl, recordings under
# support/cust-7/. Customer 8 is someone else who must lose nothing.
SUBJECT = {
    "customer": "7",
    "phone": "06-12345678",
    "email": "Jan@Example.nl",
    "prefix": "support/cust-7/",
}
# What must never appear outside the register (its spellings as stored, too).
SECRETS = ("12345678", "jan@example", "Jan@Example", "cust-7")
OLD = LOGICAL_DATE - timedelta(days=400)
RECENT = LOGICAL_DATE - timedelta(days=2)
STATEMENT = "{service: Test, data: Test data, retention: Zes maanden}"


def _policy(name, ground, controller, table, timestamp, subjects, **extra) -> str:
    subject_lines = "\n".join(f"    {s}: {c}" for s, c in subjects.items())
    extra_lines = "".join(f"{k}: {v}\n" for k, v in extra.items())
    return (
        f"name: {name}\ntitle: Test {name}\nstatement: {STATEMENT}\ncontroller: {controller}\n"
        f"legal_basis: {ground}\nretention: {{period: P6M}}\nstore:\n  kind: sql\n"
        f"  conn_id: telecom_db\n  table: {table}\n  key: id\n  timestamp: {timestamp}\n"
        f"  subjects:\n{subject_lines}\nguards: {{max_delete_fraction: 1, "
        f"max_erasure_records: 100}}\nretries: 0\n{extra_lines}"
    )


def _tables() -> tuple[sa.MetaData, dict[str, sa.Table]]:
    """The categories' tables, portable to SQLite, PostgreSQL and MariaDB (dsr_ names: the
    servers' shared test database has other tests' `calls` and `subscribers`)."""
    meta = sa.MetaData()

    def table(name: str, *columns: sa.Column) -> sa.Table:
        key = sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)
        return sa.Table(f"dsr_{name}", meta, key, *columns)

    when = sa.DateTime()  # naive UTC, as the tests' other tables
    tables = {
        "subscribers": table("subscribers", sa.Column("customer_id", sa.Integer)),
        "calls": table(
            "calls",
            sa.Column("subscriber_id", sa.Integer),
            sa.Column("caller", sa.String(40)),
            sa.Column("started_at", when),
        ),
        "intercepts": table(
            "intercepts", sa.Column("source", sa.String(40)), sa.Column("seen_at", when)
        ),
        "contacts": table(
            "contacts",
            sa.Column("customer_id", sa.Integer),
            sa.Column("email", sa.String(100)),
            sa.Column("org", sa.String(40)),
            sa.Column("updated_at", when),
        ),
        "visits": table("visits", sa.Column("email", sa.String(100)), sa.Column("seen_at", when)),
    }
    return meta, tables


def _airflow_uri(url: sa.URL) -> str:
    """An Airflow connection URI for a test database URL."""
    if url.get_backend_name() == "sqlite":
        return url.render_as_string()
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[url.get_backend_name()]
    return f"{scheme}://{url.username}@{url.host}:{url.port}/{url.database}"


@pytest.fixture
def requests_deployment(deployment, s3_connection, monkeypatch, tmp_path, request):
    """Four SQL categories and one S3 category, each holding customer 7's and customer 8's
    records, in SQLite (or the server an indirect parameter names); the export location a
    local directory."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_RECORDINGS", s3_connection_uri(s3_connection.extra_dejson["endpoint_url"])
    )
    exports = tmp_path / "exports"
    monkeypatch.setenv(
        "AIRFLOW_CONN_LIFECYCLE_EXPORTS",
        json.dumps({"conn_type": "fs", "extra": {"path": str(exports)}}),
    )
    server = getattr(request, "param", "sqlite")
    if server != "sqlite":
        url = sa.make_url(
            request.getfixturevalue("postgres_url" if server == "postgresql" else "mariadb_url")
        )
        deployment.store_url = url.render_as_string(hide_password=False)
        monkeypatch.setenv("AIRFLOW_CONN_TELECOM_DB", _airflow_uri(url))
    engine = sa.create_engine(deployment.store_url)
    meta, tables = _tables()
    meta.drop_all(engine)
    meta.create_all(engine)
    naive = {"old": OLD.replace(tzinfo=None), "recent": RECENT.replace(tzinfo=None)}
    with engine.begin() as conn:
        conn.execute(
            tables["subscribers"].insert(),
            [
                {"id": 70, "customer_id": 7},
                {"id": 71, "customer_id": 7},
                {"id": 80, "customer_id": 8},
            ],
        )
        conn.execute(
            tables["calls"].insert(),
            [
                {
                    "id": 1,
                    "subscriber_id": 70,
                    "caller": "+31 6 12345678",
                    "started_at": naive["old"],
                },
                {
                    "id": 2,
                    "subscriber_id": 71,
                    "caller": "+31 20 1111111",
                    "started_at": naive["recent"],
                },
                {
                    "id": 3,
                    "subscriber_id": 80,
                    "caller": "+31 20 2222222",
                    "started_at": naive["old"],
                },
                # customer 8's line, with the subject's number as the caller
                {
                    "id": 4,
                    "subscriber_id": 80,
                    "caller": "0612345678",
                    "started_at": naive["recent"],
                },
            ],
        )
        conn.execute(
            tables["intercepts"].insert(),
            [
                {"id": 1, "source": "+31612345678", "seen_at": naive["recent"]},
                {"id": 2, "source": "+31622222222", "seen_at": naive["recent"]},
            ],
        )
        conn.execute(
            tables["contacts"].insert(),
            [
                {
                    "id": 1,
                    "customer_id": 7,
                    "email": "jan@example.nl",
                    "org": "Acme",
                    "updated_at": naive["old"],
                },
                {
                    "id": 2,
                    "customer_id": 8,
                    "email": "piet@example.nl",
                    "org": "Beta",
                    "updated_at": naive["old"],
                },
            ],
        )
        conn.execute(
            tables["visits"].insert(),
            [
                {"id": 1, "email": "JAN@example.nl ", "seen_at": naive["recent"]},
                {"id": 2, "email": "piet@example.nl", "seen_at": naive["recent"]},
            ],
        )
    engine.dispose()
    link = (
        "{column: subscriber_id, through: [{table: dsr_subscribers, key: id, column: customer_id}]}"
    )
    policies = {
        "calls": _policy(
            "calls", "contract", "provider", "dsr_calls", "started_at",
            {"customer": link, "phone": "caller"},
        ),
        "intercepts": _policy(
            "intercepts", "legal_obligation", "provider", "dsr_intercepts", "seen_at",
            {"phone": "source"},
        ),
        "contacts": _policy(
            "contacts", "contract", "client", "dsr_contacts", "updated_at",
            {"customer": "customer_id", "email": "email"},
        ),
        "visits": _policy(
            "visits", "legitimate_interest", "provider", "dsr_visits", "seen_at", {"email": "email"}
        ),
    }  # fmt: skip
    for name, text in policies.items():
        (deployment.policy_dir / f"{name}.yaml").write_text(text)
    s3 = client_from_connection(s3_connection)
    bucket = new_bucket(s3)
    put(s3, bucket, "support/cust-7/a.wav", OLD, RECENT)
    put(s3, bucket, "support/cust-8/b.wav", OLD)
    (deployment.policy_dir / "recordings.yaml").write_text(
        f"name: recordings\ntitle: Recordings\nstatement: {STATEMENT}\ncontroller: provider\n"
        "legal_basis: legitimate_interest\nretention: {period: P90D}\nstore:\n  kind: s3\n"
        f"  conn_id: recordings\n  bucket: {bucket}\n  prefix: support/\nretries: 0\n"
    )
    deployment.exports = exports
    deployment.s3, deployment.bucket = s3, bucket
    yield deployment
    engine = sa.create_engine(deployment.store_url)
    meta.drop_all(engine)
    engine.dispose()


def _control(deployment) -> sa.Engine:
    return sa.create_engine(deployment.audit_url)


def _register(deployment, kind, **options) -> int:
    engine = _control(deployment)
    try:
        return register_request(
            engine, kind=kind, identifiers=SUBJECT, registered_by="dpo", **options
        )
    finally:
        engine.dispose()


def _ids(deployment, table) -> list[int]:
    engine = sa.create_engine(deployment.store_url)
    try:
        with engine.connect() as conn:
            return sorted(conn.exec_driver_sql(f"SELECT id FROM dsr_{table}").scalars())
    finally:
        engine.dispose()


def _results(deployment, request_id) -> dict[str, tuple[str, dict, list | None]]:
    engine = _control(deployment)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(request_results).where(request_results.c.request_id == request_id)
            ).all()
    finally:
        engine.dispose()
    return {row.policy: (row.status, row.result, row.clients) for row in rows}


def _request_rows(deployment, request_id) -> dict[str, dict]:
    return {row["policy"]: row for row in deployment.audit() if row["request_id"] == request_id}


def _no_identifier_anywhere(deployment, dag_run, captured: str) -> None:
    """Nothing of the subject in XCom, the conf, the trail, or what the tasks logged."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        values = [
            json.dumps(row.value, default=str)
            for row in session.query(XComModel).filter(
                XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id
            )
        ]
    texts = {
        "xcom": "\n".join(values),
        "conf": json.dumps(dag_run.conf),
        "trail": json.dumps(deployment.audit(), default=str),
        "logs": captured,
    }
    assert values, "the run pushed no XCom: this check would prove nothing"
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret.lower() not in text.lower(), f"{secret!r} found in {where}"


def test_access_writes_each_categorys_records_and_nothing_of_anyone_else(
    requests_deployment, capfd
):
    deployment = requests_deployment
    request_id = _register(deployment, "access", copy_objects=True)

    run = deployment.run("dsr_access", LOGICAL_DATE, conf={"request_id": request_id})

    assert str(run.state) == "success"
    results = _results(deployment, request_id)
    assert {p: r[0] for p, r in results.items()} == {
        "calls": "exported",
        "intercepts": "exported",
        "contacts": "exported",
        "visits": "exported",
        "recordings": "exported",
    }
    (archive,) = (deployment.exports / "requests" / f"request-{request_id}").iterdir()
    exported = {
        folder.name: json.loads((folder / "records.json").read_text())
        for folder in archive.iterdir()
        if folder.is_dir()
    }
    assert {p: [r.get("id", r.get("key")) for r in rows] for p, rows in exported.items()} == {
        "calls": [1, 2, 4],  # customer 7's lines, and the call to the subject's number
        "intercepts": [1],
        "contacts": [1],
        "visits": [1],
        "recordings": ["support/cust-7/a.wav"],
    }
    assert (archive / "recordings" / "objects" / "support/cust-7/a.wav").read_bytes() == b"audio"
    manifest = json.loads((archive / "calls" / "manifest.json").read_text())
    assert (manifest["records"], manifest["legal_basis"], manifest["retention_period"]) == (
        3,
        "contract",
        "P6M",
    )
    assert manifest["oldest"].startswith(OLD.date().isoformat())
    csv_lines = (archive / "contacts" / "records.csv").read_text().splitlines()
    assert csv_lines[0] == "id,customer_id,email,org,updated_at" and "Beta" not in csv_lines[1]
    assert get_request(_control(deployment), request_id).status == "answered"
    rows = _request_rows(deployment, request_id)
    assert rows["calls"]["status"] == "exported" and rows["calls"]["total"] == 3
    assert rows["*"]["status"] == "answered"
    _no_identifier_anywhere(deployment, run, capfd.readouterr().out + capfd.readouterr().err)


def test_portability_leaves_out_legal_obligation_and_legitimate_interest(requests_deployment):
    deployment = requests_deployment
    request_id = _register(deployment, "portability")

    run = deployment.run("dsr_portability", LOGICAL_DATE, conf={"request_id": request_id})

    assert str(run.state) == "success"
    results = _results(deployment, request_id)
    assert {p: r[0] for p, r in results.items()} == {
        "calls": "exported",
        "contacts": "exported",
        "intercepts": "not_applicable",
        "visits": "not_applicable",
        "recordings": "not_applicable",
    }
    (archive,) = (deployment.exports / "requests" / f"request-{request_id}").iterdir()
    assert sorted(p.name for p in archive.iterdir() if p.is_dir()) == ["calls", "contacts"]
    manifest = json.loads((archive / "manifest.json").read_text())
    assert (manifest["request"], manifest["kind"], manifest["folders"]) == (
        request_id,
        "portability",
        ["calls", "contacts"],
    )
    assert manifest["categories"]["visits"]["result"] == "not_applicable"
    assert "legitimate interest" in manifest["categories"]["visits"]["reasons"][0]


def test_erasure_keeps_legal_obligations_holds_and_client_data_and_says_why(
    requests_deployment, capfd
):
    deployment = requests_deployment
    engine = _control(deployment)
    hold = place_hold(
        engine, scope="calls", subject="customer", value="7", reason="legal_hold", placed_by="x"
    )
    request_id = _register(deployment, "erasure")

    run = deployment.run("dsr_erasure", LOGICAL_DATE, conf={"request_id": request_id})

    assert str(run.state) == "success"
    # calls: customer 7's are held (the hold), call 4 (the subject's number) goes.
    assert _ids(deployment, "calls") == [1, 2, 3]
    assert _ids(deployment, "intercepts") == [1, 2]  # a legal obligation: kept
    assert _ids(deployment, "contacts") == [1, 2]  # the client controls it: forwarded
    assert _ids(deployment, "visits") == [2]
    assert inventory(deployment.s3, deployment.bucket) == {"support/cust-8/b.wav": 1}
    results = _results(deployment, request_id)
    assert {p: r[0] for p, r in results.items()} == {
        "calls": "erased",
        "intercepts": "kept",
        "contacts": "forwarded",
        "visits": "erased",
        "recordings": "erased",
    }
    # Kept until its own window ends: the newest record's time plus the policy's P6M.
    assert (
        results["intercepts"][1]["kept_until"]
        == (RECENT + relativedelta(months=6)).date().isoformat()
    )
    assert results["contacts"][2] == ["7"]  # the client to forward to: in the register only
    rows = _request_rows(deployment, request_id)
    assert (rows["calls"]["deleted"], rows["calls"]["held"], rows["calls"]["verified"]) == (
        1,
        2,
        True,
    )
    assert rows["calls"]["holds"] == {str(hold): 2}
    assert any("hold" in reason for reason in rows["calls"]["reasons"])
    assert rows["recordings"]["deleted"] == 2  # both versions of the subject's one key
    assert any("legal obligation" in r for r in rows["intercepts"]["reasons"])
    assert get_request(engine, request_id).status == "needs_review"  # a forward is pending
    _no_identifier_anywhere(deployment, run, capfd.readouterr().out + capfd.readouterr().err)
    engine.dispose()


def test_an_erasure_the_client_instructed_erases_its_categories_too(requests_deployment):
    deployment = requests_deployment
    request_id = _register(deployment, "erasure", client_instructed=True)

    run = deployment.run("dsr_erasure", LOGICAL_DATE, conf={"request_id": request_id})

    assert str(run.state) == "success"
    assert _ids(deployment, "contacts") == [2]
    assert _ids(deployment, "calls") == [3]
    assert get_request(_control(deployment), request_id).status == "answered"


def test_an_erasure_over_the_guard_is_refused_for_review_and_deletes_nothing(
    requests_deployment,
):
    deployment = requests_deployment
    path = deployment.policy_dir / "calls.yaml"
    path.write_text(path.read_text().replace("max_erasure_records: 100", "max_erasure_records: 2"))
    request_id = _register(deployment, "erasure")

    run = deployment.run("dsr_erasure", LOGICAL_DATE, conf={"request_id": request_id})

    assert str(run.state) == "success"
    assert _ids(deployment, "calls") == [1, 2, 3, 4]
    row = _request_rows(deployment, request_id)["calls"]
    assert row["status"] == "refused" and row["deleted"] == 0
    assert "more than guards.max_erasure_records 2" in row["reasons"][0]
    assert get_request(_control(deployment), request_id).status == "needs_review"


def test_a_restriction_holds_the_subject_until_the_request_is_decided(requests_deployment):
    deployment = requests_deployment
    request_id = _register(deployment, "restriction")

    run = deployment.run("dsr_restriction", LOGICAL_DATE, conf={"request_id": request_id})

    assert str(run.state) == "success"
    engine = _control(deployment)
    with engine.connect() as conn:
        placed = conn.execute(
            sa.select(holds_table.c.scope, holds_table.c.subject, holds_table.c.reason)
            .where(holds_table.c.request_id == request_id, holds_table.c.released_at.is_(None))
            .order_by(holds_table.c.scope, holds_table.c.subject)
        ).all()
    assert [tuple(row) for row in placed] == [
        ("calls", "customer", "restriction"),
        ("calls", "phone", "restriction"),
        ("contacts", "customer", "restriction"),
        ("contacts", "email", "restriction"),
        ("intercepts", "phone", "restriction"),
        ("recordings", "prefix", "restriction"),
        ("visits", "email", "restriction"),
    ]
    # The daily retention run of visits now keeps the subject's old visit.
    released = decide_request(engine, request_id, decision="granted", decided_by="dpo")
    assert len(released) == 7
    with engine.connect() as conn:
        active = conn.execute(
            sa.select(sa.func.count())
            .select_from(holds_table)
            .where(holds_table.c.request_id == request_id, holds_table.c.released_at.is_(None))
        ).scalar_one()
    assert active == 0
    assert get_request(engine, request_id).status == "closed"
    engine.dispose()


@pytest.mark.parametrize("conf", [{"request_id": 999}, {}])
def test_a_bad_request_id_fails_and_touches_nothing(requests_deployment, conf, capfd):
    deployment = requests_deployment
    run = deployment.run("dsr_erasure", LOGICAL_DATE, conf=conf)

    assert str(run.state) == "failed"
    assert _ids(deployment, "calls") == [1, 2, 3, 4]
    assert deployment.audit() == []
    expected = "request 999: no such request" if conf else "trigger the DAG with the request's"
    assert expected in capfd.readouterr().out


def test_a_request_id_that_is_no_number_is_refused_by_the_trigger_form(requests_deployment):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="request_id"):
        requests_deployment.run("dsr_erasure", LOGICAL_DATE, conf={"request_id": "x"})
    assert _ids(requests_deployment, "calls") == [1, 2, 3, 4]


def test_a_request_of_another_kind_is_refused_by_the_wrong_dag(requests_deployment):
    deployment = requests_deployment
    request_id = _register(deployment, "access")

    run = deployment.run("dsr_erasure", LOGICAL_DATE, conf={"request_id": request_id})

    assert str(run.state) == "failed"
    assert _ids(deployment, "calls") == [1, 2, 3, 4]
    assert _request_rows(deployment, request_id) == {}


def test_an_identifier_no_policy_maps_is_refused_at_registration(requests_deployment):
    from lifecycle.loader import load_policies
    from lifecycle.requests.register import RequestError

    mapped = {
        s
        for loaded in load_policies(requests_deployment.policy_dir).policies
        for s in loaded.policy.store.hold_subjects()
    }
    engine = _control(requests_deployment)
    with pytest.raises(RequestError, match="no policy maps the subject 'iban'"):
        register_request(
            engine,
            kind="erasure",
            identifiers={"iban": "NL91ABNA0417164300"},
            registered_by="dpo",
            mapped=mapped,
        )
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM retention_requests").scalar() == 0
    engine.dispose()


@pytest.mark.parametrize(
    "requests_deployment",
    [
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
    indirect=True,
)
def test_access_then_erasure_on_a_database_server(requests_deployment):
    """The same requests with the store on PostgreSQL and on MariaDB: the archive holds the
    subject's records, the erasure leaves exactly the others' and the held ones."""
    deployment = requests_deployment
    engine = _control(deployment)
    place_hold(
        engine,
        scope="calls",
        subject="phone",
        value="+31612345678",
        reason="legal_hold",
        placed_by="x",
    )
    access = _register(deployment, "access")
    erasure = _register(deployment, "erasure")

    runs = [
        deployment.run(f"dsr_{kind}", LOGICAL_DATE, conf={"request_id": request_id})
        for kind, request_id in (("access", access), ("erasure", erasure))
    ]

    assert [str(run.state) for run in runs] == ["success", "success"]
    (archive,) = (deployment.exports / "requests" / f"request-{access}").iterdir()
    exported = json.loads((archive / "calls" / "records.json").read_text())
    assert [(r["id"], r["subscriber_id"]) for r in exported] == [(1, 70), (2, 71), (4, 80)]
    # Calls 1 and 4 carry the held number; call 2 (customer 7's line) goes, call 3 is another's.
    assert _ids(deployment, "calls") == [1, 3, 4]
    assert _ids(deployment, "visits") == [2]
    assert _ids(deployment, "intercepts") == [1, 2]
    row = _request_rows(deployment, erasure)["calls"]
    assert (row["deleted"], row["held"], row["verified"]) == (1, 2, True)
    engine.dispose()


def test_an_archive_goes_to_an_export_bucket_as_well(
    requests_deployment, s3_connection, monkeypatch
):
    deployment = requests_deployment
    client = deployment.s3
    bucket = new_bucket(client, versioned=False)
    extra = json.loads(s3_connection.extra) | {"bucket": bucket}
    monkeypatch.setenv(
        "AIRFLOW_CONN_LIFECYCLE_EXPORTS",
        json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}),
    )
    request_id = _register(deployment, "access")

    run = deployment.run("dsr_access", LOGICAL_DATE, conf={"request_id": request_id})

    assert str(run.state) == "success"
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"requests/request-{request_id}/")
    keys = sorted(item["Key"] for item in listed["Contents"])
    categories = {key.split("/")[3] for key in keys if key.count("/") > 3}
    assert categories == {"calls", "intercepts", "contacts", "visits", "recordings"}
    assert sum(key.endswith("/manifest.json") for key in keys) == 6  # the archive's, 5 categories'
    (calls,) = [key for key in keys if key.endswith("/calls/records.json")]
    records = json.loads(client.get_object(Bucket=bucket, Key=calls)["Body"].read())
    assert [record["id"] for record in records] == [1, 2, 4]
    result = _results(deployment, request_id)["calls"][1]
    assert result["archive"].startswith(f"s3://{bucket}/requests/request-{request_id}/")


def test_an_erasure_that_fails_midway_says_what_went_and_a_retry_writes_its_own_row(
    requests_deployment,
):
    """The store fails after the first batch: the category's row says failed, with the record
    the ledger saw go; the retried try erases the rest and writes a row of its own beside it."""
    from lifecycle.loader import load_policies
    from lifecycle.requests.steps import RequestRun, handle

    deployment = requests_deployment
    path = deployment.policy_dir / "calls.yaml"
    path.write_text(path.read_text().replace("  key: id\n", "  key: id\n  batch_size: 1\n"))
    policy = next(
        p.policy for p in load_policies(deployment.policy_dir).policies if p.policy.name == "calls"
    )
    store = sa.create_engine(deployment.store_url)
    with store.begin() as conn:  # call 2 cannot be deleted: the store fails on its batch
        conn.exec_driver_sql(
            "CREATE TRIGGER crash BEFORE DELETE ON dsr_calls WHEN old.id = 2 "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
    request_id = _register(deployment, "erasure")
    run = RequestRun(request_id, "erasure", "manual__1", 0, LOGICAL_DATE, None)

    with pytest.raises(Exception, match="purge batch 2 failed"):
        handle(policy, run, try_number=1)
    assert _ids(deployment, "calls") == [2, 3, 4]  # call 1 went in batch 1; call 4 not yet
    with store.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER crash")
    handle(policy, run, try_number=2)
    store.dispose()

    assert _ids(deployment, "calls") == [3]
    rows = {row["run_id"]: row for row in deployment.audit() if row["request_id"] == request_id}
    failed, retried = rows["manual__1/calls"], rows["manual__1/calls/try-2"]
    assert (failed["status"], failed["deleted"], failed["batches"]) == ("failed", 1, 1)
    assert (
        "1 records deleted in 1 batches before the failure (deletion ledger)" in (failed["reasons"])
    )
    assert (retried["status"], retried["deleted"], retried["verified"]) == ("erased", 2, True)
    assert sum(row["deleted"] for row in rows.values()) == 3  # each record counted once
