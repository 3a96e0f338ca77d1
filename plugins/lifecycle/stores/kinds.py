"""The one registry of store kinds: every `lifecycle/stores/<kind>_config.py` module's `CONFIG`
(a `StoreConfig` subclass), found by its name. Adding a kind adds two modules, nothing else."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from lifecycle.stores.config import StoreConfig


def _discover() -> dict[str, type[StoreConfig]]:
    import lifecycle.stores as package

    found: dict[str, type[StoreConfig]] = {}
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
    for name in (n for n in names if n.endswith("_config")):
        model = importlib.import_module(f"{package.__name__}.{name}").CONFIG
        if not (isinstance(model, type) and issubclass(model, StoreConfig)):
            raise TypeError(f"lifecycle.stores.{name}.CONFIG is not a StoreConfig subclass")
        found[model.kind_name()] = model
    return found


KINDS = _discover()
STORE_KINDS = tuple(KINDS)

if TYPE_CHECKING:
    # To the type checker a policy's store is the base: code outside stores/ asks it, never
    # reads a kind's own fields.
    Store = StoreConfig
else:
    # One member per kind, told apart by `kind` (pydantic's discriminated union).
    Store = Annotated[Union[tuple(KINDS.values())], Field(discriminator="kind")]  # noqa: UP007
