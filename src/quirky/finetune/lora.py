"""LoRA adapters via peft, with per-architecture default target modules.

Why per-architecture defaults: module names differ between model families, and the original recipe
(`elk_generalization/training/sft.py`) adapts the attention input projections and the MLP but not the attention
output (Pythia: `query_key_value, dense_h_to_4h, dense_4h_to_h`; Llama/Mistral: `q,k,v,gate,up,down_proj`).  GPT-2
has no separate attention-output name, so all of its projections are adapted.  Targets can be overridden; names
that match nothing fail loudly instead of silently training nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from quirky.errors import QuirkyError

LLAMA_STYLE: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj")

#: `config.model_type` -> default LoRA target module names.
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt_neox": ("query_key_value", "dense_h_to_4h", "dense_4h_to_h"),
    "gpt2": ("c_attn", "c_fc", "c_proj"),
    **{
        name: LLAMA_STYLE
        for name in (
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "olmo",
            "olmo2",
            "smollm3",
        )
    },
}

#: Architectures whose weights are stored transposed (transformers' `Conv1D`), which peft must be told about.
FAN_IN_FAN_OUT: frozenset[str] = frozenset({"gpt2"})


def adaptable_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct leaf names of the modules LoRA can wrap (linear layers, incl. GPT-2's Conv1D), minus the head."""
    names: set[str] = set()
    for full_name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, torch.nn.Linear) or kind == "Conv1D":
            leaf = full_name.rsplit(".", 1)[-1]
            if leaf not in ("lm_head", "embed_out", "score"):
                names.add(leaf)
    return sorted(names)


def default_targets(model_type: str) -> tuple[str, ...]:
    if model_type not in DEFAULT_TARGETS:
        known = ", ".join(sorted(DEFAULT_TARGETS))
        raise QuirkyError(
            f"no default LoRA targets for model type '{model_type}' (known: {known}); "
            "name the modules to adapt with --lora-targets, e.g. --lora-targets q_proj,v_proj"
        )
    return DEFAULT_TARGETS[model_type]


def resolve_targets(model: torch.nn.Module, targets: Sequence[str] | None) -> tuple[str, ...]:
    """The targets to adapt: `targets` or the architecture's default, each checked to exist in `model`."""
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    chosen = tuple(targets) if targets else default_targets(model_type)
    available = adaptable_module_names(model)
    missing = [t for t in chosen if t not in available]
    if missing:
        raise QuirkyError(
            f"LoRA target module(s) {', '.join(missing)} do not exist in this {model_type or 'model'}; "
            f"its adaptable modules are: {', '.join(available)}"
        )
    return chosen


def lora_config(
    model: torch.nn.Module, rank: int, alpha: float, dropout: float, targets: Sequence[str] | None
) -> Any:
    """A peft `LoraConfig` for `model` (targets resolved and checked)."""
    from peft import LoraConfig

    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(resolve_targets(model, targets)),
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=model_type in FAN_IN_FAN_OUT,
    )


def add_lora(
    model: torch.nn.Module, rank: int, alpha: float, dropout: float, targets: Sequence[str] | None
) -> Any:
    """Wrap `model` in a peft LoRA model whose trainable parameters are float32 (as the original did, so that
    bf16 base weights do not make the adapter's optimizer state lossy)."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config(model, rank, alpha, dropout, targets))
    for p in peft_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return peft_model
