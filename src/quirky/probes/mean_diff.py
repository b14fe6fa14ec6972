"""Difference-in-means probes: `mean-diff` on the last-token state and `mean-diff-on-pair` on [h_neg ; h_pos].

Direction (EleutherAI/quirky-language-models: `elk_generalization/elk/mean_diff.py`):
w = (mu_1 - mu_0) / ||mu_1 - mu_0||.  Where we differ (a bug of the original's, `mean_diff.py:12-15`): the
reference kept nn.Linear's *random* bias and a +-1 "scale", so a threshold at 0 meant nothing.  Here the scale and
bias are fitted by a 1-D logistic regression of the labels on the projection w.x (`fit_platt`), which also
resolves the sign on the training data.  `mean-diff-on-pair` really uses the pairs (the reference's version
silently read the last-token states, `hiddens.pt`, until its commit `e001e93`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from quirky.probes.base import Probe, flatten_pairs, linear_score
from quirky.probes.optim import fit_platt


def class_means(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(mu_0, mu_1), each [L, f], for x [L, n, f] and 0/1 labels y [n] (as one matrix product)."""
    w1 = y / y.sum()
    w0 = (1 - y) / (1 - y).sum()
    weights = torch.stack([w0, w1]).to(x.dtype)  # [2, n]
    # a broadcast matrix product reads x once in place; einsum("kn,lnf->klf") permuted x into a copy first
    mus = torch.matmul(weights, x)  # [L, 2, f]
    return mus[:, 0], mus[:, 1]


def calibrate(x: Tensor, y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Fitted (scale, bias) [L] of a 1-D logistic regression of y on the projection x.w."""
    s = torch.bmm(x, w.unsqueeze(-1)).squeeze(-1)
    return fit_platt(s, y)


class MeanDiffProbe(Probe):
    """`mean-diff`: unit difference of class means, with a fitted scale and bias."""

    name = "mean-diff"

    weight_: Tensor  # [L, f] unit mean difference
    scale_: Tensor  # [L] Platt scale
    offset_: Tensor  # [L] Platt bias
    direction_: Tensor  # [L, f] weight * scale
    bias_: Tensor  # [L] offset

    def _features(self, x: Tensor) -> Tensor:
        return x

    def _fit(self, x: Tensor, y: Tensor) -> None:
        x = self._features(x)
        mu0, mu1 = class_means(x, y)
        diff = mu1 - mu0
        norm = diff.norm(dim=-1, keepdim=True)
        self.weight_ = diff / norm.clamp_min(torch.finfo(x.dtype).tiny)
        self.scale_, self.offset_ = calibrate(x, y, self.weight_)
        self.direction_ = self.weight_ * self.scale_[:, None]
        self.bias_ = self.offset_

    def _score(self, x: Tensor) -> Tensor:
        return linear_score(self._features(x), self._like(self.direction_, x), self._like(self.bias_, x))


class PairMeanDiffProbe(MeanDiffProbe):
    """`mean-diff-on-pair`: the same on the concatenated contrast pair; `direction` is [L, 2d]."""

    name = "mean-diff-on-pair"
    pair = True

    def _features(self, x: Tensor) -> Tensor:
        return flatten_pairs(x)

    @property
    def expected_shape(self) -> tuple[int, int]:
        w = self.direction_
        return int(w.shape[0]), int(w.shape[-1]) // 2
