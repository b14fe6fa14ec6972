"""The random-direction baseline (`random`): how well does a *random* linear direction separate the classes?

The original (EleutherAI/quirky-language-models: `elk_generalization/elk/random_baseline.py`, driven by
`elk_generalization/elk/transfer.py`): draw directions
z ~ N(0, I_d), flip each whose training AUROC is below 0.5, and report the distribution of test AUROCs.  This
"probe" is a distribution, not a single score: `score(x)` returns [L, K, n] (one row per direction), and the
experiments report the mean and quantiles of the per-direction AUROC.

Where it differs (a bug of the original's): the reference drew 1000 directions yet reported quantiles down to
2^-16, which are just the sample min/max.  The experiments report only levels with at least 10 draws beyond them
(`metrics.honest_quantile_levels`), and AUROC ties are averaged.  The directions are regenerated from the seed
(per layer, on the CPU, so every device sees the same ones); the saved state is the seed plus the signs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from quirky.errors import QuirkyError
from quirky.probes.base import Probe
from quirky.probes.metrics import auroc_columns


class RandomDirectionsProbe(Probe):
    """`random`: K random directions per layer, signs fixed on the training data."""

    name = "random"
    linear = False

    sign_: Tensor  # [L, K] +-1: each direction's sign on the training data
    shape_: Tensor  # int64 [2]: (layers, features) fitted on

    def __init__(self, n_directions: int = 1000, seed: int = 0) -> None:
        if int(n_directions) < 1:
            raise QuirkyError(f"random: n_directions must be >= 1, got {n_directions}")
        self.n_directions, self.seed = int(n_directions), int(seed)

    def directions(self, layer: int, features: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The K directions [K, f] of one layer (regenerated from the seed, identical on every device)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + layer)
        z = torch.randn(self.n_directions, features, generator=gen, dtype=torch.float32)
        return z.to(device=device, dtype=dtype)

    @property
    def expected_shape(self) -> tuple[int, int]:
        return int(self.shape_[0]), int(self.shape_[1])

    @property
    def direction(self) -> Tensor:
        raise QuirkyError("random: the random baseline has no single direction (it is a distribution)")

    @property
    def bias(self) -> Tensor:
        raise QuirkyError("random: the random baseline has no bias")

    def _project_layer(self, x: Tensor, layer: int, out: Tensor | None = None) -> Tensor:
        """Raw projections [K, n] of one layer of x [L, n, f] onto its K directions."""
        return torch.matmul(self.directions(layer, x.shape[-1], x.device, x.dtype), x[layer].mT, out=out)

    def _project(self, x: Tensor) -> Tensor:
        """Raw projections [L, K, n] of every layer, written into one buffer (no per-layer list, no stack copy)."""
        out = torch.empty(x.shape[0], self.n_directions, x.shape[1], dtype=x.dtype, device=x.device)
        for layer in range(x.shape[0]):
            self._project_layer(x, layer, out=out[layer])
        return out

    def _fit(self, x: Tensor, y: Tensor) -> None:
        # a layer at a time: the [K, n] projections of one layer, not [L, K, n] of all, are in memory at once
        # (`auroc_columns` ranks each direction's scores once; bit-identical to a per-direction `auroc`)
        auc = torch.empty(x.shape[0], self.n_directions, dtype=torch.float64, device=x.device)
        for layer in range(x.shape[0]):
            auc[layer] = auroc_columns(self._project_layer(x, layer), y.unsqueeze(0))[:, 0]
        self.sign_ = torch.where(auc < 0.5, -1.0, 1.0).to(x.dtype)
        self.shape_ = torch.tensor([x.shape[0], x.shape[-1]], dtype=torch.int64)

    def _score(self, x: Tensor) -> Tensor:
        return self._project(x).mul_(self._like(self.sign_, x)[:, :, None])
