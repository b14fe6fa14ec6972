"""Shared machinery of the contrast-pair probes (CCS, CRC): the LEACE normaliser and Platt calibration.

Normaliser (EleutherAI/quirky-language-models: `elk_generalization/elk/ccs.py` with `norm="leace"`, and
`elk_generalization/elk/crc.py`): a LEACE eraser that removes the linear information about *which side of the
pair* a state is (choice 0 vs choice 1), fitted with `concept_erasure.LeaceFitter(d, 2)` on x_neg with z = [0, 1]
and x_pos with z = [1, 0] (the reference's single-template call, `num_variants = 1`).  The fitter accumulates the
statistics (with its default optimal shrinkage of the covariance); the eraser is then computed from those
statistics in closed form: for a concept of rank r the LEACE map is the oblique projection
    P = I - S_xz (S_xz^T S^-1 S_xz)^+ S_xz^T S^-1,
which needs one Cholesky solve instead of the fitter's full d x d eigendecomposition (the cost that dominates
CCS/CRC at d = 4096).  Singular values under the fitter's `svd_tol` are dropped exactly as the fitter does; if the
fitter's trace constraint would apply, or the solve fails, we fall back to `fitter.eraser` itself.  The tests
check the closed form against `LeaceFitter.eraser`.

An eraser is stored as (left [L, d, r], right [L, r, d], center [L, d]): e(x) = x - ((x - center) right^T) left^T.
Because e is affine, a linear probe w on erased states is the linear probe P^T w on raw states, so nothing is
ever materialised in erased form: `erased_weight` maps weights instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from concept_erasure import LeaceFitter
from torch import Tensor

from quirky.probes.base import Probe
from quirky.probes.optim import fit_platt

ERASER_RANK = 2


@dataclass(frozen=True)
class PairEraser:
    """Per-layer LEACE erasers e(x) = x - ((x - center) right^T) left^T."""

    left: Tensor  # [L, d, ERASER_RANK]
    right: Tensor  # [L, ERASER_RANK, d]
    center: Tensor  # [L, d]


def _closed_form_eraser(fitter: LeaceFitter) -> tuple[Tensor, Tensor] | None:
    """(proj_left [d, k], proj_right [k, d]) of the fitter's LEACE eraser, or None to use `fitter.eraser`."""
    sigma = fitter.sigma_xx.to(torch.float64)
    sxz = fitter.sigma_xz.to(torch.float64)  # [d, k]
    chol, info = torch.linalg.cholesky_ex(sigma)
    if int(info) != 0:
        return None
    sinv_sxz = torch.cholesky_solve(sxz, chol)  # S^-1 S_xz  [d, k]
    m = sxz.mT @ sinv_sxz  # S_xz^T S^-1 S_xz = (W S_xz)^T (W S_xz)   [k, k]
    evals, v = torch.linalg.eigh((m + m.mT) / 2)
    sv = evals.clamp_min(0).sqrt()  # singular values of W S_xz
    keep = sv > fitter.svd_tol
    inv = torch.where(keep, 1.0 / sv.clamp_min(1e-300), torch.zeros_like(sv))
    left = sxz @ v * inv  # Sigma^{1/2} u   [d, k]
    right = (sinv_sxz @ v * inv).mT  # u^T Sigma^{-1/2}   [k, d]
    if fitter.constrain_cov_trace:
        # trace(P S P^T) with P = I - left right, without forming P
        s_left = sigma @ left
        rs = right @ sigma
        new_trace = (
            torch.trace(sigma)
            - 2 * torch.trace(right @ s_left)
            + torch.trace((left.mT @ left) @ (rs @ right.mT))
        )
        if new_trace > torch.trace(sigma):
            return None
    return left, right


def fit_pair_eraser(x: Tensor) -> PairEraser:
    """Fit one LEACE eraser per layer on contrast pairs x [L, n, 2, d]."""
    num_layers, n, _, d = x.shape
    lefts, rights, centers = [], [], []
    z_neg = torch.tensor([0.0, 1.0], device=x.device, dtype=x.dtype).expand(n, 2)
    z_pos = torch.tensor([1.0, 0.0], device=x.device, dtype=x.dtype).expand(n, 2)
    for layer in range(num_layers):
        fitter = LeaceFitter(d, 2, dtype=x.dtype, device=x.device)
        fitter.update(x[layer, :, 0], z_neg)
        fitter.update(x[layer, :, 1], z_pos)
        closed = _closed_form_eraser(fitter)
        if closed is None:
            eraser = fitter.eraser
            # (I - P) has rank <= k: keep its top-k factors (the fitter's trace-constrained branch returns d x d)
            left, right = eraser.proj_left[:, :ERASER_RANK], eraser.proj_right[:ERASER_RANK]
        else:
            left, right = closed
        k = left.shape[1]
        if k < ERASER_RANK:
            left = torch.nn.functional.pad(left, (0, ERASER_RANK - k))
            right = torch.nn.functional.pad(right, (0, 0, 0, ERASER_RANK - k))
        lefts.append(left.to(x.dtype))
        rights.append(right.to(x.dtype))
        centers.append(fitter.mean_x.to(x.dtype))
    return PairEraser(torch.stack(lefts), torch.stack(rights), torch.stack(centers))


def erase(x: Tensor, eraser: PairEraser) -> Tensor:
    """Apply per-layer erasers to x [L, m, d] (used by tests and for inspection; probes map weights instead)."""
    delta = x - eraser.center[:, None, :]
    return x - (delta @ eraser.right.mT) @ eraser.left.mT


def erased_weight(w: Tensor, eraser: PairEraser) -> tuple[Tensor, Tensor]:
    """For weights w [L, ..., d] on erased states, (u, c) with w . e(x) = u . x + c for raw x.

    u = P^T w = w - (w left) right;  c = center . right^T (left^T w).
    """
    left, right, center = eraser.left, eraser.right, eraser.center
    lw = w @ left if w.ndim == 3 else (w.unsqueeze(1) @ left).squeeze(1)  # [L, ..., r]
    if w.ndim == 3:
        u = w - lw @ right
        c = lw @ (right @ center.unsqueeze(-1))
        return u, c.squeeze(-1)
    u = w - (lw.unsqueeze(1) @ right).squeeze(1)
    c = (lw * (right @ center.unsqueeze(-1)).squeeze(-1)).sum(-1)
    return u, c


def pair_side_scores(x: Tensor, u: Tensor, c: Tensor) -> Tensor:
    """Raw per-side scores u . x + c for pairs x [L, n, 2, d], u [L, d], c [L] -> [L, n, 2]."""
    num_layers, n, _, d = x.shape
    flat = x.reshape(num_layers, 2 * n, d)
    s = torch.bmm(flat, u.unsqueeze(-1)).squeeze(-1) + c[:, None]
    return s.reshape(num_layers, n, 2)


def platt_on_sides(side_scores: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The reference's `platt_scale`: fit (a, b) so sigmoid(a s_side + b) predicts [1 - y, y] on the two sides."""
    num_layers, n, _ = side_scores.shape
    targets = torch.stack([1 - y, y], dim=-1).reshape(2 * n)
    return fit_platt(side_scores.reshape(num_layers, 2 * n), targets)


def pair_difference_score(x: Tensor, direction: Tensor) -> Tensor:
    """direction . (h_pos - h_neg) for x [L, n, 2, d] -> [L, n], without materialising the difference."""
    num_layers, n, _, d = x.shape
    s = torch.bmm(x.reshape(num_layers, 2 * n, d), direction.unsqueeze(-1)).reshape(num_layers, n, 2)
    return s[..., 1] - s[..., 0]


class ContrastProbe(Probe):
    """The fitted state and scoring shared by CCS and CRC: a weight w on erased states, Platt-scaled, applied to
    h_pos - h_neg (the offset cancels in the difference, so `bias` is 0)."""

    pair = True

    eraser_left_: Tensor  # [L, d, ERASER_RANK] LEACE eraser (see `PairEraser`)
    eraser_right_: Tensor  # [L, ERASER_RANK, d]
    eraser_center_: Tensor  # [L, d]
    weight_: Tensor  # [L, d] the direction on erased states
    scale_: Tensor  # [L] Platt scale
    offset_: Tensor  # [L] Platt bias, kept for inspection
    direction_: Tensor  # [L, d] P^T weight * scale, applied to h_pos - h_neg
    bias_: Tensor  # [L] zeros

    @property
    def eraser(self) -> PairEraser:
        return PairEraser(self.eraser_left_, self.eraser_right_, self.eraser_center_)

    def _calibrate(self, x: Tensor, y: Tensor, eraser: PairEraser, w: Tensor, w_bias: Tensor | None) -> None:
        """Set the shared state from the fitted weight w [L, d] (and bias [L]) on erased states: the reference's
        `platt_scale` on both sides of the pairs fixes the scale and resolves the sign."""
        u, c = erased_weight(w, eraser)
        sides = pair_side_scores(x, u, c if w_bias is None else c + w_bias)
        self.scale_, self.offset_ = platt_on_sides(sides, y)
        self.eraser_left_, self.eraser_right_, self.eraser_center_ = eraser.left, eraser.right, eraser.center
        self.weight_ = w
        self.direction_ = u * self.scale_[:, None]
        self.bias_ = torch.zeros_like(self.scale_)

    def _score(self, x: Tensor) -> Tensor:
        return pair_difference_score(x, self._like(self.direction_, x))
