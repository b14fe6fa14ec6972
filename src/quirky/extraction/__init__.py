"""Hidden-state extraction and the activation store.

`quirky.extraction.store` (Contract 2) has no dependency on transformers, so probes and tests can read and write
stores without importing a model stack; `quirky.extraction.extract` does the batched forward passes.
"""

from quirky.extraction.store import SUBSETS, ActivationStore, open_store, write_store

__all__ = ["SUBSETS", "ActivationStore", "open_store", "write_store"]
