"""The finetuning configuration: one frozen dataclass, defaults from the original recipe, plus named presets.

Why a dataclass with reference defaults: a run is reproduced from its saved `training_config.json` alone, and its
fingerprint is a hash of exactly these fields.  The defaults follow the original
`elk_generalization/training/sft.py` and `run_sft.py` for 7B-class models on a GPU (LoRA r=8, alpha=8, no dropout;
AdamW lr 2e-5, betas (0.9, 0.95), weight decay 0.1; 15% warmup then linear decay; effective batch 32 = 16 x 2; 15
epochs for addition on Mistral-7B; max length 1024).  Presets bundle settings that were measured to work elsewhere
(e.g. `cpu-smollm2`, docs/FINETUNING.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from quirky.errors import QuirkyError

Characters = Literal["both", "Alice", "Bob"]
Difficulty = Literal["none", "easy", "hard"]
Optimizer = Literal["adamw", "adam", "sgd", "adafactor"]
Schedule = Literal["linear", "cosine", "constant"]

CHARACTERS: tuple[str, ...] = ("both", "Alice", "Bob")
DIFFICULTIES: tuple[str, ...] = ("none", "easy", "hard")
OPTIMIZERS: tuple[str, ...] = ("adamw", "adam", "sgd", "adafactor")
SCHEDULES: tuple[str, ...] = ("linear", "cosine", "constant")
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that determines a finetuning run's result (model and dataset identity are added at run time).

    `steps` wins over `epochs` when set.  `batch_size` is the per-device micro-batch; the effective batch is
    `batch_size * grad_accum * world_size`.  `lora_rank = 0` means full finetuning.  `lora_targets = None` picks
    the per-architecture default (`quirky.finetune.lora.DEFAULT_TARGETS`).
    """

    # data
    setup: str = "single"
    template_seed: int = 0
    characters: Characters = "both"
    difficulty: Difficulty = "none"
    max_train_examples: int | None = None
    max_eval_examples: int = 1000  # records of `eval_split` evaluated during training; 0 = no evaluation
    eval_split: str = "validation"
    max_length: int = 1024
    # model / adapter
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] | None = None
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    # optimisation
    optimizer: Optimizer = "adamw"
    lr: float = 2e-5
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.15
    schedule: Schedule = "linear"
    batch_size: int = 16
    stratify: bool = False  # every batch exactly half positive (see `schedule.epoch_order`)
    grad_accum: int = 2
    epochs: float = 15.0
    steps: int | None = None
    seed: int = 42
    # bookkeeping (not part of the fingerprint: they do not change the trained weights)
    eval_every: int = 0
    save_every: int = 100
    eval_batch_size: int = 64
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return self.lora_rank == 0

    def validate(self) -> FinetuneConfig:
        """Raise `QuirkyError` for settings that cannot work, before any model is loaded."""
        checks: list[tuple[bool, str]] = [
            (self.characters in CHARACTERS, f"characters must be one of {', '.join(CHARACTERS)}"),
            (self.difficulty in DIFFICULTIES, f"difficulty must be one of {', '.join(DIFFICULTIES)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}"),
            (self.lora_rank >= 0, "lora rank must be >= 0 (0 = full finetuning)"),
            (self.lr > 0, "learning rate must be > 0"),
            (0 <= self.warmup_ratio < 1, "warmup ratio must be in [0, 1)"),
            (
                self.batch_size >= 1 and self.grad_accum >= 1,
                "batch size and gradient accumulation must be >= 1",
            ),
            (self.eval_batch_size >= 1, "eval batch size must be >= 1"),
            (self.steps is None or self.steps >= 1, "steps must be >= 1"),
            (self.steps is not None or self.epochs > 0, "epochs must be > 0 (or give --steps)"),
            (self.max_length >= 2, "max length must be >= 2 (a prompt token and the answer token)"),
            (self.max_eval_examples >= 0, "max eval examples must be >= 0"),
            (
                self.max_train_examples is None or self.max_train_examples > 0,
                "max train examples must be > 0",
            ),
            (self.save_every >= 1 and self.eval_every >= 0, "save_every must be >= 1 and eval_every >= 0"),
            (0 <= self.lora_dropout < 1, "lora dropout must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise QuirkyError(f"invalid finetuning config: {message}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets) if self.lora_targets is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinetuneConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise QuirkyError(f"unknown finetuning config keys: {', '.join(unknown)}.")
        d = dict(d)
        if d.get("lora_targets") is not None:
            d["lora_targets"] = tuple(d["lora_targets"])
        return cls(**d).validate()

    def replace(self, **changes: Any) -> FinetuneConfig:
        return dataclasses.replace(self, **changes).validate()

    def result_fields(self) -> dict[str, Any]:
        """The fields that determine the trained weights (the fingerprint's part of the config)."""
        d = self.to_dict()
        for key in ("eval_every", "save_every", "eval_batch_size", "max_eval_examples", "eval_split"):
            d.pop(key)
        return d


#: Named presets: measured recipes (see docs/FINETUNING.md for their curves).  Values override the defaults;
#: explicit command-line options override the preset.
PRESETS: dict[str, dict[str, Any]] = {
    "reference": {},
    # SmolLM2-135M on 2-digit addition (grader-last) on 2 CPU cores: full finetuning, measured in docs/FINETUNING.md.
    "cpu-smollm2": {
        "setup": "grader-last",
        "lora_rank": 0,
        "lr": 3e-5,
        "warmup_ratio": 0.05,
        "weight_decay": 0.0,
        "batch_size": 16,
        "grad_accum": 1,
        "steps": 300,
        "max_eval_examples": 400,
        "eval_every": 50,
        "save_every": 100,
    },
}


def preset_config(name: str | None, **overrides: Any) -> FinetuneConfig:
    """The defaults, then preset `name`, then `overrides` (None values are ignored)."""
    base: dict[str, Any] = {}
    if name is not None:
        if name not in PRESETS:
            raise QuirkyError(f"unknown finetuning preset '{name}'; choose one of {', '.join(PRESETS)}.")
        base.update(PRESETS[name])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return FinetuneConfig.from_dict(base)
