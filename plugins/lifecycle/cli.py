"""Command line: `python -m lifecycle <command>` (with plugins/ on PYTHONPATH; `make validate`).

validate [DIR]        check every policy file; same messages as the DAG loader; exit 1 on any
schema [--check]      write (or check) the JSON Schema and the field reference from the model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lifecycle.loader import DEFAULT_POLICY_DIR, load_policies, policy_dir
from lifecycle.policy import json_schema
from lifecycle.reference import REFERENCE_PATH, render_reference_section, update_reference

SCHEMA_PATH = DEFAULT_POLICY_DIR / "policy.schema.json"


def validate(directory: Path) -> int:
    result = load_policies(directory)
    for loaded in result.policies:
        print(
            f"ok      {loaded.path}: {loaded.policy.dag_id} keeps {loaded.policy.retention.period}"
        )
    for error in result.errors:
        print(f"INVALID {error.message}", file=sys.stderr)
    print(f"{len(result.policies)} valid, {len(result.errors)} invalid policy files in {directory}")
    return 1 if result.errors or not result.policies else 0


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lifecycle", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    validate_cmd = commands.add_parser("validate", help="validate the policy files")
    validate_cmd.add_argument("directory", nargs="?", type=Path, default=None)
    schema_cmd = commands.add_parser("schema", help="generate the JSON Schema and reference")
    schema_cmd.add_argument("--check", action="store_true", help="fail if they are stale")
    args = parser.parse_args(argv)
    if args.command == "validate":
        return validate(args.directory or policy_dir())
    return schema(args.check)


if __name__ == "__main__":
    sys.exit(main())
