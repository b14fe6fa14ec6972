"""Lazy package attributes: `from quirky.models import load_model` works, but importing `quirky.models` alone
does not import torch.

Why: the CLI mounts every stage's sub-app at start-up, so any package `__init__` that imports torch, sklearn or
transformers makes `quirky --help` take seconds.  Each package lists its public names and the submodule that
defines them; the submodule is imported on first access (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, exports: dict[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module `__getattr__` resolving the names in `exports` (defining submodule -> names) on first use."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
