"""Lazy package attributes: `from quirky.models import load_model` works, but importing `quirky.models` alone
does not import torch.

Why: the CLI mounts every stage's sub-app at start-up, so any package `__init__` that imports torch, sklearn or
transformers makes `quirky --help` take seconds.  Each package lists its public names and the submodule that
defines them; the submodule is imported on first access (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module `__getattr__` and `__dir__` of a package whose public names (`exports`: defining submodule ->
    names) are imported on first use; a resolved name is stored in the package, so later lookups are plain
    attribute reads.  (`__all__` stays a literal list in the package: linters read it statically.)"""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
