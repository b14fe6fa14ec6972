"""Linear discriminant analysis probe (`lda`), with optional covariance shrinkage.

Direction (reference §5): w = pinv(S) (mu_1 - mu_0), S = (n_0 S_0 + n_1 S_1) / n with unbiased per-class
covariances.  The pseudo-inverse keeps the reference's cutoff: singular values below d * eps(float32) times the
largest are dropped, which is what `torch.linalg.pinv` did on the reference's float32 inputs (in the p >> n
regime of the paper this truncation is a large part of what LDA is).  Where we differ: a fitted scale and bias
(`fit_platt`) instead of a random bias (bug §9.1-10), and optional shrinkage S' = (1 - a) S + a tr(S)/d I
(`shrinkage=a`), or the random-matrix-optimal linear shrinkage of `concept-erasure` (`shrinkage="auto"`, the
estimator of the reference's unused `fit2`).

Why the eigendecomposition is of the smaller Gram matrix: with n < d, S = A^T A has rank < n and
pinv(S) v = A^T U L^-2 U^T A v, where A A^T = U L U^T is only n x n.  Computed in float64.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from quirky.errors import QuirkyError
from quirky.probes.base import Probe, linear_score
from quirky.probes.mean_diff import calibrate, class_means

PINV_RTOL_EPS = torch.finfo(torch.float32).eps


def _pinv_solve(a: Tensor, delta: Tensor) -> Tensor:
    """pinv(A^T A) delta for a [L, n, f], delta [L, f] (float64), via the smaller of the two Gram matrices."""
    _, n, f = a.shape
    rtol = f * PINV_RTOL_EPS
    if n <= f:
        gram = a @ a.mT  # [L, n, n]
        evals, u = torch.linalg.eigh(gram)
        keep = evals > rtol * evals[:, -1:].clamp_min(0)
        inv2 = torch.where(keep, 1.0 / evals.clamp_min(1e-300) ** 2, torch.zeros_like(evals))
        t = (u.mT @ (a @ delta.unsqueeze(-1))).squeeze(-1) * inv2
        return (a.mT @ (u @ t.unsqueeze(-1))).squeeze(-1)
    s = a.mT @ a  # [L, f, f]
    evals, v = torch.linalg.eigh(s)
    keep = evals > rtol * evals[:, -1:].clamp_min(0)
    inv = torch.where(keep, 1.0 / evals.clamp_min(1e-300), torch.zeros_like(evals))
    return (v @ ((v.mT @ delta.unsqueeze(-1)).squeeze(-1) * inv).unsqueeze(-1)).squeeze(-1)


def _shrunk_solve(a: Tensor, delta: Tensor, shrinkage: float | str, n: int) -> Tensor:
    """(shrunk S)^-1 delta with S = A^T A, by Cholesky (shrinkage makes S positive definite)."""
    f = a.shape[-1]
    s = a.mT @ a
    if shrinkage == "auto":
        from concept_erasure.shrinkage import optimal_linear_shrinkage

        s = optimal_linear_shrinkage(s, n)
    else:
        alpha = float(shrinkage)
        trace = torch.diagonal(s, dim1=-2, dim2=-1).sum(-1)
        eye = torch.eye(f, dtype=s.dtype, device=s.device)
        s = (1 - alpha) * s + alpha * (trace / f)[:, None, None] * eye
    chol, info = torch.linalg.cholesky_ex(s)
    if bool((info != 0).any()):
        raise QuirkyError(
            "lda: the shrunk covariance is singular (constant features?); use a larger --lda-shrinkage"
        )
    return torch.cholesky_solve(delta.unsqueeze(-1), chol).squeeze(-1)


class LdaProbe(Probe):
    """`lda`: pinv(pooled within-class covariance) (mu_1 - mu_0), fitted scale and bias."""

    name = "lda"
    state_keys = ("weight", "scale", "offset", "direction", "bias")

    def __init__(self, shrinkage: float | str | None = None, max_chunk_bytes: int = 1 << 28) -> None:
        super().__init__()
        if shrinkage is not None and shrinkage != "auto":
            try:
                shrinkage = float(shrinkage)
            except ValueError as e:
                raise QuirkyError(
                    f"lda: shrinkage must be a number in [0, 1] or 'auto', got {shrinkage!r}"
                ) from e
            if not 0.0 <= shrinkage <= 1.0:
                raise QuirkyError(f"lda: shrinkage must be in [0, 1], got {shrinkage}")
        self.shrinkage = shrinkage
        self.max_chunk_bytes = int(max_chunk_bytes)

    def get_config(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage}

    def _fit(self, x: Tensor, y: Tensor) -> None:
        num_layers, n, f = x.shape
        mu0, mu1 = class_means(x, y)
        n1 = float(y.sum())
        n0 = n - n1
        # rows centred on their class mean and scaled so that A^T A = (n0 S0 + n1 S1) / n (unbiased S_k)
        c0 = (n0 / (max(n0 - 1, 1) * n)) ** 0.5
        c1 = (n1 / (max(n1 - 1, 1) * n)) ** 0.5
        coef = (y * c1 + (1 - y) * c0).to(torch.float64)[:, None]
        yb = y.bool()[:, None]
        w = torch.empty(num_layers, f, dtype=torch.float64, device=x.device)
        step = max(1, self.max_chunk_bytes // max(1, n * f * 8))
        for a in range(0, num_layers, step):
            b = min(num_layers, a + step)
            xa = x[a:b].to(torch.float64)
            m0, m1 = mu0[a:b].to(torch.float64), mu1[a:b].to(torch.float64)
            centred = (xa - torch.where(yb, m1[:, None, :], m0[:, None, :])) * coef
            delta = m1 - m0
            if self.shrinkage is None:
                w[a:b] = _pinv_solve(centred, delta)
            else:
                w[a:b] = _shrunk_solve(centred, delta, self.shrinkage, n)
        w = w.to(x.dtype)
        scale, offset = calibrate(x, y, w)
        self.state = {
            "weight": w,
            "scale": scale,
            "offset": offset,
            "direction": w * scale[:, None],
            "bias": offset,
        }

    def _score(self, x: Tensor, state: dict[str, Tensor]) -> Tensor:
        return linear_score(x, state["direction"], state["bias"])
