"""Quirky finetuning: make a causal LM answer truthfully for Alice and with Bob's systematic error for Bob.

API: `finetune(model, dataset_dir, out_dir, config)` (LoRA or full; resumable; returns a `FinetuneResult`),
`evaluate_model(...)` (loss, per-persona accuracy/AUROC of the LM's log-odds on any split), `FinetuneConfig`
and the named `PRESETS`.  The heavy libraries are imported inside the functions.
"""

from typing import Any

from quirky.finetune.config import PRESETS, FinetuneConfig, preset_config

_LAZY = {
    "evaluate_model": "quirky.finetune.evaluate",
    "FinetuneResult": "quirky.finetune.train",
    "finetune": "quirky.finetune.train",
    "load_result": "quirky.finetune.train",
}


def __getattr__(name: str) -> Any:
    """Import the torch-heavy parts on first use, so `quirky --help` and the config stay fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'quirky.finetune' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "FinetuneConfig",
    "FinetuneResult",
    "evaluate_model",
    "finetune",
    "load_result",
    "preset_config",
]
