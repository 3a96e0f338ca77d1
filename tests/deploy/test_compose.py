"""docker-compose.yml is a valid Compose file and a consistent production stack.

No Docker engine runs here, so the file is checked the way `docker compose config` would read it:
its variables interpolated from .env.example, then validated against the Compose Specification's
JSON Schema, vendored as compose-spec.json (byte for byte from the compose-spec/compose-spec
repository, schema/compose-spec.json at commit 00655e2222608fa6eaecdf12ac5195889ca2244a). Then
what the schema cannot know: secrets, dependencies, health, scaling, mounts, the image, the
executor, the connections the policies name and the least-privilege role they log in as.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from lifecycle.loader import DEFAULT_POLICY_DIR, load_policies
from tests.conftest import PROJECT

COMPOSE = PROJECT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT / ".env.example"
SCHEMA = Path(__file__).with_name("compose-spec.json")
AIRFLOW_IMAGE_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "lifecycle",
}
SHARED_SECRETS = (
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
)

# Compose's interpolation: $$ is a literal $, ${VAR}, $VAR, and ${VAR:-default}, ${VAR-default},
# ${VAR:?error}, ${VAR?error}.
_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<operator>:?[-?])(?P<argument>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


class MissingVariable(LookupError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        operator, argument = match["operator"], match["argument"]
        value = env.get(name)
        unset = value is None if operator in ("-", "?") else not value
        if operator and unset:
            if operator.endswith("?"):
                raise MissingVariable(f"{name}: {argument}")
            return argument
        return value or ""

    return _REFERENCE.sub(replace, text)


def references(text: str) -> dict[str, str | None]:
    """Each variable the file uses -> its operator (None: plain ${VAR})."""
    found: dict[str, str | None] = {}
    for match in _REFERENCE.finditer(text):
        if not match["escaped"]:
            found[match["braced"] or match["bare"]] = match["operator"]
    return found


def parse_env(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z_]\w*)=(.*)$", text, re.M))


@cache
def raw_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


@cache
def example_env() -> dict[str, str]:
    return parse_env(ENV_EXAMPLE.read_text(encoding="utf-8"))


def compose() -> dict:
    """The file as Compose sees it with .env.example as its .env (a fresh copy each time)."""
    return yaml.safe_load(interpolate(raw_text(), example_env()))


def schema_errors(document: dict) -> list[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def service_env(name: str) -> dict[str, str]:
    return compose()["services"][name].get("environment", {})


# -- the Compose Specification ---------------------------------------------------------------


def test_the_vendored_schema_is_the_compose_specification():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"
    assert "service_completed_successfully" in json.dumps(schema)


def test_the_file_validates_against_the_compose_specification():
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c["services"]["airflow-worker"]["depends_on"]["redis"].update(
            condition="service_ready"
        ),
        lambda c: c["services"]["postgres"].update(healthcheck={"command": "pg_isready"}),
        lambda c: c["services"]["airflow-worker"].update(replicas=4),
        lambda c: c.update(service={}),
    ],
    ids=["unknown-condition", "unknown-healthcheck-field", "misplaced-field", "unknown-top-level"],
)
def test_the_schema_check_rejects_a_broken_file(break_it):
    document = copy.deepcopy(compose())
    break_it(document)
    assert schema_errors(document)


# -- secrets ----------------------------------------------------------------------------------


def test_every_variable_comes_from_the_example_env_and_secrets_are_required():
    used = references(raw_text())
    example = example_env()
    required = {name for name, operator in used.items() if operator in (None, ":?", "?")}
    assert required <= set(example), "missing from .env.example"
    assert set(example) <= set(used), "stale in .env.example"
    # A missing secret stops `docker compose` with a message instead of starting with "".
    assert {name for name, operator in used.items() if operator is None} == set()
    defaulted = {name for name, operator in used.items() if operator in (":-", "-")}
    for name in defaulted:  # optional ones are documented there too
        assert re.search(rf"^# {name}=", ENV_EXAMPLE.read_text(), re.M), name
    without_redis = {k: v for k, v in example.items() if k != "REDIS_PASSWORD"}
    with pytest.raises(MissingVariable, match="REDIS_PASSWORD"):
        interpolate(raw_text(), without_redis)


def test_the_example_env_holds_placeholders_and_the_real_one_is_ignored():
    for name, value in example_env().items():
        if re.search(r"PASSWORD|SECRET|KEY", name):
            assert value.startswith("change-me"), name
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=PROJECT, check=False)
    assert ignored.returncode == 0, ".env must be ignored by git"
    example = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=PROJECT)
    assert example.returncode == 1, ".env.example must be committed"


def _folder_connection(key: str, value: object) -> bool:
    """A connection to a mounted folder (type fs, a path): it has no credentials to hide."""
    if "_CONN_" not in key or not str(value).startswith("{"):
        return False
    connection = json.loads(str(value))
    return connection.get("conn_type") == "fs" and set(connection) == {"conn_type", "extra"}


def test_no_secret_is_written_into_the_file():
    for name, service in yaml.safe_load(raw_text())["services"].items():
        for key, value in (service.get("environment") or {}).items():
            secret = re.search(r"PASSWORD|SECRET|FERNET|_CONN_|BROKER_URL|RESULT_BACKEND", key)
            # A path to a secret is no secret, nor is a folder's connection.
            if secret and not key.endswith("_FILE") and not _folder_connection(key, value):
                assert "${" in str(value), (name, key)


# -- dependencies, health, scaling -------------------------------------------------------------


def test_dependencies_exist_and_wait_for_a_condition():
    services = compose()["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for target, settings in depends_on.items():
            assert target in services, (name, target)
            condition = settings["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (name, target)
            elif condition == "service_completed_successfully":
                assert "restart" not in services[target], f"{target} is a one-shot job"
            else:
                raise AssertionError(f"{name} -> {target}: wait for health or completion")


def test_long_running_services_have_healthchecks_and_one_shots_are_awaited():
    services = compose()["services"]
    awaited = {
        target
        for service in services.values()
        for target, settings in service.get("depends_on", {}).items()
        if settings["condition"] == "service_completed_successfully"
    }
    long_running = {name for name, s in services.items() if s.get("restart") == "always"}
    assert long_running == {
        "postgres",
        "redis",
        "minio",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    }
    for name in long_running:
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
    one_shots = set(services) - long_running
    assert one_shots == awaited | {"lifecycle"}
    assert services["lifecycle"]["profiles"] == ["tools"]  # on demand, never by `up`


def test_workers_scale_with_docker_compose_scale():
    services = compose()["services"]
    for name, service in services.items():
        assert "container_name" not in service, f"{name}: a fixed name cannot be scaled"
    worker = services["airflow-worker"]
    assert "ports" not in worker  # N workers cannot all publish one host port
    assert worker["command"] == "celery worker"
    assert "hostname" not in worker  # Celery names each worker after its own container


def test_everything_starts_after_the_init_services():
    services = compose()["services"]
    for name in AIRFLOW_IMAGE_SERVICES - {"airflow-init"}:
        assert (
            services[name]["depends_on"]["airflow-init"]["condition"]
            == "service_completed_successfully"
        ), name
    init = services["airflow-init"]["depends_on"]
    assert set(init) == {"postgres-init", "minio-init"}
    worker = services["airflow-worker"]["depends_on"]
    assert worker["airflow-apiserver"]["condition"] == "service_healthy"  # its execution API
    assert worker["redis"]["condition"] == "service_healthy"


# -- mounts and the image ----------------------------------------------------------------------


def test_mounted_paths_exist_and_named_volumes_are_declared():
    document = compose()
    bind_mounts = set()
    for name, service in document["services"].items():
        for volume in service.get("volumes", ()):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (PROJECT / source).exists(), (name, source)
                bind_mounts.add((source, target))
            else:
                assert source in document["volumes"], (name, source)
    for project_dir in ("dags", "plugins", "include"):
        assert (f"./{project_dir}", f"/opt/airflow/{project_dir}") in bind_mounts
    policy_dir = service_env("airflow-worker")["LIFECYCLE_POLICY_DIR"]
    assert policy_dir == "/opt/airflow/" + str(DEFAULT_POLICY_DIR.relative_to(PROJECT))


def test_airflow_services_run_the_image_built_from_the_dockerfile():
    services = compose()["services"]
    dockerfile = (PROJECT / "Dockerfile").read_text(encoding="utf-8")
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    (pinned,) = re.findall(
        r"^apache-airflow==(\S+)", (PROJECT / "requirements.txt").read_text(), re.M
    )
    assert re.fullmatch(rf"apache/airflow:(slim-)?{re.escape(pinned)}-python3\.11", base)
    assert "-c /opt/retention/constraints.txt" in dockerfile
    images = {services[name]["image"] for name in AIRFLOW_IMAGE_SERVICES}
    assert len(images) == 1
    for name in AIRFLOW_IMAGE_SERVICES:
        assert services[name]["build"] == ".", name
    for name, service in services.items():
        if name not in AIRFLOW_IMAGE_SERVICES:
            assert "apache/airflow" not in service.get("image", ""), name


# -- Airflow 3 with the CeleryExecutor ---------------------------------------------------------


def test_airflow_components_share_executor_secrets_and_databases():
    services = compose()["services"]
    envs = {name: services[name]["environment"] for name in AIRFLOW_IMAGE_SERVICES}
    for name, env in envs.items():
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
    for key in SHARED_SECRETS:
        assert len({env[key] for env in envs.values()}) == 1, key
    env = envs["airflow-worker"]
    assert env["AIRFLOW__CORE__FERNET_KEY"] == example_env()["AIRFLOW_FERNET_KEY"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == example_env()["AIRFLOW_JWT_SECRET"]
    api = re.fullmatch(
        r"http://([\w-]+):(\d+)/execution/", env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    )
    assert api and api[1] == "airflow-apiserver"
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert any(port.endswith(f":{api[2]}") for port in services["airflow-apiserver"]["ports"])
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "@redis:6379/" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg://airflow:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://airflow:")
    commands = {
        services[name].get("command")
        for name in AIRFLOW_IMAGE_SERVICES - {"airflow-init", "lifecycle"}
    }
    assert {"scheduler", "dag-processor", "triggerer", "api-server", "celery worker"} <= commands


# -- connections and the least-privilege role --------------------------------------------------


def policy_conn_ids() -> set[str]:
    conn_ids = {"lifecycle_audit"}
    for loaded in load_policies(DEFAULT_POLICY_DIR).policies:
        conn_ids.add(loaded.policy.store.conn_id)
        tenants = loaded.policy.retention.per_tenant
        if tenants is not None and tenants.conn_id:
            conn_ids.add(tenants.conn_id)
    return conn_ids


def test_workers_reach_every_store_the_policies_name_as_the_retention_role():
    worker = service_env("airflow-worker")
    defined = {
        key.removeprefix("AIRFLOW_CONN_").lower()
        for key in worker
        if key.startswith("AIRFLOW_CONN_")
    }
    # The policies' stores (the requests' exports among them), and the anchor's evidence bucket.
    assert defined == policy_conn_ids() | {"lifecycle_evidence"}
    assert defined == {
        "telecom_db",
        "lifecycle_audit",
        "recordings",
        "analytics",
        "lifecycle_exports",
        "lifecycle_evidence",
    }
    exports = json.loads(worker["AIRFLOW_CONN_LIFECYCLE_EXPORTS"])
    assert exports == {"conn_type": "fs", "extra": {"path": "/opt/airflow/exports"}}
    evidence = json.loads(worker["AIRFLOW_CONN_LIFECYCLE_EVIDENCE"])
    assert (evidence["login"], evidence["extra"]["bucket"]) == ("evidence", "retention-evidence")
    for conn_id in ("telecom_db", "lifecycle_audit"):
        uri = worker[f"AIRFLOW_CONN_{conn_id.upper()}"]
        assert re.fullmatch(r"postgres://retention:[^@]+@postgres:5432/(telecom|audit)", uri)
    for conn_id in ("recordings", "analytics"):
        connection = json.loads(worker[f"AIRFLOW_CONN_{conn_id.upper()}"])
        assert connection["conn_type"] == "aws" and connection["login"] == "retention"
        assert connection["extra"]["endpoint_url"] == "http://minio:9000"
    for name in AIRFLOW_IMAGE_SERVICES - {"airflow-worker", "airflow-init", "lifecycle"}:
        # Tasks run on the workers only: nobody else holds the stores' credentials. The API
        # server reads the audit trail for its audit pages, as the read-only `audit_reader`.
        connections = {k: v for k, v in service_env(name).items() if k.startswith("AIRFLOW_CONN_")}
        if name == "airflow-apiserver":
            (uri,) = connections.values()
            assert set(connections) == {"AIRFLOW_CONN_LIFECYCLE_AUDIT"}
            assert re.fullmatch(r"postgres://audit_reader:[^@]+@postgres:5432/audit", uri)
        else:
            assert not connections, name


def test_the_init_service_creates_the_schema_and_grants_as_the_owner():
    services = compose()["services"]
    init = services["airflow-init"]
    script = "\n".join(init["command"])
    steps = [
        "airflow db migrate",
        "python -m lifecycle audit-init",
        "python -m lifecycle grants --role retention --apply",
        "python -m lifecycle grants --role audit_reader --audit-reader --apply",
    ]
    positions = [script.index(step) for step in steps]
    assert positions == sorted(positions)
    for conn_id, database in (("TELECOM_DB", "telecom"), ("LIFECYCLE_AUDIT", "audit")):
        uri = init["environment"][f"AIRFLOW_CONN_{conn_id}"]
        assert re.fullmatch(rf"postgres://lifecycle_owner:[^@]+@postgres:5432/{database}", uri)
    bootstrap = (PROJECT / "deploy/postgres/init.sql").read_text(encoding="utf-8")
    assert "('retention')" in bootstrap and "'lifecycle_owner'" in bootstrap
    assert "('telecom', 'lifecycle_owner'), ('audit', 'lifecycle_owner')" in bootstrap
    assert "REVOKE CONNECT ON DATABASE airflow, telecom, audit FROM PUBLIC" in bootstrap
    assert re.search(
        r"ALTER ROLE retention WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE", bootstrap
    )


def test_minio_buckets_and_the_jobs_policy_cover_exactly_the_s3_policies():
    services = compose()["services"]
    script = services["minio-init"]["entrypoint"][-1]
    buckets = {
        loaded.policy.store.bucket
        for loaded in load_policies(DEFAULT_POLICY_DIR).policies
        if loaded.policy.store.kind == "s3"
    }
    created = set(re.findall(r"mc mb --ignore-existing (?:--with-lock )?local/([\w.-]+)", script))
    assert created == buckets | {"retention-evidence"}
    # The anchor's bucket: Object Lock, its own user, who may write anchors and nothing else.
    assert "mc mb --ignore-existing --with-lock local/retention-evidence" in script
    evidence = json.loads((PROJECT / "deploy/minio/evidence-policy.json").read_text())
    granted = {r for statement in evidence["Statement"] for r in statement["Resource"]}
    assert granted == {
        "arn:aws:s3:::retention-evidence",
        "arn:aws:s3:::retention-evidence/retention-chain-head/*",
    }
    evidence_actions = {a for st in evidence["Statement"] for a in st["Action"]}
    assert not {a for a in evidence_actions if re.search(r"Delete|Bypass|\*", a)}
    assert "mc mb --ignore-existing --with-lock local/call-recordings" in script
    document = json.loads((PROJECT / "deploy/minio/retention-policy.json").read_text())
    actions = {action for statement in document["Statement"] for action in statement["Action"]}
    resources = {r for statement in document["Statement"] for r in statement["Resource"]}
    assert {r.removeprefix("arn:aws:s3:::").removesuffix("/*") for r in resources} == buckets
    assert {"s3:DeleteObjectVersion", "s3:ListBucketVersions", "s3:GetObjectLegalHold"} <= actions
    assert not {a for a in actions if re.search(r"Put|Bypass|\*", a)}  # no uploads, no bypass
