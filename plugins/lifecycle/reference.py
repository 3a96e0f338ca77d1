"""The field reference of include/policies/README.md, generated from the policy model.

Only the part between the markers is generated; the prose around it is written by hand.
`python -m lifecycle schema` rewrites it, `--check` (run by the tests) fails when it is stale.
"""

from __future__ import annotations

import re
import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from lifecycle.loader import DEFAULT_POLICY_DIR
from lifecycle.policy import (
    EventSource,
    Guards,
    Owners,
    Policy,
    Retention,
    Statement,
    TenantPeriods,
)
from lifecycle.stores.kinds import KINDS

REFERENCE_PATH = DEFAULT_POLICY_DIR / "README.md"
BEGIN = "<!-- BEGIN GENERATED FIELD REFERENCE (python -m lifecycle schema) -->"
END = "<!-- END GENERATED FIELD REFERENCE -->"
SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("Policy (top level)", Policy),
    ("`statement`", Statement),
    ("`retention`", Retention),
    ("`retention.from_event`", EventSource),
    ("`retention.per_tenant`", TenantPeriods),
    # Each store kind's model and its nested ones, from the registry.
    *(
        section
        for kind, model in KINDS.items()
        for section in ((f"`store` with `kind: {kind}`", model), *model.reference_sections)
    ),
    ("`guards`", Guards),
    ("`owners`", Owners),
]


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def render_reference_section() -> str:
    parts = [BEGIN]
    for title, model in SECTIONS:
        parts += [
            f"\n### {title}\n",
            "| field | type | required / default | meaning |",
            "|---|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            if field.is_required():
                default = "required"
            elif field.default_factory is not None:
                default = (
                    "default: empty" if model is not Policy or name != "guards" else "defaults"
                )
            elif field.default is PydanticUndefined or field.default is None:
                default = "optional"
            else:
                default = f"default `{field.default}`"
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            parts.append(
                f"| `{name}` | {_type_name(field.annotation)} | {default} | {description} |"
            )
    parts.append("\n" + END)
    return "\n".join(parts)


def update_reference(document: str, section: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(document):
        return document.rstrip("\n") + "\n\n" + section + "\n"
    return pattern.sub(lambda _: section, document)
