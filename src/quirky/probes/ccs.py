"""Contrast-Consistent Search (`ccs`) on LEACE-normalised contrast pairs, batched over layers and restarts.

Math (Mallen & Belrose 2023, arXiv 2312.01037; EleutherAI/quirky-language-models: `elk_generalization/elk/ccs.py`
with the pre-`e001e93` calling convention that produced the published numbers: pairs as [n, 1 variant, 2, d],
unsupervised `fit`, then `platt_scale` with the labels):
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
layer whose restarts have all stopped costs nothing further.  The erased states are never materialised.  The
stored `direction` [L, d] applies to h_pos - h_neg: score = direction . (h_pos - h_neg); `bias` is 0 (the Platt
offset cancels in the difference).
"""

from __future__ import annotations

import torch
from torch import Tensor

from quirky.errors import QuirkyError
from quirky.probes._contrast import ContrastProbe, PairEraser, erased_weight, fit_pair_eraser
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


def ccs_from_probs(p_neg: Tensor, p_pos: Tensor) -> Tensor:
    """The unregularised CCS loss (Burns et al. 2022; Mallen & Belrose 2023, arXiv 2312.01037, Sec. 3) of the
    two sides' probabilities [..., n] -> [...]: consistency (p_neg - (1 - p_pos))^2 + confidence
    min(p_neg, p_pos)^2, each a mean over the examples.  The one definition: the optimiser's objective, the
    restart selection and `ccs_loss` all call it, and `ccs_logit_gradient` is its derivative."""
    consistency = (p_neg + p_pos - 1).pow(2).mean(dim=-1)
    confidence = torch.minimum(p_neg, p_pos).pow(2).mean(dim=-1)
    return consistency + confidence


def ccs_logit_gradient(p_neg: Tensor, p_pos: Tensor) -> tuple[Tensor, Tensor]:
    """d `ccs_from_probs` / d logit of each side, [..., n] each (p = sigmoid(logit)).

    Written by hand because it is cheap elementwise work that the optimiser repeats every iteration; the tests
    check it against autograd (`torch.autograd.gradcheck`, float64).  At a tie p_neg = p_pos the confidence term's
    subgradient goes to the negative side."""
    n = p_neg.shape[-1]
    gap = p_neg + p_pos - 1
    low = torch.minimum(p_neg, p_pos)
    first = (p_neg <= p_pos).to(p_neg.dtype)
    g_neg = (2 * gap + 2 * low * first) * p_neg * (1 - p_neg) / n
    g_pos = (2 * gap + 2 * low * (1 - first)) * p_pos * (1 - p_pos) / n
    return g_neg, g_pos


def ccs_loss(logits: Tensor) -> Tensor:
    """Unregularised CCS loss of logits [..., n, 2, R] -> [..., R] (the reference's layout: sides, restarts)."""
    p = torch.sigmoid(logits).movedim(-1, -3)  # [..., R, n, 2]
    return ccs_from_probs(p[..., 0], p[..., 1])


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
        eraser: PairEraser,
        pre: Preconditioner,
        b_sq: float,
        weight_decay: float,
    ) -> None:
        self.flat, self.n, self.r, self.eraser, self.pre = flat, n, restarts, eraser, pre
        self.b_sq, self.wd = b_sq, weight_decay
        self.num_layers, _, self.d = flat.shape
        # d c / d w for the constant c = center . right^T (left^T w) of `erased_weight`:  left (right center)
        self.dc_dw = (eraser.left @ (eraser.right @ eraser.center.unsqueeze(-1))).squeeze(-1)  # [L, d]

    def weights(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """v [L*R, m, d+1] or [L*R, d+1] -> w [L, R*m, d], b [L, R*m]"""
        vv = v.reshape(self.num_layers, -1, self.d + 1)
        return self.pre.to_weights(vv[..., : self.d]), vv[..., self.d] / self.b_sq

    def logits(self, v: Tensor, need: Tensor) -> Tensor:
        w, b = self.weights(v)  # [L, R, d], [L, R]
        u, c = erased_weight(w, self.eraser)
        need_lr = need.reshape(self.num_layers, self.r)
        z = bmm_running(self.flat, u.mT, need_lr, "cols") + (b + c)[:, None, :]  # [L, 2n, R]
        return z.permute(0, 2, 1).reshape(self.num_layers * self.r, 2 * self.n)

    def sides(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Logits [..., 2n] -> probabilities of each side [..., n]."""
        p = torch.sigmoid(z).unflatten(-1, (self.n, 2))
        return p[..., 0], p[..., 1]

    def loss(self, z: Tensor, v: Tensor, need: Tensor) -> Tensor:
        w, b = self.weights(v)
        reg = self.wd * ((w * w).sum(-1) + b * b).reshape(z.shape[:2]) / 2
        return ccs_from_probs(*self.sides(z)) + reg  # [B, m]

    def gradient(self, v: Tensor, z: Tensor, need: Tensor) -> Tensor:
        g0, g1 = ccs_logit_gradient(*self.sides(z))  # [L*R, n] each
        w, b = self.weights(v)  # [L, R, d]
        g = torch.stack([g0, g1], dim=-1).reshape(self.num_layers, self.r, 2 * self.n)  # d loss / d logits
        gsum = g.sum(dim=-1)  # [L, R]
        gu = bmm_running(
            g, self.flat, need.reshape(self.num_layers, self.r), "rows"
        )  # [L, R, d] = d loss / d u
        # u = P^T w and c = center . right^T (left^T w): chain rule back to w
        right, left = self.eraser.right, self.eraser.left
        gw = gu - (gu @ right.mT) @ left.mT + gsum[..., None] * self.dc_dw[:, None, :] + self.wd * w
        gb = gsum + self.wd * b
        grad = torch.cat([self.pre.grad_to_variables(gw), (gb / self.b_sq)[..., None]], dim=-1)
        return grad.reshape(self.num_layers * self.r, self.d + 1)


class CcsProbe(ContrastProbe):
    """`ccs`: see the module docstring."""

    name = "ccs"

    weight_bias_: Tensor  # [L] the bias on erased states of the selected restart
    train_loss_: Tensor  # [L] its unregularised loss
    n_iter_: Tensor  # [L, restarts] L-BFGS iterations of every restart

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
        if int(restarts) < 1:
            raise QuirkyError(f"ccs: restarts must be >= 1, got {restarts}")
        self.restarts, self.weight_decay = int(restarts), float(weight_decay)
        self.max_iter, self.gtol, self.wtol, self.seed = int(max_iter), float(gtol), float(wtol), int(seed)
        self.ftol = float(ftol)
        self.precond_rank = int(precond_rank)

    def _objective(self, x: Tensor, eraser: PairEraser) -> _CcsObjective:
        num_layers, n, _, d = x.shape
        flat = x.reshape(num_layers, 2 * n, d)
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
        return _CcsObjective(flat, n, self.restarts, eraser, pre, b_sq, self.weight_decay)

    def _initial_points(self, objective: _CcsObjective) -> Tensor:
        """The reference's nn.Linear initialisation of every restart, in the preconditioned variables."""
        num_layers, r, d = objective.num_layers, self.restarts, objective.d
        gen = torch.Generator().manual_seed(self.seed)
        w0 = kaiming_uniform((num_layers, r, d), d, gen)
        b0 = kaiming_uniform((num_layers, r), d, gen)
        like = objective.flat
        w0, b0 = w0.to(device=like.device, dtype=like.dtype), b0.to(device=like.device, dtype=like.dtype)
        v0 = torch.cat([objective.pre.to_variables(w0), (b0 * objective.b_sq)[..., None]], dim=-1)
        return v0.reshape(num_layers * r, d + 1)

    def _fit(self, x: Tensor, y: Tensor) -> None:
        num_layers, n = x.shape[:2]
        r = self.restarts
        eraser = fit_pair_eraser(x)
        objective = self._objective(x, eraser)
        res = lbfgs(
            objective,
            self._initial_points(objective),
            max_iter=self.max_iter,
            gtol=self.gtol,
            ftol=self.ftol,
            wtol=self.wtol,
            steps=CCS_STEPS,
            # curvature pairs: torch's 100 when the data are large; with few examples the two-loop recursion
            # over 10 restarts x layers would cost more than the passes over the data that it saves
            history=int(min(CCS_HISTORY, max(10, n // r))),
        )
        # the reference keeps the restart with the lowest *unregularised* loss
        everyone = torch.ones(num_layers * r, dtype=torch.bool, device=x.device)
        raw_loss = ccs_from_probs(*objective.sides(objective.logits(res.x, everyone))).reshape(num_layers, r)
        if not bool(torch.isfinite(raw_loss).any(dim=1).all()):
            raise QuirkyError(
                "ccs: every restart diverged (non-finite loss) on some layer; check the activations"
            )
        best = torch.nan_to_num(raw_loss, nan=float("inf")).argmin(dim=1)  # [L]
        idx = torch.arange(num_layers, device=x.device)
        w_all, b_all = objective.weights(res.x)
        self.weight_bias_ = b_all[idx, best]
        self._calibrate(x, y, eraser, w_all[idx, best], self.weight_bias_)
        self.train_loss_ = raw_loss[idx, best]
        self.n_iter_ = res.n_iter.reshape(num_layers, r)
