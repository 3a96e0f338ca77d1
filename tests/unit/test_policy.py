"""The policy model, the loader's messages, the CLI and the generated schema and reference."""

import json
from pathlib import Path

import pytest

from lifecycle import cli
from lifecycle.loader import DEFAULT_POLICY_DIR, load_policies, parse_policy
from lifecycle.policy import Policy, json_schema
from tests.policies import make_policy, policy_fields, policy_yaml

# The shared base policies as policy files (tests.policies); other test modules import these.
VALID = policy_yaml()
S3_VALID = policy_yaml("s3")


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shared_policy_files_hold_the_shared_fields():
    import yaml

    assert yaml.safe_load(VALID) == policy_fields()
    assert yaml.safe_load(S3_VALID) == policy_fields("s3")
    assert parse_policy(VALID) == make_policy()


def test_valid_policy_has_defaults():
    policy = parse_policy(VALID)
    assert policy.dag_id == "retention_cdrs"
    assert policy.timezone == "Europe/Amsterdam"
    assert policy.guards.max_delete_fraction == 0.5
    assert policy.store.null_timestamp == "anomaly"


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (("P6M", "P0D"), "retention.period", "not a positive duration"),
        (("P6M", "-P1M"), "retention.period", "not an ISO 8601 duration"),
        (("P6M", "six months"), "retention.period", "not an ISO 8601 duration"),
        (("table: cdrs", "table: 'cdrs; drop table x'"), "store.table", "not a plain table name"),
        (("key: id", "key: id--"), "store.key", "not a plain SQL identifier"),
        (
            ("timestamp: started_at", "timestamp: 1x"),
            "store.timestamp",
            "not a plain SQL identifier",
        ),
        (("kind: sql", "kind: gcs"), "store.kind", "unknown store kind 'gcs'"),
        (("controller: provider", "controller: nobody"), "controller", "'provider' or 'client'"),
        (("name: cdrs", "name: CDRs!"), "name", "not a policy name"),
        (("title: Call detail records\n", "titel: x\n"), "titel", "unknown field"),
    ],
)
def test_bad_policy_names_field_and_problem(change, field, problem):
    with pytest.raises(ValueError) as raised:
        parse_policy(VALID.replace(*change))
    message = str(raised.value)
    assert f"{field}: " in message
    assert problem in message


@pytest.mark.parametrize(
    ("extra", "field", "problem"),
    [
        (
            "guards: {max_delete_fraction: 1.5}\n",
            "guards.max_delete_fraction",
            "less than or equal to 1",
        ),
        (
            "guards: {max_delete_fraction: -0.1}\n",
            "guards.max_delete_fraction",
            "greater than or equal to 0",
        ),
        ("guards: {max_delete_rows: -1}\n", "guards.max_delete_rows", "greater than or equal to 0"),
        ("timezone: Mars/Olympus\n", "timezone", "not an IANA timezone"),
        # Files of the tz database that are no IANA zone: the host's setting, a placeholder.
        ("timezone: localtime\n", "timezone", "not an IANA timezone"),
        ("timezone: Factory\n", "timezone", "not an IANA timezone"),
        ("timezone: posixrules\n", "timezone", "not an IANA timezone"),
        ("timezone: ../zoneinfo/UTC\n", "timezone", "not an IANA timezone"),
        ("bogus: 1\n", "bogus", "unknown field"),
        ("name: again\n", "name", "given twice"),
        ("schedule: every day\n", "schedule", "not a cron expression"),
        (f"tags: [{'x' * 101}]\n", "tags.0", "at most 100 characters"),
        ("guards: {min_period: P1Y}\n", "retention.period", "shorter than guards.min_period P1Y"),
    ],
)
def test_bad_extra_fields(extra, field, problem):
    with pytest.raises(ValueError, match=problem) as raised:
        parse_policy(VALID + extra)
    assert field in str(raised.value)


def test_loader_isolates_broken_files_and_names_them(tmp_path):
    write(tmp_path, "cdrs.yaml", VALID)
    write(
        tmp_path, "broken.yaml", VALID.replace("name: cdrs", "name: broken").replace("P6M", "P0D")
    )
    write(tmp_path, "dup.yaml", VALID)  # same name as cdrs.yaml
    write(tmp_path, "notyaml.yaml", "name: [unclosed")
    write(tmp_path, "list.yaml", "- a\n- b\n")
    result = load_policies(tmp_path)
    assert [loaded.policy.name for loaded in result.policies] == ["cdrs"]
    messages = {error.path.name: error.message for error in result.errors}
    assert set(messages) == {"broken.yaml", "dup.yaml", "notyaml.yaml", "list.yaml"}
    assert messages["broken.yaml"].startswith(f"{tmp_path / 'broken.yaml'}: retention.period:")
    assert "name: 'cdrs' is already used by cdrs.yaml" in messages["dup.yaml"]
    assert "not valid YAML" in messages["notyaml.yaml"]
    assert "must be a YAML mapping" in messages["list.yaml"]


def test_a_yaml_error_without_context_is_told_not_a_type_error(tmp_path):
    """PyYAML gives most scanner errors no context (None): the message is the problem alone."""
    write(tmp_path, "scanner.yaml", "name: cdrs: events\n")
    (error,) = load_policies(tmp_path).errors
    assert error.problems == (
        "not valid YAML (line 1, column 11): mapping values are not allowed here",
    )


def test_cli_validate_gives_the_loader_messages_and_exit_codes(tmp_path, capsys):
    write(tmp_path, "cdrs.yaml", VALID)
    assert cli.main(["validate", str(tmp_path)]) == 0
    write(
        tmp_path, "bad.yaml", VALID.replace("name: cdrs", "name: bad").replace("P6M", "six months")
    )
    assert cli.main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    (expected,) = load_policies(tmp_path).errors
    assert expected.message in err
    assert "bad.yaml: retention.period: 'six months'" in err


def test_cli_validate_fails_on_an_empty_or_missing_folder(tmp_path):
    assert cli.main(["validate", str(tmp_path)]) == 1
    assert cli.main(["validate", str(tmp_path / "nope")]) == 1


def test_shipped_policies_are_valid_and_cover_the_sql_rows():
    result = load_policies(DEFAULT_POLICY_DIR)
    assert result.errors == []
    names = {loaded.policy.name for loaded in result.policies}
    assert {
        "cdrs",
        "lawful_intercept_traffic",
        "voip_ip_log",
        "support_tickets",
        "contact_forms",
    } <= names
    tickets = next(p.policy for p in result.policies if p.policy.name == "support_tickets")
    assert tickets.store.null_timestamp == "active"
    assert tickets.store.timestamp == "closed_at"


def test_schema_and_reference_are_generated_from_the_model():
    # Fails when the model changed and `make schema` was not run.
    assert cli.main(["schema", "--check"]) == 0
    on_disk = json.loads((DEFAULT_POLICY_DIR / "policy.schema.json").read_text(encoding="utf-8"))
    assert on_disk == json_schema()
    reference = (DEFAULT_POLICY_DIR / "README.md").read_text(encoding="utf-8")
    for field in Policy.model_fields:
        assert f"| `{field}` |" in reference


def test_schema_accepts_the_shipped_policies_and_rejects_unknown_fields():
    import jsonschema
    import yaml

    schema = json_schema()
    for path in sorted(DEFAULT_POLICY_DIR.glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), schema)
    bad = yaml.safe_load(VALID) | {"bogus": 1}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad_period = yaml.safe_load(VALID)
    bad_period["retention"]["period"] = "six months"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad_period, schema)


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (("call-recordings", "Call_Recordings"), "store.bucket", "not an S3 bucket name"),
        (("call-recordings", "192.168.1.1"), "store.bucket", "looks like an IP address"),
        (("call-recordings", "a..b"), "store.bucket", "not an S3 bucket name"),
        (("prefix: support/", "prefix: /support"), "store.prefix", "not a key prefix"),
        (
            ("prefix: support/}", "prefix: support/, timestamp: {key_pattern: '(?P<year>\\d{4}'}}"),
            "store.timestamp.key_pattern",
            "is not a regular expression",
        ),
        (
            (
                "prefix: support/}",
                "prefix: support/, timestamp: {key_pattern: '(?P<year>\\d{4})/'}}",
            ),
            "store.timestamp.key_pattern",
            "lacks the named groups day, month",
        ),
        (
            ("prefix: support/}", "prefix: support/, timestamp: created_at}"),
            "store.timestamp",
            "unknown timestamp source",
        ),
        (
            ("prefix: support/}", "prefix: support/, timestamp: {exif: DateTimeOriginal}}"),
            "store.timestamp",
            "unknown timestamp source",
        ),
        (
            ("retention: {period: P90D}", "retention: {period: P90D, per_tenant: {column: t}}"),
            "retention.per_tenant",
            "the key segment after store.prefix",
        ),
    ],
)
def test_bad_object_store_policy_names_field_and_problem(change, field, problem):
    assert parse_policy(S3_VALID).store.location == "s3://call-recordings/support/"
    with pytest.raises(ValueError) as raised:
        parse_policy(S3_VALID.replace(*change))
    assert f"{field}: " in str(raised.value)
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("title: Call detail records", "title: " + "x" * 251), "title"),
        (("period: P6M", "period: P" + "0" * 40 + "6M"), "retention.period"),
        (
            (
                "retention: {period: P6M}",
                "retention: {period: P6M}\nguards: {min_period: P" + "0" * 40 + "1D}",
            ),
            "guards.min_period",
        ),
    ],
)
def test_values_that_reach_the_audit_trail_fit_its_columns(change, field):
    """A 251-character title or a zero-padded period validated, the purge ran, then the audit
    insert failed on the column width: deletion without evidence."""
    with pytest.raises(ValueError, match=r"longer than|at most 250") as raised:
        parse_policy(VALID.replace(*change))
    assert field in str(raised.value)


def test_an_s3_prefix_fits_the_audit_trails_store_column():
    from lifecycle.audit import runs

    long = S3_VALID.replace("prefix: support/", "prefix: " + "p/" * 86)
    with pytest.raises(ValueError, match="at most 170 characters"):
        parse_policy(long)
    widest = parse_policy(S3_VALID.replace("prefix: support/", "prefix: " + "p/" * 85))
    store = widest.store.model_copy(update={"conn_id": "c" * 250, "bucket": "b" * 63})
    assert len(f"s3:{store.conn_id}:{store.location}") <= runs.c.store.type.length


def test_the_former_names_users_wrote_still_read():
    """One word per concept (issue 12): `store.slices`, formerly `shards`, and an object store's
    empty `subjects: {}`, which older versions accepted; both still read as they meant."""
    assert make_policy(store__slices=3).store.max_slices == 3
    assert make_policy(store__shards=2).store.max_slices == 2
    schema = json_schema()
    assert "slices" in schema["$defs"]["SqlStore"]["properties"]
    assert "shards" not in schema["$defs"]["SqlStore"]["properties"]
    s3 = {
        "kind": "s3",
        "conn_id": "recordings",
        "bucket": "recordings",
        "prefix": "calls/",
        "subjects": {},
    }
    assert make_policy(store=s3).store.hold_subjects() == {"prefix"}
    with pytest.raises(ValueError, match="s3 holds match key prefixes"):
        make_policy(store=s3 | {"subjects": {"customer": "customer_id"}})


def test_a_very_long_timezone_is_a_message_not_a_crash(tmp_path):
    """ZoneInfo opens a file named after the value: a 500-character name raised OSError (file
    name too long) out of validation instead of naming the field."""
    path = tmp_path / "cdrs.yaml"
    path.write_text(policy_yaml() + "timezone: Europe/" + "A" * 500 + "\n", encoding="utf-8")
    result = load_policies(tmp_path)
    (error,) = result.errors
    assert error.problems[0].startswith("timezone: 'Europe/AAAA")
    assert error.problems[0].endswith("is not an IANA timezone (example: Europe/Amsterdam)")
