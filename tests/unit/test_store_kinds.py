"""The store-kind seam: one registry, and a third kind (`files`) that needed nothing outside
`lifecycle/stores/` — validated by the loader, in the schema, built into a DAG by the factory,
and no engine module that branches on a kind's name."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from lifecycle.loader import load_policies, parse_policy
from lifecycle.policy import json_schema
from lifecycle.stores.config import StoreConfig
from lifecycle.stores.kinds import KINDS, STORE_KINDS
from tests.policies import policy_yaml

ENGINE = Path(__file__).resolve().parents[2] / "plugins" / "lifecycle"
SCHEMA_FILE = ENGINE.parents[1] / "include" / "policies" / "policy.schema.json"
FILES_STORE = {"kind": "files", "conn_id": "pbx_share", "directory": "recordings/support/"}


def files_yaml(**overrides) -> str:
    """A policy file of kind files: the S3 base policy's other fields."""
    fields = {"name": "pbx_recordings", "title": "PBX recordings", "store": FILES_STORE}
    return policy_yaml("s3", **(fields | overrides))


def problems(text: str) -> list[str]:
    with pytest.raises(ValueError) as raised:
        parse_policy(text)
    return str(raised.value).splitlines()


def test_the_registry_finds_every_kind_and_its_store_module():
    assert set(STORE_KINDS) == {"files", "s3", "sql"}
    for kind, model in KINDS.items():
        assert issubclass(model, StoreConfig) and model.kind_name() == kind
        assert model.implementation == f"lifecycle.stores.{kind}"
        assert callable(importlib.import_module(model.implementation).open_store)


def test_a_files_policy_file_validates_with_its_defaults(tmp_path):
    policy = parse_policy(files_yaml())
    store = policy.store
    assert (store.kind, store.conn_id, store.location) == (
        "files",
        "pbx_share",
        "./recordings/support/",
    )
    assert store.model_dump() == {**FILES_STORE, "timestamp": "mtime", "batch_size": 1000}
    assert store.hold_subjects() == {"prefix"} and store.max_slices == 1
    assert store.grants(policy) == {}
    (tmp_path / "pbx.yaml").write_text(files_yaml(), encoding="utf-8")
    loaded = load_policies(tmp_path)
    assert (loaded.errors, [p.policy for p in loaded.policies]) == ([], [policy])


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        (
            {"directory": "recordings/../etc/"},
            "store.directory: 'recordings/../etc/' has a `..` segment: the directory must stay "
            "under the root",
        ),
        (
            {"directory": "/mnt/pbx/"},
            "store.directory: '/mnt/pbx/' must be relative to the connection's root: no leading /",
        ),
        (
            {"directory": "recordings"},
            "store.directory: 'recordings' must end in / (`recordings/`), or be empty (the whole "
            "root)",
        ),
        (
            {"directory": "recordings//support/"},
            "store.directory: 'recordings//support/' has an empty or `.` segment: write each "
            "directory once",
        ),
        (
            {"timestamp": "last_modified"},
            "store.timestamp: unknown timestamp source (expected mtime or {key_pattern: <regex>})",
        ),
        ({"bucket": "x"}, "store.bucket: unknown field"),
        ({"batch_size": 0}, "store.batch_size: Input should be greater than 0"),
    ],
)
def test_a_bad_files_store_names_the_field(store, problem):
    assert problems(files_yaml(store={**FILES_STORE, **store})) == [problem]


def test_what_a_files_store_cannot_do_is_refused_naming_the_field():
    assert problems(files_yaml(retention="{period: P0D, from_event: {timestamp: ended_at}}")) == [
        "retention.from_event: not available for files stores (a file's period runs from its "
        "own time: store.timestamp)"
    ]
    assert problems(files_yaml(retention="{period: P90D, per_tenant: {conn_id: telecom_db}}")) == [
        "retention.per_tenant: not available for files stores (one period for every file of the "
        "directory: give each client's directory its own policy)"
    ]


def test_two_files_policies_on_nested_directories_conflict(tmp_path):
    (tmp_path / "a.yaml").write_text(files_yaml(), encoding="utf-8")
    nested = {**FILES_STORE, "conn_id": "PBX_share", "directory": "recordings/support/2026/"}
    (tmp_path / "b.yaml").write_text(files_yaml(name="nested", store=nested), encoding="utf-8")
    apart = {**FILES_STORE, "directory": "recordings/sales/"}
    (tmp_path / "c.yaml").write_text(files_yaml(name="apart", store=apart), encoding="utf-8")

    (conflict,) = load_policies(tmp_path).conflicts

    assert (conflict.name, conflict.other_name) == ("nested", "pbx_recordings")
    assert conflict.message == (
        f"{tmp_path / 'b.yaml'}: store: ./recordings/support/2026/ on connection PBX_share "
        "overlaps ./recordings/support/ of policy 'pbx_recordings' (a.yaml): two policies on "
        "one directory would let the shorter period delete what the longer keeps; give each "
        "directory one policy"
    )


def test_the_generated_schema_has_the_three_kinds():
    store = json_schema()["properties"]["store"]
    assert set(store["discriminator"]["mapping"]) == {"files", "s3", "sql"}
    assert len(store["oneOf"]) == 3
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == json_schema()
    files = json_schema()["$defs"]["FilesStore"]
    pattern = re.compile(files["properties"]["directory"]["pattern"])
    assert [bool(pattern.match(d)) for d in ("", "a/", "a/b.c/", "a/../", "./", "a//", "/a/")] == [
        True, True, True, False, False, False, False,
    ]  # fmt: skip


# Comparisons of a store's kind by name, and reads of one kind's own fields, outside stores/.
KIND_NAMES = "|".join(STORE_KINDS)
LEAKS = [
    # Any `.kind` compared but a data-subject request's (access, erasure...: not a store's).
    re.compile(r"(?<!request)\.kind\s*(==|!=|\bin\b|\bnot\s+in\b)"),
    re.compile(rf"\bkind\s*(==|!=)\s*[\"']({KIND_NAMES})[\"']"),
    re.compile(rf"[\"']({KIND_NAMES})[\"']\s*(==|!=|\bin\b)\s*[\w.]*kind\b"),
    re.compile(r"kind_name\(\)\s*(==|!=|\bin\b)"),
    re.compile(r"isinstance\([^)]*\b(SqlStore|S3Store|FilesStore)\b"),
    re.compile(r"getattr\([\w.]*\bstore\s*,"),
    re.compile(r"from lifecycle\.stores\.\w+_config import"),
]


def test_no_engine_module_outside_stores_branches_on_a_kind():
    leaks = []
    for path in sorted(ENGINE.rglob("*.py")):
        relative = path.relative_to(ENGINE)
        if relative.parts[0] in ("stores", "demo"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(leak.search(line) for leak in LEAKS):
                leaks.append(f"lifecycle/{relative}:{number}: {line.strip()}")
    assert leaks == []


@pytest.mark.parametrize(
    "line",
    [
        'if policy.store.kind == "s3":',
        "subjects = {'prefix'} if kind == 's3' else set()",
        'if store.kind in ("s3", "files"):',
        "shards = getattr(policy.store, 'shards', 1)",
        "from lifecycle.stores.s3_config import S3Store",
        "if isinstance(policy.store, FilesStore):",
    ],
)
def test_the_guard_sees_a_leak(line):
    assert any(leak.search(line) for leak in LEAKS)


def test_a_requests_kind_is_not_a_store_kind():
    assert not any(leak.search('if request.kind == "erasure":') for leak in LEAKS)


def test_the_factory_builds_a_files_policy_unchanged(tmp_path):
    from lifecycle.factory import build_dags, policy_asset, render_doc

    (tmp_path / "pbx.yaml").write_text(files_yaml(), encoding="utf-8")
    policy = parse_policy(files_yaml())

    doc = render_doc(policy, tmp_path / "pbx.yaml")

    rows = [line for line in doc.splitlines() if line.startswith("| ")]
    assert rows[4:13] == [
        "| Period | `P90D` from the file's time (see below), in Europe/Amsterdam |",
        "| Controller | provider |",
        "| Legal ground | legitimate interest |",
        "| Store | files `./recordings/support/` via connection `pbx_share` |",
        "| File time | mtime |",
        "| Deletion | unlink, 1000 files a batch; symbolic links and other non-regular files are "
        "never followed nor deleted (reported) |",
        "| Permissions | nothing to grant in a database: the workers' OS user needs write and "
        "search permission on the directory and its subdirectories |",
        "| Hold subjects | prefix → the file's path under the connection's root |",
        "| Guards | max_delete_fraction 0.5, max_delete_rows none, min_period P1D |",
    ]
    assert policy_asset(policy).uri.startswith("retention://pbx_share/recordings/support")
    dag = build_dags(tmp_path)["retention_pbx_recordings"]
    assert dag.doc_md == doc
    assert {"retention", "files"} <= set(dag.tags)
    assert [task.task_id for task in dag.topological_sort()] == [
        "extract", "check", "split", "delete", "verify", "record",
    ]  # fmt: skip


def test_the_grants_of_a_files_policy_are_the_control_database_s_only():
    from lifecycle.grants import required_grants

    policy = parse_policy(files_yaml())
    sql = parse_policy(policy_yaml())
    assert set(required_grants([policy])) == {"lifecycle_audit"}
    assert set(required_grants([policy, sql])) == {"lifecycle_audit", "telecom_db"}
