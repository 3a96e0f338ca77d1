"""What a request asks of one policy, decided from the policy alone (no store is opened here).

- access: every category that maps one of the request's identifiers is exported;
- portability: only categories processed for the contract or with consent (GDPR art. 20);
- erasure: deleted, except a legal obligation (kept until its own window ends), a category the
  client organisation controls (forwarded to it, unless the request says the client instructed
  the erasure); holds and running contracts are found in the store and reported there;
- restriction: a `restriction` hold on each mapped identifier.

A category whose store kind cannot answer requests (no `lifecycle.stores.<kind>_requests`
module) is reported as such, never silently skipped.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from lifecycle.policy import Policy
    from lifecycle.requests.register import Request

Action = Literal["export", "erase", "keep", "forward", "restrict", "not_applicable", "unsupported"]
PORTABLE_GROUNDS = ("contract", "consent")


@dataclass(frozen=True)
class CategoryScope:
    policy: str
    action: Action
    subjects: tuple[str, ...]  # the request's identifiers this policy maps (names only)
    reason: str = ""


def supports_requests(policy: Policy) -> bool:
    return importlib.util.find_spec(f"lifecycle.stores.{policy.store.kind}_requests") is not None


def mapped_subjects(policy: Policy, subjects: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(subjects) & policy.store.hold_subjects()))


def scope_of(policy: Policy, request: Request) -> CategoryScope:
    from lifecycle.requests.archive import EXPORTS_CONN_ID

    if policy.store.conn_id == EXPORTS_CONN_ID:
        return CategoryScope(
            policy.name, "not_applicable", (), "the requests' own archives (export location)"
        )
    subjects = mapped_subjects(policy, request.subjects)
    if not subjects:
        return CategoryScope(
            policy.name, "not_applicable", (), "maps none of the request's identifiers"
        )
    if not supports_requests(policy):
        return CategoryScope(
            policy.name,
            "unsupported",
            subjects,
            f"store kind {policy.store.kind} cannot answer requests yet: handle it by hand",
        )
    ground = policy.legal_basis.replace("_", " ")
    if request.kind == "access":
        return CategoryScope(policy.name, "export", subjects)
    if request.kind == "portability":
        if policy.legal_basis in PORTABLE_GROUNDS:
            return CategoryScope(policy.name, "export", subjects)
        return CategoryScope(
            policy.name,
            "not_applicable",
            subjects,
            f"ground {ground}: portability covers contract and consent only",
        )
    if request.kind == "erasure":
        if policy.legal_basis == "legal_obligation":
            return CategoryScope(
                policy.name,
                "keep",
                subjects,
                "ground legal obligation: kept until its own window ends",
            )
        if policy.controller == "client" and not request.client_instructed:
            return CategoryScope(
                policy.name,
                "forward",
                subjects,
                "the client organisation is the controller: forward the request to it",
            )
        return CategoryScope(policy.name, "erase", subjects)
    return CategoryScope(policy.name, "restrict", subjects)
