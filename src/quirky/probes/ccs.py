"""Contrast-Consistent Search (`ccs`) on LEACE-normalised contrast pairs, batched over layers and restarts.

Math (the original's `elk_generalization/elk/ccs.py` with the pre-`e001e93` calling convention that produced the
published numbers: pairs as [n, 1 variant, 2, d], unsupervised `fit`, then `platt_scale` with the labels):
  p(x) = sigmoid(w . e(x) + b) on erased states e(x) (see `_contrast`),
  loss = mean (p_neg - (1 - p_pos))^2 + mean min(p_neg, p_pos)^2, plus 0.01 (||w||^2 + b^2) / 2 while training;
  `restarts` (>= 10) Kaiming-uniform initialisations, each run with L-BFGS, keeping the lowest *unregularised*
  loss; then the Platt scale a and bias c are fitted on both sides with the labels; output a (s_pos - s_neg).

Where it differs from the reference's loop: all layers x restarts are one batched L-BFGS problem (one GEMM over
the pair data per pass serves every restart), with an analytic gradient, a preconditioned parametrisation
(`optim.spectral_preconditioner`, an exact change of variables) and Armijo backtracking on cached logits instead
of strong Wolfe (two passes over the data per iteration, whatever the line search tries).  Each restart stops on
the reference's own tolerance (an iteration that changes the objective by less than float32 eps, or max_iter =
1000), or on a plateau test (less than `wtol` over 10 iterations); a stopped restart leaves the products, and a
layer whose restarts have all stopped costs nothing further.  The erased states are never materialised.  The stored `direction` [L, d] applies to
h_pos - h_neg: score = direction . (h_pos - h_neg); `bias` is 0 (the Platt offset cancels in the difference).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from quirky.errors import QuirkyError
from quirky.probes._contrast import (
    erased_weight,
    fit_pair_eraser,
    pair_difference_score,
    pair_side_scores,
    platt_on_sides,
)
from quirky.probes.base import Probe
from quirky.probes.optim import (
    FLOAT32_EPS,
    Preconditioner,
    bmm_running,
    kaiming_uniform,
    lbfgs,
    spectral_preconditioner,
)

# trial step sizes relative to the quasi-Newton step (free on cached logits), and curvature pairs kept
CCS_STEPS = (4.0, 2.0, 1.0, 0.5, 0.25, 0.1)
CCS_HISTORY = 100


def ccs_loss(logits: Tensor) -> Tensor:
    """Unregularised CCS loss of logits [..., n, 2, R] -> [..., R] (consistency + confidence)."""
    p = torch.sigmoid(logits)
    p_neg, p_pos = p[..., 0, :], p[..., 1, :]
    consistency = (p_neg - (1 - p_pos)).pow(2).mean(dim=-2)
    confidence = torch.minimum(p_neg, p_pos).pow(2).mean(dim=-2)
    return consistency + confidence


class _CcsObjective:
    """The batched CCS objective (see `optim.Objective`) over problems (layer, restart), in the preconditioned
    variables v = [S^-1 w ; b sqrt(1/4 + wd)], with an analytic gradient (autograd's backward of the batched
    product is ~3x slower than one GEMM).  Logits are [L*R, 2n] in the pair data's row order (neg, pos per
    example); only the restarts still running enter the products (`optim.bmm_running`)."""

    def __init__(
        self,
        flat: Tensor,
        n: int,
        restarts: int,
        eraser: dict[str, Tensor],
        pre: Preconditioner,
        b_sq: float,
        weight_decay: float,
    ) -> None:
        self.flat, self.n, self.r, self.eraser, self.pre = flat, n, restarts, eraser, pre
        self.b_sq, self.wd = b_sq, weight_decay
        self.num_layers, _, self.d = flat.shape
        left, right = eraser["eraser_left"], eraser["eraser_right"]
        self.left, self.right = left, right
        # d c / d w for the constant c = center . right^T (left^T w) of `erased_weight`:  left (right center)
        self.dc_dw = (left @ (right @ eraser["eraser_center"].unsqueeze(-1))).squeeze(-1)  # [L, d]

    def _wb(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """v [L*R, m, d+1] or [L*R, d+1] -> w [L, R*m, d], b [L, R*m]"""
        vv = v.reshape(self.num_layers, -1, self.d + 1)
        return self.pre.to_weights(vv[..., : self.d]), vv[..., self.d] / self.b_sq

    def logits(self, v: Tensor, need: Tensor) -> Tensor:
        w, b = self._wb(v)  # [L, R, d], [L, R]
        u, c = erased_weight(w, self.eraser)
        need_lr = need.reshape(self.num_layers, self.r)
        z = bmm_running(self.flat, u.mT, need_lr, "cols") + (b + c)[:, None, :]  # [L, 2n, R]
        return z.permute(0, 2, 1).reshape(self.num_layers * self.r, 2 * self.n)

    def loss(self, z: Tensor, v: Tensor, need: Tensor) -> Tensor:
        p = torch.sigmoid(z).unflatten(-1, (self.n, 2))  # [B, m, n, 2]
        p0, p1 = p[..., 0], p[..., 1]
        w, b = self._wb(v)
        reg = self.wd * ((w * w).sum(-1) + b * b).reshape(z.shape[:2]) / 2
        return (p0 + p1 - 1).pow(2).mean(dim=-1) + torch.minimum(p0, p1).pow(2).mean(dim=-1) + reg  # [B, m]

    def gradient(self, v: Tensor, z: Tensor, need: Tensor) -> Tensor:
        p = torch.sigmoid(z).unflatten(-1, (self.n, 2))  # [L*R, n, 2]
        p0, p1 = p[..., 0], p[..., 1]
        gap = p0 + p1 - 1
        low = torch.minimum(p0, p1)
        first = (p0 <= p1).to(p.dtype)
        g0 = (2 * gap + 2 * low * first) * p0 * (1 - p0) / self.n
        g1 = (2 * gap + 2 * low * (1 - first)) * p1 * (1 - p1) / self.n
        w, b = self._wb(v)  # [L, R, d]
        g = torch.stack([g0, g1], dim=-1).reshape(self.num_layers, self.r, 2 * self.n)  # d loss / d logits
        gsum = g.sum(dim=-1)  # [L, R]
        gu = bmm_running(
            g, self.flat, need.reshape(self.num_layers, self.r), "rows"
        )  # [L, R, d] = d loss / d u
        # u = P^T w and c = center . right^T (left^T w): chain rule back to w
        gw = gu - (gu @ self.right.mT) @ self.left.mT + gsum[..., None] * self.dc_dw[:, None, :] + self.wd * w
        gb = gsum + self.wd * b
        grad = torch.cat([self.pre.grad_to_variables(gw), (gb / self.b_sq)[..., None]], dim=-1)
        return grad.reshape(self.num_layers * self.r, self.d + 1)


class CcsProbe(Probe):
    """`ccs`: see the module docstring."""

    name = "ccs"
    pair = True
    state_keys = (
        "eraser_left",
        "eraser_right",
        "eraser_center",
        "weight",
        "weight_bias",
        "scale",
        "offset",
        "direction",
        "bias",
        "train_loss",
    )

    def __init__(
        self,
        restarts: int = 10,
        weight_decay: float = 0.01,
        max_iter: int = 1000,
        gtol: float = 1e-6,
        ftol: float = FLOAT32_EPS,
        wtol: float = 1e-6,
        precond_rank: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if int(restarts) < 1:
            raise QuirkyError(f"ccs: restarts must be >= 1, got {restarts}")
        self.restarts, self.weight_decay = int(restarts), float(weight_decay)
        self.max_iter, self.gtol, self.wtol, self.seed = int(max_iter), float(gtol), float(wtol), int(seed)
        self.ftol = float(ftol)
        self.precond_rank = int(precond_rank)

    def get_config(self) -> dict[str, Any]:
        return {
            "restarts": self.restarts,
            "weight_decay": self.weight_decay,
            "max_iter": self.max_iter,
            "gtol": self.gtol,
            "ftol": self.ftol,
            "wtol": self.wtol,
            "precond_rank": self.precond_rank,
            "seed": self.seed,
        }

    def _fit(self, x: Tensor, y: Tensor) -> None:
        num_layers, n, _, d = x.shape
        eraser = fit_pair_eraser(x)
        flat = x.reshape(num_layers, 2 * n, d)
        r = self.restarts
        gen = torch.Generator().manual_seed(self.seed)
        w0 = kaiming_uniform((num_layers, r, d), d, gen)
        b0 = kaiming_uniform((num_layers, r), d, gen)
        w0, b0 = w0.to(device=x.device, dtype=x.dtype), b0.to(device=x.device, dtype=x.dtype)
        # exact change of variables (see optim.Preconditioner): residual-stream features differ in scale by orders
        # of magnitude.  Jacobi scaling halves CCS's iterations; the low-rank spectral part (precond_rank > 0),
        # which helps logistic regression a lot, did not pay for itself on CCS's non-convex plateaus.
        var, mean = torch.var_mean(flat, dim=1, unbiased=False)
        pre = spectral_preconditioner(
            flat,
            mean,
            var,
            curvature=0.25,
            ridge=self.weight_decay,
            rank=self.precond_rank,
            seed=self.seed,
        )
        b_sq = (0.25 + self.weight_decay) ** 0.5

        objective = _CcsObjective(flat, n, r, eraser, pre, b_sq, self.weight_decay)
        v0 = torch.cat([pre.to_variables(w0), (b0 * b_sq)[..., None]], dim=-1).reshape(num_layers * r, d + 1)
        res = lbfgs(
            objective,
            v0,
            max_iter=self.max_iter,
            gtol=self.gtol,
            ftol=self.ftol,
            wtol=self.wtol,
            steps=CCS_STEPS,
            # curvature pairs: torch's 100 when the data are large; with few examples the two-loop recursion
            # over 10 restarts x layers would cost more than the passes over the data that it saves
            history=int(min(CCS_HISTORY, max(10, n // r))),
        )
        v = res.x.reshape(num_layers, r, d + 1)
        w_all, b_all = pre.to_weights(v[..., :d]), v[..., d] / b_sq
        u_all, c_all = erased_weight(w_all, eraser)
        logits_all = torch.bmm(flat, u_all.mT) + (b_all + c_all)[:, None, :]  # [L, 2n, R]
        raw_loss = ccs_loss(logits_all.reshape(num_layers, n, 2, r))  # unregularised [L, R]
        if not bool(torch.isfinite(raw_loss).any(dim=1).all()):
            raise QuirkyError(
                "ccs: every restart diverged (non-finite loss) on some layer; check the activations"
            )
        best = torch.nan_to_num(raw_loss, nan=float("inf")).argmin(dim=1)  # [L]
        idx = torch.arange(num_layers, device=x.device)
        w_best, b_best = w_all[idx, best], b_all[idx, best]
        u, c = erased_weight(w_best, eraser)
        sides = pair_side_scores(x, u, c + b_best)
        scale, offset = platt_on_sides(sides, y)
        self.state = {
            **eraser,
            "weight": w_best,
            "weight_bias": b_best,
            "scale": scale,
            "offset": offset,
            "direction": u * scale[:, None],
            "bias": torch.zeros_like(scale),
            "train_loss": raw_loss[idx, best],
            "n_iter": res.n_iter.reshape(num_layers, r),
        }

    def _score(self, x: Tensor, state: dict[str, Tensor]) -> Tensor:
        return pair_difference_score(x, state["direction"])
