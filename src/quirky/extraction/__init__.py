"""Hidden-state extraction and the activation store.

`quirky.extraction.store` (Contract 2) has no dependency on transformers, so probes and tests can read and write
stores without importing a model stack; `quirky.extraction.extract` does the batched forward passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quirky._lazy import lazy_exports

_EXPORTS = {
    "quirky.extraction.store": (
        "SUBSETS",
        "ActivationStore",
        "open_store",
        "write_store",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from quirky.extraction.store import ActivationStore, open_store, write_store
    from quirky.subsets import SUBSETS

__all__ = ["SUBSETS", "ActivationStore", "open_store", "write_store"]
