"""Quirky finetuning: make a causal LM answer truthfully for Alice and with Bob's systematic error for Bob.

API: `finetune(model, dataset_dir, out_dir, config)` (LoRA or full; resumable; returns a `FinetuneResult`),
`evaluate_model(...)` (loss, per-persona accuracy/AUROC of the LM's log-odds on any split), `FinetuneConfig`
and the named `PRESETS`.  The heavy libraries are imported inside the functions.
"""

from quirky.finetune.config import PRESETS, FinetuneConfig, preset_config
from quirky.finetune.evaluate import evaluate_model
from quirky.finetune.train import FinetuneResult, finetune, load_result

__all__ = [
    "PRESETS",
    "FinetuneConfig",
    "FinetuneResult",
    "evaluate_model",
    "finetune",
    "load_result",
    "preset_config",
]
