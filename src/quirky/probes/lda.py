"""Linear discriminant analysis probe (`lda`), with optional covariance shrinkage.

Direction (EleutherAI/quirky-language-models: `elk_generalization/elk/lda.py`): w = pinv(S) (mu_1 - mu_0),
S = (n_0 S_0 + n_1 S_1) / n with unbiased per-class covariances.  The pseudo-inverse keeps the reference's cutoff:
singular values below d * eps(float32) times the largest are dropped, which is what `torch.linalg.pinv` did on the
reference's float32 inputs (in the p >> n regime of the paper this truncation is a large part of what LDA is).
Where we differ: a fitted scale and bias (`fit_platt`) instead of a random bias (its `lda.py:13-16`),
and optional shrinkage S' = (1 - a) S + a tr(S)/d I (`shrinkage=a`), or the random-matrix-optimal linear
shrinkage of `concept-erasure` (`shrinkage="auto"`, the estimator of the reference's unused `fit2`).

Why it is fast: with n < d, S = A^T A has rank < n and pinv(S) v = A^T G^+2 A v with the n x n Gram matrix
G = A A^T; and when no eigenvalue falls under the cutoff (certified by one Cholesky), the pseudo-inverse is an
inverse, so Cholesky solves replace the eigendecomposition (see `_pinv_solve`).  Computed in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from quirky.errors import QuirkyError
from quirky.probes.base import Probe, linear_score
from quirky.probes.mean_diff import calibrate, class_means

PINV_RTOL_EPS = torch.finfo(torch.float32).eps


def _lambda_max(m: Tensor, iters: int = 40) -> Tensor:
    """Largest eigenvalue of symmetric PSD matrices m [L, k, k] by power iteration (a slight underestimate)."""
    v = torch.ones(m.shape[0], m.shape[1], 1, dtype=m.dtype, device=m.device)
    for _ in range(iters):
        v = m @ v
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return (v.mT @ m @ v).reshape(-1)


def _pinv_solve(a: Tensor, delta: Tensor, y: Tensor) -> Tensor:
    """pinv(A^T A) delta for a [L, n, f], delta [L, f] (float64), via the smaller of the two Gram matrices.

    Fast path: pinv equals the inverse whenever no eigenvalue falls under the cutoff, which one Cholesky of the
    matrix shifted down by (slightly more than) the cutoff certifies; then two Cholesky solves replace the
    eigendecomposition.  With n <= f the Gram matrix A A^T is singular by construction (rows are centred within
    each class, so the class indicators are null vectors): those two directions are shifted up by lambda_max
    first, which changes nothing in A^T G^+2 A (A^T annihilates them).  Layers that fail the check take the
    eigendecomposition path.
    """
    num_layers, n, f = a.shape
    rtol = f * PINV_RTOL_EPS
    if n <= f:
        m = a @ a.mT  # [L, n, n]
        ind = torch.stack([1 - y, y]).to(m.dtype)  # [2, n]
        null = (ind.mT / ind.sum(dim=1).clamp_min(1)) @ ind  # projector onto the class indicators
        lam = _lambda_max(m)
        m_fast = m + lam[:, None, None] * null
    else:
        m = a.mT @ a  # [L, f, f]
        lam = _lambda_max(m)
        m_fast = m
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
    margin = rtol * lam * 1.05 + torch.finfo(m.dtype).eps * lam
    _, info = torch.linalg.cholesky_ex(m_fast - margin[:, None, None] * eye)
    fast = info == 0
    rhs = (a @ delta.unsqueeze(-1)) if n <= f else delta.unsqueeze(-1)  # [L, k, 1]
    gram_rows = n <= f
    # whole batches where possible: a boolean-mask selection copies its operands (a is the data, in float64)
    if bool(fast.all()):
        return _cholesky_path(m_fast, rhs, a, gram_rows)
    if not bool(fast.any()):
        return _eigh_path(m, rhs, a, rtol, gram_rows)
    out = torch.empty(num_layers, f, dtype=a.dtype, device=a.device)
    out[fast] = _cholesky_path(m_fast[fast], rhs[fast], a[fast], gram_rows)
    out[~fast] = _eigh_path(m[~fast], rhs[~fast], a[~fast], rtol, gram_rows)
    return out


def _cholesky_path(m: Tensor, rhs: Tensor, a: Tensor, gram_rows: bool) -> Tensor:
    """`_pinv_solve` where the pseudo-inverse is the inverse: Cholesky solves (twice for A^T G^-2 A delta)."""
    chol = torch.linalg.cholesky(m)
    t = torch.cholesky_solve(rhs, chol)
    if gram_rows:
        return (a.mT @ torch.cholesky_solve(t, chol)).squeeze(-1)
    return t.squeeze(-1)


def _eigh_path(m: Tensor, rhs: Tensor, a: Tensor, rtol: float, gram_rows: bool) -> Tensor:
    """`_pinv_solve` by eigendecomposition, dropping eigenvalues under the reference's cutoff."""
    evals, vecs = torch.linalg.eigh(m)
    keep = evals > rtol * evals[:, -1:].clamp_min(0)
    power = 2 if gram_rows else 1
    inv = torch.where(keep, 1.0 / evals.clamp_min(1e-300) ** power, torch.zeros_like(evals))
    t = vecs @ ((vecs.mT @ rhs) * inv.unsqueeze(-1))
    return ((a.mT @ t) if gram_rows else t).squeeze(-1)


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

    weight_: Tensor  # [L, f] pinv(S) (mu_1 - mu_0)
    scale_: Tensor  # [L] Platt scale
    offset_: Tensor  # [L] Platt bias
    direction_: Tensor  # [L, f] weight * scale
    bias_: Tensor  # [L] offset

    def __init__(self, shrinkage: float | str | None = None, max_chunk_bytes: int = 1 << 24) -> None:
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
        # layers solved together in float64 (peak memory), not a modelling choice: any value gives the same w
        self.max_chunk_bytes = int(max_chunk_bytes)

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
                w[a:b] = _pinv_solve(centred, delta, y.to(torch.float64))
            else:
                w[a:b] = _shrunk_solve(centred, delta, self.shrinkage, n)
        self.weight_ = w.to(x.dtype)
        self.scale_, self.offset_ = calibrate(x, y, self.weight_)
        self.direction_ = self.weight_ * self.scale_[:, None]
        self.bias_ = self.offset_

    def _score(self, x: Tensor) -> Tensor:
        return linear_score(x, self._like(self.direction_, x), self._like(self.bias_, x))
