"""Read the policy folder: every valid file becomes a Policy, every broken one a PolicyError.

The DAG file and the `validate` CLI both call `load_policies`, so a policy author sees the same
message in the Airflow UI as in a pre-commit hook. One broken file never hides the others: the
loader runs inside the DAG processor, so a file that is huge, endlessly nested, a device or a
link to one must cost a bounded amount of time and memory and end as that file's PolicyError.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from lifecycle.policy import Policy
from lifecycle.stores.kinds import STORE_KINDS

POLICY_DIR_ENV = "LIFECYCLE_POLICY_DIR"
# plugins/lifecycle/loader.py -> <project>/include/policies
DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "policies"

# A real policy is a few dozen lines and four levels deep; these limits are far above that and
# far below what would slow the DAG processor down or exhaust Python's recursion limit.
MAX_POLICY_BYTES = 256 * 1024
MAX_DEPTH = 32
# Reading YAML in pure Python costs about 10 µs a value: a file of 100 000 tiny values would hold
# the DAG processor for seconds. A policy has about fifty values.
MAX_NODES = 5000
# A broken file can have thousands of problems; the first ones are enough to fix it.
MAX_PROBLEMS = 20

_MERGE_TAG = "tag:yaml.org,2002:merge"
_ANCHORS = (
    "YAML anchors and aliases (&name, *name) are not supported in policy files: write the "
    "values out"
)


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


@dataclass(frozen=True)
class PolicyConflict:
    """Two valid policies whose stores overlap: the shorter period would delete records the
    longer one promises to keep, so neither may run until one of them is changed."""

    path: Path
    other_path: Path
    name: str
    other_name: str
    message: str


@dataclass
class LoadResult:
    policies: list[LoadedPolicy] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)
    conflicts: list[PolicyConflict] = field(default_factory=list)

    def conflict_for(self, name: str) -> str | None:
        """The conflict message(s) of the policy `name`, or None when its store is its own."""
        messages = [c.message for c in self.conflicts if name in (c.name, c.other_name)]
        return "\n".join(messages) or None


class _Refusal(yaml.MarkedYAMLError):
    """A rule of policy files, in our words (PyYAML's are redacted: they quote the file)."""


def _refuse(problem: str, mark: Any) -> _Refusal:  # a Mark of PyYAML's or of libyaml's
    return _Refusal(None, None, problem, mark)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader for policy files: refuses a key given twice (PyYAML silently keeps the last
    one), anchors and aliases (a few lines of aliases expand to billions of nodes), the merge key
    `<<`, nesting deeper than MAX_DEPTH (the composer recurses: deep nesting would raise
    RecursionError) and more than MAX_NODES values. All are checked while composing, before any
    of it is built.

    An anchor is refused at the end of the document, an alias at once: so `<<: *base`, the
    usual merge, gets the merge key's message, which says what to do instead."""

    _depth = 0
    _nodes = 0
    _anchor: Any = None  # the first anchor's Mark

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if self._anchor is not None:
            raise _refuse(_ANCHORS, self._anchor)
        return node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # PyYAML's stubs leave Parser.peek_event untyped; the event is a NodeEvent or an alias.
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _refuse(_ANCHORS, event.start_mark)
        if event.anchor is not None:
            if self._anchor is not None:  # a second one: refused before PyYAML compares them
                raise _refuse(_ANCHORS, self._anchor)
            self._anchor = event.start_mark
        if self._depth >= MAX_DEPTH:
            raise _refuse(
                f"nested more than {MAX_DEPTH} levels deep: a policy needs only a few levels",
                event.start_mark,
            )
        if self._nodes >= MAX_NODES:
            raise _refuse(
                f"more than {MAX_NODES} values: a policy needs only a few dozen", event.start_mark
            )
        self._depth, self._nodes = self._depth + 1, self._nodes + 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if (
            isinstance(parent, yaml.MappingNode)
            and index is None
            and node is not None
            and node.tag == _MERGE_TAG
        ):
            raise _refuse(
                "YAML merge keys (<<) are not supported in policy files: write the fields out",
                node.start_mark,
            )
        return node


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            raise _refuse("a key must be a plain value, not a list or mapping", key_node.start_mark)
        if key in seen:
            raise _refuse(f"field {str(key)[:64]!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# PyYAML quotes what it found: a token name ('<scalar>') or one character ('\t') help the author
# and reveal nothing; anything longer is text of the file and is left out.
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_HARMLESS = re.compile(r".?|<[a-z ]+>|\\[a-z0-9]{1,9}")


def _redact(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        return match.group(0) if _HARMLESS.fullmatch(inner) else "…"

    return _QUOTED.sub(replace, text)


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's own message quotes the offending line, and a policy file may hold (or a link may
    point at) something that must not end up in the Airflow UI: only the problem and where."""
    if isinstance(exc, yaml.reader.ReaderError):
        return f"not valid YAML: character {exc.position + 1} is a control character"
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"not valid YAML: a value cannot be read ({_redact(str(exc).split(';')[0])})"
    problem = exc.problem or ""
    if problem.startswith("could not determine a constructor for the tag"):
        problem = "unsupported YAML tag: policy files are plain YAML, without !tags"
    # No context (most scanner errors): only the problem is told.
    context, mark = exc.context or "", exc.problem_mark or exc.context_mark
    if context and exc.context_mark is not None and exc.context_mark is not mark:
        context += f" (from line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    parts = [text if isinstance(exc, _Refusal) else _redact(text) for text in (context, problem)]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"not valid YAML{where}: {', '.join(part for part in parts if part)}"


def _describe(error: ErrorDetails) -> str:
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


def _too_large(size: int) -> str:
    return (
        f"(file): {size} bytes, more than the {MAX_POLICY_BYTES // 1024} KiB a policy file may "
        "have (a policy is a few dozen lines)"
    )


def parse_policy(text: str) -> Policy:
    """Parse one policy document; raises ValueError with one line per problem."""
    size = len(text) if len(text) > MAX_POLICY_BYTES else len(text.encode("utf-8", "replace"))
    if size > MAX_POLICY_BYTES:
        raise ValueError(_too_large(size))
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except Exception as exc:  # a YAMLError, or a value PyYAML cannot build (!!int x, year 0)
        raise ValueError(_yaml_problem(exc)) from None
    if not isinstance(document, dict):
        raise ValueError("(file): a policy file must be a YAML mapping of fields")
    try:
        return Policy.model_validate(document)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        if len(problems) > MAX_PROBLEMS:
            more = len(problems) - MAX_PROBLEMS
            problems = [*problems[:MAX_PROBLEMS], f"(file): and {more} more problems"]
        raise ValueError("\n".join(problems)) from None


def read_policy_file(path: Path, folder: Path) -> str:
    """The text of one policy file, refusing anything that is not a small regular file in the
    policy folder: a link to /dev/zero or to a growing log would otherwise be read until memory
    runs out, a link to a file elsewhere would show that file's content in the UI, and a FIFO
    would block the DAG processor. Raises ValueError with a message for the policy author."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a loop of links (Python 3.11)
        if path.is_symlink():
            raise ValueError("(file): a link to a missing file, or a loop of links") from None
        raise
    if not target.is_relative_to(folder.resolve()):
        raise ValueError(
            f"(file): a link to {target}, outside the policy folder: a policy file must be a "
            "file in the folder itself"
        )
    if not stat.S_ISREG(os.stat(target).st_mode):
        raise ValueError("(file): not a regular file (a device, pipe or folder): not a policy")
    # Should the file be swapped after the checks: O_NONBLOCK, open does not wait for a FIFO's
    # writer; O_NOFOLLOW, a link put in its place is not followed (`target` is resolved).
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("(file): not a regular file (a device, pipe or folder): not a policy")
        if info.st_size > MAX_POLICY_BYTES:
            raise ValueError(_too_large(info.st_size))
        data = file.read(MAX_POLICY_BYTES + 1)  # the file may have grown since
    if len(data) > MAX_POLICY_BYTES:
        raise ValueError(_too_large(len(data)))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"(file): not UTF-8 text (byte {exc.start + 1} is not valid UTF-8): save it as UTF-8"
        ) from None


def _load_one(path: Path, folder: Path) -> Policy | PolicyError:
    """One file's Policy, or its PolicyError: whatever goes wrong stays with this file."""
    try:
        return parse_policy(read_policy_file(path, folder))
    except ValueError as exc:
        return PolicyError(path, tuple(str(exc).splitlines()))
    except OSError as exc:
        return PolicyError(path, (f"(file): cannot be read: {exc.strerror or type(exc).__name__}",))
    except (RecursionError, MemoryError) as exc:
        return PolicyError(
            path, (f"(file): too large or too deeply nested ({type(exc).__name__})",)
        )
    except Exception as exc:  # never let one file take the other policies' DAGs down
        return PolicyError(path, (f"(file): cannot be loaded ({type(exc).__name__})",))


def _overlap(mine: LoadedPolicy, theirs: LoadedPolicy) -> str | None:
    """What `mine`'s store shares with `theirs`', said to the author of `mine`; None if nothing
    (each store kind knows what sharing records means for it: `StoreConfig.overlap`)."""
    shared = mine.policy.store.overlap(theirs.policy.store)
    if shared is None:
        return None
    what, relation, records = shared
    return (
        f"{what} {relation} policy {theirs.policy.name!r} ({theirs.path.name}): two policies on "
        f"one {records} would let the shorter period delete what the longer keeps; give each "
        f"{records} one policy"
    )


def find_conflicts(policies: list[LoadedPolicy]) -> list[PolicyConflict]:
    """Every pair of policies that would delete from the same records: the shorter period would
    silently override the longer one, deleting what its statement promises to keep."""
    conflicts = []
    for index, theirs in enumerate(policies):
        for mine in policies[index + 1 :]:
            overlap = _overlap(mine, theirs)
            if overlap is not None:
                conflicts.append(
                    PolicyConflict(
                        mine.path,
                        theirs.path,
                        mine.policy.name,
                        theirs.policy.name,
                        f"{mine.path}: store: {overlap}",
                    )
                )
    return conflicts


def load_policies(directory: Path | None = None) -> LoadResult:
    directory = Path(directory) if directory is not None else policy_dir()
    result = LoadResult()
    if not directory.is_dir():
        result.errors.append(PolicyError(directory, ("policy folder does not exist",)))
        return result
    owners: dict[str, Path] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        policy = _load_one(path, directory)
        if isinstance(policy, PolicyError):
            result.errors.append(policy)
            continue
        if policy.name in owners:
            problem = f"name: {policy.name!r} is already used by {owners[policy.name].name}"
            result.errors.append(PolicyError(path, (problem,)))
            continue
        owners[policy.name] = path
        result.policies.append(LoadedPolicy(path, policy))
    result.conflicts = find_conflicts(result.policies)
    return result
