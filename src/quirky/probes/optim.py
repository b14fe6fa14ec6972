"""Batched optimisers: many independent small problems (one per layer, or per layer x restart) at once.

Why: the reference fits one probe per layer in a Python loop, each with its own `torch.optim.LBFGS`.  Every
iteration of such a fit is a matrix-vector product over an [n, d] slice, which is memory-bound; stacking the
layers (and CCS restarts) turns those into one batched product per iteration and lets each problem stop on its
own convergence test.  The optimiser is L-BFGS (two-loop recursion, torch's default of 100 curvature pairs when
memory allows) with every quantity carrying a leading batch dimension.

Every probe objective here is a *linear model*: f(x) = loss(A x, x) with a linear map A (the pass over the data)
and a cheap loss of the logits z = A x.  So the line search never touches the data: with z and A d known,
z + t A d gives the logits of any trial step.  An iteration costs exactly two passes over the data (A d, and the
gradient A^T r at the accepted point) however many step sizes the line search tries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


class Objective(Protocol):
    """B independent objectives of linear models, f(x) = loss(logits(x), x).

    `logits(x, need)`: x [B, p] -> z [B, k], linear in x (no offset): the pass over the data.
    `loss(z, x, need)`: z [B, m, k] and x [B, m, p] of m candidate points per problem -> f [B, m]; no pass over the
    data, and no derivative (only the accepted candidate needs one).
    `gradient(x, z, need)`: x [B, p] and its logits z [B, k], one point per problem -> grad [B, p] (the second pass).
    Rows where `need` is False may hold anything; skipping them is how converged problems stop costing passes.
    """

    def logits(self, x: Tensor, need: Tensor) -> Tensor: ...

    def loss(self, z: Tensor, x: Tensor, need: Tensor) -> Tensor: ...

    def gradient(self, x: Tensor, z: Tensor, need: Tensor) -> Tensor: ...


ARMIJO_C1 = 1e-4  # sufficient decrease: f(x + t d) <= f(x) + c1 t g.d (torch.optim.LBFGS's strong Wolfe uses the same)


@dataclass
class LbfgsResult:
    x: Tensor  # [B, p] solution
    n_iter: Tensor  # [B] iterations each problem took
    converged: Tensor  # [B] bool: met a tolerance (False = hit max_iter)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot products of a, b [B, p] (`vecdot`; a batched matrix product of [B, 1, p] x [B, p, 1] is ~10x
    slower on CPU)."""
    return torch.linalg.vecdot(a, b)


def _take(t: Tensor, j: Tensor) -> Tensor:
    """t [B, m, ...] -> t[b, j[b]] [B, ...]"""
    return t[torch.arange(t.shape[0], device=t.device), j]


class _ActiveSet:
    """Active-set compaction: once at most half of the problems still run, the optimiser's own state shrinks to
    them (`ids` maps its rows to problems).  The objective always sees the full batch, with `need` marking the
    rows that matter and the stopped problems' final x elsewhere, so an objective never has to re-index its data.
    """

    def __init__(self, obj: Objective, x0: Tensor) -> None:
        self.obj = obj
        self.full_b, self.p = x0.shape
        self.ids = torch.arange(self.full_b, device=x0.device)
        self.x = x0.clone()
        self.n_iter = torch.zeros(self.full_b, dtype=torch.long, device=x0.device)
        self.converged = torch.zeros(self.full_b, dtype=torch.bool, device=x0.device)

    @property
    def compact(self) -> bool:
        return len(self.ids) < self.full_b

    def _widen(self, t: Tensor, fill: Tensor | None = None) -> Tensor:
        """Compact rows -> the full batch (stopped problems get `fill`, or zeros)."""
        if not self.compact:
            return t
        out = fill.clone() if fill is not None else t.new_zeros((self.full_b, *t.shape[1:]))
        out[self.ids] = t
        return out

    def logits(self, x: Tensor, need: Tensor) -> Tensor:
        z = self.obj.logits(self._widen(x, self.x), self._widen(need))
        return z[self.ids] if self.compact else z

    def loss(self, z: Tensor, x: Tensor, need: Tensor) -> Tensor:
        if not self.compact:
            return self.obj.loss(z, x, need)
        fill = self.x[:, None, :].expand(self.full_b, x.shape[1], self.p)
        return self.obj.loss(self._widen(z), self._widen(x, fill), self._widen(need))[self.ids]

    def gradient(self, x: Tensor, z: Tensor, need: Tensor) -> Tensor:
        g = self.obj.gradient(self._widen(x, self.x), self._widen(z), self._widen(need))
        return g[self.ids] if self.compact else g

    def store(self, x: Tensor, n_iter: Tensor, converged: Tensor) -> None:
        """Write the rows' results into the full batch."""
        self.x[self.ids], self.n_iter[self.ids], self.converged[self.ids] = x, n_iter, converged

    def result(self) -> LbfgsResult:
        return LbfgsResult(x=self.x, n_iter=self.n_iter, converged=self.converged)


@dataclass
class _Iterate:
    """The optimiser's per-problem state; row b is problem `ids[b]` of the `_ActiveSet`."""

    x: Tensor  # [B, p]
    z: Tensor  # [B, k] logits of x (cached: z + t A d prices any step without a pass over the data)
    f: Tensor  # [B]
    g: Tensor  # [B, p]
    active: Tensor  # [B] bool: still iterating
    converged: Tensor  # [B] bool: stopped on a tolerance (or stalled)
    n_iter: Tensor  # [B]
    f_window: Tensor  # [window, B] f of the last `window` iterations (plateau test)

    def rows(self, keep: Tensor) -> _Iterate:
        return _Iterate(
            *(t[keep] for t in (self.x, self.z, self.f, self.g, self.active, self.converged, self.n_iter)),
            self.f_window[:, keep],
        )


@dataclass
class _Memory:
    """L-BFGS curvature pairs (s, y) of every problem in a ring buffer of `history` slots (Nocedal & Wright,
    Numerical Optimization, Alg. 7.4), plus the initial Hessian scale gamma = s.y / y.y of the newest pair."""

    s: Tensor  # [history, B, p]
    y: Tensor  # [history, B, p]
    rho: Tensor  # [history, B] 1 / s.y; 0 for a skipped or forgotten pair
    gamma: Tensor  # [B]
    slot: int = 0  # next slot to write
    filled: int = 0  # slots written so far: the two-loop recursion skips the empty ones

    @classmethod
    def empty(cls, history: int, like: Tensor) -> _Memory:
        s = like.new_zeros((history, *like.shape))
        return cls(
            s, torch.zeros_like(s), like.new_zeros(history, like.shape[0]), like.new_ones(like.shape[0])
        )

    def rows(self, keep: Tensor) -> None:
        """Keep the rows `keep` (ascending indices).  s and y are compacted in place, one slot at a time: a
        gathered copy of the whole history (hundreds of MB for CCS) would briefly double the optimiser's memory.
        Row b moves to position i <= b and the gather reads before it writes, so no row is overwritten before
        it has moved."""
        k = len(keep)
        for t in (self.s, self.y):
            for j in range(t.shape[0]):
                t[j, :k] = t[j].index_select(0, keep)
        self.s, self.y = self.s[:, :k], self.y[:, :k]
        self.rho, self.gamma = self.rho[:, keep], self.gamma[keep]

    def direction(self, g: Tensor) -> Tensor:
        """-H g by the two-loop recursion over the filled slots, newest first; in place, because at 100 slots its
        memory traffic rivals the passes over the data."""
        history = self.s.shape[0]
        q = -g
        alphas = []
        for k in range(self.filled):
            j = (self.slot - 1 - k) % history
            a = self.rho[j] * _dot(self.s[j], q)
            q.addcmul_(a[:, None], self.y[j], value=-1.0)
            alphas.append((j, a))
        r = q.mul_(self.gamma[:, None])
        for j, a in reversed(alphas):
            beta = self.rho[j] * _dot(self.y[j], r)
            r.addcmul_((a - beta)[:, None], self.s[j])
        return r

    def forget(self, rows: Tensor) -> None:
        """Drop the history of `rows` (a bool mask): their next direction is steepest descent."""
        self.rho[:, rows] = 0.0
        self.gamma = torch.where(rows, torch.ones_like(self.gamma), self.gamma)

    def push(self, s: Tensor, y: Tensor, moved: Tensor) -> None:
        """Store the step s and gradient change y of the rows that moved, where the pair has enough curvature
        (s.y > 1e-10 |s| |y|, which keeps H positive definite); the others get an empty slot."""
        sy = _dot(s, y)
        good = moved & (sy > 1e-10 * torch.sqrt(_dot(s, s) * _dot(y, y)).clamp_min(1e-30))
        self.s[self.slot] = torch.where(good[:, None], s, torch.zeros_like(s))
        self.y[self.slot] = torch.where(good[:, None], y, torch.zeros_like(y))
        self.rho[self.slot] = torch.where(good, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        self.gamma = torch.where(good, sy / _dot(y, y).clamp_min(1e-30), self.gamma)
        self.slot = (self.slot + 1) % self.s.shape[0]
        self.filled = min(self.filled + 1, self.s.shape[0])


def _descent_direction(memory: _Memory, g: Tensor) -> tuple[Tensor, Tensor]:
    """(d, g.d): the quasi-Newton direction, or steepest descent (forgetting the history) where that is not a
    descent direction (rounding in a long history)."""
    d = memory.direction(g)
    gd = _dot(g, d)
    bad = ~(gd < 0) | ~torch.isfinite(gd)
    if bool(bad.any()):
        d = torch.where(bad[:, None], -g, d)
        gd = torch.where(bad, -_dot(g, g), gd)
        memory.forget(bad)
    return d, gd


def _line_search(
    loss: Callable[[Tensor, Tensor, Tensor], Tensor],
    it: _Iterate,
    d: Tensor,
    zd: Tensor,
    gd: Tensor,
    t0: Tensor,
    rel_steps: Tensor,
    max_ls: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """(t, f(x + t d), stalled) per problem, every trial priced from the cached logits z + t zd.

    First the steps t0 * rel_steps all at once, keeping the lowest f among those that satisfy Armijo (a step
    longer than 1 among them is how the search extrapolates when the quasi-Newton step is too short); problems
    where none does backtrack by quadratic interpolation.  `stalled`: no decrease found along d."""

    def trial(ts: Tensor, need: Tensor) -> Tensor:  # f at x + t d for ts [B, m]
        return loss(
            it.z[:, None] + ts[..., None] * zd[:, None], it.x[:, None] + ts[..., None] * d[:, None], need
        )

    f = it.f
    ts = t0[:, None] * rel_steps[None, :]  # [B, m]
    f_try = trial(ts, it.active)
    ok = torch.isfinite(f_try) & (f_try <= f[:, None] + ARMIJO_C1 * ts * gd[:, None])
    best = torch.where(ok, f_try, torch.full_like(f_try, math.inf)).argmin(dim=1)
    accepted = it.active & ok.any(dim=1)
    t_acc = _take(ts, best)
    f_new = torch.where(accepted, _take(f_try, best), f)
    pending = it.active & ~accepted
    t, f_last = ts[:, -1], f_try[:, -1]
    for _ in range(max_ls):
        if not bool(pending.any()):
            break
        # minimiser of the quadratic through f, the slope gd and the last rejected trial, in [0.1 t, 0.5 t]
        curv = f_last - f - gd * t
        t_quad = -gd * t * t / (2 * curv.clamp_min(1e-30))
        t_quad = torch.where(torch.isfinite(f_last) & (curv > 0), t_quad, 0.1 * t)
        t = torch.where(pending, torch.minimum(torch.maximum(t_quad, 0.1 * t), 0.5 * t), t)
        f_last = trial(t[:, None], pending)[:, 0]
        ok1 = pending & torch.isfinite(f_last) & (f_last <= f + ARMIJO_C1 * t * gd)
        t_acc = torch.where(ok1, t, t_acc)
        f_new = torch.where(ok1, f_last, f_new)
        pending = pending & ~ok1
    return t_acc, f_new, pending


def _tolerance_met(
    it: _Iterate,
    f_prev: Tensor,
    moved: Tensor,
    step: int,
    *,
    gtol: float,
    ftol: float,
    wtol: float,
    window: int,
) -> Tensor:
    """Which problems meet a stopping test after iteration `step` (it.f is the new f); updates the plateau window.

    Small gradient; or an accepted step that changed f by <= ftol * max(1, |f|) (torch.optim.LBFGS's
    `tolerance_change` test, which stopped the reference's fits, made relative); or, when wtol > 0, f fell by <= wtol * max(1, |f|) over the
    last `window` iterations (a plateau, which a non-convex CCS restart can crawl along for hundreds of steps)."""
    done_g = it.g.abs().amax(dim=-1) <= gtol
    done_f = moved & ((f_prev - it.f).abs() <= ftol * torch.maximum(f_prev.abs(), torch.ones_like(f_prev)))
    if wtol > 0:
        scale = torch.maximum(it.f.abs(), torch.ones_like(it.f))
        oldest = it.f_window[step % it.f_window.shape[0]]
        done_f = done_f | ((step + 1 >= window) & (oldest - it.f <= wtol * scale))
        it.f_window[step % it.f_window.shape[0]] = it.f
    return done_g | done_f


def _drop_stopped(batch: _ActiveSet, it: _Iterate, memory: _Memory) -> _Iterate:
    """Shrink the optimiser's state to the running problems (the stopped ones' results go to the full batch)."""
    batch.store(it.x, it.n_iter, it.converged)
    keep = torch.nonzero(it.active).flatten()
    batch.ids = batch.ids[keep]
    memory.rows(keep)
    return it.rows(keep)


def lbfgs(
    obj: Objective,
    x0: Tensor,
    *,
    max_iter: int = 1000,
    history: int | None = None,
    history_bytes: int = 1 << 29,
    gtol: float = 1e-6,
    ftol: float = 1e-10,
    window: int = 10,
    wtol: float = 0.0,
    steps: tuple[float, ...] = (1.0,),
    max_ls: int = 30,
    refresh: int = 100,
) -> LbfgsResult:
    """Minimise B independent linear-model objectives with L-BFGS (two-loop recursion, Armijo line search).

    Each iteration computes the logits of the search direction (one pass), prices the step sizes `steps`
    (relative to the initial step) from cached logits (`_line_search`), then computes the gradient once, at the
    accepted points (the second pass).  The cached logits are recomputed from x every `refresh` iterations, so
    float rounding in z + t A d cannot accumulate.  A problem stops on `_tolerance_met` or when no step along
    its search direction decreases f (numerical stagnation); stopped problems keep their x while the others go on.

    `history` (curvature pairs kept) defaults to torch.optim.LBFGS's 100; it is reduced so the pairs fit in
    `history_bytes` (but not below 10): on CCS, 100 pairs halve the iterations that 10 need.
    """
    batch = _ActiveSet(obj, x0)
    x = x0.clone()
    full_b, p = x.shape
    fits = history_bytes // max(1, 2 * full_b * p * x.element_size())
    memory = _Memory.empty(int(max(1, min(100 if history is None else history, max(10, fits)))), x)
    everyone = torch.ones(full_b, dtype=torch.bool, device=x.device)
    z = batch.logits(x, everyone)
    f = batch.loss(z[:, None], x[:, None], everyone)[:, 0]
    g = batch.gradient(x, z, everyone)
    active = g.abs().amax(dim=-1) > gtol
    n_iter = torch.zeros(full_b, dtype=torch.long, device=x.device)
    it = _Iterate(x, z, f, g, active, ~active, n_iter, f.clone().unsqueeze(0).repeat(max(1, window), 1))
    rel_steps = torch.tensor(steps, device=x.device, dtype=x.dtype)
    for step in range(max_iter):
        n_active = int(it.active.sum())
        if n_active == 0:
            break
        if 2 * n_active <= len(batch.ids) and len(batch.ids) >= 8:
            it = _drop_stopped(batch, it, memory)
        if refresh > 0 and step > 0 and step % refresh == 0:
            it.z = batch.logits(it.x, it.active)
        d, gd = _descent_direction(memory, it.g)
        # first iteration: no curvature known yet, so a step of length ~1 in the l1 norm (as torch.optim.LBFGS)
        t0 = (
            torch.clamp(1.0 / it.g.abs().sum(dim=-1).clamp_min(1e-30), max=1.0)
            if step == 0
            else torch.ones_like(gd)
        )
        zd = batch.logits(d, it.active)  # the one pass over the data that the line search needs
        t, f_new, stalled = _line_search(batch.loss, it, d, zd, gd, t0, rel_steps, max_ls)
        moved = it.active & ~stalled
        x_new = torch.where(moved[:, None], it.x + t[:, None] * d, it.x)
        it.z = torch.where(moved[:, None], it.z + t[:, None] * zd, it.z)
        g_new = torch.where(moved[:, None], batch.gradient(x_new, it.z, moved), it.g)
        memory.push(x_new - it.x, g_new - it.g, moved)
        f_prev = it.f
        it.x, it.g, it.f = x_new, g_new, torch.where(moved, f_new, it.f)
        it.n_iter = it.n_iter + it.active.long()
        met = _tolerance_met(it, f_prev, moved, step, gtol=gtol, ftol=ftol, wtol=wtol, window=window)
        newly = it.active & (met | stalled)
        it.converged = it.converged | newly
        it.active = it.active & ~newly
    batch.store(it.x, it.n_iter, it.converged)
    return batch.result()


def active_columns(need: Tensor) -> Tensor | None:
    """For need [L, R] (which of R problems per layer still run): indices [L, k] of the running ones first, k =
    the most that run in any layer; None when every problem needs computing anyway."""
    k = int(need.sum(dim=1).max()) if need.numel() else 0
    if k >= need.shape[1]:
        return None
    order = torch.sort((~need).to(torch.int8), dim=1, stable=True).indices
    return order[:, : max(k, 1)]


def _platt_newton_direction(
    a: Tensor, c: Tensor, z: Tensor, y: Tensor, ridge: float
) -> tuple[Tensor, Tensor]:
    """The Newton step (da, dc) [B] of mean BCE(sigmoid(a z + c), y) + ridge a^2, solving the 2 x 2 system."""
    m = z.shape[-1]
    p = torch.sigmoid(a[:, None] * z + c[:, None])
    r = p - y
    w = p * (1 - p)
    ga = (r * z).sum(-1) / m + 2 * ridge * a
    gc = r.sum(-1) / m
    haa = (w * z * z).sum(-1) / m + 2 * ridge
    hac = (w * z).sum(-1) / m
    hcc = w.sum(-1) / m + 1e-12
    det = haa * hcc - hac * hac
    return -(hcc * ga - hac * gc) / det, -(haa * gc - hac * ga) / det


def fit_platt(
    s: Tensor,
    y: Tensor,
    *,
    ridge: float = 1e-4,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """Fit scale a and bias c of sigmoid(a*s + c) to 0/1 targets `y` by Newton's method, batched over rows.

    `s`, `y`: [B, m].  Returns a, c: [B].  The score is standardised first, and a tiny ridge on the standardised
    slope keeps `a` finite when the training data are separable (the AUROC never depends on it; the threshold
    `a*s + c = 0` is then the maximum-margin-like point the ridge selects).  This is the "fitted bias and scale"
    that makes thresholding at zero meaningful for mean-diff / LDA / CCS / CRC.
    """
    s64 = s.to(torch.float64)
    y64 = y.to(torch.float64).expand_as(s64)
    mu = s64.mean(dim=-1, keepdim=True)
    sd = s64.std(dim=-1, keepdim=True).clamp_min(1e-12)
    z = (s64 - mu) / sd
    a = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    c = torch.zeros_like(a)

    def objective(a_: Tensor, c_: Tensor) -> Tensor:
        logits = a_[:, None] * z + c_[:, None]
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y64, reduction="none").mean(-1)
        return bce + ridge * a_**2

    f = objective(a, c)
    for _ in range(max_iter):
        da, dc = _platt_newton_direction(a, c, z, y64, ridge)
        step = torch.ones_like(a)
        for _ in range(30):  # backtracking keeps Newton monotone far from the optimum
            f_new = objective(a + step * da, c + step * dc)
            ok = f_new <= f + 1e-12
            if bool(ok.all()):
                break
            step = torch.where(ok, step, step * 0.5)
        a = a + step * da
        c = c + step * dc
        f_old, f = f, objective(a, c)
        if bool(((f_old - f).abs() <= tol).all()):
            break
    scale = a / sd[:, 0]
    bias = c - scale * mu[:, 0]
    return scale.to(s.dtype), bias.to(s.dtype)


def bmm_layers(a: Tensor, b: Tensor, layers: Tensor | None) -> Tensor:
    """torch.bmm(a, b) for the layers in the bool mask `layers` only (the others come back as zeros).

    Why: layers converge at different speeds; once one has, its passes over the data should stop.  With every
    layer needed, one batched product; else the needed layers are multiplied one by one on views (a CPU batched
    product loops over its batch anyway, and gathering the needed layers first would copy the data each pass).
    """
    if layers is None or bool(layers.all()):
        return torch.bmm(a, b)
    out = a.new_zeros(a.shape[0], a.shape[1], b.shape[2])
    for layer in torch.nonzero(layers).flatten().tolist():
        torch.mm(a[layer], b[layer], out=out[layer])
    return out


def bmm_running(a: Tensor, b: Tensor, need: Tensor, problems: Literal["rows", "cols"]) -> Tensor:
    """torch.bmm(a, b) for the running problems only: need [L, R] marks them, and they are the rows of a
    (`problems="rows"`, out [L, R, M]) or the columns of b (`"cols"`, out [L, N, R]); stopped ones come back as
    zeros, and so do layers where none runs.

    Why: the products of CCS's 10 restarts are compute-bound GEMMs, so a restart that has stopped should drop
    out of them, not just out of the optimiser's bookkeeping.  The running problems are gathered (padded to the
    most that run in any layer) and multiplied in the operands' own layout.
    """
    layers = need.any(dim=1)
    cols = active_columns(need)
    if cols is None:
        return bmm_layers(a, b, layers)
    idx = cols[..., None]  # [L, k, 1]
    if problems == "rows":
        part = bmm_layers(a.gather(1, idx.expand(-1, -1, a.shape[2])), b, layers)  # [L, k, M]
        out = part.new_zeros(a.shape[0], a.shape[1], b.shape[2])
        return out.scatter_(1, idx.expand(-1, -1, b.shape[2]), part)
    bt = b.mT  # the problems are rows of b^T: gather those, multiply by their transpose view
    part = bmm_layers(a, bt.gather(1, idx.expand(-1, -1, bt.shape[2])).mT, layers)  # [L, N, k]
    out = part.new_zeros(a.shape[0], a.shape[1], b.shape[2])
    return out.scatter_(2, cols[:, None, :].expand(-1, a.shape[1], -1), part)


def kaiming_uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> Tensor:
    """nn.Linear's default init U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from an explicit generator."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound


@dataclass
class Preconditioner:
    """An exact change of variables w = S v for batched linear models on features x [L, n, f].

    S = diag(1/sqrt(h)) M^{-1/2}: Jacobi scaling by the Hessian diagonal h, then a spectral correction
    M^{-1/2} = V diag(mu^-1/2) V^T + rest^-1/2 (I - V V^T) built from the top-k principal directions V of the
    Jacobi-scaled features.  Why: residual streams are low-rank-plus-noise, so after centring and diagonal scaling
    the Hessian still has a few eigenvalues hundreds of times larger than the rest; removing them cuts L-BFGS
    from hundreds of iterations to tens.  The minimiser is unchanged (S is invertible); S is symmetric in the
    scaled space, so gradients map with the same operator.
    """

    inv_sq: Tensor  # [L, f]
    basis: Tensor  # [L, f, k]
    mu_inv_sqrt: Tensor  # [L, k]
    rest_inv_sqrt: Tensor  # [L]

    def _m(self, v: Tensor) -> Tensor:  # M^{-1/2} v for v [L, m, f]
        if self.basis.shape[-1] == 0:
            return v * self.rest_inv_sqrt[:, None, None]
        a = v @ self.basis  # [L, m, k]
        return (v - a @ self.basis.mT) * self.rest_inv_sqrt[:, None, None] + (
            a * self.mu_inv_sqrt[:, None, :]
        ) @ self.basis.mT

    def to_weights(self, v: Tensor) -> Tensor:
        """w = S v for v [L, f] or [L, m, f]."""
        squeeze = v.ndim == 2
        vv = v.unsqueeze(1) if squeeze else v
        w = self._m(vv) * self.inv_sq[:, None, :]
        return w.squeeze(1) if squeeze else w

    def to_variables(self, w: Tensor) -> Tensor:
        """v = S^-1 w (used for initial points)."""
        squeeze = w.ndim == 2
        ww = (w.unsqueeze(1) if squeeze else w) / self.inv_sq[:, None, :]
        if self.basis.shape[-1] == 0:
            v = ww / self.rest_inv_sqrt[:, None, None]
            return v.squeeze(1) if squeeze else v
        a = ww @ self.basis
        v = (ww - a @ self.basis.mT) / self.rest_inv_sqrt[:, None, None] + (
            a / self.mu_inv_sqrt[:, None, :]
        ) @ self.basis.mT
        return v.squeeze(1) if squeeze else v

    def grad_to_variables(self, g: Tensor) -> Tensor:
        """dF/dv = S^T dF/dw for g [L, f] or [L, m, f]."""
        squeeze = g.ndim == 2
        gg = (g.unsqueeze(1) if squeeze else g) * self.inv_sq[:, None, :]
        out = self._m(gg)
        return out.squeeze(1) if squeeze else out


def spectral_preconditioner(
    x: Tensor,
    mean: Tensor,
    var: Tensor,
    *,
    curvature: float,
    ridge: float,
    rank: int = 64,
    oversample: int = 10,
    niter: int = 2,
    seed: int = 0,
) -> Preconditioner:
    """Preconditioner for a loss whose Hessian is about curvature * Cov(x) + ridge * I (x [L, n, f]).

    The top `rank` directions of the Jacobi-scaled, centred features come from a seeded randomised subspace
    iteration (a few batched products with ~rank columns, so about as costly as a handful of optimiser steps).
    """
    num_layers, n, f = x.shape
    h = curvature * var + ridge
    inv_sq = h.clamp_min(torch.finfo(x.dtype).tiny).rsqrt()
    ridge_scaled = (ridge * inv_sq**2).mean(dim=-1)  # mean of the ridge's share of the unit diagonal
    k = max(0, min(rank, f - 1, n - 1))
    dt, dev = x.dtype, x.device
    if k == 0:
        return Preconditioner(
            inv_sq,
            torch.zeros(num_layers, f, 0, dtype=dt, device=dev),
            torch.zeros(num_layers, 0, dtype=dt, device=dev),
            torch.ones(num_layers, dtype=dt, device=dev),
        )
    q = min(k + oversample, f, n)

    def xs_mul(v: Tensor) -> Tensor:  # (scaled centred x) v : [L, f, q] -> [L, n, q]
        vs = v * inv_sq[:, :, None]
        return x @ vs - (mean.unsqueeze(1) @ vs)

    def xs_t_mul(u: Tensor) -> Tensor:  # (scaled centred x)^T u : [L, n, q] -> [L, f, q]
        return (x.mT @ u - mean.unsqueeze(-1) @ u.sum(dim=1, keepdim=True)) * inv_sq[:, :, None]

    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn(num_layers, f, q, generator=gen, dtype=torch.float32).to(device=dev, dtype=dt)
    qm = torch.linalg.qr(xs_mul(omega)).Q
    for _ in range(niter):
        qm = torch.linalg.qr(xs_mul(torch.linalg.qr(xs_t_mul(qm)).Q)).Q
    b = xs_t_mul(qm).mT  # [L, q, f]
    _, s, vh = torch.linalg.svd(b, full_matrices=False)
    evals = s[:, :k] ** 2 / n  # top eigenvalues of the scaled covariance
    basis = vh[:, :k].mT  # [L, f, k]
    mu = curvature * evals + ridge_scaled[:, None]
    # the scaled Hessian has unit diagonal, so its trace is f: the rest share what the top-k leave
    rest = ((f - mu.sum(dim=-1)) / (f - k)).clamp_min(1e-3)
    mu = torch.maximum(mu, rest[:, None])
    return Preconditioner(inv_sq, basis, mu.rsqrt(), rest.rsqrt())
