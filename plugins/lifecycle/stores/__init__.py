"""Stores: where the data of a policy lives. One module per store kind, one small interface.

A store answers three questions for a cutoff: what is expired (`plan`), delete it (`purge`), and
prove nothing expired remains (`verify`). It returns counts and bounds only, never records, so
nothing it reports can carry personal data. A new store kind is a new module here exposing
`open_store(config, connection)`, plus its entry in `_MODULES` and its model in `policy.py`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

_MODULES = {"sql": "lifecycle.stores.sql"}


@dataclass(frozen=True)
class Plan:
    """What a run would delete: counts and timestamp bounds, nothing else."""

    total: int
    expired: int
    held: int = 0
    active: int = 0  # no timestamp yet, and the policy says that means "still running"
    anomalies: int = 0  # no timestamp, and the policy says that is wrong: reported, never deleted
    oldest_expired: str | None = None
    newest_expired: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PurgeResult:
    deleted: int
    batches: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verification:
    success: bool
    remaining: int  # unheld records still before the cutoff
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)  # the Great Expectations result

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PurgeLimitExceeded(RuntimeError):
    """A purge found more to delete than the check approved; the batch was rolled back."""


class StoreConfigError(ValueError):
    """The policy's store section does not match the real store (missing table or column)."""


class RetentionStore(ABC):
    @abstractmethod
    def plan(self, cutoff: datetime) -> Plan: ...

    @abstractmethod
    def purge(self, cutoff: datetime, *, approved: int) -> PurgeResult:
        """Delete what is expired in bounded batches; never more than `approved` records."""

    @abstractmethod
    def verify(self, cutoff: datetime) -> Verification: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def open_store(config: Any, connection: Any) -> RetentionStore:
    """The store for a policy's `store` section, reached through an Airflow connection."""
    module = importlib.import_module(_MODULES[config.kind])
    return module.open_store(config, connection)
