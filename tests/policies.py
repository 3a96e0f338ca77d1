"""The tests' policies, from one source: two base policies and the overrides of each test.

- `make_policy(**overrides)`: a validated `lifecycle.policy.Policy` (also the `make_policy`
  fixture of tests/conftest.py);
- `policy_yaml(**overrides)`: the text of a policy file;
- `policy_fields(**overrides)`: the plain fields.

The base is a SQL policy on `cdrs` (`base="sql"`, the default) or one on the support line's
call recordings in S3 (`base="s3"`). Overrides, by keyword:

- `field=value` replaces a top-level field: `retention={"period": "P1M"}`;
- `field__name=value` replaces one value inside it and keeps the others:
  `store__table="events"`, `retention__per_tenant={"column": "tenant"}`;
- the value `DROP` removes the field: `store__timestamp=DROP` (None is a value, written null).

New fields follow the base's, in the order given.

The YAML text has one top-level field a line and nested mappings in flow style
(`store: {kind: sql, conn_id: telecom_db, table: cdrs, key: id, timestamp: started_at}`), the
form the tests edit with `str.replace`; `block=("store",)` writes those fields one value a line
instead. Strings are written as they are: a string is a YAML fragment, so
`guards="{max_delete_fraction: 1}"` is a mapping in the file, and a value that YAML would read
otherwise must carry its own quotes (`schedule="'0 0 29 2 *'"`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lifecycle.policy import Policy

DROP: Any = object()

SQL: dict[str, Any] = {
    "name": "cdrs",
    "title": "Call detail records",
    "statement": {
        "service": "VoIP en mobiel",
        "data": "Gebruikgegevens",
        "retention": "Zes maanden",
    },
    "controller": "provider",
    "legal_basis": "contract",
    "retention": {"period": "P6M"},
    "store": {
        "kind": "sql",
        "conn_id": "telecom_db",
        "table": "cdrs",
        "key": "id",
        "timestamp": "started_at",
    },
}
S3: dict[str, Any] = {
    "name": "support_call_recordings",
    "title": "Support line call recordings",
    "statement": {"service": "Algemeen", "data": "Gespreksopnames", "retention": "90 dagen"},
    "controller": "provider",
    "legal_basis": "legitimate_interest",
    "retention": {"period": "P90D"},
    "store": {
        "kind": "s3",
        "conn_id": "recordings",
        "bucket": "call-recordings",
        "prefix": "support/",
    },
}
BASES = {"sql": SQL, "s3": S3}
# The statement row of the tests' own made-up tables.
TEST_STATEMENT = {"service": "Test", "data": "Test data", "retention": "Zes maanden"}


def policy_fields(base: str = "sql", **overrides: Any) -> dict[str, Any]:
    """The fields of the base policy with the overrides (see the module's doc)."""
    fields = copy.deepcopy(BASES[base])
    for name, value in overrides.items():
        *path, last = name.split("__")
        target = fields
        for part in path:
            target = target.setdefault(part, {})
        if value is DROP:
            target.pop(last, None)
        else:
            target[last] = copy.deepcopy(value)
    return fields


def make_policy(base: str = "sql", **overrides: Any) -> Policy:
    """The base policy with the overrides, validated as the loader validates a file's fields."""
    from lifecycle.policy import Policy

    return Policy.model_validate(policy_fields(base, **overrides))


def policy_yaml(base: str = "sql", *, block: Iterable[str] = (), **overrides: Any) -> str:
    """The policy file of the base policy with the overrides (see the module's doc)."""
    block = set(block)
    lines = []
    for name, value in policy_fields(base, **overrides).items():
        if name in block and isinstance(value, dict):
            lines.append(f"{name}:")
            lines.extend(f"  {key}: {_flow(item)}" for key, item in value.items())
        else:
            lines.append(f"{name}: {_flow(value)}")
    return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
