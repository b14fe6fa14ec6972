"""The direction and the centre of a reflection: a fitted probe's input-space direction per layer and the mean of
the hidden states it was trained on.

Only probes on the last-token state can define a reflection of that state (`lr`, `mean-diff`, `lda`); pair
methods live in another space ([h_neg ; h_pos] or h_pos − h_neg).  `random` gives a seeded Gaussian direction per
layer, the control the reference also offered.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from quirky.errors import QuirkyError
from quirky.fileio import file_digest

RANDOM = "random"


@dataclass
class ProbeDirection:
    """direction [L, d] (not necessarily unit length) and mean [L, d] of the training hidden states."""

    method: str
    train_subset: str
    direction: torch.Tensor
    mean: torch.Tensor
    setup: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direction.ndim != 2 or self.direction.shape != self.mean.shape:
            raise QuirkyError(
                f"probe direction {tuple(self.direction.shape)} and training mean {tuple(self.mean.shape)} must "
                "both be [layers, hidden size]"
            )
        norms = self.direction.norm(dim=-1)
        if not bool(torch.isfinite(norms).all()) or bool((norms == 0).any()):
            bad = [i for i, v in enumerate(norms.tolist()) if not v or v != v]
            raise QuirkyError(
                f"the {self.method} probe has a zero or non-finite direction at layers {bad[:8]}"
            )

    @property
    def num_layers(self) -> int:
        return int(self.direction.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "train_subset": self.train_subset, **self.source}


def _train_mean(store: Any, index: np.ndarray) -> torch.Tensor:
    """Mean hidden state [L, d] over the given rows of the training store, one layer at a time (bounded memory)."""
    if len(index) == 0:
        raise QuirkyError(
            "the training subset is empty: there is no training mean to centre the reflection on"
        )
    rows = torch.as_tensor(index)
    mean = torch.empty(store.num_layers, store.hidden_size)
    for layer in range(store.num_layers):
        mean[layer] = store.hiddens(layer)[0][rows].mean(dim=0)
    return mean


def direction_from_probe(
    probe: Any, train_store: Any, train_subset: str, index: np.ndarray, source: dict[str, Any]
) -> ProbeDirection:
    """A reflection from a fitted probe (Contract 3) and the rows `index` of the store it was trained on."""
    if getattr(probe, "pair", False) or not getattr(probe, "linear", True):
        raise QuirkyError(
            f"the {probe.name} probe does not act on the last-token state, so it cannot define a reflection of "
            "it; use lr, mean-diff, lda or random"
        )
    direction = probe.direction.detach().to("cpu", torch.float32)
    if direction.shape != (train_store.num_layers, train_store.hidden_size):
        raise QuirkyError(
            f"the {probe.name} probe's direction has shape {tuple(direction.shape)}, but the training store has "
            f"{train_store.num_layers} layers of size {train_store.hidden_size}"
        )
    return ProbeDirection(
        method=probe.name,
        train_subset=train_subset,
        direction=direction,
        mean=_train_mean(train_store, index),
        setup=train_store.config.get("source", {}).get("setup"),
        source={**source, "train_store": train_store.fingerprint},
    )


def random_direction(
    train_store: Any, train_subset: str, index: np.ndarray, seed: int, source: dict[str, Any]
) -> ProbeDirection:
    """A seeded N(0, I) direction per layer, centred on the training mean (the control experiment)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(train_store.num_layers, train_store.hidden_size, generator=g)
    return ProbeDirection(
        method=RANDOM,
        train_subset=train_subset,
        direction=direction,
        mean=_train_mean(train_store, index),
        setup=train_store.config.get("source", {}).get("setup"),
        source={**source, "train_store": train_store.fingerprint, "seed": seed},
    )


def load_probe_direction(
    probes: str | os.PathLike[str],
    method: str,
    train_subset: str,
    *,
    seed: int = 0,
    activations: str | os.PathLike[str] | None = None,
) -> ProbeDirection:
    """The reflection of `method` trained on `train_subset` (an experiment tag such as `A` or `AE`), from a probe
    output directory: the saved probe `probes/<tag>/<method>.safetensors` and the training store it names."""
    from quirky.experiments.grid import split_tag
    from quirky.experiments.probe_run import ProbeRun

    run = ProbeRun.open(probes)
    train_store = run.train_store(activations)
    index = run.rows(train_store, split_tag(train_subset)[0], role="train")
    source = {
        "probes": {"model": run.model, "dataset": run.dataset, "train_store": run.info.get("train_store")}
    }
    if method == RANDOM:
        return random_direction(train_store, train_subset, index, seed, source)
    path = run.probe_path(train_subset, method)
    probe = run.load_probe(train_subset, method)
    return direction_from_probe(
        probe, train_store, train_subset, index, {**source, "probe_file": file_digest(path)}
    )
