"""The loader's bounds: one bad policy file never takes the other policies (or their DAGs) down,
never shows another file's content, and two policies never share one store unnoticed."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle import loader
from lifecycle.loader import (
    DEFAULT_POLICY_DIR,
    MAX_DEPTH,
    MAX_NODES,
    MAX_POLICY_BYTES,
    MAX_PROBLEMS,
    PolicyConflict,
    load_policies,
    parse_policy,
)
from tests.unit.test_policy import S3_VALID, VALID, write

MERGE_MESSAGE = "YAML merge keys (<<) are not supported in policy files: write the fields out"


def nested(depth: int) -> str:
    """A block mapping `depth` levels deep (the composer recurses once per level)."""
    return "".join(f"{'  ' * level}k{level}:\n" for level in range(depth)) + "  " * depth + "x\n"


def only_error(directory: Path, name: str) -> str:
    """Load `directory` beside a valid cdrs.yaml; the message of the one broken file `name`."""
    write(directory, "cdrs.yaml", VALID)
    result = load_policies(directory)
    assert [loaded.policy.name for loaded in result.policies] == ["cdrs"]
    (error,) = result.errors
    assert error.path.name == name
    return error.message


@pytest.mark.parametrize("text", ["[" * 5000, "{a: " * 5000, "- " * 5000 + "x", nested(450)])
def test_deep_nesting_is_the_files_error_not_a_recursion_error(tmp_path, text):
    write(tmp_path, "deep.yaml", text)
    message = only_error(tmp_path, "deep.yaml")
    assert f"nested more than {MAX_DEPTH} levels deep" in message
    assert "(line " in message and "column " in message


def test_nesting_up_to_the_limit_is_plain_yaml(tmp_path):
    # Within the limit the file is read as YAML: the problems are the policy's fields.
    with pytest.raises(ValueError, match="k0: unknown field"):
        parse_policy(nested(MAX_DEPTH - 1))
    with pytest.raises(ValueError, match="nested more than"):
        parse_policy(nested(MAX_DEPTH))


@pytest.mark.parametrize(
    "extra",
    [
        "description: &d Call records\ntags: [*d]\n",  # valid today, aliases resolved
        "tags: &t [a, b]\n",  # an anchor alone
        "x: " + "&a [" * 3 + "]" * 3 + "\n",
    ],
)
def test_anchors_and_aliases_are_refused(extra):
    with pytest.raises(ValueError) as raised:
        parse_policy(VALID + extra)
    assert "anchors and aliases (&name, *name) are not supported" in str(raised.value)
    assert "(line " in str(raised.value)


def test_billion_laughs_is_refused_at_the_first_anchor(tmp_path):
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    write(tmp_path, "laughs.yaml", "\n".join(lines) + "\n")
    message = only_error(tmp_path, "laughs.yaml")
    assert "anchors and aliases" in message and "(line 1, column 5)" in message


@pytest.mark.parametrize(
    "text",
    [
        VALID.replace("retention: {period: P6M}", "retention:\n  <<: {period: P6M}"),
        "base: &b {period: P6M}\nretention:\n  <<: *b\n",  # the usual form: alias after <<
        VALID + "guards:\n  !!merge x: {max_delete_rows: 1}\n",
    ],
)
def test_merge_key_gets_a_clear_message(text):
    with pytest.raises(ValueError) as raised:
        parse_policy(text)
    assert MERGE_MESSAGE in str(raised.value)
    assert "tag:yaml.org" not in str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        "password: SECRET: x\n",  # mapping values not allowed here
        'name: "SECRET\n',  # unclosed quote, to the end of the file
        "a:\n  - SECRET\n  b: x\n",
        "a: !!int SECRET\n",  # a value PyYAML cannot build
        "a: !!float SECRET\n",
        "a: !!timestamp SECRET\n",
        "a: !SECRET x\n",  # an unknown tag
        "a: !!python/object:SECRET {}\n",
        "a: [SECRET\n",
        "a:\tSECRET: [\n",
        "SECRET\x07\n",  # a control character
        "a: 1\na: SECRET\n---\nb: SECRET\n",
        "? [SECRET]\n: x\n",  # an unhashable key
        "a: 'SECRET\\u' \n",
    ],
)
def test_messages_never_quote_the_file(tmp_path, text):
    write(tmp_path, "bad.yaml", text)
    message = only_error(tmp_path, "bad.yaml")
    assert "SECRET" not in message
    assert "<unicode string>" not in message and "^" not in message


def test_a_link_to_a_file_outside_the_folder_is_refused_unread(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = write(outside, "secret.txt", "SECRET: [this line would break the YAML\n")
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "secret.yaml").symlink_to(secret)
    message = only_error(folder, "secret.yaml")
    assert "outside the policy folder" in message
    assert message.startswith(f"{folder / 'secret.yaml'}: ")
    assert "SECRET" not in message


def test_a_link_to_dev_zero_is_refused_unread(tmp_path):
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    message = only_error(tmp_path, "zero.yaml")
    assert "zero.yaml: (file): a link to /dev/zero, outside the policy folder" in message


def test_devices_and_pipes_in_the_folder_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")  # reading a FIFO blocks until a writer comes
    (tmp_path / "folder.yaml").mkdir()
    write(tmp_path, "cdrs.yaml", VALID)
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(load_policies(tmp_path)), daemon=True)
    worker.start()
    worker.join(60)  # a loader that opens the FIFO never returns
    assert outcome, "load_policies blocked on a FIFO"
    (result,) = outcome
    assert [loaded.policy.name for loaded in result.policies] == ["cdrs"]
    messages = {error.path.name: error.message for error in result.errors}
    assert set(messages) == {"pipe.yaml", "folder.yaml"}
    assert all("not a regular file" in message for message in messages.values())


def test_dangling_and_looping_links_are_the_files_error(tmp_path):
    (tmp_path / "dangling.yaml").symlink_to("missing.yaml")
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    write(tmp_path, "cdrs.yaml", VALID)
    result = load_policies(tmp_path)
    assert [loaded.policy.name for loaded in result.policies] == ["cdrs"]
    messages = {error.path.name: error.message for error in result.errors}
    assert set(messages) == {"dangling.yaml", "loop.yaml"}
    assert all("a link to a missing file, or a loop of links" in m for m in messages.values())


def test_links_inside_the_folder_are_followed(tmp_path):
    # A Kubernetes ConfigMap mounts each file as a link into a hidden folder beside it.
    data = tmp_path / "..2026_01_01"
    data.mkdir()
    write(data, "cdrs.yaml", VALID)
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "cdrs.yaml").symlink_to("..data/cdrs.yaml")
    result = load_policies(tmp_path)
    assert result.errors == []
    assert [loaded.policy.name for loaded in result.policies] == ["cdrs"]


def test_a_file_over_the_size_limit_is_refused(tmp_path):
    write(tmp_path, "big.yaml", VALID.replace("cdrs", "big") + "# " + "x" * MAX_POLICY_BYTES)
    message = only_error(tmp_path, "big.yaml")
    assert "more than the 256 KiB a policy file may have" in message
    with pytest.raises(ValueError, match="more than the 256 KiB"):
        parse_policy(VALID + "# " + "é" * (MAX_POLICY_BYTES // 2))  # bytes, not characters


def test_a_file_growing_after_the_size_check_is_read_no_further(tmp_path, monkeypatch):
    path = write(tmp_path, "growing.yaml", VALID.replace("cdrs", "growing"))
    real_fstat = os.fstat

    def fstat_then_grow(fd):
        info = real_fstat(fd)
        if info.st_ino == path.stat().st_ino:  # not cdrs.yaml's
            with path.open("a", encoding="utf-8") as grow:
                grow.write("# " + "x" * (2 * MAX_POLICY_BYTES) + "\n")
        return info

    monkeypatch.setattr(loader.os, "fstat", fstat_then_grow)
    message = only_error(tmp_path, "growing.yaml")
    assert f"{MAX_POLICY_BYTES + 1} bytes, more than the 256 KiB" in message


def test_a_file_of_many_values_is_refused_early(tmp_path):
    # ~10 µs a value in pure-Python YAML: 100 000 values would hold the DAG processor for seconds.
    write(tmp_path, "many.yaml", "tags: [" + "x," * 100_000 + "]\n")
    message = only_error(tmp_path, "many.yaml")
    assert f"more than {MAX_NODES} values: a policy needs only a few dozen" in message


def test_thousands_of_problems_are_cut_to_the_first(tmp_path):
    write(tmp_path, "fields.yaml", "".join(f"field{i}: 1\n" for i in range(1000)))
    message = only_error(tmp_path, "fields.yaml")
    lines = message.splitlines()
    assert len(lines) == MAX_PROBLEMS + 1
    assert lines[-1].endswith(f"(file): and {1000 + 7 - MAX_PROBLEMS} more problems")


def test_not_utf8_names_the_byte(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes(VALID.replace("Zes", "Zés").encode("latin-1"))
    message = only_error(tmp_path, "latin1.yaml")
    assert "not UTF-8 text (byte " in message


@pytest.mark.parametrize("failure", [RecursionError, MemoryError, RuntimeError, KeyError])
def test_any_failure_stays_with_its_file(tmp_path, monkeypatch, failure):
    real_parse = loader.parse_policy

    def parse(text: str):
        if "boom" in text:
            raise failure("SECRET")
        return real_parse(text)

    monkeypatch.setattr(loader, "parse_policy", parse)
    write(tmp_path, "boom.yaml", VALID.replace("cdrs", "boom"))
    message = only_error(tmp_path, "boom.yaml")
    assert failure.__name__ in message and "SECRET" not in message


# --- fuzzing: whatever the file holds, the valid policy beside it loads ---------------------

_mutations = st.lists(
    st.tuples(st.integers(0, len(VALID)), st.integers(0, 8), st.text(max_size=8)), max_size=6
)


def _mutate(edits) -> str:
    text = VALID
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut :]
    return text


_openers = st.sampled_from(["[", "{a: ", "- ", "? ", "!!seq [", "{? "])
broken_files = st.one_of(
    st.binary(max_size=3000).map(lambda data: (data, True)),
    st.integers(0, len(VALID) - 1).map(lambda n: (VALID[:n].encode(), False)),
    _mutations.map(lambda edits: (_mutate(edits).encode("utf-8", "surrogatepass"), False)),
    st.tuples(_openers, st.integers(MAX_DEPTH, 4000)).map(lambda t: ((t[0] * t[1]).encode(), True)),
    st.integers(MAX_DEPTH, 500).map(lambda depth: (nested(depth).encode(), True)),
    st.integers(MAX_NODES, 50_000).map(lambda n: (f"tags: [{'x,' * n}]\n".encode(), True)),
    st.tuples(
        st.integers(MAX_POLICY_BYTES - 400, MAX_POLICY_BYTES + 5000), st.sampled_from("x#[")
    ).map(lambda t: ((VALID + "title: " + t[1] * t[0] + "\n").encode(), True)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken=broken_files)
def test_fuzz_a_mangled_file_never_hides_the_valid_policy(broken):
    data, must_fail = broken
    with tempfile.TemporaryDirectory() as folder:
        valid = write(Path(folder), "a.yaml", VALID)
        bad = Path(folder) / "b.yaml"
        bad.write_bytes(data)
        result = load_policies(Path(folder))
    assert [(p.path, p.policy.name) for p in result.policies if p.path == valid] == [
        (valid, "cdrs")
    ]
    errors = [error for error in result.errors if error.path == bad]
    loaded = [policy for policy in result.policies if policy.path == bad]
    assert len(errors) + len(loaded) == 1  # a mutation may leave the policy valid
    assert not (must_fail and loaded)
    assert len(result.errors) == len(errors)
    for error in errors:
        assert error.problems and all(
            line.startswith(f"{bad}: ") for line in error.message.splitlines()
        )


def test_bad_files_become_failing_dags_and_the_valid_dag_stays(tmp_path):
    from lifecycle.factory import build_dags

    write(tmp_path, "cdrs.yaml", VALID)
    write(tmp_path, "deep.yaml", "[" * 100_000)
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    for name in ("big1.yaml", "big2.yaml", "big3.yaml"):  # 50 MB each: a DagBag import timeout
        with (tmp_path / name).open("wb") as big:
            big.truncate(50 * 1024 * 1024)
    write(tmp_path, "merge.yaml", "retention:\n  <<: {period: P6M}\n")
    write(tmp_path, "laughs.yaml", "a: &a [x, x]\nb: [*a, *a]\n")

    dags = build_dags(tmp_path)

    assert "retention_cdrs" in dags
    invalid = {
        dag_id.removeprefix("retention-invalid-")
        for dag_id in dags
        if dag_id.startswith("retention-invalid-")
    }
    assert invalid == {"deep", "zero", "big1", "big2", "big3", "merge", "laughs"}
    assert MERGE_MESSAGE in dags["retention-invalid-merge"].doc_md


# --- two policies on one store -----------------------------------------------------------------


def sql_policy(name: str, table: str, conn_id: str = "telecom_db", period: str = "P6M") -> str:
    return (
        VALID.replace("name: cdrs", f"name: {name}")
        .replace("table: cdrs", f"table: {table}")
        .replace("conn_id: telecom_db", f"conn_id: {conn_id}")
        .replace("P6M", period)
    )


def s3_policy(name: str, prefix: str, bucket: str = "call-recordings") -> str:
    return (
        S3_VALID.replace("name: support_call_recordings", f"name: {name}")
        .replace("prefix: support/", f"prefix: '{prefix}'")
        .replace("bucket: call-recordings", f"bucket: {bucket}")
    )


def test_two_policies_on_one_table_are_a_conflict_and_both_stay(tmp_path):
    a = write(tmp_path, "a.yaml", sql_policy("cdrs", "cdrs", period="P1Y"))
    b = write(tmp_path, "b.yaml", sql_policy("cdrs_short", "cdrs", period="P3M"))
    write(tmp_path, "c.yaml", sql_policy("other", "other"))

    result = load_policies(tmp_path)

    assert result.errors == []
    assert [loaded.policy.name for loaded in result.policies] == ["cdrs", "cdrs_short", "other"]
    (conflict,) = result.conflicts
    assert conflict == PolicyConflict(b, a, "cdrs_short", "cdrs", conflict.message)
    assert conflict.message == (
        f"{b}: store: same table cdrs on connection telecom_db as policy 'cdrs' (a.yaml): two "
        "policies on one table would let the shorter period delete what the longer keeps; give "
        "each table one policy"
    )
    assert result.conflict_for("cdrs") == conflict.message
    assert result.conflict_for("cdrs_short") == conflict.message
    assert result.conflict_for("other") is None


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        (("cdrs", "telecom_db"), ("public.cdrs", "telecom_db"), True),
        (("cdrs", "telecom_db"), ("CDRs", "telecom_db"), True),
        (("Billing.Usage", "telecom_db"), ("billing.usage", "TELECOM_DB"), True),
        (("cdrs", "telecom_db"), ("cdrs", "archive_db"), False),
        (("cdrs", "telecom_db"), ("billing.cdrs", "telecom_db"), False),
        (("cdrs", "telecom_db"), ("cdrs_old", "telecom_db"), False),
    ],
)
def test_sql_tables_compare_case_insensitively_and_public_is_the_default(
    tmp_path, first, second, overlap
):
    write(tmp_path, "a.yaml", sql_policy("first", *first))
    write(tmp_path, "b.yaml", sql_policy("second", *second))
    result = load_policies(tmp_path)
    assert len(result.policies) == 2
    assert bool(result.conflicts) is overlap
    assert (result.conflict_for("first") is not None) is overlap


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("support/", "support/", True),
        ("support/", "support/2026/", True),
        ("", "support/", True),  # the empty prefix is the whole bucket
        ("support/2026/", "", True),
        ("support/", "sales/", False),
        ("support/", "support-old/", False),  # prefixes end in /: whole segments
    ],
)
def test_s3_prefixes_overlap_when_one_contains_the_other(tmp_path, first, second, overlap):
    write(tmp_path, "a.yaml", s3_policy("first", first))
    write(tmp_path, "b.yaml", s3_policy("second", second))
    write(tmp_path, "c.yaml", s3_policy("elsewhere", first, bucket="other-bucket"))
    result = load_policies(tmp_path)
    assert result.errors == [] and len(result.policies) == 3
    assert bool(result.conflicts) is overlap
    assert result.conflict_for("elsewhere") is None
    if overlap:
        (conflict,) = result.conflicts
        assert conflict.message.startswith(
            f"{tmp_path / 'b.yaml'}: store: s3://call-recordings/{second} on connection "
            f"recordings overlaps s3://call-recordings/{first} of policy 'first' (a.yaml): "
        )
        assert "give each prefix one policy" in conflict.message


def test_every_overlapping_pair_is_reported(tmp_path):
    for name in ("a", "b", "c"):
        write(tmp_path, f"{name}.yaml", sql_policy(name, "cdrs"))
    result = load_policies(tmp_path)
    assert {(c.other_name, c.name) for c in result.conflicts} == {
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    }
    assert len(result.conflict_for("a").splitlines()) == 2


def test_shipped_policies_have_no_conflicts():
    assert load_policies(DEFAULT_POLICY_DIR).conflicts == []


def test_a_period_in_other_digits_is_refused_as_the_schema_does():
    with pytest.raises(ValueError) as raised:
        parse_policy(VALID.replace("P6M", "P\u0663M"))
    assert "retention.period: 'P\u0663M' is not an ISO 8601 duration" in str(raised.value)
