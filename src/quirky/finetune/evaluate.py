"""Evaluate a (possibly quirky) model on templated examples: loss, and per persona accuracy and AUROC.

Why these numbers: a quirky model should be right for Alice (her log-odds separate her labels) and wrong in
Bob's systematic way for Bob (his log-odds separate *Bob's* labels, and say little about the truth).  The LM's
log-odds are logit(first token of the positive choice) - logit(first token of the negative choice) at the last
prompt token, exactly what extraction stores as `lm_log_odds` (Contract 2), so the two stages agree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quirky.errors import QuirkyError
from quirky.fileio import read_json
from quirky.finetune.data import EncodedExamples, collate, encode_examples, last_token_logits, pad_id_of
from quirky.finetune.output import CONFIG_FILE
from quirky.scoring import auroc

METRIC_KEYS: tuple[str, ...] = (
    "loss",
    "alice_acc",
    "alice_auroc",
    "bob_acc",
    "bob_auroc",
    "bob_vs_truth_auroc",
    "n_alice",
    "n_bob",
)


@torch.no_grad()
def score_examples(
    model: Any, examples: EncodedExamples, *, batch_size: int, pad_id: int, device: torch.device | str
) -> tuple[np.ndarray, np.ndarray]:
    """(log-odds [n], per-example answer-token loss [n]) in input order; batches are sorted by length so that
    little padding is computed (results do not depend on the batching)."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    n = len(examples)
    order = np.argsort([len(p) for p in examples.prompts], kind="stable")
    log_odds = np.zeros(n, dtype=np.float64)
    losses = np.zeros(n, dtype=np.float64)
    try:
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = collate(examples, idx, pad_id).to(device)
            logits = last_token_logits(model, batch).float()
            rows = torch.arange(len(idx), device=logits.device)
            pos = logits[rows, batch.choice_ids[:, 1]]
            neg = logits[rows, batch.choice_ids[:, 0]]
            log_odds[idx] = (pos - neg).double().cpu().numpy()
            per_example = torch.nn.functional.cross_entropy(logits, batch.targets, reduction="none")
            losses[idx] = per_example.double().cpu().numpy()
    finally:
        if was_training:
            model.train()
    return log_odds, losses


def summarize(examples: EncodedExamples, log_odds: np.ndarray, losses: np.ndarray) -> dict[str, float]:
    """The evaluation metrics from per-example log-odds and losses.

    Accuracy predicts the positive choice when its first-token logit is larger (log-odds > 0).
    """
    alice = examples.character == "Alice"
    bob = examples.character == "Bob"

    def acc(mask: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean((log_odds[mask] > 0) == (labels[mask] == 1))) if mask.any() else math.nan

    return {
        "loss": float(np.mean(losses)) if len(losses) else math.nan,
        "alice_acc": acc(alice, examples.alice_label),
        "alice_auroc": auroc(log_odds[alice], examples.alice_label[alice]),
        "bob_acc": acc(bob, examples.bob_label),
        "bob_auroc": auroc(log_odds[bob], examples.bob_label[bob]),
        "bob_vs_truth_auroc": auroc(log_odds[bob], examples.alice_label[bob]),
        "n_alice": int(alice.sum()),
        "n_bob": int(bob.sum()),
    }


def evaluate_examples(
    model: Any, examples: EncodedExamples, *, batch_size: int, pad_id: int, device: torch.device | str
) -> dict[str, float]:
    log_odds, losses = score_examples(model, examples, batch_size=batch_size, pad_id=pad_id, device=device)
    return summarize(examples, log_odds, losses)


def format_metrics(m: dict[str, Any]) -> str:
    """One human-readable line."""

    def f(key: str) -> str:
        v = m.get(key)
        return "  -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    return (
        f"loss {f('loss')} | Alice acc {f('alice_acc')} AUROC {f('alice_auroc')} | "
        f"Bob acc {f('bob_acc')} AUROC {f('bob_auroc')} | Bob vs truth AUROC {f('bob_vs_truth_auroc')}"
    )


def evaluate_model(
    model: str,
    dataset_dir: str | Path,
    *,
    adapter: str | Path | None = None,
    split: str = "test",
    setup: str | None = None,
    max_examples: int | None = None,
    batch_size: int = 64,
    max_length: int = 1024,
    device: str | None = None,
) -> dict[str, Any]:
    """Metrics of `model` (+ `adapter`, merged by the loader) on a split of a quirky dataset, both personas.

    `setup` defaults to the one the adapter (or a fully finetuned model directory) was trained with, from its
    `training_config.json`, else `single`.
    """
    from quirky.datasets import load_templated
    from quirky.models import load_model
    from quirky.models.loading import default_device

    if setup is None:  # the setup a run was trained with (an adapter, or a fully finetuned model directory)
        setup = _trained_setup(adapter) or _trained_setup(model) or "single"
    df = load_templated(dataset_dir, split, setup=setup, max_examples=max_examples)
    if len(df) == 0:
        raise QuirkyError(f"split '{split}' of {dataset_dir} has no examples to evaluate.")
    net, tokenizer = load_model(model, adapter=adapter, device=device)
    examples = encode_examples(tokenizer, df, max_length)
    dev = torch.device(device) if device is not None else default_device()
    metrics = evaluate_examples(net, examples, batch_size=batch_size, pad_id=pad_id_of(tokenizer), device=dev)
    return {"split": split, "setup": setup, "n": len(examples), **metrics}


def _trained_setup(adapter: str | Path | None) -> str | None:
    if adapter is None:
        return None
    config_file = Path(adapter).expanduser() / CONFIG_FILE
    if not config_file.is_file():
        return None
    return str(read_json(config_file).get("config", {}).get("setup") or "") or None
