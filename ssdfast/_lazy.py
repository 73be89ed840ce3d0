"""Package faces whose public names are imported from their submodules when first used
(``ssdfast.export``, ``ssdfast.runtimes``): importing one light submodule, or the package for one name,
does not load the others (torch, the models, the runtimes)."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

__all__ = ["lazy_names"]


def lazy_names(package: str, providers: dict[str, tuple[str, ...]]
               ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for the package named ``package`` whose submodules provide
    the names ``providers`` lists (``{submodule: (name, ...)}``); a name is imported on first use and
    then kept in the package's namespace."""
    where = {name: module for module, names in providers.items() for name in names}
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return list(where), __getattr__, __dir__
