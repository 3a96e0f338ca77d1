"""Read the policy folder: every valid file becomes a Policy, every broken one a PolicyError.

The DAG file and the `validate` CLI both call `load_policies`, so a policy author sees the same
message in the Airflow UI as in a pre-commit hook. One broken file never hides the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from lifecycle.policy import STORE_KINDS, Policy

POLICY_DIR_ENV = "LIFECYCLE_POLICY_DIR"
# plugins/lifecycle/loader.py -> <project>/include/policies
DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "policies"


def policy_dir() -> Path:
    return Path(os.environ.get(POLICY_DIR_ENV) or DEFAULT_POLICY_DIR)


@dataclass(frozen=True)
class LoadedPolicy:
    path: Path
    policy: Policy


@dataclass(frozen=True)
class PolicyError:
    path: Path
    problems: tuple[str, ...]

    @property
    def message(self) -> str:
        return "\n".join(f"{self.path}: {problem}" for problem in self.problems)


@dataclass
class LoadResult:
    policies: list[LoadedPolicy] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"field {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _describe(error: dict) -> str:
    loc = list(error["loc"])
    if len(loc) > 1 and loc[0] == "store" and loc[1] in STORE_KINDS:
        del loc[1]  # pydantic puts the union tag in the path: store.sql.table -> store.table
    if len(loc) > 3 and loc[:2] == ["store", "timestamp"]:
        del loc[2]  # and the timestamp source's: store.timestamp.metadata.metadata
    location = ".".join(str(part) for part in loc) or "(file)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{location}: unknown field"
    if kind == "missing":
        return f"{location}: required field is missing"
    if kind == "union_tag_invalid":
        expected = error.get("ctx", {}).get("expected_tags", "")
        return f"{location}.kind: unknown store kind {error['ctx']['tag']!r} (expected {expected})"
    message = error["msg"].removeprefix("Value error, ")
    # A check across fields (loc empty) names its fields in the message itself.
    return f"{location}: {message}" if loc else message


def parse_policy(text: str) -> Policy:
    """Parse one policy document; raises ValueError with one line per problem."""
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError("not valid YAML: " + " ".join(str(exc).split())) from None
    if not isinstance(document, dict):
        raise ValueError("(file): a policy file must be a YAML mapping of fields")
    try:
        return Policy.model_validate(document)
    except ValidationError as exc:
        raise ValueError("\n".join(_describe(error) for error in exc.errors())) from None


def load_policies(directory: Path | None = None) -> LoadResult:
    directory = Path(directory) if directory is not None else policy_dir()
    result = LoadResult()
    if not directory.is_dir():
        result.errors.append(PolicyError(directory, ("policy folder does not exist",)))
        return result
    owners: dict[str, Path] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            policy = parse_policy(path.read_text(encoding="utf-8"))
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            result.errors.append(PolicyError(path, tuple(str(exc).splitlines())))
            continue
        if policy.name in owners:
            problem = f"name: {policy.name!r} is already used by {owners[policy.name].name}"
            result.errors.append(PolicyError(path, (problem,)))
            continue
        owners[policy.name] = path
        result.policies.append(LoadedPolicy(path, policy))
    return result
